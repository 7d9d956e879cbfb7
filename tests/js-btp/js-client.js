'use strict'
// An ilp-plugin-btp client, for interop tests against our server.
//
//   node js-client.js send  --server btp+ws://user:token@127.0.0.1:PORT --destination ADDR
//                           --condition HEX [--amount N] [--data HEX] [--expires-in-ms MS]
//       connect, learn our address by IL-DCP, send one Prepare, print the reply, exit 0.
//   node js-client.js serve --server URI [--fulfillment HEX]
//       connect, learn our address by IL-DCP, answer Prepares (see common.answerPrepare) until stdin
//       closes; each stdin line {"destination", "amount", "condition", "data"?} sends a Prepare.
//
// stdout: JSON lines {"event": "connected" | "ildcp" | "prepare" | "reply" | "error" | ...}.
const BtpPlugin = require('ilp-plugin-btp')
const ILDCP = require('ilp-protocol-ildcp')
const IlpPacket = require('ilp-packet')
const { parseArgs, emit, describeReply, describePrepare, buildPrepare, answerPrepare, readCommands } = require('./common')

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const mode = args._[0]
  if (!args.server || (mode !== 'send' && mode !== 'serve')) {
    throw new Error('usage: js-client.js send|serve --server btp+ws://user:token@host:port [...]')
  }
  const plugin = new BtpPlugin({ server: args.server, responseTimeout: Number(args['response-timeout-ms'] || 35000) })
  const fulfillment = args.fulfillment ? Buffer.from(args.fulfillment, 'hex') : null
  let ownAddress = 'unknown'
  plugin.registerDataHandler(async data => {
    const prepare = IlpPacket.deserializeIlpPrepare(data)
    emit(Object.assign({ event: 'prepare' }, describePrepare(prepare)))
    return answerPrepare(prepare, fulfillment, ownAddress)
  })
  plugin.on('disconnect', () => emit({ event: 'disconnect' }))
  await plugin.connect()
  emit({ event: 'connected' })
  const info = await ILDCP.fetch(plugin.sendData.bind(plugin))
  ownAddress = info.clientAddress
  emit({ event: 'ildcp', clientAddress: info.clientAddress, assetCode: info.assetCode, assetScale: info.assetScale })

  const send = async cmd => {
    const reply = await plugin.sendData(buildPrepare(cmd))
    emit(Object.assign({ event: 'reply', destination: cmd.destination }, describeReply(reply)))
  }

  if (mode === 'send') {
    await send({
      destination: args.destination,
      amount: args.amount,
      condition: args.condition,
      data: args.data,
      expiresInMs: args['expires-in-ms'] ? Number(args['expires-in-ms']) : undefined
    })
    await plugin.disconnect()
    process.exit(0)
  }
  emit({ event: 'ready', clientAddress: ownAddress })
  readCommands(send, async () => {
    await plugin.disconnect()
    process.exit(0)
  })
}

main().catch(e => {
  emit({ event: 'error', message: e.message })
  console.error(e)
  process.exit(1)
})
