#!/usr/bin/env node
// Node Seneca AMQP listener (seneca-amqp-transport) serving the math and salute actions,
// plus cmd:fail (replies an error with message `why`) for error tests.
// Usage: node amqp-listen.js --url amqp://guest:guest@127.0.0.1:5672 --pin 'role:math,cmd:*' [--pin ...] [--name QUEUE] [--nodelay true]
//          [--exchange NAME] [--dlx NAME] [--dlq NAME] [--quorum true] (see amqpOptions in common.js)
// stdout: {"ready":true,"queue":"...","bindings":[...]} once consuming; logs go to stderr.
// NB: seneca 3.38 acts incoming AMQP messages with fatal$:true, so the first action error
// (or act_not_found) makes this process exit with code 1 right after the error reply is sent.
'use strict'

const { amqpOptions, out, failer, parseArgs, addDemoActions, closeOnSignal } = require('./common')
const ListenerUtil = require('seneca-amqp-transport/lib/listener/listener-util')

const fail = failer('amqp-listen')
const args = parseArgs(process.argv.slice(2), fail)
if (args.url === undefined) fail('--url is required')
if (args.pin === undefined) fail('at least one --pin is required')
const pins = [].concat(args.pin)

const seneca = require('seneca')({ log: 'warn' })
seneca.use('seneca-amqp-transport')

const parsed = pins.map((p) => seneca.util.Jsonic(p))
const queue =
  args.name || ListenerUtil.resolveListenQueue(parsed, { prefix: 'seneca.add', separator: '.' })

addDemoActions(seneca).listen({ type: 'amqp', url: args.url, pin: pins, ...amqpOptions(args), ...(args.name ? { name: args.name } : {}), ...(args.nodelay === 'true' ? { socketOptions: { noDelay: true } } : {}) }, (err) => {
  if (err) fail(err.message)
  out({ ready: true, queue, bindings: ListenerUtil.resolveListenTopics(parsed) })
})
closeOnSignal(seneca)
