#!/usr/bin/env node
// An unchanged Node Seneca 3 app keeping data through a remote store: seneca-entity's make$
// entities (save$/load$/list$/remove$ with sort$/limit$/fields$ and id$) and role:cache acts, sent
// to wasmeca by `seneca.client({type:'http', pin:'sys:entity'})` and a client pinned on role:cache.
// Usage: node entity-client.js --port P [--host H] [--timeout MS]
// stdout: one JSON line per step, in order:
//   {"step":"save apple","ok":true,"result":{"canon":"-/shop/item","data":{...}}}
//   {"step":"save duplicate id$","ok":false,"code":"entity-id-exists","message":"..."}
// An entity result is {canon, data} (canon$() and data$(false) of the entity the app got back),
// a list is an array of them, anything else is the plain result. Exits 0 after the last step.
'use strict'

const { out, failer, parseArgs } = require('./common')

const fail = failer('entity-client')
const args = parseArgs(process.argv.slice(2), fail)
if (args.port === undefined) fail('--port is required')
const timeout = Number(args.timeout || 5000)
const remote = { type: 'http', host: args.host || '127.0.0.1', port: Number(args.port), timeout }

const seneca = require('seneca')({ log: 'warn', timeout })
  // No local store: the client pins must win over local sys:entity actions (ENTITY.md §2).
  .use('entity', { mem_store: false })
  .client({ ...remote, pin: 'sys:entity' })
  .client({ ...remote, pin: 'role:cache' })

/** An entity as the app sees it: proves it is a live seneca entity (canon$, data$). */
const shown = (e) =>
  e == null ? null : Array.isArray(e) ? e.map(shown) : { canon: e.canon$(), data: e.data$(false) }

/** The remote error code, where a Seneca HTTP client finds it. */
const codeOf = (err) =>
  err?.orig?.data?.payload?.code ?? err?.data?.payload?.code ?? err?.orig?.code ?? err?.code

/** Runs one step: `fn(done)` with a node-style callback; prints its line. */
const step = (name, fn, show = shown) =>
  new Promise((resolve) => {
    try {
      fn((err, result) => {
        if (err) out({ step: name, ok: false, code: codeOf(err), message: err.message })
        else out({ step: name, ok: true, result: show(result) ?? null })
        resolve(err ? undefined : result)
      })
    } catch (err) {
      out({ step: name, ok: false, code: codeOf(err), message: err.message })
      resolve(undefined)
    }
  })

const plain = (r) => (r == null ? null : JSON.parse(JSON.stringify(r)))

seneca.ready(async () => {
  const item = () => seneca.make$('shop', 'item')

  const apple = await step('save apple', (done) =>
    item()
      .data$({ name: 'apple', price: 1.5, color: 'red', tags: ['fruit'], info: { origin: 'NZ' } })
      .save$(done),
  )
  await step('save banana id$', (done) =>
    item().data$({ id$: 'banana-1', name: 'banana', price: 0.5, color: 'yellow' }).save$(done),
  )
  await step('save cherry id$', (done) =>
    item().data$({ id$: 'cherry-1', name: 'cherry', price: 3, color: 'red' }).save$(done),
  )
  await step('save duplicate id$', (done) =>
    item().data$({ id$: 'banana-1', name: 'dup' }).save$(done),
  )
  await step('load apple', (done) => item().load$(apple ? apple.id : 'none', done))
  await step('load missing', (done) => item().load$('nope-404', done))
  await step('list red by price desc, limit 1, fields name', (done) =>
    item().list$({ color: 'red', sort$: { price: -1 }, limit$: 1, fields$: ['name'] }, done),
  )
  await step('list sorted by price', (done) => item().list$({ sort$: { price: 1 } }, done))
  const banana = await step('load banana', (done) => item().load$('banana-1', done))
  await step('update banana', (done) => {
    // Load-modify-save, the usual update.
    const b = banana || item().data$({ id: 'banana-1' })
    b.color = 'gold'
    b.price = 0.75
    b.save$(done)
  })
  await step('remove apple', (done) => item().remove$(apple ? apple.id : 'none', done))
  await step('list after remove', (done) => item().list$({}, done))

  await step('cache set', (done) => seneca.act('role:cache,cmd:set', { key: 'visits', val: 10 }, done), plain)
  await step('cache get', (done) => seneca.act('role:cache,cmd:get', { key: 'visits' }, done), plain)
  await step('cache add existing', (done) => seneca.act('role:cache,cmd:add', { key: 'visits', val: 1 }, done), plain)
  await step('cache incr', (done) => seneca.act('role:cache,cmd:incr', { key: 'visits', val: 1 }, done), plain)
  seneca.close(() => process.exit(0))
})
