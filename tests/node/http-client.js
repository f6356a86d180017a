#!/usr/bin/env node
// Node Seneca HTTP client (seneca-transport): acts each message against a remote listener.
// Usage: node http-client.js --port P [--host H] --msgs '<JSON array>' [--concurrency N] [--timeout MS]
// stdout: one JSON line per message, in input order:
//   {"i":0,"ok":true,"result":{...}}  or  {"i":0,"ok":false,"error":{...,"remote":{...}}}
// Exits 0 once every message has an answer (errors included); non-zero on bad usage.
'use strict'

const { failer, parseArgs, clientOptions, actAll } = require('./common')

const fail = failer('http-client')
const args = parseArgs(process.argv.slice(2), fail)
if (args.port === undefined) fail('--port is required')
const options = clientOptions(args, fail)
const { timeout } = options

const seneca = require('seneca')({ log: 'warn', ...(timeout ? { timeout } : {}) })
seneca.client({
  type: 'http',
  host: args.host || '127.0.0.1',
  port: Number(args.port),
  ...(timeout ? { timeout } : {}),
})
actAll(seneca, options)
