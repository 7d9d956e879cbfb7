// An LND client written in JavaScript (@grpc/grpc-js + @grpc/proto-loader on our proto/ files,
// bolt11 for decoding) run against `ilp-lightning sim`: proves that lnd::sim speaks LND's API to
// a client that shares no code with ours.
//
// Usage: node interop.js <payee dir> <payer dir>
// Each dir holds tls.cert (PEM), admin.macaroon (binary) and node.json
// ({"pubkey": "<hex>", "grpc": "127.0.0.1:<port>"}). Exits 0 when every check passes; prints
// one line per check.
'use strict';

const bolt11 = require('bolt11');
const lnd = require('./lnd');

const { check, fail, unary, hex } = lnd;

async function main() {
  lnd.overallDeadline(100000);
  const [payeeDir, payerDir] = process.argv.slice(2);
  if (!payeeDir || !payerDir) fail('usage: node interop.js <payee dir> <payer dir>');
  const proto = lnd.loadProtos();
  const payee = lnd.connect(proto, payeeDir);
  const payer = lnd.connect(proto, payerDir);

  // Identity.
  const info = await unary(payee.lightning, 'GetInfo', {});
  check(info.identity_pubkey === payee.pubkey, `GetInfo identity_pubkey is ${payee.pubkey}`);
  check(info.chains.length > 0 && info.chains[0].network === 'regtest',
    'GetInfo reports network regtest');

  // Subscribe from the add index of a first invoice: the backlog brings the second back, which
  // proves the subscription is registered before anything else happens.
  const first = await unary(payee.lightning, 'AddInvoice', { memo: 'first', expiry: 600 });
  const second = await unary(payee.lightning, 'AddInvoice', { memo: 'second', expiry: 600 });
  const stream = lnd.subscribe(payee, { add_index: first.add_index, settle_index: '0' });
  await stream.waitFor((events) => events.some((e) => hex(e.r_hash) === hex(second.r_hash)),
    'backlog event');
  check(true, 'SubscribeInvoices replays the adds after its add index');

  // Invoice, decoded independently.
  const memo = 'js interop';
  const added = await unary(payee.lightning, 'AddInvoice', { memo, expiry: 600 });
  const hashHex = hex(added.r_hash);
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
  const updates = await lnd.sendPaymentV2(payer, {
    payment_request: added.payment_request,
    amt_msat: String(amountMsat),
  });
  const payment = updates[updates.length - 1];
  check(payment && payment.status === 'SUCCEEDED',
    `SendPaymentV2 ends SUCCEEDED (got ${payment && payment.status})`);
  const preimage = Buffer.from(payment.payment_preimage, 'hex');
  check(lnd.sha256(preimage).toString('hex') === hashHex, 'sha256(preimage) is the payment hash');

  // The add and settle events on the payee's stream.
  const events = await stream.waitFor(
    (all) => all.some((e) => e.state === 'SETTLED' && hex(e.r_hash) === hashHex),
    'settle event');
  const settled = events.find((e) => e.state === 'SETTLED' && hex(e.r_hash) === hashHex);
  check(String(settled.amt_paid_msat) === String(amountMsat),
    `the settled invoice shows amt_paid_msat ${amountMsat}`);
  check(events.some((e) => e.state === 'OPEN' && hex(e.r_hash) === hashHex),
    'SubscribeInvoices delivered the add event first');
  stream.cancel();
  payee.close();
  payer.close();
  console.log('js interop: all checks passed');
}

main().catch((err) => fail(err.stack || String(err)));
