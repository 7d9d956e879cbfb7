//! The shared store: the books in Redis, so that several hub processes serve one population of
//! accounts with one set of books (cargo feature `redis`).
//!
//! Every change of money is one Lua script, given every key it touches as KEYS, that checks all
//! its arithmetic before its first write: Redis runs a script alone, so a change applies
//! completely or not at all, and two processes never interleave inside one. The keys of one
//! account share a hash tag (`ilp:{acct:NAME}:...`). Scripts that credit an invoice or finish a
//! payment also touch shared keys (the cursor, the payment index), so the store needs one Redis
//! primary, not a Redis Cluster.
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always` a script's reply comes
//! after its writes are fsynced, which is the order settlement relies on (a payment's intent is
//! durable before LND is asked). With `appendfsync everysec` a crash of the Redis host can lose
//! the last second of changes — among them intents of payments LND then makes, which would be
//! paid again — so the store is meant to run with `always` only.
//!
//! Lua numbers are doubles: amounts and balances are kept to ±(2^53 − 1) msat (about 90 000
//! BTC), and a change that would leave that range is refused like an overflow of the books.
//!
//! Each incoming Prepare is a two-phase booking: reserved under its hold id (with its expiry),
//! then posted (our Fulfill) or voided (our Reject), each step one script and a no-op when
//! repeated. The holds live in Redis, so an account's limit holds across every process, and a
//! hold left open by a process that died is voided by the sweeper of any other a margin after
//! its Prepare expired. One payment in flight per account is worked on by the process holding
//! its lease (see [`Store::claim_payment`]).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;
use redis::io::tcp::TcpSettings;
use redis::{Client, Connection, IntoConnectionInfo, RedisError, RedisResult, Script, Value};

use super::codec;
use super::{
    AccountBook, BookError, Credit, Hold, HoldId, IssuedInvoice, IssuedState, KeysendToken,
    OverLimit, PaymentBusy, PaymentIntent, PaymentResult, PaymentRoute, Receipt, Store, StoreError,
};
use crate::btp::auth::{constant_time_eq, TokenCheck, TokenHash, TokenStore, TokenStoreError};
use crate::lnd::{InvoiceCursor, PaymentHash};

/// How long a payment's lease lasts unless its holder renews it.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// A random id for this process (16 bytes, hex).
fn new_owner_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::Io(format!("no randomness for a process id: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The largest magnitude a Lua number holds exactly.
const LUA_EXACT: u128 = (1 << 53) - 1;

/// How long one Redis command may take before the connection is given up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

const ACCOUNTS: &str = "ilp:accounts";
const PAYMENTS: &str = "ilp:payments";
const PAID_INVOICES: &str = "ilp:paid-invoices";
const OPEN_INVOICES: &str = "ilp:open-invoices";
const RECEIPTS: &str = "ilp:receipts";
const CURSOR: &str = "ilp:cursor";
/// Keysend tokens: token (hex) → account.
const KEYSEND_TOKENS: &str = "ilp:keysend-tokens";
/// Every hold by its Prepare's expiry (score, Unix ms); members are `HOLD_ID ACCOUNT`.
const HOLD_EXPIRY: &str = "ilp:hold-expiry";
/// Holds the sweeper handles per round trip.
const SWEEP_BATCH: usize = 256;
/// How long past its Prepare's expiry a hold may stay open before any sweeper voids it.
const DEFAULT_HOLD_MARGIN: Duration = Duration::from_secs(10);

fn book_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:book")
}

/// An account's holds: id (hex) -> `STATE AMOUNT EXPIRY` (state `h` held, `p` posted, `v`
/// voided).
fn holds_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:holds")
}

fn in_flight_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:in-flight")
}

/// Which process works on the account's payment in flight: its owner id, with an expiry.
fn lease_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:lease")
}

fn token_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:token")
}

fn keysend_token_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:keysend-token")
}

fn invoice_key(hash: &PaymentHash) -> String {
    format!("ilp:invoice:{}", hex::encode(hash.0))
}

/// Helpers every script starts with.
const PRELUDE: &str = r#"
local EXACT = 9007199254740991
local function num(v) if v then return tonumber(v) end return 0 end
local function fits(x) return x >= -EXACT and x <= EXACT end
local function text(x) return string.format('%.0f', x) end
local function advance_cursor(key, add, settle)
  local a = num(redis.call('HGET', key, 'add'))
  local s = num(redis.call('HGET', key, 'settle'))
  if add > a then redis.call('HSET', key, 'add', text(add)) end
  if settle > s then redis.call('HSET', key, 'settle', text(settle)) end
end
"#;

/// Reads a hold record: state, amount, expiry.
const HOLD_PRELUDE: &str = r#"
local function hold_of(record)
  local state, amount, expires = string.match(record, '^(%a) (%d+) (%d+)$')
  return state, tonumber(amount), expires
end
"#;

/// KEYS: book, holds, hold expiry, accounts.
/// ARGV: hold id, amount, limit or '', expiry (ms), account.
/// Reserves against the limit on the shared balance, all processes' holds included.
const RESERVE: &str = r#"
local record = redis.call('HGET', KEYS[2], ARGV[1])
if record then
  if string.sub(record, 1, 1) == 'v' then return {'closed'} end
  return {'ok'}
end
local amount = tonumber(ARGV[2])
local reserved = num(redis.call('HGET', KEYS[1], 'reserved')) + amount
local exposure = num(redis.call('HGET', KEYS[1], 'receivable')) + reserved
if not fits(reserved) or not fits(exposure) then return {'overflow'} end
if ARGV[3] ~= '' and exposure > tonumber(ARGV[3]) then return {'over', text(exposure)} end
redis.call('HSET', KEYS[1], 'reserved', text(reserved))
redis.call('HSET', KEYS[2], ARGV[1], 'h ' .. ARGV[2] .. ' ' .. ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1] .. ' ' .. ARGV[5])
redis.call('SADD', KEYS[4], ARGV[5])
return {'ok'}
"#;

/// KEYS: book, holds, accounts. ARGV: hold id, account. Our Fulfill of a held Prepare.
const POST: &str = r#"
local record = redis.call('HGET', KEYS[2], ARGV[1])
if not record then return 'not-held' end
local state, amount, expires = hold_of(record)
if state == 'p' then return 'ok' end
if state ~= 'h' then return 'not-held' end
local reserved = num(redis.call('HGET', KEYS[1], 'reserved')) - amount
local receivable = num(redis.call('HGET', KEYS[1], 'receivable')) + amount
if not fits(receivable) or reserved < 0 then return 'overflow' end
redis.call('HSET', KEYS[1], 'reserved', text(reserved), 'receivable', text(receivable))
redis.call('HSET', KEYS[2], ARGV[1], 'p ' .. text(amount) .. ' ' .. expires)
redis.call('SADD', KEYS[3], ARGV[2])
return 'ok'
"#;

/// KEYS: book, holds. ARGV: hold id. Our Reject of a held Prepare.
const VOID: &str = r#"
local record = redis.call('HGET', KEYS[2], ARGV[1])
if not record then return 'not-held' end
local state, amount, expires = hold_of(record)
if state ~= 'h' then return 'ok' end
local reserved = num(redis.call('HGET', KEYS[1], 'reserved')) - amount
if reserved < 0 then return 'overflow' end
redis.call('HSET', KEYS[1], 'reserved', text(reserved))
redis.call('HSET', KEYS[2], ARGV[1], 'v ' .. text(amount) .. ' ' .. expires)
return 'ok'
"#;

/// Voids the hold record `record` (state `h`) of KEYS[3] in book KEYS[2]; false on overflow.
const VOID_PRELUDE: &str = r#"
local function void_held(book, holds, id, amount, expires)
  local reserved = num(redis.call('HGET', book, 'reserved')) - amount
  if reserved < 0 then return false end
  redis.call('HSET', book, 'reserved', text(reserved))
  redis.call('HSET', holds, id, 'v ' .. text(amount) .. ' ' .. expires)
  return true
end
"#;

/// KEYS: outcome, book, holds, accounts.
/// ARGV: fulfill, hold id, deadline (Unix ms), keep (ms), account.
/// A Prepare forwarded to another process was fulfilled there: unless its outcome is decided
/// already, the Fulfill stands if it came before the sender's deadline (by Redis's clock) and
/// the sender's hold is posted in the same step; past the deadline it is "expired" and the
/// hold voided. Returns the outcome.
const CLAIM_FORWARD: &str = r#"
local decided = redis.call('GET', KEYS[1])
if decided then return decided end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local record = redis.call('HGET', KEYS[3], ARGV[2])
local state, amount, expires
if record then state, amount, expires = hold_of(record) end
if now > tonumber(ARGV[3]) or state ~= 'h' then
  if state == 'h' and not void_held(KEYS[2], KEYS[3], ARGV[2], amount, expires) then
    return 'overflow'
  end
  redis.call('SET', KEYS[1], 'expired', 'PX', ARGV[4])
  return 'expired'
end
local reserved = num(redis.call('HGET', KEYS[2], 'reserved')) - amount
local receivable = num(redis.call('HGET', KEYS[2], 'receivable')) + amount
if not fits(receivable) or reserved < 0 then return 'overflow' end
redis.call('HSET', KEYS[2], 'reserved', text(reserved), 'receivable', text(receivable))
redis.call('HSET', KEYS[3], ARGV[2], 'p ' .. text(amount) .. ' ' .. expires)
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return ARGV[1]
"#;

/// KEYS: outcome, book, holds. ARGV: hold id, keep (ms). The sender's process gave up
/// waiting for a forwarded Prepare: unless its outcome is decided already, it is "expired" and
/// the sender's hold voided in the same step. Returns the outcome.
const EXPIRE_FORWARD: &str = r#"
local decided = redis.call('GET', KEYS[1])
if decided then return decided end
local record = redis.call('HGET', KEYS[3], ARGV[1])
if record then
  local state, amount, expires = hold_of(record)
  if state == 'h' and not void_held(KEYS[2], KEYS[3], ARGV[1], amount, expires) then
    return 'overflow'
  end
end
redis.call('SET', KEYS[1], 'expired', 'PX', ARGV[2])
return 'expired'
"#;

/// KEYS: book, holds, hold expiry. ARGV: hold id, expiry member. The sweeper: voids a hold
/// still open, and forgets it.
const FORGET_HOLD: &str = r#"
local record = redis.call('HGET', KEYS[2], ARGV[1])
local voided = 0
if record then
  local state, amount = hold_of(record)
  if state == 'h' then
    local reserved = num(redis.call('HGET', KEYS[1], 'reserved')) - amount
    if reserved < 0 then return 'overflow' end
    redis.call('HSET', KEYS[1], 'reserved', text(reserved))
    voided = 1
  end
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('ZREM', KEYS[3], ARGV[2])
return voided
"#;

/// KEYS: book, accounts. ARGV: amount, account. The peer fulfilled our Prepare.
const OWE: &str = r#"
local payable = num(redis.call('HGET', KEYS[1], 'payable')) + tonumber(ARGV[1])
if not fits(payable) then return 'overflow' end
redis.call('HSET', KEYS[1], 'payable', text(payable))
redis.call('SADD', KEYS[2], ARGV[2])
return redis.call('HGETALL', KEYS[1])
"#;

/// KEYS: book, in-flight, payments, paid invoices, accounts, lease.
/// ARGV: hash (hex), amount, encoded intent, account, owner, lease (ms). The very same intent
/// again (a repeat after a lost reply) is answered 'ok' and changes nothing. The process that
/// records the payment holds its lease.
const BEGIN_PAYMENT: &str = r#"
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[3] then
  redis.call('SET', KEYS[6], ARGV[5], 'PX', ARGV[6])
  return {'ok'}
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then
  return {'duplicate'}
end
local busy = redis.call('GET', KEYS[2])
if busy then return {'busy', busy} end
local amount = tonumber(ARGV[2])
local payable = num(redis.call('HGET', KEYS[1], 'payable')) - amount
local paying = num(redis.call('HGET', KEYS[1], 'paying')) + amount
if not fits(payable) or not fits(paying) then return {'overflow'} end
redis.call('HSET', KEYS[1], 'payable', text(payable), 'paying', text(paying))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('SET', KEYS[6], ARGV[5], 'PX', ARGV[6])
return {'ok'}
"#;

/// KEYS: lease. ARGV: owner, lease (ms). Takes the lease when nobody holds it (or its holder
/// let it run out), renews it when we hold it; 0 when another process holds it.
const CLAIM_PAYMENT: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// KEYS: book, in-flight, payments, paid invoices, lease.
/// ARGV: hash (hex), amount, 'succeeded' or 'failed', fee, the invoice's expiry or ''.
/// The lease ends with the payment, whoever held it.
const FINISH_PAYMENT: &str = r#"
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 'not-open' end
local amount = tonumber(ARGV[2])
local paying = num(redis.call('HGET', KEYS[1], 'paying')) - amount
if paying < 0 then return 'overflow' end
if ARGV[3] == 'succeeded' then
  local paid = num(redis.call('HGET', KEYS[1], 'paid')) + amount
  local fees = num(redis.call('HGET', KEYS[1], 'fees')) + tonumber(ARGV[4])
  if not fits(paid) or not fits(fees) then return 'overflow' end
  local payments = num(redis.call('HGET', KEYS[1], 'payments')) + 1
  redis.call('HSET', KEYS[1], 'paying', text(paying), 'paid', text(paid), 'fees', text(fees),
    'payments', text(payments))
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[4], ARGV[1], ARGV[5]) end
else
  local payable = num(redis.call('HGET', KEYS[1], 'payable')) + amount
  if not fits(payable) then return 'overflow' end
  redis.call('HSET', KEYS[1], 'paying', text(paying), 'payable', text(payable))
end
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('DEL', KEYS[5])
end
return 'finished'
"#;

/// KEYS: invoice, open invoices. ARGV: hash (hex), account, payment request, add index,
/// expiry, state. (An account is listed once money moves, as in the other stores.)
const ISSUE_INVOICE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'account') == ARGV[2]
      and redis.call('HGET', KEYS[1], 'request') == ARGV[3] then
    return 'ok'
  end
  return 'duplicate'
end
redis.call('HSET', KEYS[1], 'account', ARGV[2], 'request', ARGV[3], 'add_index', ARGV[4],
  'expires_at', ARGV[5], 'state', ARGV[6])
if ARGV[6] == 'open' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
return 'ok'
"#;

/// KEYS: cursor, invoice, book, receipts, open invoices, accounts.
/// ARGV: add index, settle index, hash (hex), amount, the invoice's account.
/// Credits once per payment hash, and moves the shared cursor in the same step.
const CREDIT_INVOICE: &str = r#"
local account = redis.call('HGET', KEYS[2], 'account')
if account and account ~= ARGV[5] then return 'wrong-account' end
if account and redis.call('HGET', KEYS[2], 'state') ~= 'paid' then
  local amount = tonumber(ARGV[4])
  local receivable = num(redis.call('HGET', KEYS[3], 'receivable')) - amount
  local received = num(redis.call('HGET', KEYS[3], 'received')) + amount
  if not fits(receivable) or not fits(received) then return 'overflow' end
  local receipts = num(redis.call('HGET', KEYS[3], 'receipts')) + 1
  advance_cursor(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
  redis.call('HSET', KEYS[3], 'receivable', text(receivable), 'received', text(received),
    'receipts', text(receipts))
  redis.call('HSET', KEYS[2], 'state', 'paid')
  redis.call('ZREM', KEYS[5], ARGV[3])
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
  redis.call('SADD', KEYS[6], ARGV[5])
  return 'credited'
end
advance_cursor(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if account then return 'already' end
return 'not-ours'
"#;

/// KEYS: invoice, open invoices. ARGV: hash (hex).
const CLOSE_INVOICE: &str = r#"
if redis.call('HGET', KEYS[1], 'state') == 'open' then
  redis.call('HSET', KEYS[1], 'state', 'closed')
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 'ok'
"#;

/// KEYS: cursor. ARGV: add index, settle index.
const ADVANCE_CURSOR: &str = r#"
advance_cursor(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return 'ok'
"#;

/// KEYS: paid invoices. ARGV: cutoff (Unix seconds). Forgets paid invoices expired before it.
const FORGET_PAID_INVOICES: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local forgotten = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    forgotten = forgotten + 1
  end
end
return forgotten
"#;

/// KEYS: the account's keysend token, the token index. ARGV: a fresh token (hex), account.
/// Answers the account's token: the one it has, or the fresh one bound now.
const BIND_KEYSEND_TOKEN: &str = r#"
local bound = redis.call('GET', KEYS[1])
if bound then return bound end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 'duplicate' end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return ARGV[1]
"#;

/// KEYS: cursor, invoice, book, receipts, accounts.
/// ARGV: add index, settle index, hash (hex), amount, account, the keysend's add index.
/// Credits a keysend once per payment hash (recorded as a paid invoice of the account), and
/// moves the shared cursor in the same step.
const CREDIT_KEYSEND: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then
  advance_cursor(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
  return 'already'
end
local amount = tonumber(ARGV[4])
local receivable = num(redis.call('HGET', KEYS[3], 'receivable')) - amount
local received = num(redis.call('HGET', KEYS[3], 'received')) + amount
if not fits(receivable) or not fits(received) then return 'overflow' end
local receipts = num(redis.call('HGET', KEYS[3], 'receipts')) + 1
advance_cursor(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
redis.call('HSET', KEYS[3], 'receivable', text(receivable), 'received', text(received),
  'receipts', text(receipts))
redis.call('HSET', KEYS[2], 'account', ARGV[5], 'request', '', 'add_index', ARGV[6],
  'expires_at', '0', 'state', 'paid')
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[5])
return 'credited'
"#;

struct Scripts {
    reserve: Script,
    post: Script,
    void: Script,
    forget_hold: Script,
    claim_forward: Script,
    expire_forward: Script,
    owe: Script,
    begin_payment: Script,
    finish_payment: Script,
    claim_payment: Script,
    issue_invoice: Script,
    credit_invoice: Script,
    close_invoice: Script,
    advance_cursor: Script,
    forget_paid_invoices: Script,
    bind_keysend_token: Script,
    credit_keysend: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        let hold_script = |body: &str| Script::new(&format!("{PRELUDE}{HOLD_PRELUDE}{body}"));
        Scripts {
            reserve: hold_script(RESERVE),
            post: hold_script(POST),
            void: hold_script(VOID),
            forget_hold: hold_script(FORGET_HOLD),
            claim_forward: hold_script(&format!("{VOID_PRELUDE}{CLAIM_FORWARD}")),
            expire_forward: hold_script(&format!("{VOID_PRELUDE}{EXPIRE_FORWARD}")),
            owe: script(OWE),
            begin_payment: script(BEGIN_PAYMENT),
            finish_payment: script(FINISH_PAYMENT),
            claim_payment: script(CLAIM_PAYMENT),
            issue_invoice: script(ISSUE_INVOICE),
            credit_invoice: script(CREDIT_INVOICE),
            close_invoice: script(CLOSE_INVOICE),
            advance_cursor: script(ADVANCE_CURSOR),
            forget_paid_invoices: script(FORGET_PAID_INVOICES),
            bind_keysend_token: script(BIND_KEYSEND_TOKEN),
            credit_keysend: script(CREDIT_KEYSEND),
        }
    }
}

/// The books in Redis, shared by every process that opens the same database. Open it with
/// [`RedisStore::open`]; it also keeps the BTP server's token bindings (it implements
/// [`TokenStore`]), so that a client may reconnect to any process.
pub struct RedisStore {
    url: String,
    client: Client,
    /// Connections not in use; a command takes one out, so no lock is held while Redis answers.
    idle: Mutex<Vec<Connection>>,
    scripts: Scripts,
    /// This process among those sharing the database: random, new at every start.
    owner: String,
    /// How long a lease lasts unless renewed.
    lease_ttl: Duration,
    /// How long past its Prepare's expiry a hold may stay open before the sweeper voids it.
    hold_margin: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

fn io(e: RedisError) -> StoreError {
    StoreError::Io(format!("redis: {e}"))
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(codec::CorruptRecord(what))
}

/// Refuses an amount the scripts could not hold exactly.
fn exact(amount_msat: u128, what: &'static str) -> Result<u128, StoreError> {
    if amount_msat > LUA_EXACT {
        return Err(StoreError::Refused(BookError::Overflow(what)));
    }
    Ok(amount_msat)
}

fn not_held(account: &str, amount_msat: u128) -> StoreError {
    StoreError::Refused(BookError::NotReserved {
        account: account.to_owned(),
        reserved_msat: 0,
        amount_msat,
    })
}

fn script_refused(answer: &str, what: &'static str) -> StoreError {
    match answer {
        "overflow" => StoreError::Refused(BookError::Overflow(what)),
        other => corrupt(format!("{what}: unexpected answer {other:?} from Redis")),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse_field<T: std::str::FromStr>(
    fields: &HashMap<String, String>,
    name: &str,
    record: &str,
) -> Result<T, StoreError> {
    match fields.get(name) {
        None => "0"
            .parse()
            .map_err(|_| corrupt(format!("{record}: no {name}"))),
        Some(v) => v
            .parse()
            .map_err(|_| corrupt(format!("{record}: {name} is {v:?}"))),
    }
}

fn book_of(fields: &HashMap<String, String>, account: &str) -> Result<AccountBook, StoreError> {
    let record = format!("account {account}");
    Ok(AccountBook {
        receivable_msat: parse_field(fields, "receivable", &record)?,
        reserved_msat: parse_field(fields, "reserved", &record)?,
        payable_msat: parse_field(fields, "payable", &record)?,
        paying_msat: parse_field(fields, "paying", &record)?,
        paid_msat: parse_field(fields, "paid", &record)?,
        fees_msat: parse_field(fields, "fees", &record)?,
        payments: parse_field(fields, "payments", &record)?,
        received_msat: parse_field(fields, "received", &record)?,
        receipts: parse_field(fields, "receipts", &record)?,
    })
}

fn state_name(state: IssuedState) -> &'static str {
    match state {
        IssuedState::Open => "open",
        IssuedState::Paid => "paid",
        IssuedState::Closed => "closed",
    }
}

fn invoice_of(
    fields: &HashMap<String, String>,
    hash: &PaymentHash,
) -> Result<Option<IssuedInvoice>, StoreError> {
    let Some(account) = fields.get("account") else {
        return Ok(None);
    };
    let record = format!("invoice {}", hex::encode(hash.0));
    let state = match fields.get("state").map(String::as_str) {
        Some("open") => IssuedState::Open,
        Some("paid") => IssuedState::Paid,
        Some("closed") => IssuedState::Closed,
        other => return Err(corrupt(format!("{record}: state {other:?}"))),
    };
    Ok(Some(IssuedInvoice {
        payment_hash: *hash,
        account: account.clone(),
        payment_request: fields.get("request").cloned().unwrap_or_default(),
        add_index: parse_field(fields, "add_index", &record)?,
        expires_at: parse_field(fields, "expires_at", &record)?,
        state,
    }))
}

fn hash_of(hex_text: &str) -> Result<PaymentHash, StoreError> {
    hex::decode(hex_text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(PaymentHash)
        .ok_or_else(|| corrupt(format!("{hex_text:?} is not a payment hash")))
}

impl RedisStore {
    /// Connects to the Redis database at `url` (`redis://HOST:PORT/DB`) and checks that it
    /// answers. Paid invoices that expired an hour ago are forgotten (no peer can offer them).
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        let info = url
            .into_connection_info()
            .map_err(|e| StoreError::Io(format!("{url}: {e}")))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = Client::open(info).map_err(|e| StoreError::Io(format!("{url}: {e}")))?;
        let store = RedisStore {
            url: url.to_owned(),
            client,
            idle: Mutex::new(Vec::new()),
            scripts: Scripts::new(),
            owner: new_owner_id()?,
            lease_ttl: DEFAULT_LEASE_TTL,
            hold_margin: DEFAULT_HOLD_MARGIN,
        };
        let cutoff = now_secs().saturating_sub(3600);
        store.with_retry(|con| {
            store
                .scripts
                .forget_paid_invoices
                .key(PAID_INVOICES)
                .arg(cutoff)
                .invoke::<u64>(con)
        })?;
        Ok(store)
    }

    /// Where it connects.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This process's id among those sharing the database (the holder of its leases).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Leases last `ttl` unless renewed (default 10 s): how long after a process dies another
    /// one takes its payment in flight over. Renewed every third of it.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> RedisStore {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// Holds still open `margin` after their Prepare expired are voided by the sweeper
    /// (default 10 s). Longer than any Prepare's answer may take to be booked after it expired.
    pub fn with_hold_margin(mut self, margin: Duration) -> RedisStore {
        self.hold_margin = margin;
        self
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `f` once, for a change that must not run twice (it has no identity to make a
    /// repeat harmless): a broken connection is an error, the change may or may not be applied.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T, StoreError> {
        self.attempt(f).map_err(io)
    }

    /// Runs `f`, a read or a change that is a no-op when repeated; when the connection broke
    /// (Redis restarted), once more on a new connection.
    fn with_retry<T>(
        &self,
        f: impl Fn(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        match self.attempt(&f) {
            Err(e) if broken(&e) => self.attempt(&f).map_err(io),
            other => other.map_err(io),
        }
    }

    /// Runs `f` on a connection (an idle one, or a new one). When a connection broke, every idle
    /// one is dropped too (they all went to the same server), so the next command connects anew.
    fn attempt<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        let idle = self.idle.lock().pop();
        let mut con = match idle {
            Some(con) => con,
            None => {
                let con = self.client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
                con.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
                con
            }
        };
        let result = f(&mut con);
        match &result {
            Err(e) if broken(e) => {
                // Closed outside the lock.
                let stale = std::mem::take(&mut *self.idle.lock());
                drop((con, stale));
            }
            _ => self.idle.lock().push(con),
        }
        result
    }

    fn fields(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        self.with_retry(|con| redis::cmd("HGETALL").arg(key).query(con))
    }
}

impl Store for RedisStore {
    fn reserve(
        &self,
        account: &str,
        amount_msat: u128,
        limit_msat: Option<u128>,
        hold: &Hold,
    ) -> Result<Result<(), OverLimit>, StoreError> {
        let amount = exact(amount_msat, "reservation")?;
        // A limit past what Lua holds exactly is no limit at all for these balances.
        let limit = limit_msat.filter(|l| *l <= LUA_EXACT);
        let answer: Vec<String> = self.with_retry(|con| {
            self.scripts
                .reserve
                .key(book_key(account))
                .key(holds_key(account))
                .key(HOLD_EXPIRY)
                .key(ACCOUNTS)
                .arg(hold.id.to_string())
                .arg(amount.to_string())
                .arg(limit.map(|l| l.to_string()).unwrap_or_default())
                .arg(hold.expires_at_ms)
                .arg(account)
                .invoke(con)
        })?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(Ok(())),
            Some("over") => Ok(Err(OverLimit {
                would_owe_msat: answer
                    .get(1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| corrupt(format!("account {account}: exposure {answer:?}")))?,
                limit_msat: limit.unwrap_or(0),
            })),
            // Voided already (the sweeper): the Prepare is over.
            Some("closed") => Err(not_held(account, amount_msat)),
            other => Err(script_refused(other.unwrap_or(""), "reservation")),
        }
    }

    fn void(&self, account: &str, amount_msat: u128, hold: &HoldId) -> Result<(), StoreError> {
        let answer: String = self.with_retry(|con| {
            self.scripts
                .void
                .key(book_key(account))
                .key(holds_key(account))
                .arg(hold.to_string())
                .invoke(con)
        })?;
        match answer.as_str() {
            "ok" => Ok(()),
            "not-held" => Err(not_held(account, amount_msat)),
            other => Err(script_refused(other, "reservation")),
        }
    }

    fn post(&self, account: &str, amount_msat: u128, hold: &HoldId) -> Result<(), StoreError> {
        let answer: String = self.with_retry(|con| {
            self.scripts
                .post
                .key(book_key(account))
                .key(holds_key(account))
                .key(ACCOUNTS)
                .arg(hold.to_string())
                .arg(account)
                .invoke(con)
        })?;
        match answer.as_str() {
            "ok" => Ok(()),
            "not-held" => Err(not_held(account, amount_msat)),
            other => Err(script_refused(other, "receivable")),
        }
    }

    fn sweep_holds(&self, now_ms: u64) -> Result<usize, StoreError> {
        let margin = u64::try_from(self.hold_margin.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms.saturating_sub(margin);
        let mut voided = 0;
        loop {
            let stale: Vec<String> = self.with_retry(|con| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(HOLD_EXPIRY)
                    .arg("-inf")
                    .arg(cutoff)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(SWEEP_BATCH)
                    .query(con)
            })?;
            for member in &stale {
                let (id, account) = member
                    .split_once(' ')
                    .ok_or_else(|| corrupt(format!("hold expiry member {member:?}")))?;
                let answer: Value = self.with_retry(|con| {
                    self.scripts
                        .forget_hold
                        .key(book_key(account))
                        .key(holds_key(account))
                        .key(HOLD_EXPIRY)
                        .arg(id)
                        .arg(member)
                        .invoke(con)
                })?;
                match answer {
                    Value::Int(1) => {
                        log::warn!(
                            "settlement: hold {id} of {account} was still open {} ms after its \
                             Prepare expired: voided",
                            margin
                        );
                        voided += 1;
                    }
                    Value::Int(_) => {}
                    other => return Err(corrupt(format!("sweeping hold {id}: {other:?}"))),
                }
            }
            if stale.len() < SWEEP_BATCH {
                return Ok(voided);
            }
        }
    }

    fn owe(&self, account: &str, amount_msat: u128) -> Result<AccountBook, StoreError> {
        let amount = exact(amount_msat, "payable")?;
        let answer: Value = self.with(|con| {
            self.scripts
                .owe
                .key(book_key(account))
                .key(ACCOUNTS)
                .arg(amount.to_string())
                .arg(account)
                .invoke(con)
        })?;
        let fields: HashMap<String, String> = match answer {
            Value::SimpleString(s) => return Err(script_refused(&s, "payable")),
            Value::BulkString(s) => {
                return Err(script_refused(&String::from_utf8_lossy(&s), "payable"))
            }
            other => redis::from_redis_value(other).map_err(|e| corrupt(e.to_string()))?,
        };
        book_of(&fields, account)
    }

    fn begin_payment(&self, intent: &PaymentIntent) -> Result<Result<(), PaymentBusy>, StoreError> {
        let amount = exact(u128::from(intent.amount_msat), "payable")?;
        let hash = hex::encode(intent.payment_hash.0);
        let answer: Vec<String> = self.with_retry(|con| {
            self.scripts
                .begin_payment
                .key(book_key(&intent.account))
                .key(in_flight_key(&intent.account))
                .key(PAYMENTS)
                .key(PAID_INVOICES)
                .key(ACCOUNTS)
                .key(lease_key(&intent.account))
                .arg(&hash)
                .arg(amount.to_string())
                .arg(codec::encode_payment(intent))
                .arg(&intent.account)
                .arg(&self.owner)
                .arg(self.lease_ms())
                .invoke(con)
        })?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(Ok(())),
            Some("busy") => Ok(Err(PaymentBusy {
                in_flight: hash_of(answer.get(1).map_or("", String::as_str))?,
            })),
            Some("duplicate") => Err(StoreError::Refused(BookError::DuplicatePayment(
                intent.payment_hash,
            ))),
            other => Err(script_refused(other.unwrap_or(""), "paying")),
        }
    }

    fn finish_payment(
        &self,
        payment_hash: &PaymentHash,
        result: PaymentResult,
    ) -> Result<Option<PaymentIntent>, StoreError> {
        let hash = hex::encode(payment_hash.0);
        let Some(bytes) = self.with_retry(|con| {
            redis::cmd("HGET")
                .arg(PAYMENTS)
                .arg(&hash)
                .query::<Option<Vec<u8>>>(con)
        })?
        else {
            return Ok(None);
        };
        let intent = codec::decode_payment(&bytes).map_err(StoreError::Corrupt)?;
        let (outcome, fee) = match result {
            PaymentResult::Succeeded { fee_msat } => ("succeeded", fee_msat),
            PaymentResult::Failed => ("failed", 0),
        };
        let expires = match (&result, &intent.route) {
            (PaymentResult::Succeeded { .. }, PaymentRoute::Invoice { expires_at, .. }) => {
                expires_at.to_string()
            }
            _ => String::new(),
        };
        let answer: String = self.with_retry(|con| {
            self.scripts
                .finish_payment
                .key(book_key(&intent.account))
                .key(in_flight_key(&intent.account))
                .key(PAYMENTS)
                .key(PAID_INVOICES)
                .key(lease_key(&intent.account))
                .arg(&hash)
                .arg(intent.amount_msat)
                .arg(outcome)
                .arg(fee)
                .arg(&expires)
                .invoke(con)
        })?;
        match answer.as_str() {
            "finished" => Ok(Some(intent)),
            // Another process booked it between our read and the script: a repeat.
            "not-open" => Ok(None),
            other => Err(script_refused(other, "paying")),
        }
    }

    fn issue_invoice(&self, invoice: &IssuedInvoice) -> Result<(), StoreError> {
        let answer: String = self.with_retry(|con| {
            self.scripts
                .issue_invoice
                .key(invoice_key(&invoice.payment_hash))
                .key(OPEN_INVOICES)
                .arg(hex::encode(invoice.payment_hash.0))
                .arg(&invoice.account)
                .arg(&invoice.payment_request)
                .arg(invoice.add_index)
                .arg(invoice.expires_at)
                .arg(state_name(invoice.state))
                .invoke(con)
        })?;
        match answer.as_str() {
            "ok" => Ok(()),
            "duplicate" => Err(StoreError::Refused(BookError::DuplicateInvoice(
                invoice.payment_hash,
            ))),
            other => Err(script_refused(other, "invoice")),
        }
    }

    fn credit_invoice(
        &self,
        payment_hash: &PaymentHash,
        amount_msat: u64,
        cursor: InvoiceCursor,
    ) -> Result<Credit, StoreError> {
        exact(u128::from(amount_msat), "received")?;
        let key = invoice_key(payment_hash);
        // An invoice's account never changes once issued; the script checks it anyway.
        let account: Option<String> = self.with_retry(|con| {
            redis::cmd("HGET")
                .arg(&key)
                .arg("account")
                .query::<Option<String>>(con)
        })?;
        let hash = hex::encode(payment_hash.0);
        let account = account.unwrap_or_default();
        // Retried after a broken connection: if the first run credited, the retry answers
        // AlreadyCredited, and the receipt waits in `pending_receipts` for the next start.
        let answer: String = self.with_retry(|con| {
            self.scripts
                .credit_invoice
                .key(CURSOR)
                .key(&key)
                .key(book_key(&account))
                .key(RECEIPTS)
                .key(OPEN_INVOICES)
                .key(ACCOUNTS)
                .arg(cursor.add_index)
                .arg(cursor.settle_index)
                .arg(&hash)
                .arg(amount_msat)
                .arg(&account)
                .invoke(con)
        })?;
        match answer.as_str() {
            "credited" => Ok(Credit::Credited(Receipt {
                payment_hash: *payment_hash,
                account,
                amount_msat,
            })),
            "already" => Ok(Credit::AlreadyCredited),
            "not-ours" => Ok(Credit::NotOurs),
            other => Err(script_refused(other, "received")),
        }
    }

    fn close_invoice(&self, payment_hash: &PaymentHash) -> Result<(), StoreError> {
        self.with_retry(|con| {
            self.scripts
                .close_invoice
                .key(invoice_key(payment_hash))
                .key(OPEN_INVOICES)
                .arg(hex::encode(payment_hash.0))
                .invoke::<String>(con)
        })?;
        Ok(())
    }

    fn receipt_delivered(&self, payment_hash: &PaymentHash) -> Result<(), StoreError> {
        self.with_retry(|con| {
            redis::cmd("HDEL")
                .arg(RECEIPTS)
                .arg(hex::encode(payment_hash.0))
                .query::<u64>(con)
        })?;
        Ok(())
    }

    fn advance_cursor(&self, cursor: InvoiceCursor) -> Result<(), StoreError> {
        self.with_retry(|con| {
            self.scripts
                .advance_cursor
                .key(CURSOR)
                .arg(cursor.add_index)
                .arg(cursor.settle_index)
                .invoke::<String>(con)
        })?;
        Ok(())
    }

    fn account(&self, name: &str) -> Result<AccountBook, StoreError> {
        book_of(&self.fields(&book_key(name))?, name)
    }

    fn accounts(&self) -> Result<Vec<(String, AccountBook)>, StoreError> {
        let mut names: Vec<String> =
            self.with_retry(|con| redis::cmd("SMEMBERS").arg(ACCOUNTS).query(con))?;
        names.sort();
        names
            .into_iter()
            .map(|name| Ok((name.clone(), self.account(&name)?)))
            .collect()
    }

    fn open_payments(&self) -> Result<Vec<PaymentIntent>, StoreError> {
        let records: Vec<Vec<u8>> =
            self.with_retry(|con| redis::cmd("HVALS").arg(PAYMENTS).query(con))?;
        let mut open = records
            .iter()
            .map(|bytes| codec::decode_payment(bytes).map_err(StoreError::Corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        open.sort_by_key(|p| p.created_at_ms);
        Ok(open)
    }

    fn invoice(&self, payment_hash: &PaymentHash) -> Result<Option<IssuedInvoice>, StoreError> {
        invoice_of(&self.fields(&invoice_key(payment_hash))?, payment_hash)
    }

    fn open_invoices(&self, account: Option<&str>) -> Result<Vec<IssuedInvoice>, StoreError> {
        let hashes: Vec<String> = self.with_retry(|con| {
            redis::cmd("ZRANGE")
                .arg(OPEN_INVOICES)
                .arg(0)
                .arg(-1)
                .query(con)
        })?;
        let mut open = Vec::new();
        for hex_hash in hashes {
            let hash = hash_of(&hex_hash)?;
            if let Some(invoice) = self.invoice(&hash)? {
                if invoice.state == IssuedState::Open
                    && account.is_none_or(|a| a == invoice.account)
                {
                    open.push(invoice);
                }
            }
        }
        open.sort_by_key(|i| i.add_index);
        Ok(open)
    }

    fn pending_receipts(&self) -> Result<Vec<Receipt>, StoreError> {
        let all: HashMap<String, String> =
            self.with_retry(|con| redis::cmd("HGETALL").arg(RECEIPTS).query(con))?;
        let mut receipts = Vec::with_capacity(all.len());
        for (hex_hash, amount) in all {
            let hash = hash_of(&hex_hash)?;
            let account = self
                .invoice(&hash)?
                .map(|i| i.account)
                .ok_or_else(|| corrupt(format!("receipt {hex_hash} has no invoice")))?;
            receipts.push(Receipt {
                payment_hash: hash,
                account,
                amount_msat: amount
                    .parse()
                    .map_err(|_| corrupt(format!("receipt {hex_hash}: amount {amount:?}")))?,
            });
        }
        Ok(receipts)
    }

    fn cursor(&self) -> Result<InvoiceCursor, StoreError> {
        let fields = self.fields(CURSOR)?;
        Ok(InvoiceCursor {
            add_index: parse_field(&fields, "add", "the invoice cursor")?,
            settle_index: parse_field(&fields, "settle", "the invoice cursor")?,
        })
    }

    fn keysend_token(&self, account: &str) -> Result<KeysendToken, StoreError> {
        let fresh = hex::encode(super::fresh_token()?);
        // A repeat after a broken connection answers the token the first run bound.
        let answer: String = self.with_retry(|con| {
            self.scripts
                .bind_keysend_token
                .key(keysend_token_key(account))
                .key(KEYSEND_TOKENS)
                .arg(&fresh)
                .arg(account)
                .invoke(con)
        })?;
        if answer == "duplicate" {
            return Err(StoreError::Refused(BookError::DuplicateToken));
        }
        hex::decode(&answer)
            .ok()
            .and_then(|bytes| KeysendToken::try_from(bytes).ok())
            .ok_or_else(|| corrupt(format!("keysend token of {account}: {answer:?}")))
    }

    fn keysend_account(&self, token: &KeysendToken) -> Result<Option<String>, StoreError> {
        self.with_retry(|con| {
            redis::cmd("HGET")
                .arg(KEYSEND_TOKENS)
                .arg(hex::encode(token))
                .query::<Option<String>>(con)
        })
    }

    fn credit_keysend(
        &self,
        payment_hash: &PaymentHash,
        account: &str,
        amount_msat: u64,
        add_index: u64,
        cursor: InvoiceCursor,
    ) -> Result<Credit, StoreError> {
        exact(u128::from(amount_msat), "received")?;
        // Retried after a broken connection: a first run that credited makes it AlreadyCredited,
        // and the receipt waits in `pending_receipts` for the next start.
        let answer: String = self.with_retry(|con| {
            self.scripts
                .credit_keysend
                .key(CURSOR)
                .key(invoice_key(payment_hash))
                .key(book_key(account))
                .key(RECEIPTS)
                .key(ACCOUNTS)
                .arg(cursor.add_index)
                .arg(cursor.settle_index)
                .arg(hex::encode(payment_hash.0))
                .arg(amount_msat)
                .arg(account)
                .arg(add_index)
                .invoke(con)
        })?;
        match answer.as_str() {
            "credited" => Ok(Credit::Credited(Receipt {
                payment_hash: *payment_hash,
                account: account.to_owned(),
                amount_msat,
            })),
            "already" => Ok(Credit::AlreadyCredited),
            other => Err(script_refused(other, "received")),
        }
    }

    fn claim_payment(&self, account: &str) -> Result<bool, StoreError> {
        self.claim(account)
    }

    fn upkeep_every(&self) -> Option<Duration> {
        Some(self.lease_ttl / 3)
    }
}

/// How a Prepare forwarded from one hub process to another ended: decided once, in Redis, by
/// whichever process got there first (see [`RedisStore::claim_forward`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// This Fulfill stands; the sender's hold is posted.
    Fulfilled(Vec<u8>),
    /// The sender's process gave up first (or the Fulfill came past its deadline); the
    /// sender's hold is voided.
    Expired,
}

/// How long a forwarded Prepare's outcome is kept after it was decided.
const OUTCOME_KEEP_MS: u64 = 120_000;

fn outcome_of(answer: Vec<u8>) -> Result<ForwardOutcome, StoreError> {
    match answer.as_slice() {
        b"expired" => Ok(ForwardOutcome::Expired),
        b"overflow" => Err(StoreError::Refused(BookError::Overflow("receivable"))),
        _ => Ok(ForwardOutcome::Fulfilled(answer)),
    }
}

impl RedisStore {
    /// The receiving process of a forwarded Prepare got `fulfill` for it: the outcome under
    /// `key`, decided now if it was not — the Fulfill if Redis's clock is not past
    /// `deadline_ms` and the sender's hold still open (then posted with it), else expired.
    /// Repeating it is harmless.
    pub fn claim_forward(
        &self,
        key: &str,
        fulfill: &[u8],
        sender: &str,
        hold: &HoldId,
        deadline_ms: u64,
    ) -> Result<ForwardOutcome, StoreError> {
        let answer: Vec<u8> = self.with_retry(|con| {
            self.scripts
                .claim_forward
                .key(key)
                .key(book_key(sender))
                .key(holds_key(sender))
                .key(ACCOUNTS)
                .arg(fulfill)
                .arg(hold.to_string())
                .arg(deadline_ms)
                .arg(OUTCOME_KEEP_MS)
                .arg(sender)
                .invoke(con)
        })?;
        outcome_of(answer)
    }

    /// The sending process of a forwarded Prepare gave up waiting: the outcome under `key`,
    /// decided now as expired (the sender's hold voided with it) if it was not. Repeating it
    /// is harmless.
    pub fn expire_forward(
        &self,
        key: &str,
        sender: &str,
        hold: &HoldId,
    ) -> Result<ForwardOutcome, StoreError> {
        let answer: Vec<u8> = self.with_retry(|con| {
            self.scripts
                .expire_forward
                .key(key)
                .key(book_key(sender))
                .key(holds_key(sender))
                .arg(hold.to_string())
                .arg(OUTCOME_KEEP_MS)
                .invoke(con)
        })?;
        outcome_of(answer)
    }

    fn claim(&self, account: &str) -> Result<bool, StoreError> {
        let taken: i64 = self.with_retry(|con| {
            self.scripts
                .claim_payment
                .key(lease_key(account))
                .arg(&self.owner)
                .arg(self.lease_ms())
                .invoke(con)
        })?;
        Ok(taken == 1)
    }
}

impl TokenStore for RedisStore {
    fn check_or_bind(
        &self,
        account: &str,
        token_hash: &TokenHash,
    ) -> Result<TokenCheck, TokenStoreError> {
        // SET NX GET: binds the token if the account has none, and returns the bound one.
        let bound: Option<Vec<u8>> = self
            .with_retry(|con| {
                redis::cmd("SET")
                    .arg(token_key(account))
                    .arg(&token_hash[..])
                    .arg("NX")
                    .arg("GET")
                    .query(con)
            })
            .map_err(|e| TokenStoreError(std::io::Error::other(e.to_string())))?;
        Ok(match bound {
            None => TokenCheck::Bound,
            Some(bound) if constant_time_eq(&bound, token_hash) => TokenCheck::Matches,
            Some(_) => TokenCheck::Mismatch,
        })
    }
}
