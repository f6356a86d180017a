// A plain amqplib publisher of wasmeca events, as the README's wire format tells one to write
// it (no Seneca, no wasmeca code): each event a persistent JSON object on the events exchange,
// routed by its pairs. Prints {"published": n} once the broker confirmed them all.
//
//   node event-publish.js --url amqp://... --exchange wasmeca.events --event '{"evt":"x"}' [--event ...]
'use strict'

const amqp = require('amqplib')
const { out, failer, parseArgs } = require('./common')

const fail = failer('event-publish')
const args = parseArgs(process.argv.slice(2), fail)
const events = [].concat(args.event || []).map((e) => JSON.parse(e))

/** The routing key: every pair but meta keys (ending in `$`), sorted by key, as `key.value`,
 *  dots in keys and values written `[:dot:]`. */
function routingKey(event) {
  const word = (s) => String(s).split('.').join('[:dot:]')
  const key = Object.keys(event)
    .filter((k) => !k.endsWith('$'))
    .sort()
    .map((k) => `${word(k)}.${word(event[k])}`)
    .join('.')
  return key.length > 255 ? '[:overflow:]' : key
}

async function main() {
  const conn = await amqp.connect(args.url)
  const channel = await conn.createConfirmChannel()
  await channel.assertExchange(args.exchange, 'topic', { durable: true })
  for (const [i, event] of events.entries()) {
    const body = Buffer.from(JSON.stringify(event))
    channel.publish(args.exchange, routingKey(event), body, {
      persistent: true,
      contentType: 'application/json',
      messageId: `node-${i}`,
    })
  }
  await channel.waitForConfirms()
  out({ published: events.length })
  await conn.close()
}

main().catch(fail)
