'use strict'
// Shared helpers for the interop scripts: argument parsing, packet <-> JSON, line-oriented output.
// Every line these scripts print on stdout is one JSON object with an "event" key, so that the Rust
// tests (tests/js_btp_interop.rs) can parse them; diagnostics go to stderr.
const crypto = require('crypto')
const readline = require('readline')
const IlpPacket = require('ilp-packet')

function parseArgs (argv) {
  const args = { _: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a.startsWith('--')) {
      const key = a.slice(2)
      const next = argv[i + 1]
      if (next === undefined || next.startsWith('--')) {
        args[key] = true
      } else {
        args[key] = next
        i++
      }
    } else {
      args._.push(a)
    }
  }
  return args
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const sha256 = b => crypto.createHash('sha256').update(b).digest()

// A reply (serialized Fulfill or Reject) as a JSON object.
function describeReply (buf) {
  if (!buf || buf.length === 0) return { type: 'empty' }
  const parsed = IlpPacket.deserializeIlpPacket(buf)
  switch (parsed.type) {
    case IlpPacket.Type.TYPE_ILP_FULFILL:
      return { type: 'fulfill', fulfillment: parsed.data.fulfillment.toString('hex'), data: parsed.data.data.toString('hex') }
    case IlpPacket.Type.TYPE_ILP_REJECT:
      return { type: 'reject', code: parsed.data.code, message: parsed.data.message, triggeredBy: parsed.data.triggeredBy, data: parsed.data.data.toString('hex') }
    default:
      return { type: 'unexpected', packetType: parsed.type, hex: buf.toString('hex') }
  }
}

function describePrepare (prepare) {
  return {
    destination: prepare.destination,
    amount: prepare.amount,
    condition: prepare.executionCondition.toString('hex'),
    expiresAt: prepare.expiresAt.toISOString(),
    data: prepare.data.toString('hex')
  }
}

// A Prepare from a JSON command: {destination, amount, condition (hex), expiresInMs?, data? (hex)}.
function buildPrepare (cmd) {
  return IlpPacket.serializeIlpPrepare({
    destination: cmd.destination,
    amount: String(cmd.amount === undefined ? '1' : cmd.amount),
    executionCondition: Buffer.from(cmd.condition, 'hex'),
    expiresAt: new Date(Date.now() + (cmd.expiresInMs || 30000)),
    data: Buffer.from(cmd.data || '', 'hex')
  })
}

// The rule both scripts answer incoming Prepares with: a destination whose last segment is "reject"
// gets Reject F99 (carrying the destination in its message); anything else is fulfilled with
// `fulfillment`, echoing the Prepare's data.
function answerPrepare (prepare, fulfillment, triggeredBy) {
  const last = prepare.destination.split('.').pop()
  if (last === 'reject' || !fulfillment) {
    return IlpPacket.serializeIlpReject({
      code: 'F99',
      triggeredBy,
      message: 'rejected by rule: ' + prepare.destination,
      data: prepare.data
    })
  }
  return IlpPacket.serializeIlpFulfill({ fulfillment, data: prepare.data })
}

// Reads JSON commands from stdin, one a line; calls `onClose` when stdin ends (the tests' way to stop us).
function readCommands (onCommand, onClose) {
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
    Promise.resolve(onCommand(cmd)).catch(e => emit({ event: 'error', destination: cmd.destination, message: e.message }))
  })
  rl.on('close', onClose)
}

module.exports = { parseArgs, emit, sha256, describeReply, describePrepare, buildPrepare, answerPrepare, readCommands }
