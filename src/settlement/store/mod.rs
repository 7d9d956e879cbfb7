//! Where the books live: the [`Store`] trait, an in-memory store for tests and short-lived
//! plugins, [`EmbeddedStore`], a crash-safe embedded database (redb) for everything else, and
//! (cargo feature `redis`) `RedisStore`, books in Redis shared by several hub processes.
//!
//! A store applies each change of money atomically, and a method that changes what must survive a
//! crash returns only once the change is durable. Settlement relies on that order: a payment's
//! intent is durable before LND is asked to pay, a credit is durable before the money handler
//! hears of it, a Fulfill is booked before it is passed on.

mod codec;
mod embedded;
#[cfg(feature = "redis")]
mod redis;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;

#[cfg(feature = "redis")]
pub use self::redis::{ForwardOutcome, RedisStore};
pub use super::book::{
    AccountBook, BookError, Credit, Hold, HoldId, IssuedInvoice, IssuedState, KeysendToken,
    OverLimit, PaymentBusy, PaymentIntent, PaymentResult, PaymentRoute, Receipt,
};
use super::book::{Books, Changed};
pub use codec::CorruptRecord;
pub use embedded::EmbeddedStore;

use crate::lnd::{InvoiceCursor, PaymentHash};

/// Why a store could not do what was asked.
#[derive(Debug)]
pub enum StoreError {
    /// The rules refused the change (it would overflow, or does not match the books).
    Refused(BookError),
    /// The database failed; the change may not be durable. The store refuses further changes.
    Io(String),
    /// A stored record cannot be read.
    Corrupt(CorruptRecord),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Refused(e) => write!(f, "refused by the books: {e}"),
            StoreError::Io(m) => write!(f, "store failed: {m}"),
            StoreError::Corrupt(e) => write!(f, "store holds an unreadable record: {}", e.0),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<BookError> for StoreError {
    fn from(e: BookError) -> Self {
        StoreError::Refused(e)
    }
}

/// The books of a plugin: balances, payments in flight, issued invoices, receipts and the invoice
/// cursor. Every method is one atomic change; those that change money return once it is durable.
/// Amounts are millisatoshis. See [`AccountBook`] for what the balances mean.
pub trait Store: Send + Sync {
    /// Reserves an incoming Prepare of `amount_msat` against the account's limit (`None`: none)
    /// under `hold`. The same hold again changes nothing and is answered `Ok(Ok(()))`.
    fn reserve(
        &self,
        account: &str,
        amount_msat: u128,
        limit_msat: Option<u128>,
        hold: &Hold,
    ) -> Result<Result<(), OverLimit>, StoreError>;
    /// Releases the reservation `hold`: our answer was a Reject (or it expired). Repeating it,
    /// or voiding a hold already posted, changes nothing; a hold never reserved is refused
    /// (`NotReserved`).
    fn void(&self, account: &str, amount_msat: u128, hold: &HoldId) -> Result<(), StoreError>;
    /// Turns the reservation `hold` into debt: our answer was a Fulfill. Repeating it changes
    /// nothing; a hold never reserved, or voided already (by the sweeper: too late), is
    /// refused (`NotReserved`), and the Fulfill must not go out.
    fn post(&self, account: &str, amount_msat: u128, hold: &HoldId) -> Result<(), StoreError>;
    /// Voids every hold still open `hold_margin` after its Prepare expired (its process died
    /// or lost it), and forgets finished ones as old; returns how many it voided.
    fn sweep_holds(&self, now_ms: u64) -> Result<usize, StoreError>;
    /// The peer fulfilled our Prepare: we owe it more. Returns the account after the change.
    fn owe(&self, account: &str, amount_msat: u128) -> Result<AccountBook, StoreError>;
    /// Records a payment before it is made (see [`Books::begin_payment`](super::book::Books)).
    fn begin_payment(&self, intent: &PaymentIntent) -> Result<Result<(), PaymentBusy>, StoreError>;
    /// Books a payment's final outcome; `None` if it was not open.
    fn finish_payment(
        &self,
        payment_hash: &PaymentHash,
        result: PaymentResult,
    ) -> Result<Option<PaymentIntent>, StoreError>;
    /// Records an invoice issued to an account's peer.
    fn issue_invoice(&self, invoice: &IssuedInvoice) -> Result<(), StoreError>;
    /// Credits a settled invoice once per payment hash and moves the cursor with it.
    fn credit_invoice(
        &self,
        payment_hash: &PaymentHash,
        amount_msat: u64,
        cursor: InvoiceCursor,
    ) -> Result<Credit, StoreError>;
    /// Marks an open invoice closed (cancelled or expired unpaid).
    fn close_invoice(&self, payment_hash: &PaymentHash) -> Result<(), StoreError>;
    /// The money handler has been told of a receipt.
    fn receipt_delivered(&self, payment_hash: &PaymentHash) -> Result<(), StoreError>;
    /// Moves the invoice cursor forward.
    fn advance_cursor(&self, cursor: InvoiceCursor) -> Result<(), StoreError>;

    /// One account (zero if never seen).
    fn account(&self, name: &str) -> Result<AccountBook, StoreError>;
    /// Every account, sorted by name.
    fn accounts(&self) -> Result<Vec<(String, AccountBook)>, StoreError>;
    /// Payments whose outcome is not booked yet.
    fn open_payments(&self) -> Result<Vec<PaymentIntent>, StoreError>;
    /// The invoice `hash`, if we issued it.
    fn invoice(&self, payment_hash: &PaymentHash) -> Result<Option<IssuedInvoice>, StoreError>;
    /// Open invoices (of one account, or all), oldest first.
    fn open_invoices(&self, account: Option<&str>) -> Result<Vec<IssuedInvoice>, StoreError>;
    /// Receipts the money handler has not been told about.
    fn pending_receipts(&self) -> Result<Vec<Receipt>, StoreError>;
    /// Where the invoice stream resumes.
    fn cursor(&self) -> Result<InvoiceCursor, StoreError>;

    /// The account's keysend token, made (random) and made durable on the first call, the same
    /// ever after.
    fn keysend_token(&self, account: &str) -> Result<KeysendToken, StoreError>;
    /// The account whose keysend token this is.
    fn keysend_account(&self, token: &KeysendToken) -> Result<Option<String>, StoreError>;
    /// Credits a settled keysend payment to `account` once per payment hash and moves the cursor
    /// with it ([`Credit::AlreadyCredited`] for a hash credited before).
    fn credit_keysend(
        &self,
        payment_hash: &PaymentHash,
        account: &str,
        amount_msat: u64,
        add_index: u64,
        cursor: InvoiceCursor,
    ) -> Result<Credit, StoreError>;
    /// Takes, or renews, this process's lease on `account`'s payment in flight: `false` when
    /// another process holds it and is alive (it renews the lease). A store that only one
    /// process uses has no one to share with: always `true`. A payment is worked on (sent,
    /// tracked, booked) only by the holder of its account's lease; when the holder dies its
    /// lease runs out and another process takes the payment over, tracking it by its hash.
    fn claim_payment(&self, account: &str) -> Result<bool, StoreError> {
        let _ = account;
        Ok(true)
    }
    /// How often settlement does the store's upkeep (renewing leases, taking over payments
    /// whose owner died); `None`: no lease to renew, nothing to take over.
    fn upkeep_every(&self) -> Option<Duration> {
        None
    }
}

/// 32 random bytes for a new keysend token.
pub(crate) fn fresh_token() -> Result<KeysendToken, StoreError> {
    let mut token = [0u8; 32];
    getrandom::getrandom(&mut token)
        .map_err(|e| StoreError::Io(format!("no randomness for a keysend token: {e}")))?;
    Ok(token)
}

/// How long past its Prepare's expiry a hold may stay open before the sweeper voids it, in the
/// stores that keep holds in memory.
pub const HOLD_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldState {
    Held,
    Posted,
    Voided,
}

#[derive(Debug)]
struct HoldRecord {
    account: String,
    amount_msat: u128,
    expires_at_ms: u64,
    state: HoldState,
}

/// The holds of a store that keeps them in memory (after a restart of the only process no
/// Prepare is in flight): what makes its reserve, post and void repeatable.
#[derive(Debug, Default)]
pub(crate) struct HoldTable {
    holds: Mutex<HashMap<HoldId, HoldRecord>>,
}

impl HoldTable {
    fn state(&self, id: &HoldId) -> Option<HoldState> {
        self.holds.lock().get(id).map(|r| r.state)
    }

    fn insert(&self, account: &str, amount_msat: u128, hold: &Hold) {
        self.holds.lock().insert(
            hold.id,
            HoldRecord {
                account: account.to_owned(),
                amount_msat,
                expires_at_ms: hold.expires_at_ms,
                state: HoldState::Held,
            },
        );
    }

    fn set(&self, id: &HoldId, state: HoldState) {
        if let Some(record) = self.holds.lock().get_mut(id) {
            record.state = state;
        }
    }

    /// Forgets finished holds older than `cutoff_ms` and returns the open ones: (id, account,
    /// amount).
    fn stale(&self, cutoff_ms: u64) -> Vec<(HoldId, String, u128)> {
        let mut holds = self.holds.lock();
        holds.retain(|_, r| r.expires_at_ms >= cutoff_ms || r.state == HoldState::Held);
        holds
            .iter()
            .filter(|(_, r)| r.expires_at_ms < cutoff_ms)
            .map(|(id, r)| (*id, r.account.clone(), r.amount_msat))
            .collect()
    }
}

fn not_reserved(account: &str, amount_msat: u128) -> StoreError {
    StoreError::Refused(BookError::NotReserved {
        account: account.to_owned(),
        reserved_msat: 0,
        amount_msat,
    })
}

/// Reads shared by the stores that keep [`Books`] in memory.
fn sorted_accounts(books: &Books) -> Vec<(String, AccountBook)> {
    let mut all: Vec<_> = books
        .accounts
        .iter()
        .map(|(name, book)| (name.clone(), *book))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn open_invoices_of(books: &Books, account: Option<&str>) -> Vec<IssuedInvoice> {
    let mut open: Vec<_> = books
        .invoices
        .values()
        .filter(|i| i.state == IssuedState::Open && account.is_none_or(|a| a == i.account))
        .cloned()
        .collect();
    open.sort_by_key(|i| i.add_index);
    open
}

/// Implements [`Store`] for a type with `fn change<T>(&self, f) -> Result<T, StoreError>` (apply
/// `f` to the books and make what it changed durable) and `fn read<T>(&self, f) -> T`.
macro_rules! books_store {
    ($store:ty) => {
        impl Store for $store {
            fn reserve(
                &self,
                account: &str,
                amount_msat: u128,
                limit_msat: Option<u128>,
                hold: &$crate::settlement::store::Hold,
            ) -> Result<Result<(), OverLimit>, StoreError> {
                // Reservations live in memory: after a restart no Prepare is in flight.
                if self.holds.state(&hold.id).is_some() {
                    return Ok(Ok(()));
                }
                let reserved = self.change(|books| {
                    Ok((books.reserve(account, amount_msat, limit_msat)?, vec![]))
                })?;
                if reserved.is_ok() {
                    self.holds.insert(account, amount_msat, hold);
                }
                Ok(reserved)
            }
            fn void(
                &self,
                account: &str,
                amount_msat: u128,
                hold: &$crate::settlement::store::HoldId,
            ) -> Result<(), StoreError> {
                match self.holds.state(hold) {
                    None => Err($crate::settlement::store::not_reserved(
                        account,
                        amount_msat,
                    )),
                    Some(
                        $crate::settlement::store::HoldState::Posted
                        | $crate::settlement::store::HoldState::Voided,
                    ) => Ok(()),
                    Some($crate::settlement::store::HoldState::Held) => {
                        self.change(|books| Ok((books.void(account, amount_msat)?, vec![])))?;
                        self.holds
                            .set(hold, $crate::settlement::store::HoldState::Voided);
                        Ok(())
                    }
                }
            }
            fn post(
                &self,
                account: &str,
                amount_msat: u128,
                hold: &$crate::settlement::store::HoldId,
            ) -> Result<(), StoreError> {
                match self.holds.state(hold) {
                    None | Some($crate::settlement::store::HoldState::Voided) => Err(
                        $crate::settlement::store::not_reserved(account, amount_msat),
                    ),
                    Some($crate::settlement::store::HoldState::Posted) => Ok(()),
                    Some($crate::settlement::store::HoldState::Held) => {
                        self.change(|books| Ok(((), books.post(account, amount_msat)?)))?;
                        self.holds
                            .set(hold, $crate::settlement::store::HoldState::Posted);
                        Ok(())
                    }
                }
            }
            fn sweep_holds(&self, now_ms: u64) -> Result<usize, StoreError> {
                let margin = u64::try_from($crate::settlement::store::HOLD_MARGIN.as_millis())
                    .unwrap_or(u64::MAX);
                let stale = self.holds.stale(now_ms.saturating_sub(margin));
                let voided = stale.len();
                for (id, account, amount_msat) in stale {
                    self.void(&account, amount_msat, &id)?;
                }
                Ok(voided)
            }
            fn owe(&self, account: &str, amount_msat: u128) -> Result<AccountBook, StoreError> {
                self.change(|books| {
                    let changed = books.owe(account, amount_msat)?;
                    Ok((books.account(account), changed))
                })
            }
            fn begin_payment(
                &self,
                intent: &PaymentIntent,
            ) -> Result<Result<(), PaymentBusy>, StoreError> {
                self.change(|books| {
                    Ok(match books.begin_payment(intent)? {
                        Ok(changed) => (Ok(()), changed),
                        Err(busy) => (Err(busy), vec![]),
                    })
                })
            }
            fn finish_payment(
                &self,
                payment_hash: &PaymentHash,
                result: PaymentResult,
            ) -> Result<Option<PaymentIntent>, StoreError> {
                self.change(|books| {
                    Ok(match books.finish_payment(payment_hash, result)? {
                        Some((intent, changed)) => (Some(intent), changed),
                        None => (None, vec![]),
                    })
                })
            }
            fn issue_invoice(&self, invoice: &IssuedInvoice) -> Result<(), StoreError> {
                self.change(|books| Ok(((), books.issue_invoice(invoice)?)))
            }
            fn credit_invoice(
                &self,
                payment_hash: &PaymentHash,
                amount_msat: u64,
                cursor: InvoiceCursor,
            ) -> Result<Credit, StoreError> {
                self.change(|books| {
                    books
                        .credit_invoice(payment_hash, amount_msat, cursor)
                        .map_err(Into::into)
                })
            }
            fn close_invoice(&self, payment_hash: &PaymentHash) -> Result<(), StoreError> {
                self.change(|books| Ok(((), books.close_invoice(payment_hash))))
            }
            fn receipt_delivered(&self, payment_hash: &PaymentHash) -> Result<(), StoreError> {
                self.change(|books| Ok(((), books.receipt_delivered(payment_hash))))
            }
            fn advance_cursor(&self, cursor: InvoiceCursor) -> Result<(), StoreError> {
                self.change(|books| Ok(((), books.advance_cursor(cursor))))
            }
            fn account(&self, name: &str) -> Result<AccountBook, StoreError> {
                Ok(self.read(|books| books.account(name)))
            }
            fn accounts(&self) -> Result<Vec<(String, AccountBook)>, StoreError> {
                Ok(self.read(sorted_accounts))
            }
            fn open_payments(&self) -> Result<Vec<PaymentIntent>, StoreError> {
                Ok(self.read(|books| {
                    let mut open: Vec<_> = books.payments.values().cloned().collect();
                    open.sort_by_key(|p| p.created_at_ms);
                    open
                }))
            }
            fn invoice(
                &self,
                payment_hash: &PaymentHash,
            ) -> Result<Option<IssuedInvoice>, StoreError> {
                Ok(self.read(|books| books.invoices.get(payment_hash).cloned()))
            }
            fn open_invoices(
                &self,
                account: Option<&str>,
            ) -> Result<Vec<IssuedInvoice>, StoreError> {
                Ok(self.read(|books| open_invoices_of(books, account)))
            }
            fn pending_receipts(&self) -> Result<Vec<Receipt>, StoreError> {
                Ok(self.read(|books| books.receipts.values().cloned().collect()))
            }
            fn cursor(&self) -> Result<InvoiceCursor, StoreError> {
                Ok(self.read(|books| books.cursor))
            }
            fn keysend_token(
                &self,
                account: &str,
            ) -> Result<$crate::settlement::book::KeysendToken, StoreError> {
                if let Some(token) = self.read(|books| books.keysend_tokens.get(account).copied()) {
                    return Ok(token);
                }
                let fresh = $crate::settlement::store::fresh_token()?;
                self.change(|books| Ok(books.bind_keysend_token(account, fresh)?))
            }
            fn keysend_account(
                &self,
                token: &$crate::settlement::book::KeysendToken,
            ) -> Result<Option<String>, StoreError> {
                Ok(self.read(|books| books.token_accounts.get(token).cloned()))
            }
            fn credit_keysend(
                &self,
                payment_hash: &PaymentHash,
                account: &str,
                amount_msat: u64,
                add_index: u64,
                cursor: InvoiceCursor,
            ) -> Result<Credit, StoreError> {
                self.change(|books| {
                    books
                        .credit_keysend(payment_hash, account, amount_msat, add_index, cursor)
                        .map_err(Into::into)
                })
            }
        }
    };
}

pub(crate) use books_store;

/// Books in memory: fast, and gone when the process ends. For tests and for plugins whose
/// balances need not survive a restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    books: Mutex<Books>,
    holds: HoldTable,
}

impl MemoryStore {
    /// Empty books.
    pub fn new() -> Self {
        Self::default()
    }

    /// These books.
    pub(crate) fn from_books(books: Books) -> Self {
        MemoryStore {
            books: Mutex::new(books),
            holds: HoldTable::default(),
        }
    }

    fn change<T>(
        &self,
        f: impl FnOnce(&mut Books) -> Result<(T, Vec<Changed>), StoreError>,
    ) -> Result<T, StoreError> {
        f(&mut self.books.lock()).map(|(value, _)| value)
    }

    fn read<T>(&self, f: impl FnOnce(&Books) -> T) -> T {
        f(&self.books.lock())
    }
}

books_store!(MemoryStore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_applies_the_rules() {
        let store = MemoryStore::new();
        let first = Hold::new(u64::MAX);
        store
            .reserve("alice", 10, Some(10), &first)
            .unwrap()
            .unwrap();
        // The same hold again: nothing more reserved.
        store
            .reserve("alice", 10, Some(10), &first)
            .unwrap()
            .unwrap();
        assert!(store
            .reserve("alice", 1, Some(10), &Hold::new(u64::MAX))
            .unwrap()
            .is_err());
        store.post("alice", 10, &first.id).unwrap();
        store.post("alice", 10, &first.id).unwrap();
        store.void("alice", 10, &first.id).unwrap();
        assert_eq!(store.account("alice").unwrap().receivable_msat, 10);
        assert!(matches!(
            store.void("alice", 1, &HoldId([9; 16])),
            Err(StoreError::Refused(BookError::NotReserved { .. }))
        ));
        assert_eq!(store.owe("bob", 5).unwrap().payable_msat, 5);
        let names: Vec<_> = store.accounts().unwrap().into_iter().map(|a| a.0).collect();
        assert_eq!(names, ["alice", "bob"]);
    }
}
