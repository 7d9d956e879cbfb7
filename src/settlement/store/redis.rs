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
//! Reservations of Prepares in flight stay in each process's memory, as in the other stores:
//! a process that dies leaves nothing reserved behind. The limit check adds this process's
//! reservations to the shared balance, so an account's limit holds for the Prepares of the
//! process it is attached to.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;
use redis::io::tcp::TcpSettings;
use redis::{Client, Connection, IntoConnectionInfo, RedisError, RedisResult, Script, Value};

use super::codec;
use super::{
    AccountBook, BookError, Credit, IssuedInvoice, IssuedState, KeysendToken, OverLimit,
    PaymentBusy, PaymentIntent, PaymentResult, PaymentRoute, Receipt, Store, StoreError,
};
use crate::btp::auth::{constant_time_eq, TokenCheck, TokenHash, TokenStore, TokenStoreError};
use crate::lnd::{InvoiceCursor, PaymentHash};

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

fn book_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:book")
}

fn in_flight_key(account: &str) -> String {
    format!("ilp:{{acct:{account}}}:in-flight")
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

/// KEYS: book, accounts. ARGV: amount, account. Our Fulfill of a reserved Prepare.
const POST: &str = r#"
local receivable = num(redis.call('HGET', KEYS[1], 'receivable')) + tonumber(ARGV[1])
if not fits(receivable) then return 'overflow' end
redis.call('HSET', KEYS[1], 'receivable', text(receivable))
redis.call('SADD', KEYS[2], ARGV[2])
return 'ok'
"#;

/// KEYS: book, accounts. ARGV: amount, account. The peer fulfilled our Prepare.
const OWE: &str = r#"
local payable = num(redis.call('HGET', KEYS[1], 'payable')) + tonumber(ARGV[1])
if not fits(payable) then return 'overflow' end
redis.call('HSET', KEYS[1], 'payable', text(payable))
redis.call('SADD', KEYS[2], ARGV[2])
return redis.call('HGETALL', KEYS[1])
"#;

/// KEYS: book, in-flight, payments, paid invoices, accounts.
/// ARGV: hash (hex), amount, encoded intent, account. The very same intent again (a repeat after
/// a lost reply) is answered 'ok' and changes nothing.
const BEGIN_PAYMENT: &str = r#"
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[3] then return {'ok'} end
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
return {'ok'}
"#;

/// KEYS: book, in-flight, payments, paid invoices.
/// ARGV: hash (hex), amount, 'succeeded' or 'failed', fee, the invoice's expiry or ''.
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
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
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
    post: Script,
    owe: Script,
    begin_payment: Script,
    finish_payment: Script,
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
        Scripts {
            post: script(POST),
            owe: script(OWE),
            begin_payment: script(BEGIN_PAYMENT),
            finish_payment: script(FINISH_PAYMENT),
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
    /// This process's reservations of Prepares in flight, per account.
    reserved: Mutex<HashMap<String, u128>>,
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
        reserved_msat: 0,
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
            reserved: Mutex::new(HashMap::new()),
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

    fn local_reserved(&self, account: &str) -> u128 {
        self.reserved.lock().get(account).copied().unwrap_or(0)
    }

    /// Whether `held` (this process's reservations, the new one included) fits the account's
    /// limit on top of its shared balance.
    fn check_limit(
        &self,
        account: &str,
        held: u128,
        limit_msat: Option<u128>,
    ) -> Result<Result<(), OverLimit>, StoreError> {
        let Some(limit) = limit_msat else {
            return Ok(Ok(()));
        };
        let receivable: i128 = self
            .with_retry(|con| {
                redis::cmd("HGET")
                    .arg(book_key(account))
                    .arg("receivable")
                    .query::<Option<String>>(con)
            })?
            .map_or(Ok(0), |v| {
                v.parse()
                    .map_err(|_| corrupt(format!("account {account}: receivable {v:?}")))
            })?;
        let would_owe = i128::try_from(held)
            .ok()
            .and_then(|h| receivable.checked_add(h))
            .ok_or(BookError::Overflow("reservation"))?;
        if would_owe > i128::try_from(limit).unwrap_or(i128::MAX) {
            return Ok(Err(OverLimit {
                would_owe_msat: would_owe,
                limit_msat: limit,
            }));
        }
        Ok(Ok(()))
    }

    fn release(&self, account: &str, amount_msat: u128) -> Result<(), StoreError> {
        let mut reserved = self.reserved.lock();
        let held = reserved.get(account).copied().unwrap_or(0);
        let left = held
            .checked_sub(amount_msat)
            .ok_or_else(|| BookError::NotReserved {
                account: account.to_owned(),
                reserved_msat: held,
                amount_msat,
            })?;
        if left == 0 {
            reserved.remove(account);
        } else {
            reserved.insert(account.to_owned(), left);
        }
        Ok(())
    }
}

impl Store for RedisStore {
    fn reserve(
        &self,
        account: &str,
        amount_msat: u128,
        limit_msat: Option<u128>,
    ) -> Result<Result<(), OverLimit>, StoreError> {
        let amount = exact(amount_msat, "reservation")?;
        // Held first, checked after: a Prepare checked meanwhile sees this one too, so the
        // process never lets an account past its limit.
        let held = {
            let mut reserved = self.reserved.lock();
            let held = reserved.entry(account.to_owned()).or_insert(0);
            *held = held
                .checked_add(amount)
                .ok_or(BookError::Overflow("reservation"))?;
            *held
        };
        let checked = self.check_limit(account, held, limit_msat);
        if !matches!(checked, Ok(Ok(()))) {
            self.release(account, amount)?;
        }
        checked
    }

    fn void(&self, account: &str, amount_msat: u128) -> Result<(), StoreError> {
        self.release(account, amount_msat)
    }

    fn post(&self, account: &str, amount_msat: u128) -> Result<(), StoreError> {
        let held = self.local_reserved(account);
        if held < amount_msat {
            return Err(StoreError::Refused(BookError::NotReserved {
                account: account.to_owned(),
                reserved_msat: held,
                amount_msat,
            }));
        }
        // Booked in Redis before the reservation is released: meanwhile it counts twice, which
        // can only refuse a Prepare, never admit one past the limit.
        let answer: String = self.with(|con| {
            self.scripts
                .post
                .key(book_key(account))
                .key(ACCOUNTS)
                .arg(amount_msat.to_string())
                .arg(account)
                .invoke(con)
        })?;
        if answer != "ok" {
            return Err(script_refused(&answer, "receivable"));
        }
        self.release(account, amount_msat)
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
        let mut book = book_of(&fields, account)?;
        book.reserved_msat = self.local_reserved(account);
        Ok(book)
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
                .arg(&hash)
                .arg(amount.to_string())
                .arg(codec::encode_payment(intent))
                .arg(&intent.account)
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
        let mut book = book_of(&self.fields(&book_key(name))?, name)?;
        book.reserved_msat = self.local_reserved(name);
        Ok(book)
    }

    fn accounts(&self) -> Result<Vec<(String, AccountBook)>, StoreError> {
        let mut names: Vec<String> =
            self.with_retry(|con| redis::cmd("SMEMBERS").arg(ACCOUNTS).query(con))?;
        names.extend(self.reserved.lock().keys().cloned());
        names.sort();
        names.dedup();
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
