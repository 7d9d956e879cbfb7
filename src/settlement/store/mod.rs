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

use std::fmt;

use parking_lot::Mutex;

#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use super::book::{
    AccountBook, BookError, Credit, IssuedInvoice, IssuedState, KeysendToken, OverLimit,
    PaymentBusy, PaymentIntent, PaymentResult, PaymentRoute, Receipt,
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
    /// Reserves an incoming Prepare of `amount_msat` against the account's limit (`None`: none).
    fn reserve(
        &self,
        account: &str,
        amount_msat: u128,
        limit_msat: Option<u128>,
    ) -> Result<Result<(), OverLimit>, StoreError>;
    /// Releases a reservation: our answer was a Reject.
    fn void(&self, account: &str, amount_msat: u128) -> Result<(), StoreError>;
    /// Turns a reservation into debt: our answer was a Fulfill.
    fn post(&self, account: &str, amount_msat: u128) -> Result<(), StoreError>;
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
}

/// 32 random bytes for a new keysend token.
pub(crate) fn fresh_token() -> Result<KeysendToken, StoreError> {
    let mut token = [0u8; 32];
    getrandom::getrandom(&mut token)
        .map_err(|e| StoreError::Io(format!("no randomness for a keysend token: {e}")))?;
    Ok(token)
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
            ) -> Result<Result<(), OverLimit>, StoreError> {
                // Reservations live in memory: after a restart no Prepare is in flight.
                self.change(|books| Ok((books.reserve(account, amount_msat, limit_msat)?, vec![])))
            }
            fn void(&self, account: &str, amount_msat: u128) -> Result<(), StoreError> {
                self.change(|books| Ok((books.void(account, amount_msat)?, vec![])))
            }
            fn post(&self, account: &str, amount_msat: u128) -> Result<(), StoreError> {
                self.change(|books| Ok(((), books.post(account, amount_msat)?)))
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
        store.reserve("alice", 10, Some(10)).unwrap().unwrap();
        assert!(store.reserve("alice", 1, Some(10)).unwrap().is_err());
        store.post("alice", 10).unwrap();
        assert_eq!(store.account("alice").unwrap().receivable_msat, 10);
        assert!(matches!(
            store.void("alice", 1),
            Err(StoreError::Refused(BookError::NotReserved { .. }))
        ));
        assert_eq!(store.owe("bob", 5).unwrap().payable_msat, 5);
        let names: Vec<_> = store.accounts().unwrap().into_iter().map(|a| a.0).collect();
        assert_eq!(names, ["alice", "bob"]);
    }
}
