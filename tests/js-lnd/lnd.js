// An LND client in JavaScript for the interop checks: @grpc/grpc-js with @grpc/proto-loader on
// our proto/ files (which carry LND's names and field numbers), connected as LND's docs say: the
// node's tls.cert as the only root, the macaroon hex in the `macaroon` metadata.
'use strict';

process.env.GRPC_SSL_CIPHER_SUITES = process.env.GRPC_SSL_CIPHER_SUITES || 'HIGH+ECDSA';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

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

// No script may hang a test run: each gives up after `ms` with a failure.
function overallDeadline(ms) {
  setTimeout(() => fail(`not done within ${ms} ms`), ms).unref();
}

function loadProtos() {
  const options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
    includeDirs: [PROTO_DIR] };
  const definition = protoLoader.loadSync(
    ['lightning.proto', 'routerrpc/router.proto', 'invoicesrpc/invoices.proto'], options);
  return grpc.loadPackageDefinition(definition);
}

function nodeFiles(dir) {
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'node.json'), 'utf8'));
  return {
    pubkey: info.pubkey,
    port: info.grpc.split(':').pop(),
    cert: fs.readFileSync(path.join(dir, 'tls.cert')),
    macaroon: fs.readFileSync(path.join(dir, 'admin.macaroon')),
  };
}

// A client for the node in `dir`; `macaroonHex` overrides its macaroon (null: send none).
function connect(proto, dir, macaroonHex) {
  const files = nodeFiles(dir);
  const macaroon = macaroonHex === undefined ? files.macaroon.toString('hex') : macaroonHex;
  let creds = grpc.credentials.createSsl(files.cert);
  if (macaroon !== null) {
    const macaroonCreds = grpc.credentials.createFromMetadataGenerator((_args, callback) => {
      const metadata = new grpc.Metadata();
      metadata.add('macaroon', macaroon);
      callback(null, metadata);
    });
    creds = grpc.credentials.combineChannelCredentials(creds, macaroonCreds);
  }
  // The certificate names localhost; dial that name so the host check passes.
  const target = `localhost:${files.port}`;
  return {
    pubkey: files.pubkey,
    files,
    lightning: new proto.lnrpc.Lightning(target, creds),
    router: new proto.routerrpc.Router(target, creds),
    invoices: new proto.invoicesrpc.Invoices(target, creds),
    close() {
      this.lightning.close();
      this.router.close();
      this.invoices.close();
    },
  };
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

// A unary call; rejects with the gRPC error (its `code` and `details` kept).
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, response) => {
      if (err) reject(err);
      else resolve(response);
    });
  });
}

// SendPaymentV2 to its end: every update, or the error that ended the stream.
function sendPaymentV2(node, request) {
  return new Promise((resolve, reject) => {
    const updates = [];
    const call = node.router.SendPaymentV2(
      Object.assign({ timeout_seconds: 30, fee_limit_msat: '100000' }, request),
      { deadline: deadline() });
    call.on('data', (update) => updates.push(update));
    call.on('error', reject);
    call.on('end', () => resolve(updates));
  });
}

// A `map<uint64, bytes>` as protobufjs decodes it (its 64-bit keys are 8-byte hashes), with
// the keys as decimal strings.
function uint64Map(map) {
  const out = {};
  for (const [key, value] of Object.entries(map)) {
    const decimal = /^[0-9]+$/.test(key) ? key : protobuf.util.longFromHash(key, true).toString();
    out[decimal] = value;
  }
  return out;
}

function hex(bytes) {
  return Buffer.from(bytes).toString('hex');
}

function sha256(bytes) {
  return crypto.createHash('sha256').update(bytes).digest();
}

// Collects SubscribeInvoices events; `until(events)` says when the wait is over.
function subscribe(node, from) {
  const events = [];
  let waiter = null;
  const stream = node.lightning.SubscribeInvoices(from);
  stream.on('data', (invoice) => {
    events.push(invoice);
    if (waiter) waiter();
  });
  stream.on('error', (err) => {
    if (err.code !== grpc.status.CANCELLED) fail(`SubscribeInvoices: ${err.code} ${err.details}`);
  });
  return {
    events,
    waitFor(until, what) {
      return new Promise((resolve) => {
        const timer = setTimeout(() => fail(`no ${what} within ${DEADLINE_MS} ms`), DEADLINE_MS);
        waiter = () => {
          if (until(events)) {
            clearTimeout(timer);
            waiter = null;
            resolve(events);
          }
        };
        waiter();
      });
    },
    cancel() {
      stream.cancel();
    },
  };
}

module.exports = {
  grpc, fail, check, overallDeadline, loadProtos, nodeFiles, connect, unary, sendPaymentV2,
  hex, sha256, subscribe, uint64Map, DEADLINE_MS,
};
