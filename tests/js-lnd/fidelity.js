// Issue 9, point 8: a JavaScript LND client checks, against `ilp-lightning sim`, what the
// simulator does as LND does (points 1-4 and 7 of the issue):
//   1. SubscribeInvoices' backlog repeats a settled invoice (add part, then settle part);
//   2. keysend is refused by a node without --accept-keysend, accepted by one with it;
//   3. a refused macaroon is gRPC code 2 (UNKNOWN) with LND's texts;
//   4. a failed payment's preimage is 64 zeros; amt_paid is in millisatoshi;
//   7. on a node started as LND 0.20, the JS reference plugin (ilp-plugin-lightning
//      1.0.0-beta.25) pays through the bidirectional lnrpc SendPayment with its own functions;
//      a 0.21 node answers that call UNIMPLEMENTED.
//
// Usage: node fidelity.js <dir of a 0.21 sim: alice, bob, carol (keysend)> <dir of a 0.20 sim:
// dave, erin>. Exits 0 when every check passes; prints one line per check.
'use strict';

const path = require('path');
const crypto = require('crypto');
const lnd = require('./lnd');
// The plugin's own LND layer: its gRPC client (grpc-js 0.3), its generated lnrpc, its payment
// stream and payInvoice, exactly as the plugin pays.
const plugin = require('../js-lightning/node_modules/ilp-plugin-lightning/build/lightning');

const { check, fail, unary, hex, grpc } = lnd;
const ZERO = '0'.repeat(64);

function expectError(promise) {
  return promise.then(
    (value) => fail(`expected an error, got ${JSON.stringify(value)}`),
    (err) => err,
  );
}

async function replay(alice, bob) {
  const pay = async (invoice, msat) => {
    const updates = await lnd.sendPaymentV2(alice, {
      payment_request: invoice.payment_request, amt_msat: String(msat),
    });
    const last = updates[updates.length - 1];
    if (last.status !== 'SUCCEEDED') fail(`payment ended ${last.status}`);
    return updates;
  };
  const before = await unary(bob.lightning, 'AddInvoice', { memo: 'before' });
  await pay(before, 1000);
  const start = await unary(bob.lightning, 'LookupInvoice', { r_hash: before.r_hash });
  // Added and settled while "away".
  const away = await unary(bob.lightning, 'AddInvoice', { memo: 'away' });
  const updates = await pay(away, 7000);
  check(updates.slice(0, -1).every((u) => u.payment_preimage === ZERO),
    'SendPaymentV2 updates in flight carry a zero preimage');
  const stream = lnd.subscribe(bob, { add_index: start.add_index, settle_index: start.settle_index });
  const marker = await unary(bob.lightning, 'AddInvoice', { memo: 'marker' });
  const events = await stream.waitFor(
    (all) => all.some((e) => hex(e.r_hash) === hex(marker.r_hash)), 'marker after the backlog');
  stream.cancel();
  const repeats = events.filter((e) => hex(e.r_hash) === hex(away.r_hash));
  check(repeats.length === 2 && repeats.every((e) => e.state === 'SETTLED'),
    `1: the backlog delivers an invoice added and settled meanwhile twice, SETTLED (got ${repeats.length})`);
  check(!events.some((e) => hex(e.r_hash) === hex(before.r_hash)),
    '1: nothing at or below the subscription\'s indexes is replayed');
  check(String(repeats[0].amt_paid) === '7000' && String(repeats[0].amt_paid_msat) === '7000'
    && String(repeats[0].amt_paid_sat) === '7',
    `4: amt_paid is in millisatoshi (${repeats[0].amt_paid})`);
}

async function keysend(alice, bob, carol) {
  const bobInfo = await unary(bob.lightning, 'GetInfo', {});
  const carolInfo = await unary(carol.lightning, 'GetInfo', {});
  check(!('55' in bobInfo.features), '2: a node without --accept-keysend lacks feature 55');
  check(carolInfo.features['55'] && carolInfo.features['55'].name === 'keysend',
    '2: a node with --accept-keysend advertises feature 55 (keysend)');
  const send = (node) => {
    const preimage = crypto.randomBytes(32);
    return lnd.sendPaymentV2(alice, {
      dest: Buffer.from(node.pubkey, 'hex'),
      amt_msat: '5000',
      payment_hash: lnd.sha256(preimage),
      dest_custom_records: { 5482373484: preimage, 696969: Buffer.from('ilp account') },
    }).then((updates) => ({ preimage, last: updates[updates.length - 1] }));
  };
  const refused = await send(bob);
  check(refused.last.status === 'FAILED'
    && refused.last.failure_reason === 'FAILURE_REASON_INCORRECT_PAYMENT_DETAILS',
  `2: keysend to bob is refused: ${refused.last.status} ${refused.last.failure_reason}`);
  check(refused.last.payment_preimage === ZERO, '4: a failed payment\'s preimage is 64 zeros');
  const accepted = await send(carol);
  check(accepted.last.status === 'SUCCEEDED'
    && accepted.last.payment_preimage === hex(accepted.preimage),
  '2: keysend to carol succeeds with the sender\'s preimage');
  const invoice = await unary(carol.lightning, 'LookupInvoice', {
    r_hash: lnd.sha256(accepted.preimage),
  });
  check(invoice.is_keysend && hex(invoice.payment_addr) === ZERO && invoice.payment_request === '',
    '2: the keysend invoice: is_keysend, a blank payment address, no payment request');
  const records = lnd.uint64Map(invoice.htlcs[0].custom_records);
  check(hex(records['5482373484']) === hex(accepted.preimage)
    && Buffer.from(records['696969']).toString() === 'ilp account',
  '2: the HTLC keeps the keysend preimage record and the application record');
}

async function authentication(proto, aliceDir, bobDir) {
  const bobMacaroon = lnd.nodeFiles(bobDir).macaroon.toString('hex');
  const wrong = lnd.connect(proto, aliceDir, bobMacaroon);
  const refused = await expectError(unary(wrong.lightning, 'GetInfo', {}));
  check(refused.code === grpc.status.UNKNOWN
    && refused.details === 'verification failed: signature mismatch after caveat verification',
  `3: a wrong macaroon is code 2 (UNKNOWN) with LND's text (got ${refused.code} ${refused.details})`);
  const none = lnd.connect(proto, aliceDir, null);
  const missing = await expectError(unary(none.lightning, 'GetInfo', {}));
  check(missing.code === grpc.status.UNKNOWN && missing.details === 'expected 1 macaroon, got 0',
    `3: no macaroon is code 2 (UNKNOWN), "expected 1 macaroon, got 0" (got ${missing.code} ${missing.details})`);
  wrong.close();
  none.close();
}

// The plugin's payment stream, as its `createPaymentStream(createLnrpc(createGrpcClient(...)))`
// makes it: its own gRPC client (grpc-js 0.3), its own generated lnrpc messages, the method path
// its `createLnrpc` uses. (`createLnrpc` itself needs the fork of protobufjs the plugin names as
// a GitHub dependency, which npm cannot fetch from the registry; the glue it provides is the
// encode/decode pair below.)
function pluginPaymentStream(dir) {
  const files = lnd.nodeFiles(dir);
  const client = plugin.createGrpcClient({
    tlsCert: files.cert, macaroon: files.macaroon, hostname: 'localhost', grpcPort: files.port,
  });
  return client.makeBidiStreamRequest(
    '/lnrpc.Lightning/SendPayment',
    (request) => Buffer.from(plugin.lnrpc.SendRequest.encode(request).finish()),
    (bytes) => plugin.lnrpc.SendResponse.decode(bytes),
  );
}

async function legacySendPayment(proto, oldDirs, newAliceDir) {
  const [daveDir, erinDir] = oldDirs;
  const erin = lnd.connect(proto, erinDir);
  const info = await unary(erin.lightning, 'GetInfo', {});
  check(info.version.startsWith('0.20.'), `7: the node plays LND ${info.version}`);
  const stream = pluginPaymentStream(daveDir);
  stream.on('error', (err) => fail(`the plugin's payment stream failed: ${err.code} ${err.details}`));
  const pay = async (amountSat) => {
    const invoice = await unary(erin.lightning, 'AddInvoice', {});
    const hashHex = hex(invoice.r_hash);
    await plugin.payInvoice(stream, invoice.payment_request, hashHex, { toNumber: () => amountSat });
    return { invoice, hashHex };
  };
  const paid = await pay(1234);
  const settled = await unary(erin.lightning, 'LookupInvoice', { r_hash: paid.invoice.r_hash });
  check(settled.state === 'SETTLED' && String(settled.amt_paid_sat) === '1234',
    '7: the JS plugin\'s payInvoice pays over the bidirectional SendPayment');
  const second = await pay(77);
  check(second.hashHex !== paid.hashHex, '7: a second payment on the same stream');
  const again = await plugin.payInvoice(stream, paid.invoice.payment_request, paid.hashHex,
    { toNumber: () => 1234 }).then(() => null, (err) => err);
  check(again === 'error sending payment: invoice is already paid',
    `7: paying it again is answered on the stream: ${again}`);
  stream.end();

  // LND 0.21 removed the call: grpc-go answers UNIMPLEMENTED.
  const alice = lnd.connect(proto, newAliceDir);
  const gone = await new Promise((resolve) => {
    const call = alice.lightning.SendPayment({ deadline: new Date(Date.now() + lnd.DEADLINE_MS) });
    call.on('data', () => fail('a 0.21 node answered SendPayment'));
    call.on('error', resolve);
    call.write({ payment_request: 'lnbcrt1', amt: '1' });
  });
  check(gone.code === grpc.status.UNIMPLEMENTED,
    `7: a 0.21 node answers SendPayment UNIMPLEMENTED (got ${gone.code})`);
  const sync = await expectError(unary(alice.lightning, 'SendPaymentSync', { amt: '1' }));
  check(sync.code === grpc.status.UNIMPLEMENTED, '7: and SendPaymentSync too');
  erin.close();
  alice.close();
}

async function main() {
  lnd.overallDeadline(100000);
  const [newDir, oldDir] = process.argv.slice(2);
  if (!newDir || !oldDir) fail('usage: node fidelity.js <0.21 sim dir> <0.20 sim dir>');
  const proto = lnd.loadProtos();
  const dirs = (root, names) => names.map((name) => path.join(root, name));
  const [aliceDir, bobDir, carolDir] = dirs(newDir, ['alice', 'bob', 'carol']);
  const alice = lnd.connect(proto, aliceDir);
  const bob = lnd.connect(proto, bobDir);
  const carol = lnd.connect(proto, carolDir);
  await replay(alice, bob);
  await keysend(alice, bob, carol);
  await authentication(proto, aliceDir, bobDir);
  await legacySendPayment(proto, dirs(oldDir, ['dave', 'erin']), aliceDir);
  alice.close();
  bob.close();
  carol.close();
  console.log('js fidelity: all checks passed');
  // The plugin's client keeps its channel open; nothing else is left to do.
  process.exit(0);
}

main().catch((err) => fail(err.stack || String(err)));
