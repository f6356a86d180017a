#!/usr/bin/env node
// Node Seneca AMQP listener (seneca-amqp-transport) serving the math and salute actions,
// plus cmd:fail (replies an error with message `why`) for error tests.
// Usage: node amqp-listen.js --url amqp://guest:guest@127.0.0.1:5672 --pin 'role:math,cmd:*' [--pin ...] [--name QUEUE] [--nodelay true]
// stdout: {"ready":true,"queue":"...","bindings":[...]} once consuming; logs go to stderr.
// NB: seneca 3.38 acts incoming AMQP messages with fatal$:true, so the first action error
// (or act_not_found) makes this process exit with code 1 right after the error reply is sent.
'use strict'

console.log = console.error // library chatter to stderr; stdout carries only our JSON lines
const ListenerUtil = require('seneca-amqp-transport/lib/listener/listener-util')
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const fail = (why) => {
  console.error('amqp-listen:', why)
  process.exit(1)
}

function parseArgs(argv) {
  const args = {}
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) fail(`bad argument ${argv[i]}`)
    const key = argv[i].slice(2)
    args[key] = key in args ? [].concat(args[key], argv[i + 1]) : argv[i + 1]
  }
  return args
}

const args = parseArgs(process.argv.slice(2))
if (args.url === undefined) fail('--url is required')
if (args.pin === undefined) fail('at least one --pin is required')
const pins = [].concat(args.pin)

const seneca = require('seneca')({ log: 'warn' })
seneca.use('seneca-amqp-transport')

const parsed = pins.map((p) => seneca.util.Jsonic(p))
const queue =
  args.name || ListenerUtil.resolveListenQueue(parsed, { prefix: 'seneca.add', separator: '.' })

seneca
  .add('role:math,cmd:sum', (msg, reply) => reply({ answer: msg.left + msg.right }))
  .add('role:math,cmd:product', (msg, reply) => reply({ answer: msg.left * msg.right }))
  .add('cmd:salute', (msg, reply) => reply({ message: `Hello ${msg.name} from Node!` }))
  .add('cmd:fail', (msg, reply) => reply(new Error(msg.why || 'failed on purpose')))
  .listen({ type: 'amqp', url: args.url, pin: pins, ...(args.name ? { name: args.name } : {}), ...(args.nodelay === 'true' ? { socketOptions: { noDelay: true } } : {}) }, (err) => {
    if (err) fail(err.message)
    out({ ready: true, queue, bindings: ListenerUtil.resolveListenTopics(parsed) })
  })

const stop = () => seneca.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
