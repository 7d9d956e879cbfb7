// An LND client written in JavaScript (@grpc/grpc-js + @grpc/proto-loader on our proto/ files,
// bolt11 for decoding) run against the simulator: proves that lnd::sim speaks LND's API to a
// client that shares no code with ours.
//
// Usage: node interop.js <payee dir> <payer dir>
// Each dir holds tls.cert (PEM), admin.macaroon (binary) and node.json
// ({"pubkey": "<hex>", "grpc": "127.0.0.1:<port>"}). Exits 0 when every check passes; prints
// one line per check.
'use strict';

process.env.GRPC_SSL_CIPHER_SUITES = process.env.GRPC_SSL_CIPHER_SUITES || 'HIGH+ECDSA';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const bolt11 = require('bolt11');

const PROTO_DIR = path.join(__dirname, '..', '..', 'proto');
const DEADLINE_MS = 20000;

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
  console.log(`ok: ${message}`);
}

function loadProtos() {
  const options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
    includeDirs: [PROTO_DIR] };
  const definition = protoLoader.loadSync(
    ['lightning.proto', 'routerrpc/router.proto', 'invoicesrpc/invoices.proto'], options);
  return grpc.loadPackageDefinition(definition);
}

function connect(proto, dir) {
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'node.json'), 'utf8'));
  const cert = fs.readFileSync(path.join(dir, 'tls.cert'));
  const macaroon = fs.readFileSync(path.join(dir, 'admin.macaroon')).toString('hex');
  const port = info.grpc.split(':').pop();
  // The certificate names localhost; dial that name so the host check passes.
  const target = `localhost:${port}`;
  const macaroonCreds = grpc.credentials.createFromMetadataGenerator((_args, callback) => {
    const metadata = new grpc.Metadata();
    metadata.add('macaroon', macaroon);
    callback(null, metadata);
  });
  const creds = grpc.credentials.combineChannelCredentials(
    grpc.credentials.createSsl(cert), macaroonCreds);
  return {
    pubkey: info.pubkey,
    lightning: new proto.lnrpc.Lightning(target, creds),
    router: new proto.routerrpc.Router(target, creds),
  };
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, response) => {
      if (err) reject(new Error(`${method}: ${err.code} ${err.details}`));
      else resolve(response);
    });
  });
}

async function main() {
  const [payeeDir, payerDir] = process.argv.slice(2);
  if (!payeeDir || !payerDir) fail('usage: node interop.js <payee dir> <payer dir>');
  const proto = loadProtos();
  const payee = connect(proto, payeeDir);
  const payer = connect(proto, payerDir);

  // Identity.
  const info = await unary(payee.lightning, 'GetInfo', {});
  check(info.identity_pubkey === payee.pubkey, `GetInfo identity_pubkey is ${payee.pubkey}`);
  check(info.chains.length > 0 && info.chains[0].network === 'regtest',
    'GetInfo reports network regtest');

  // Subscribe before creating the invoice, so that its add and settle both arrive live.
  const events = [];
  let onEvent = () => {};
  const stream = payee.lightning.SubscribeInvoices({});
  stream.on('data', (invoice) => { events.push(invoice); onEvent(); });
  stream.on('error', (err) => {
    if (err.code !== grpc.status.CANCELLED) fail(`SubscribeInvoices: ${err.code} ${err.details}`);
  });
  // SubscribeInvoices without indexes only delivers events that happen after the server has
  // registered it: make marker invoices until one shows up on the stream.
  const registered = await new Promise((resolve) => {
    const giveUp = Date.now() + DEADLINE_MS;
    const markers = new Set();
    let done = false;
    const finish = (ok) => { done = true; resolve(ok); };
    onEvent = () => {
      if (events.some((e) => markers.has(Buffer.from(e.r_hash).toString('hex')))) finish(true);
    };
    const makeMarker = async () => {
      if (done) return;
      if (Date.now() > giveUp) return finish(false);
      const marker = await unary(payee.lightning, 'AddInvoice', { memo: 'marker', expiry: 60 });
      markers.add(Buffer.from(marker.r_hash).toString('hex'));
      onEvent();
      if (!done) setTimeout(makeMarker, 250);
    };
    makeMarker().catch((err) => fail(err.message));
  });
  check(registered, 'SubscribeInvoices streams live add events');
  onEvent = () => {};

  // Invoice, decoded independently.
  const memo = 'js interop';
  const added = await unary(payee.lightning, 'AddInvoice', { memo, expiry: 600 });
  const hashHex = Buffer.from(added.r_hash).toString('hex');
  check(hashHex.length === 64, 'AddInvoice returns a 32-byte r_hash');
  const decoded = bolt11.decode(added.payment_request);
  check(decoded.payeeNodeKey === payee.pubkey, 'bolt11 payee is the node pubkey');
  check(decoded.network && decoded.network.bech32 === 'bcrt', 'bolt11 network is regtest (bcrt)');
  check(decoded.tagsObject.payment_hash === hashHex, 'bolt11 payment_hash matches r_hash');
  check(decoded.millisatoshis === null || decoded.millisatoshis === undefined,
    'the invoice is zero-amount');
  check(decoded.tagsObject.description === memo, 'bolt11 description is the memo');

  // Payment from the other node over SendPaymentV2.
  const amountMsat = 21000;
  const payment = await new Promise((resolve, reject) => {
    let last = null;
    const call = payer.router.SendPaymentV2({
      payment_request: added.payment_request,
      amt_msat: String(amountMsat),
      fee_limit_msat: '100000',
      timeout_seconds: 30,
    }, { deadline: deadline() });
    call.on('data', (update) => { last = update; });
    call.on('error', (err) => reject(new Error(`SendPaymentV2: ${err.code} ${err.details}`)));
    call.on('end', () => resolve(last));
  });
  check(payment !== null && payment.status === 'SUCCEEDED',
    `SendPaymentV2 ends SUCCEEDED (got ${payment && payment.status})`);
  const preimage = Buffer.from(payment.payment_preimage, 'hex');
  check(crypto.createHash('sha256').update(preimage).digest('hex') === hashHex,
    'sha256(preimage) is the payment hash');

  // The settle event on the payee's stream.
  const settled = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), DEADLINE_MS);
    const look = () => {
      const hit = events.find((e) => e.state === 'SETTLED'
        && Buffer.from(e.r_hash).toString('hex') === hashHex);
      if (hit) { clearTimeout(timer); resolve(hit); }
    };
    onEvent = look;
    look();
  });
  check(settled !== null, 'SubscribeInvoices delivers the settle event');
  check(String(settled.amt_paid_msat) === String(amountMsat),
    `the settled invoice shows amt_paid_msat ${amountMsat}`);
  check(events.some((e) => e.state === 'OPEN' && Buffer.from(e.r_hash).toString('hex') === hashHex),
    'SubscribeInvoices delivered the add event first');
  stream.cancel();
  payee.lightning.close();
  payee.router.close();
  payer.lightning.close();
  payer.router.close();
  console.log('js interop: all checks passed');
}

main().catch((err) => fail(err.stack || String(err)));
