#!/usr/bin/env node
// Node Seneca AMQP client (seneca-amqp-transport): acts each message through RabbitMQ.
// Usage: node amqp-client.js --url amqp://guest:guest@127.0.0.1:5672 --pin 'cmd:*' [--pin ...] [--nodelay true]
//          [--exchange NAME] [--dlx NAME] [--dlq NAME] [--quorum true] (see amqpOptions in common.js)
//          --msgs '<JSON array>' [--concurrency N] [--timeout MS]
// Only messages matching a --pin are published (routing key built from that pin's keys, values
// taken from the message); anything else fails locally with act_not_found.
// stdout: one JSON line per message, in input order:
//   {"i":0,"ok":true,"result":{...}}  or  {"i":0,"ok":false,"error":{...,"remote":{...}}}
// Exits 0 once every message has an answer (errors included); non-zero on bad usage.
'use strict'

const { amqpOptions, failer, parseArgs, clientOptions, actAll } = require('./common')

const fail = failer('amqp-client')
const args = parseArgs(process.argv.slice(2), fail)
if (args.url === undefined) fail('--url is required')
if (args.pin === undefined) fail('at least one --pin is required')
const options = clientOptions(args, fail)
const { timeout } = options

// death_delay: an unreachable broker is fatal; exit (code 2) after 2 s instead of 11 s.
const seneca = require('seneca')({ log: 'warn', death_delay: 2000, ...(timeout ? { timeout } : {}) })
seneca.use('seneca-amqp-transport')
seneca.client({ type: 'amqp', url: args.url, pin: [].concat(args.pin), ...amqpOptions(args), ...(args.nodelay === 'true' ? { socketOptions: { noDelay: true } } : {}) })
actAll(seneca, options)
