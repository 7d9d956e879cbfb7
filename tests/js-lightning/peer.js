'use strict'
// The unmodified npm ilp-plugin-lightning (1.0.0-beta.25), as a client of a hub or as a server,
// settling over a simulated LND node; run by tests/js_lightning_interop.rs.
//
//   node peer.js --role client --server btp+ws://NAME:TOKEN@HOST:PORT --lnd DIR [--credentials buffer|base64]
//   node peer.js --role server --port PORT --address ILP_ADDRESS --lnd DIR [--credentials buffer|base64]
//
// DIR is a simulated node's folder (`ilp-lightning sim` or SimNode::write_files): tls.cert,
// admin.macaroon, node.json. The plugin gets them as its README says (cert and macaroon as
// Buffers, or base64 strings, and hostname/grpcPort) and builds its own gRPC client, invoice
// stream and bidirectional SendPayment stream from them.
//
// Incoming Prepares follow the tests' convention: fulfilled when sha256(data) is the condition
// (the data is the fulfillment), F05 otherwise. The server answers its own IL-DCP request
// (`peer.config`, which mini-accounts sends through the data handler on connect) with
// --address.
//
// The script observes the plugin without changing it: through its public options (a logger,
// a store, the money and data handlers) and by reading, never writing, its accounts' balances
// and cached invoices.
//
// stdout: one JSON object a line, with an "event" key:
//   ready {role, pubkey, port?}        connected (client) or listening (server)
//   log {level, message}               every log line of the plugin except trace
//   peered {pubkey}                    it linked a peer's node key ("Successfully peered with")
//   settled {pubkey, amount}           it paid a peer ("Successfully settled with ... for N satoshis")
//   settleFailed {message}             a payment of its failed ("Failed to settle")
//   paymentReceived {amount}           it credited a payment ("Received incoming payment for")
//   money {amount, total}              its money handler was called
//   balance {account, key, value}      a balance it stored changed (payableBalance, receivableBalance, payoutAmount)
//   prepare {destination, amount, ...} its data handler got a Prepare
//   reply {id, type, code?, ...}       the answer to a Prepare it sent
//   status {accounts, moneyTotal}      answer to the status command
//   moneySent {id, amount}             plugin.sendMoney returned (see settled / settleFailed for how it went)
//   ildcp {clientAddress, ...}         answer to the ildcp command (client)
//   invoices {id, account, count}      the account holds `count` invoices of its peer's (waitInvoices)
//   error {message}
// stdin: one JSON command a line:
//   {"cmd": "sendMoney", "id", "amount"}                      client: once it holds an invoice of the peer's
//   {"cmd": "send", "id", "destination", "amount", "fulfillment" (hex)}
//   {"cmd": "waitInvoices", "id", "account", "count"}      answers once the account holds that many
//   {"cmd": "status"}
//   {"cmd": "ildcp"}
// Closing stdin disconnects the plugin and ends the process. JS_TRACE=1 in the environment
// prints the plugin's trace lines (every BTP packet) on stderr.
const crypto = require('crypto')
const fs = require('fs')
const path = require('path')
const readline = require('readline')
const util = require('util')
const IlpPacket = require('ilp-packet')
const ILDCP = require('ilp-protocol-ildcp')
const LightningPlugin = require('ilp-plugin-lightning').default

function parseArgs (argv) {
  const args = {}
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error('bad argument ' + argv[i])
    args[argv[i].slice(2)] = argv[i + 1]
  }
  return args
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const sha256 = b => crypto.createHash('sha256').update(b).digest()

// The plugin's options for the node in `dir`, in the form its README documents.
function lndOptions (dir, credentials) {
  const node = JSON.parse(fs.readFileSync(path.join(dir, 'node.json'), 'utf8'))
  const [hostname, port] = node.grpc.split(':')
  let tlsCert = fs.readFileSync(path.join(dir, 'tls.cert'))
  let macaroon = fs.readFileSync(path.join(dir, 'admin.macaroon'))
  if (credentials === 'base64') {
    tlsCert = tlsCert.toString('base64')
    macaroon = macaroon.toString('base64')
  }
  return { lnd: { tlsCert, macaroon, hostname, grpcPort: Number(port) }, pubkey: node.pubkey }
}

// The lines of the plugin's log the tests wait for, as events of their own.
const LOG_EVENTS = [
  [/^Successfully peered with (\S+)/, m => ({ event: 'peered', pubkey: m[1] })],
  [/^Successfully settled with (\S+) for (\d+) satoshis/, m => ({ event: 'settled', pubkey: m[1], amount: m[2] })],
  [/^Failed to settle/, (m, message) => ({ event: 'settleFailed', message })],
  [/^Received incoming payment for (\d+) satoshis/, m => ({ event: 'paymentReceived', amount: m[1] })]
]

function logger () {
  const line = level => (...args) => {
    const message = util.format(...args)
    emit({ event: 'log', level, message })
    for (const [pattern, toEvent] of LOG_EVENTS) {
      const m = pattern.exec(message)
      if (m) emit(toEvent(m, message))
    }
  }
  return {
    info: line('info'),
    warn: line('warn'),
    error: line('error'),
    debug: line('debug'),
    trace: process.env.JS_TRACE ? (...a) => console.error('TRACE', util.format(...a)) : () => {}
  }
}

const BALANCE_KEYS = ['payableBalance', 'receivableBalance', 'payoutAmount']

// The key-value store the plugin keeps its balances in (its `store` option), telling us of
// every balance that changes; `onPut` runs after each write.
function observedStore (onPut) {
  const map = new Map()
  return {
    async get (k) { return map.get(k) },
    async put (k, v) {
      const before = map.get(k)
      map.set(k, v)
      const sep = k.lastIndexOf(':')
      const key = k.slice(sep + 1)
      if (sep > 0 && BALANCE_KEYS.includes(key) && before !== v) {
        emit({ event: 'balance', account: k.slice(0, sep), key, value: String(v) })
      }
      onPut()
    },
    async del (k) { map.delete(k) }
  }
}

function answerPrepare (prepare, ownAddress) {
  if (sha256(prepare.data).equals(prepare.executionCondition)) {
    return IlpPacket.serializeIlpFulfill({ fulfillment: prepare.data, data: Buffer.alloc(0) })
  }
  return IlpPacket.serializeIlpReject({
    code: 'F05',
    triggeredBy: ownAddress || '',
    message: 'data is not the fulfillment of the condition',
    data: Buffer.alloc(0)
  })
}

function describeReply (buf) {
  if (!buf || buf.length === 0) return { type: 'empty' }
  const parsed = IlpPacket.deserializeIlpPacket(buf)
  if (parsed.type === IlpPacket.Type.TYPE_ILP_FULFILL) {
    return { type: 'fulfill', fulfillment: parsed.data.fulfillment.toString('hex') }
  }
  if (parsed.type === IlpPacket.Type.TYPE_ILP_REJECT) {
    return { type: 'reject', code: parsed.data.code, message: parsed.data.message, triggeredBy: parsed.data.triggeredBy }
  }
  return { type: 'unexpected', packetType: parsed.type }
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const role = args.role
  if (role !== 'client' && role !== 'server') throw new Error('--role client|server')
  if (!args.lnd) throw new Error('--lnd DIR is required')
  const { lnd, pubkey } = lndOptions(args.lnd, args.credentials || 'buffer')

  // Things waiting for the plugin's state to change (checked after every store write, which
  // follows every balance change and every invoice the plugin accepts).
  let waiters = []
  const recheck = () => {
    waiters = waiters.filter(w => !w())
  }
  const store = observedStore(() => setImmediate(recheck))

  const options = { role, lnd }
  let ownAddress = args.address
  if (role === 'client') {
    if (!args.server) throw new Error('--server URI is required')
    options.server = args.server
  } else {
    if (!args.port || !args.address) throw new Error('--port and --address are required')
    options.port = Number(args.port)
  }
  const plugin = new LightningPlugin(options, { log: logger(), store })

  let moneyTotal = 0n
  plugin.registerMoneyHandler(async amount => {
    moneyTotal += BigInt(amount)
    emit({ event: 'money', amount: String(amount), total: String(moneyTotal) })
  })
  plugin.registerDataHandler(async data => {
    const prepare = IlpPacket.deserializeIlpPrepare(data)
    if (prepare.destination === 'peer.config' && role === 'server') {
      // mini-accounts asks for its own address through the data handler, as of a parent.
      return ILDCP.serve({
        requestPacket: data,
        handler: async () => ({ clientAddress: args.address, assetScale: 0, assetCode: 'BTC' }),
        serverAddress: 'test'
      })
    }
    emit({
      event: 'prepare',
      destination: prepare.destination,
      amount: prepare.amount,
      condition: prepare.executionCondition.toString('hex')
    })
    return answerPrepare(prepare, ownAddress)
  })

  const accountState = account => ({
    payable: account.payableBalance$.value.toString(),
    receivable: account.receivableBalance$.value.toString(),
    payout: account.payoutAmount$.value.toString(),
    invoices: account.incomingInvoices.length
  })
  const status = () => {
    const accounts = {}
    for (const [name, account] of plugin._accounts) accounts[name] = accountState(account)
    return { event: 'status', accounts, moneyTotal: String(moneyTotal) }
  }
  // Resolves once `name`'s account holds `count` invoices of its peer's to pay with.
  const invoicesHeld = (name, count) => new Promise(resolve => {
    const held = () => {
      const account = plugin._accounts.get(name)
      if (account && account.incomingInvoices.length >= count) {
        resolve(account.incomingInvoices.length)
        return true
      }
      return false
    }
    if (!held()) waiters.push(held)
  })

  await plugin.connect()
  emit(Object.assign({ event: 'ready', role, pubkey }, role === 'server' ? { port: options.port } : {}))

  const commands = {
    async sendMoney (cmd) {
      if (role !== 'client') throw new Error('sendMoney: the server plugin settles by itself')
      await invoicesHeld('peer', 1)
      await plugin.sendMoney(String(cmd.amount))
      emit({ event: 'moneySent', id: cmd.id, amount: String(cmd.amount) })
    },
    async send (cmd) {
      const fulfillment = Buffer.from(cmd.fulfillment, 'hex')
      const prepare = IlpPacket.serializeIlpPrepare({
        destination: cmd.destination,
        amount: String(cmd.amount),
        executionCondition: sha256(fulfillment),
        expiresAt: new Date(Date.now() + 30000),
        data: fulfillment
      })
      const reply = await plugin.sendData(prepare)
      emit(Object.assign({ event: 'reply', id: cmd.id, destination: cmd.destination }, describeReply(reply)))
    },
    async waitInvoices (cmd) {
      const count = await invoicesHeld(cmd.account, cmd.count)
      emit({ event: 'invoices', id: cmd.id, account: cmd.account, count })
    },
    async status () {
      emit(status())
    },
    async ildcp () {
      const info = await ILDCP.fetch(data => plugin.sendData(data))
      ownAddress = info.clientAddress
      emit(Object.assign({ event: 'ildcp' }, info))
    }
  }

  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', line => {
    if (!line.trim()) return
    let cmd
    try {
      cmd = JSON.parse(line)
    } catch (e) {
      emit({ event: 'error', message: 'bad command: ' + e.message })
      return
    }
    const run = commands[cmd.cmd]
    if (!run) {
      emit({ event: 'error', message: 'unknown command ' + cmd.cmd })
      return
    }
    run(cmd).catch(e => emit({ event: 'error', id: cmd.id, message: `${cmd.cmd}: ${e.message}` }))
  })
  rl.on('close', async () => {
    await plugin.disconnect().catch(() => {})
    process.exit(0)
  })
}

main().catch(e => {
  emit({ event: 'error', message: e.message })
  console.error(e)
  process.exit(1)
})
