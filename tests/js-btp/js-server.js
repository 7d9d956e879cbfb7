'use strict'
// An ilp-plugin-mini-accounts server, for interop tests of our client.
//
//   node js-server.js --port PORT [--address test.js] [--fulfillment HEX]
//
// It answers IL-DCP with `<address>.<account>` (asset BTC, scale 0); accounts come from
// auth_username (else the token's hash) and their tokens are kept in an in-memory store, so a
// reconnect with another token is refused. Incoming Prepares are answered by common.answerPrepare:
// Fulfill with --fulfillment (Reject F99 if none, or if the destination's last segment is "reject").
// Each stdin line {"destination", "amount", "condition", "data"?} sends a Prepare to a client
// (the destination picks it). Stops when stdin closes.
//
// stdout: JSON lines {"event": "listening" | "prepare" | "reply" | "error"}.
const MiniAccounts = require('ilp-plugin-mini-accounts')
const IlpPacket = require('ilp-packet')
const { parseArgs, emit, describeReply, describePrepare, buildPrepare, answerPrepare, readCommands } = require('./common')

// The store interface mini-accounts expects ({get, put, del}, promise-returning).
function memoryStore () {
  const map = new Map()
  return {
    get: async k => map.get(k),
    put: async (k, v) => { map.set(k, v) },
    del: async k => { map.delete(k) }
  }
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const port = Number(args.port)
  if (!port) throw new Error('usage: js-server.js --port PORT [--address ADDR] [--fulfillment HEX]')
  const address = args.address || 'test.js'
  const fulfillment = args.fulfillment ? Buffer.from(args.fulfillment, 'hex') : null
  const plugin = new MiniAccounts({
    port,
    debugHostIldcpInfo: { clientAddress: address, assetScale: 0, assetCode: 'BTC' },
    _store: memoryStore()
  })
  plugin.registerDataHandler(async data => {
    const prepare = IlpPacket.deserializeIlpPrepare(data)
    emit(Object.assign({ event: 'prepare' }, describePrepare(prepare)))
    return answerPrepare(prepare, fulfillment, address)
  })
  await plugin.connect()
  emit({ event: 'listening', port, address })
  readCommands(async cmd => {
    const reply = await plugin.sendData(buildPrepare(cmd))
    emit(Object.assign({ event: 'reply', destination: cmd.destination }, describeReply(reply)))
  }, async () => {
    await plugin.disconnect()
    process.exit(0)
  })
}

main().catch(e => {
  emit({ event: 'error', message: e.message })
  console.error(e)
  process.exit(1)
})
