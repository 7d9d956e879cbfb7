//! Who may become an account on a server, and how many: without these limits every stranger's
//! token binds an account forever (memory, a store write and its fsyncs, a balance), and every
//! socket that never authenticates holds a thread for the whole auth timeout.
//!
//! - Accounts: at most [`AccountLimits::max_accounts`] bound at once, at most
//!   [`AccountLimits::max_new_per_minute`] new ones a minute, optionally only those of an
//!   [`AllowList`]; an account unused (no connection) for [`AccountLimits::expire_unused_after`]
//!   that its owner's check ([`AccountLimits::may_expire`]: nothing owed either way, never
//!   settled) lets go is forgotten, in memory and in the token store. Expiry is looked at when a
//!   new account asks to bind — the only moment either can grow — so it costs nothing while none
//!   does.
//! - Sockets not yet authenticated: at most a number in all and per source address
//!   ([`Unauthenticated`]).
//!
//! Each limit that refuses someone says so in the log, at most once a second per limit (with how
//! many were refused meanwhile), so that a flood cannot flood the log too.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::auth::{AllowList, TokenCheck, TokenHash, TokenStore};

/// Whether an account that has been unused long enough may be forgotten: the server's user
/// answers (a plugin: nothing owed either way and no Lightning payment ever made). Called with
/// no lock held.
pub type MayExpire = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The shortest token that may name an account by its hash (see
/// [`AccountLimits::allow_short_tokens`]).
pub const MIN_TOKEN_LEN: usize = 16;

/// Limits on the accounts a server binds. The defaults bound a stranger's reach without
/// getting in the way of a normal hub.
#[derive(Clone)]
pub struct AccountLimits {
    /// Most accounts bound at once (default 10,000). Past it a new account's auth is refused
    /// with a BTP error and its connection closed; accounts already bound still get in.
    pub max_accounts: usize,
    /// Most new accounts bound in any minute, as a bucket that refills continuously (default
    /// 600; `None`: no limit).
    pub max_new_per_minute: Option<u32>,
    /// Only these accounts, with these tokens, get in; nothing is ever bound (default: none,
    /// the first token of an account binds it).
    pub allow_list: Option<Arc<AllowList>>,
    /// An account with no connection for this long may be forgotten (default: never).
    pub expire_unused_after: Option<Duration>,
    /// Asked before an unused account is forgotten (default: none, every unused account may
    /// be).
    pub may_expire: Option<MayExpire>,
    /// Accept tokens shorter than [`MIN_TOKEN_LEN`] bytes from clients that send no
    /// `auth_username` (default false). Such an account is named `base64url(sha256(token))`,
    /// and that name is public — it is the last segment of the client's ILP address, seen by
    /// every node a packet to it crosses — so a short token can be found from it offline, by
    /// trying candidates against the hash, and whoever finds it owns the account.
    pub allow_short_tokens: bool,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            max_accounts: 10_000,
            max_new_per_minute: Some(600),
            allow_list: None,
            expire_unused_after: None,
            may_expire: None,
            allow_short_tokens: false,
        }
    }
}

impl fmt::Debug for AccountLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountLimits")
            .field("max_accounts", &self.max_accounts)
            .field("max_new_per_minute", &self.max_new_per_minute)
            .field("allow_list", &self.allow_list.as_ref().map(|l| l.len()))
            .field("expire_unused_after", &self.expire_unused_after)
            .field("may_expire", &self.may_expire.is_some())
            .field("allow_short_tokens", &self.allow_short_tokens)
            .finish()
    }
}

/// A log line for a limit, at most once a second, counting the refusals in between.
#[derive(Default)]
pub(crate) struct LimitLog {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LimitLog {
    /// Logs `message()` (a warning) unless this limit was logged less than a second ago.
    pub(crate) fn hit(&self, message: impl FnOnce() -> String) {
        let now = Instant::now();
        {
            let mut last = self.last.lock();
            if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *last = Some(now);
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        if suppressed == 0 {
            log::warn!("{}", message());
        } else {
            log::warn!(
                "{} ({suppressed} more refused by this limit since the last such line)",
                message()
            );
        }
    }
}

#[derive(Debug)]
struct Known {
    /// Connections authenticated as it now.
    connections: u32,
    /// When it was last authenticated or disconnected.
    last_used: Instant,
    /// Being bound by an auth in progress.
    binding: bool,
    /// Being forgotten by a sweep in progress.
    expiring: bool,
}

struct State {
    known: HashMap<String, Known>,
    /// New bindings left in the rate bucket, and when it was last refilled.
    bucket: f64,
    refilled: Instant,
    last_sweep: Option<Instant>,
}

/// The server's account bookkeeping: which accounts are bound, which are in use, the rate
/// bucket.
pub(crate) struct Admission {
    limits: AccountLimits,
    store: Arc<dyn TokenStore>,
    state: Mutex<State>,
    full_log: LimitLog,
    rate_log: LimitLog,
}

impl Admission {
    /// Starts from the accounts `store` already binds (when it can list them).
    pub(crate) fn new(limits: AccountLimits, store: Arc<dyn TokenStore>) -> Admission {
        let now = Instant::now();
        let mut known = HashMap::new();
        match store.bound_accounts() {
            Ok(Some(accounts)) => {
                for account in accounts {
                    known.insert(
                        account,
                        Known {
                            connections: 0,
                            last_used: now,
                            binding: false,
                            expiring: false,
                        },
                    );
                }
            }
            Ok(None) => {}
            Err(e) => log::warn!(
                "BTP: cannot list the accounts bound in the token store ({e}); the account cap \
                 counts those seen from now on"
            ),
        }
        let bucket = limits.max_new_per_minute.map_or(0.0, f64::from);
        Admission {
            limits,
            store,
            state: Mutex::new(State {
                known,
                bucket,
                refilled: now,
                last_sweep: None,
            }),
            full_log: LimitLog::default(),
            rate_log: LimitLog::default(),
        }
    }

    /// Accounts bound (as far as this server knows).
    pub(crate) fn bound(&self) -> usize {
        self.state.lock().known.len()
    }

    /// Lets `account` in with `token_hash`, binding it if it is new and the limits allow; the
    /// refusal's text goes to the client.
    pub(crate) fn admit(
        &self,
        account: &str,
        token: &[u8],
        token_hash: &TokenHash,
        named: bool,
    ) -> Result<(), String> {
        if !named && token.len() < MIN_TOKEN_LEN && !self.limits.allow_short_tokens {
            return Err(format!(
                "token too short: an account named by its token's hash needs a token of at \
                 least {MIN_TOKEN_LEN} bytes (the name is public, a short token can be guessed \
                 from it)"
            ));
        }
        if let Some(list) = &self.limits.allow_list {
            if !list.allows(account, token_hash) {
                return Err(format!(
                    "account {account} is not on this server's list, or its token is not the \
                     one listed"
                ));
            }
            self.touch(account);
            return Ok(());
        }
        let new = {
            let state = self.state.lock();
            match state.known.get(account) {
                Some(known) if known.expiring => {
                    return Err(format!(
                        "account {account} is being forgotten after going unused; try again"
                    ))
                }
                Some(_) => false,
                None => true,
            }
        };
        if new {
            self.claim(account)?;
        }
        let check = self.store.check_or_bind(account, token_hash);
        let mut state = self.state.lock();
        let result = match check {
            Ok(TokenCheck::Bound) => Ok(()),
            Ok(TokenCheck::Matches) => {
                if new {
                    // The store knew it (one that cannot list its accounts): not a new one.
                    refund(&mut state, &self.limits);
                }
                Ok(())
            }
            Ok(TokenCheck::Mismatch) => {
                if new {
                    refund(&mut state, &self.limits);
                }
                Err(format!("incorrect token for account. account={account}"))
            }
            Err(e) => {
                log::error!("BTP auth for {account}: {e}");
                if new {
                    refund(&mut state, &self.limits);
                    state.known.remove(account);
                }
                return Err("token store unavailable".to_string());
            }
        };
        if let Some(known) = state.known.get_mut(account) {
            known.binding = false;
            known.last_used = Instant::now();
        }
        result
    }

    /// Makes room for, and reserves, a new account: the cap and the rate bucket.
    fn claim(&self, account: &str) -> Result<(), String> {
        self.sweep(false);
        let full = self.state.lock().known.len() >= self.limits.max_accounts;
        if full {
            // Unused accounts past their time may free a place now.
            self.sweep(true);
        }
        let mut state = self.state.lock();
        if state.known.contains_key(account) {
            // Claimed meanwhile by a concurrent auth of the same account.
            return Ok(());
        }
        let max = self.limits.max_accounts;
        if state.known.len() >= max {
            drop(state);
            self.full_log.hit(|| {
                format!(
                    "BTP account limit reached: {max} accounts bound (--max-accounts); new \
                     account {account} refused"
                )
            });
            return Err(format!(
                "this server has reached its limit of {max} accounts; new accounts are refused"
            ));
        }
        if let Some(per_minute) = self.limits.max_new_per_minute {
            let now = Instant::now();
            let elapsed = now.duration_since(state.refilled).as_secs_f64();
            state.bucket =
                (state.bucket + elapsed * f64::from(per_minute) / 60.0).min(f64::from(per_minute));
            state.refilled = now;
            if state.bucket < 1.0 {
                drop(state);
                self.rate_log.hit(|| {
                    format!(
                        "BTP new-account rate limit reached: {per_minute} a minute \
                         (--max-new-accounts-per-minute); new account {account} refused"
                    )
                });
                return Err(format!(
                    "too many new accounts (at most {per_minute} a minute); try again later"
                ));
            }
            state.bucket -= 1.0;
        }
        state.known.insert(
            account.to_string(),
            Known {
                connections: 0,
                last_used: Instant::now(),
                binding: true,
                expiring: false,
            },
        );
        Ok(())
    }

    fn touch(&self, account: &str) {
        if let Some(known) = self.state.lock().known.get_mut(account) {
            known.last_used = Instant::now();
        }
    }

    /// `account` has one more live connection.
    pub(crate) fn opened(&self, account: &str) {
        if let Some(known) = self.state.lock().known.get_mut(account) {
            known.connections += 1;
            known.last_used = Instant::now();
        }
    }

    /// One of `account`'s connections ended.
    pub(crate) fn closed(&self, account: &str) {
        if let Some(known) = self.state.lock().known.get_mut(account) {
            known.connections = known.connections.saturating_sub(1);
            known.last_used = Instant::now();
        }
    }

    /// Forgets the accounts unused past their time that their owner lets go. Unless `force`,
    /// at most once a quarter of the expiry time.
    fn sweep(&self, force: bool) {
        let Some(expiry) = self.limits.expire_unused_after else {
            return;
        };
        let now = Instant::now();
        let candidates: Vec<String> = {
            let mut state = self.state.lock();
            let due = state
                .last_sweep
                .is_none_or(|at| now.duration_since(at) >= expiry / 4);
            if !force && !due {
                return;
            }
            state.last_sweep = Some(now);
            state
                .known
                .iter_mut()
                .filter(|(_, k)| {
                    k.connections == 0
                        && !k.binding
                        && !k.expiring
                        && now.duration_since(k.last_used) >= expiry
                })
                .map(|(account, k)| {
                    k.expiring = true;
                    account.clone()
                })
                .collect()
        };
        for account in candidates {
            let may = self.limits.may_expire.as_ref().is_none_or(|f| f(&account));
            let forgotten = may
                && match self.store.unbind(&account) {
                    Ok(()) => true,
                    Err(e) => {
                        log::warn!("BTP: account {account} unused, but not forgotten: {e}");
                        false
                    }
                };
            let mut state = self.state.lock();
            if forgotten {
                state.known.remove(&account);
                log::info!(
                    "BTP account {account} forgotten: unused for {} s and never settled",
                    expiry.as_secs()
                );
            } else if let Some(known) = state.known.get_mut(&account) {
                known.expiring = false;
                // Looked at again one expiry time from now, not at every new account.
                known.last_used = now;
            }
        }
    }
}

fn refund(state: &mut State, limits: &AccountLimits) {
    if let Some(per_minute) = limits.max_new_per_minute {
        state.bucket = (state.bucket + 1.0).min(f64::from(per_minute));
    }
}

/// Caps on sockets that have not authenticated yet, in all and per source address.
pub(crate) struct Unauthenticated {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
    total_log: LimitLog,
    address_log: LimitLog,
}

/// One socket counted as unauthenticated until this is dropped.
pub(crate) struct Pending {
    owner: Arc<Unauthenticated>,
    address: IpAddr,
}

impl Unauthenticated {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<Unauthenticated> {
        Arc::new(Unauthenticated {
            max_total,
            max_per_address,
            state: Mutex::new((0, HashMap::new())),
            total_log: LimitLog::default(),
            address_log: LimitLog::default(),
        })
    }

    /// Counts a new socket from `address`, or `None` (logged) if a cap is reached.
    pub(crate) fn enter(self: &Arc<Self>, address: IpAddr) -> Option<Pending> {
        let mut state = self.state.lock();
        let (total, per_address) = &mut *state;
        let here = per_address.get(&address).copied().unwrap_or(0);
        if *total >= self.max_total {
            drop(state);
            let max = self.max_total;
            self.total_log.hit(|| {
                format!(
                    "BTP connection from {address} refused: {max} connections not yet \
                     authenticated (max_unauthenticated)"
                )
            });
            return None;
        }
        if here >= self.max_per_address {
            drop(state);
            let max = self.max_per_address;
            self.address_log.hit(|| {
                format!(
                    "BTP connection from {address} refused: {max} connections from it not yet \
                     authenticated (max_unauthenticated_per_address)"
                )
            });
            return None;
        }
        *total += 1;
        per_address.insert(address, here + 1);
        Some(Pending {
            owner: self.clone(),
            address,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut state = self.owner.state.lock();
        let (total, per_address) = &mut *state;
        *total = total.saturating_sub(1);
        if let Some(n) = per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                per_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::auth::{hash_token, MemoryTokenStore};
    use super::*;

    fn admission(limits: AccountLimits) -> (Admission, Arc<MemoryTokenStore>) {
        let store = Arc::new(MemoryTokenStore::new());
        (Admission::new(limits, store.clone()), store)
    }

    const TOKEN: &[u8] = b"a-token-of-sixteen-bytes";

    #[test]
    fn the_cap_refuses_new_accounts_but_not_bound_ones() {
        let (admission, store) = admission(AccountLimits {
            max_accounts: 2,
            ..AccountLimits::default()
        });
        let hash = hash_token(TOKEN);
        admission.admit("a", TOKEN, &hash, true).unwrap();
        admission.admit("b", TOKEN, &hash, true).unwrap();
        let refused = admission.admit("c", TOKEN, &hash, true).unwrap_err();
        assert!(refused.contains("limit of 2 accounts"), "{refused}");
        admission.admit("a", TOKEN, &hash, true).unwrap();
        assert_eq!(store.bound_accounts().unwrap().unwrap().len(), 2);
        // A wrong token for a bound account is refused as such, not as a new account.
        let wrong = admission
            .admit("a", b"x", &hash_token(b"x"), true)
            .unwrap_err();
        assert!(wrong.contains("incorrect token"), "{wrong}");
    }

    #[test]
    fn the_rate_bucket_refuses_past_its_size_and_refunds_what_did_not_bind() {
        let (admission, _) = admission(AccountLimits {
            max_new_per_minute: Some(2),
            ..AccountLimits::default()
        });
        let hash = hash_token(TOKEN);
        admission.admit("a", TOKEN, &hash, true).unwrap();
        // A wrong token for a new name that turns out bound elsewhere costs nothing: here the
        // name is bound, so it is not new at all.
        admission
            .admit("a", b"x", &hash_token(b"x"), true)
            .unwrap_err();
        admission.admit("b", TOKEN, &hash, true).unwrap();
        let refused = admission.admit("c", TOKEN, &hash, true).unwrap_err();
        assert!(refused.contains("at most 2 a minute"), "{refused}");
    }

    #[test]
    fn short_tokens_are_refused_only_for_token_named_accounts() {
        let (admission, _) = admission(AccountLimits::default());
        let short = b"short";
        let refused = admission
            .admit("x", short, &hash_token(short), false)
            .unwrap_err();
        assert!(refused.contains("at least 16 bytes"), "{refused}");
        admission
            .admit("alice", short, &hash_token(short), true)
            .unwrap();
        let (lenient, _) = admission_with_short_tokens();
        lenient
            .admit("x", short, &hash_token(short), false)
            .unwrap();
    }

    fn admission_with_short_tokens() -> (Admission, Arc<MemoryTokenStore>) {
        admission(AccountLimits {
            allow_short_tokens: true,
            ..AccountLimits::default()
        })
    }

    #[test]
    fn unused_accounts_expire_when_their_owner_lets_them_go() {
        let keep = Arc::new(Mutex::new(vec!["kept".to_string()]));
        let kept = keep.clone();
        let (admission, store) = admission(AccountLimits {
            max_accounts: 3,
            expire_unused_after: Some(Duration::from_millis(50)),
            may_expire: Some(Arc::new(move |a: &str| !kept.lock().iter().any(|k| k == a))),
            ..AccountLimits::default()
        });
        let hash = hash_token(TOKEN);
        for account in ["idle", "kept", "busy"] {
            admission.admit(account, TOKEN, &hash, true).unwrap();
        }
        admission.opened("busy");
        assert!(admission.admit("new", TOKEN, &hash, true).is_err());
        // Past the expiry time (the clock is what is under test here).
        std::thread::sleep(Duration::from_millis(60));
        admission.admit("new", TOKEN, &hash, true).unwrap();
        let mut bound = store.bound_accounts().unwrap().unwrap();
        bound.sort();
        assert_eq!(bound, ["busy", "kept", "new"]);
        assert_eq!(admission.bound(), 3);
    }

    #[test]
    fn unauthenticated_caps_count_in_all_and_per_address() {
        let caps = Unauthenticated::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let a = caps.enter(one).unwrap();
        let _b = caps.enter(one).unwrap();
        assert!(caps.enter(one).is_none());
        let _c = caps.enter(two).unwrap();
        assert!(caps.enter(two).is_none(), "total cap");
        drop(a);
        assert!(caps.enter(one).is_some());
    }
}
