#!/usr/bin/env node
// Node Seneca HTTP listener (seneca-transport) serving the math and salute actions,
// plus cmd:fail (replies an error with message `why` and optional `statusCode`) for error tests.
// Usage: node http-listen.js --port P [--host H]
// stdout: one JSON object per line ({"ready":true,"port":P} once listening); logs go to stderr.
'use strict'

console.log = console.error // library chatter to stderr; stdout carries only our JSON lines
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const fail = (why) => {
  console.error('http-listen:', why)
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
if (args.port === undefined) fail('--port is required')
const port = Number(args.port)

const seneca = require('seneca')({ log: 'warn' })

seneca
  .add('role:math,cmd:sum', (msg, reply) => reply({ answer: msg.left + msg.right }))
  .add('role:math,cmd:product', (msg, reply) => reply({ answer: msg.left * msg.right }))
  .add('cmd:salute', (msg, reply) => reply({ message: `Hello ${msg.name} from Node!` }))
  .add('cmd:fail', (msg, reply) => {
    const err = new Error(msg.why || 'failed on purpose')
    if (msg.statusCode) err.statusCode = msg.statusCode
    reply(err)
  })
  .listen({ type: 'http', port, ...(args.host ? { host: args.host } : {}) }, (err, details) => {
    if (err) fail(err.message)
    out({ ready: true, port: details.port })
  })

const stop = () => seneca.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
