#!/usr/bin/env node
// Node Seneca HTTP listener (seneca-transport) serving the math and salute actions,
// plus cmd:fail (replies an error with message `why` and optional `statusCode`) for error tests.
// Usage: node http-listen.js --port P [--host H]
// stdout: one JSON object per line ({"ready":true,"port":P} once listening); logs go to stderr.
'use strict'

const { out, failer, parseArgs, addDemoActions, closeOnSignal } = require('./common')

const fail = failer('http-listen')
const args = parseArgs(process.argv.slice(2), fail)
if (args.port === undefined) fail('--port is required')
const port = Number(args.port)

const seneca = require('seneca')({ log: 'warn' })

addDemoActions(seneca, (msg) => {
  const err = new Error(msg.why || 'failed on purpose')
  if (msg.statusCode) err.statusCode = msg.statusCode
  return err
}).listen({ type: 'http', port, ...(args.host ? { host: args.host } : {}) }, (err, details) => {
  if (err) fail(err.message)
  out({ ready: true, port: details.port })
})
closeOnSignal(seneca)
