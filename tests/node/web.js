#!/usr/bin/env node
// Node baseline for the seed's user CRUD module: seneca-web + koa2 adapter + koa-router.
// Usage: node web.js --port P     (0 picks a free port)
// Routes: GET /user, GET /user/:id, PUT /user/:id, POST /user, DELETE /user/:id (JSON bodies).
// stdout: {"ready":true,"port":P} once listening; logs go to stderr.
// NB: seneca 3.38 acts web requests with fatal$:true, so an action error (unknown id, missing
// name) answers 4xx/5xx text/plain and then this process exits with code 1.
'use strict'

const Koa = require('koa')
const Router = require('koa-router')
const { out, failer, parseArgs } = require('./common')

const fail = failer('web')
const args = parseArgs(process.argv.slice(2), fail)
if (args.port === undefined) fail('--port is required')

const routes = {
  prefix: '/user',
  pin: 'module:user,if:*',
  map: {
    list: { GET: true, name: '' },
    load: { GET: true, name: '', suffix: '/:id' },
    edit: { PUT: true, name: '', suffix: '/:id' },
    create: { POST: true, name: '' },
    delete: { DELETE: true, name: '', suffix: '/:id' },
  },
}

// The in-memory table, as in the seed's user plugin.
const users = [
  { id: 1, name: '甲' },
  { id: 2, name: '乙' },
  { id: 3, name: '丙' },
]

function problem(message, statusCode) {
  const err = new Error(message)
  err.statusCode = statusCode
  return err
}
// The id comes from the route (args.params.id) or the message (id).
function position(msg) {
  const id = Number(msg.args?.params?.id ?? msg.id)
  if (!Number.isInteger(id)) throw problem('an `id` is needed (in the path or the message)', 400)
  const at = users.findIndex((u) => u.id === id)
  if (at < 0) throw problem(`no user with id ${id}`, 404)
  return at
}
// The name comes from the body (args.body.name) or the message (name).
function nameOf(msg) {
  const name = msg.args?.body?.name ?? msg.name
  if (typeof name !== 'string' || !name.trim()) {
    throw problem('a non-empty `name` is needed (in the body or the message)', 400)
  }
  return name
}

const seneca = require('seneca')({ log: 'warn' })
seneca
  .add('module:user,if:list', (msg, reply) => reply(users))
  .add('module:user,if:load', (msg, reply) => reply(users[position(msg)]))
  .add('module:user,if:edit', (msg, reply) => {
    const at = position(msg)
    users[at].name = nameOf(msg)
    reply(users[at])
  })
  .add('module:user,if:create', (msg, reply) => {
    const user = { id: Math.max(0, ...users.map((u) => u.id)) + 1, name: nameOf(msg) }
    users.push(user)
    reply(user)
  })
  .add('module:user,if:delete', (msg, reply) => reply(users.splice(position(msg), 1)[0]))

const router = new Router()
seneca.use(require('seneca-web'), {
  routes,
  context: router,
  adapter: require('seneca-web-adapter-koa2'),
  options: { parseBody: true },
})

seneca.ready((err) => {
  if (err) fail(err.message)
  const app = new Koa()
  app.use(router.routes())
  const server = app.listen(Number(args.port), () => out({ ready: true, port: server.address().port }))
  server.on('error', (e) => fail(e.message))
  const stop = () => server.close(() => seneca.close(() => process.exit(0)))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
})
