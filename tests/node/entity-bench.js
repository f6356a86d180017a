#!/usr/bin/env node
// Node's side of issue 11's store benchmark: save (create, generated id), save (merge update) and
// load by id, in-process and one after the other, through seneca-entity on seneca-mem-store, and
// on seneca-postgres-store when it is installed (PostgreSQL on 127.0.0.1:5432, database `test`,
// a table of its own created and dropped here). The same records as host/benches/store.rs:
// 1,000 seeded `{grp, n, pad}` with ids `r<i>`, in a base of its own.
// Usage: node entity-bench.js [--ms 3000] [--stores mem,postgres]
// stdout: one JSON line per store and operation: {"store":"mem","op":"load by id","ops_per_s":...,"us_per_op":...}
'use strict'

const { out, failer, parseArgs } = require('./common')

const fail = failer('entity-bench')
const args = parseArgs(process.argv.slice(2), fail)
const ms = Number(args.ms || 3000)
const stores = String(args.stores || 'mem,postgres').split(',')

/** seneca with seneca-entity and the store `kind`; resolves once ready. */
async function senecaWith(kind) {
  const seneca = require('seneca')({ log: 'silent', legacy: false })
  if (kind === 'mem') {
    seneca.use('entity')
  } else {
    seneca.use('entity', { mem_store: false })
    // seneca-postgres-store 2.4 expects seneca.store, which seneca-entity 28 no longer
    // decorates (ENTITY.md §8.13): the documented shim.
    seneca.decorate('store', { init: (...a) => seneca.export('entity/init')(...a) })
    seneca.use('seneca-postgres-store', {
      host: '127.0.0.1',
      port: 5432,
      username: 'postgres',
      name: 'test',
    })
  }
  await new Promise((resolve, reject) => seneca.ready((err) => (err ? reject(err) : resolve())))
  return seneca
}

/** Promise form of an entity call with a node-style callback. */
const call = (fn) => new Promise((resolve, reject) => fn((err, r) => (err ? reject(err) : resolve(r))))

/** Runs `op` repeatedly for `ms` (after a short warm-up); the rate. */
async function measure(op) {
  const warm = Date.now() + Math.min(500, ms / 4)
  while (Date.now() < warm) await op()
  let n = 0
  const start = process.hrtime.bigint()
  const end = start + BigInt(ms) * 1000000n
  let now = start
  while (now < end) {
    await op()
    n += 1
    if ((n & 15) === 0) now = process.hrtime.bigint()
  }
  now = process.hrtime.bigint()
  const secs = Number(now - start) / 1e9
  return { ops_per_s: Math.round(n / secs), us_per_op: Number(((secs * 1e6) / n).toFixed(2)), n }
}

async function bench(kind) {
  // A base of this run's own, so parallel runs never share a table.
  const base = `nbench${process.pid}`
  const table = `${base}_item`
  const pg = kind === 'postgres' ? require('pg') : null
  let admin
  if (pg) {
    admin = new pg.Client({ host: '127.0.0.1', user: 'postgres', database: 'test' })
    await admin.connect()
    // seneca-postgres-store creates no tables: the schema it needs (ENTITY.md §9).
    await admin.query(`DROP TABLE IF EXISTS ${table}`)
    await admin.query(`CREATE TABLE ${table} (id text PRIMARY KEY, grp integer, n integer, pad text)`)
  }
  const seneca = await senecaWith(kind)
  const item = () => seneca.make$(base, 'item')
  for (let i = 0; i < 1000; i++) {
    await call((done) => item().data$({ id$: `r${i}`, grp: Math.floor(i / 10), n: i, pad: 'some text to make it a record' }).save$(done))
  }
  // Load first, while the store holds the 1,000 seeded records (mem-store's load scans them).
  const results = []
  let i = 0
  results.push([
    'load by id',
    await measure(() => {
      i = (i + 7919) % 1000
      return call((done) => item().load$(`r${i}`, done))
    }),
  ])
  results.push(['save (merge update)', await measure(() => call((done) => item().data$({ id: 'r7', pad: 'y' }).save$(done)))])
  // mem-store does not retry a generated id that is taken: over ~30k creates a 6-character id
  // collides about one run in four and the save fails with entity-id-exists. Count it and go on.
  let collisions = 0
  const create = () =>
    call((done) => item().data$({ grp: -1, pad: 'x' }).save$(done)).catch((err) => {
      if (err.code !== 'entity-id-exists') throw err
      collisions += 1
    })
  results.push(['save (create, generated id)', await measure(create)])
  results[results.length - 1][1].collisions = collisions
  for (const [op, r] of results) out({ store: kind, op, ...r })
  await new Promise((resolve) => seneca.close(resolve))
  if (admin) {
    await admin.query(`DROP TABLE IF EXISTS ${table}`)
    await admin.end()
  }
}

;(async () => {
  for (const kind of stores) {
    if (kind === 'postgres') {
      try {
        require.resolve('seneca-postgres-store')
      } catch {
        out({ store: kind, skipped: 'seneca-postgres-store is not installed' })
        continue
      }
    }
    await bench(kind)
  }
  process.exit(0)
})().catch((e) => fail(e.stack || e))
