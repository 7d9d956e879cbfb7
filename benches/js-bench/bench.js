// Anchor: the reference ilp-plugin-lightning pair (server + client) on loopback,
// with an in-memory Lightning stand-in, so only the plugin/BTP path is measured.
// Usage: node bench.js [packets] [concurrency]
const { EventEmitter } = require('events')
const crypto = require('crypto')
const IlpPacket = require('ilp-packet')
const ILDCP = require('ilp-protocol-ildcp')
const LightningPlugin = require('ilp-plugin-lightning').default

const N = parseInt(process.argv[2] || '20000')
const CONC = parseInt(process.argv[3] || '1')
const PORT = 17000 + Math.floor(Math.random() * 1000)
const sha256 = b => crypto.createHash('sha256').update(b).digest()

const invoices = new Map()
function node () {
  const pubkey = '02' + crypto.randomBytes(32).toString('hex')
  const invoiceStream = new EventEmitter()
  const paymentStream = new EventEmitter()
  const self = { pubkey, invoiceStream, paymentStream, paid: 0 }
  paymentStream.write = req => {
    const inv = invoices.get(req.paymentRequest)
    setImmediate(() => {
      if (!inv || inv.paid) return paymentStream.emit('data', { paymentHash: inv && Buffer.from(inv.hash, 'hex'), paymentError: 'invoice unknown or paid' })
      inv.paid = true; self.paid += req.amt
      inv.node.invoiceStream.emit('data', { paymentRequest: req.paymentRequest, amtPaidSat: req.amt, settled: true })
      paymentStream.emit('data', { paymentHash: Buffer.from(inv.hash, 'hex') })
    })
    return true
  }
  self.lnd = {
    getInfo: async () => ({ identityPubkey: pubkey }),
    addInvoice: async () => {
      const hash = sha256(crypto.randomBytes(32)).toString('hex')
      const pr = 'lnsim' + hash
      invoices.set(pr, { node: self, hash, paid: false })
      return { paymentRequest: pr }
    },
    decodePayReq: async ({ payReq }) => {
      const inv = invoices.get(payReq)
      return { numSatoshis: 0, destination: inv.node.pubkey, timestamp: Math.floor(Date.now() / 1000), paymentHash: inv.hash, expiry: 3600 }
    }
  }
  return self
}

async function main () {
  const a = node(); const b = node()
  const server = new LightningPlugin({ role: 'server', lnd: a.lnd, paymentStream: a.paymentStream, invoiceStream: a.invoiceStream, port: PORT, debugHostIldcpInfo: { clientAddress: 'test.server', assetScale: 0, assetCode: 'BTC' } })
  const fulfillment = crypto.randomBytes(32)
  const condition = sha256(fulfillment)
  server.registerDataHandler(async data => IlpPacket.serializeIlpFulfill({ fulfillment, data: Buffer.alloc(0) }))
  server.registerMoneyHandler(async () => {})
  await server.connect()
  const client = new LightningPlugin({ role: 'client', lnd: b.lnd, paymentStream: b.paymentStream, invoiceStream: b.invoiceStream, server: `btp+ws://alice:secret@localhost:${PORT}` })
  client.registerDataHandler(async () => { throw new Error('no') })
  client.registerMoneyHandler(async () => {})
  await client.connect()
  await new Promise(r => setTimeout(r, 500)) // invoices exchanged
  await client.sendMoney(1e12) // prefund
  await new Promise(r => setTimeout(r, 200))
  const prepare = IlpPacket.serializeIlpPrepare({ amount: '1', executionCondition: condition, expiresAt: new Date(Date.now() + 600000), destination: 'test.server.alice.x', data: Buffer.alloc(0) })
  const lat = []
  let sent = 0; let ok = 0
  const t0 = process.hrtime.bigint()
  const cpu0 = process.cpuUsage() // this process's user+system CPU time, measured over the packets only
  async function worker () {
    while (sent < N) {
      sent++
      const s = process.hrtime.bigint()
      const reply = await client.sendData(prepare)
      lat.push(Number(process.hrtime.bigint() - s) / 1e3)
      if (reply[0] === IlpPacket.Type.TYPE_ILP_FULFILL) ok++
    }
  }
  await Promise.all(Array.from({ length: CONC }, worker))
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  const cpu = process.cpuUsage(cpu0)
  lat.sort((x, y) => x - y)
  const pct = p => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))].toFixed(0)
  console.log(JSON.stringify({ impl: 'js-ilp-plugin-lightning', packets: N, concurrency: CONC, fulfilled: ok, seconds: +secs.toFixed(3), packets_per_s: Math.round(N / secs), p50_us: +pct(0.5), p99_us: +pct(0.99), cpu_us_per_packet: +((cpu.user + cpu.system) / N).toFixed(1), settled_sat_to_server: b.paid, rss_mb: Math.round(process.memoryUsage().rss / 1e6) }))
  await client.disconnect(); await server.disconnect()
  process.exit(0)
}
main().catch(e => { console.error(e); process.exit(1) })
