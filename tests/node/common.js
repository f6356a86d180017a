// Shared by the Node peers in this folder: JSON lines on stdout, argument parsing, the demo
// actions the listeners serve, and the client driver that acts a list of messages.
'use strict'

const Stream = require('stream')

// Library chatter goes to stderr; stdout carries only our JSON lines.
console.log = console.error

/** Writes one JSON line to stdout. */
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

/** A `fail(why)` for the script `name`: prints why and exits 1. */
const failer = (name) => (why) => {
  console.error(`${name}:`, why)
  process.exit(1)
}

/** `--key value` pairs; a repeated key becomes an array. */
function parseArgs(argv, fail) {
  const args = {}
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) fail(`bad argument ${argv[i]}`)
    const key = argv[i].slice(2)
    args[key] = key in args ? [].concat(args[key], argv[i + 1]) : argv[i + 1]
  }
  return args
}

/** The math and salute actions, plus `cmd:fail` (an error with message `why`). */
function addDemoActions(seneca, failWith = (msg) => new Error(msg.why || 'failed on purpose')) {
  return seneca
    .add('role:math,cmd:sum', (msg, reply) => reply({ answer: msg.left + msg.right }))
    .add('role:math,cmd:product', (msg, reply) => reply({ answer: msg.left * msg.right }))
    .add('cmd:salute', (msg, reply) => reply({ message: `Hello ${msg.name} from Node!` }))
    .add('cmd:fail', (msg, reply) => reply(failWith(msg)))
}

/** Closes seneca and exits 0 on SIGTERM or SIGINT. */
function closeOnSignal(seneca) {
  const stop = () => seneca.close(() => process.exit(0))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

// JSON-safe copy: errors keep their own enumerable fields plus name and message;
// cycles, streams (e.g. the raw IncomingMessage) and functions are cut.
function plain(v, seen = new Set()) {
  if (typeof v === 'function' || typeof v === 'symbol') return undefined
  if (typeof v === 'bigint') return String(v)
  if (v === null || typeof v !== 'object') return v
  if (Buffer.isBuffer(v)) return v.toString('utf8')
  if (v instanceof Stream) return `[${v.constructor.name}]`
  if (seen.has(v)) return '[Circular]'
  seen.add(v)
  let copy
  if (Array.isArray(v)) copy = v.map((x) => plain(x, seen) ?? null)
  else {
    copy = v instanceof Error ? { name: v.name, message: v.message } : {}
    for (const k of Object.keys(v)) {
      const x = plain(v[k], seen)
      if (x !== undefined) copy[k] = x
    }
  }
  seen.delete(v)
  return copy
}

// Where the remote listener's error ends up, surfaced as error.remote:
// - HTTP status >= 400: Wreck throws a Boom error without `seneca:true`, so seneca wraps it as
//   act_execute "Response Error: 500 ..."; the listener's JSON body is at err.orig.data.payload.
// - AMQP (and HTTP statuses 201..399): seneca-transport copies the reply's `error` field by
//   field (own `name` included) onto a new Error. Without `seneca:true` seneca wraps it as
//   act_execute (remote = err.orig); with it (e.g. act_not_found) it is passed through
//   unwrapped (remote = err itself).
// Local errors (act_not_found with no matching pin, action_timeout) have no remote part.
function remoteOf(err) {
  const own = (e) => e && Object.prototype.hasOwnProperty.call(e, 'name')
  const payload = err.orig?.data?.payload
  if (payload != null) return plain(payload)
  if (own(err.orig)) return plain(err.orig)
  if (own(err)) return plain(err)
  return undefined
}

/**
 * The client scripts' common options: `--msgs`, `--concurrency`, `--timeout`; and for a long
 * run, `--each N` (the messages are `N` copies of the first, with `%i` in its string values
 * replaced by the copy's number), `--rate R` (at most `R` messages started per second) and
 * `--stop-file PATH` (no message is started once PATH exists; those started are waited for).
 */
function clientOptions(args, fail) {
  if (args.msgs === undefined) fail('--msgs is required')
  let msgs
  try {
    msgs = JSON.parse(args.msgs)
  } catch (e) {
    fail(`--msgs is not JSON: ${e.message}`)
  }
  if (!Array.isArray(msgs)) fail('--msgs must be a JSON array')
  if (args.each !== undefined) {
    const template = JSON.stringify(msgs[0])
    msgs = Array.from({ length: Number(args.each) }, (_, i) =>
      JSON.parse(template.split('%i').join(String(i))),
    )
  }
  return {
    msgs,
    concurrency: Math.max(1, Number(args.concurrency || 1)),
    timeout: args.timeout === undefined ? undefined : Number(args.timeout),
    rate: args.rate === undefined ? undefined : Number(args.rate),
    stopFile: args['stop-file'],
  }
}

/**
 * The seneca-amqp-transport options for `--exchange NAME`, `--dlx NAME`, `--dlq NAME` and
 * `--quorum true`. With `--quorum`, the command queue (a listener's) and the dead-letter queue
 * (which clients and listeners both declare) are declared as quorum queues, with the arguments
 * wasmeca gives them under `[amqp] queue_type = "quorum"`, so both can share them.
 */
function amqpOptions(args) {
  const options = {}
  if (args.exchange) options.exchange = { name: args.exchange }
  const dl = {}
  if (args.dlx) dl.exchange = { name: args.dlx }
  if (args.dlq || args.quorum === 'true') dl.queue = { name: args.dlq || 'seneca.dlq' }
  if (args.quorum === 'true') {
    dl.queue.options = { durable: true, arguments: { 'x-queue-type': 'quorum' } }
    options.listener = {
      queues: {
        options: {
          durable: true,
          arguments: {
            'x-dead-letter-exchange': args.dlx || 'seneca.dlx',
            'x-message-ttl': 60000,
            'x-queue-type': 'quorum',
          },
        },
      },
    }
  } else if (args.dlx) {
    options.listener = {
      queues: {
        options: {
          durable: true,
          arguments: { 'x-dead-letter-exchange': args.dlx, 'x-message-ttl': 60000 },
        },
      },
    }
  }
  if (args.dlx) {
    options.client = {
      queues: {
        options: {
          autoDelete: true,
          exclusive: true,
          arguments: { 'x-dead-letter-exchange': args.dlx, 'x-message-ttl': 10000 },
        },
      },
    }
  }
  if (Object.keys(dl).length) options.deadLetter = dl
  return options
}

/**
 * Once seneca is ready, acts every message with `concurrency` in flight, prints one line per
 * message in input order (`{"i":0,"ok":true,"result":{...},"ms":3}` or
 * `{"i":0,"ok":false,"error":{...,"remote":{...}},"ms":30000}`), and exits 0.
 */
function actAll(seneca, { msgs, concurrency, rate, stopFile }) {
  const lines = new Array(msgs.length)
  let printed = 0
  let begun = 0
  const settle = (i, line) => {
    lines[i] = line
    while (printed < lines.length && lines[printed]) out(lines[printed++])
  }
  const stopped = () => stopFile !== undefined && require('fs').existsSync(stopFile)
  const actOne = (i) =>
    new Promise((resolve) => {
      const sent = Date.now()
      seneca.act(msgs[i], (err, result) => {
        const ms = Date.now() - sent
        if (err) {
          const error = plain(err)
          const remote = remoteOf(err)
          if (remote !== undefined) error.remote = remote
          settle(i, { i, ok: false, error, ms, at: sent })
        } else settle(i, { i, ok: true, result: plain(result) ?? null, ms, at: sent })
        resolve()
      })
    })
  seneca.ready(async () => {
    let next = 0
    const started = Date.now()
    const worker = async () => {
      while (next < msgs.length && !stopped()) {
        const i = next++
        begun = next
        const due = rate ? started + (i * 1000) / rate : 0
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()))
        await actOne(i)
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, msgs.length) }, worker))
    // Stopped early: what was never started is not printed.
    lines.length = begun
    while (printed < lines.length && lines[printed]) out(lines[printed++])
    process.exit(0)
  })
}

module.exports = {
  amqpOptions,
  out,
  failer,
  parseArgs,
  addDemoActions,
  closeOnSignal,
  clientOptions,
  actAll,
}
