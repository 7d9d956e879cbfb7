//! The crash-safe store: the books in memory, every change written to an embedded redb database
//! before the method that made it returns.
//!
//! redb commits a transaction with one fsync (about 0.3–0.8 ms on the project's VMs). So that
//! many threads do not pay one fsync each, commits are grouped: a thread whose change must become
//! durable either finds a commit running — and waits for the next one, which takes its change
//! with every other change queued meanwhile — or runs that commit itself. Changes are queued in
//! the order they were applied, and a commit makes a whole prefix durable, so anything a thread
//! does after its change is durable (pay, reply, tell the user) happens after every change it
//! could have seen.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex, MutexGuard};
use redb::{Builder, ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::codec;
use super::{
    books_store, open_invoices_of, sorted_accounts, AccountBook, Credit, IssuedInvoice,
    MemoryStore, OverLimit, PaymentBusy, PaymentIntent, PaymentResult, Receipt, Store, StoreError,
};
use crate::btp::auth::{constant_time_eq, TokenCheck, TokenHash, TokenStore, TokenStoreError};
use crate::lnd::{InvoiceCursor, PaymentHash};
use crate::settlement::book::{Books, Changed};

type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;

const ACCOUNTS: Bytes = TableDefinition::new("accounts");
const PAYMENTS: Bytes = TableDefinition::new("payments");
const INVOICES: Bytes = TableDefinition::new("invoices");
const RECEIPTS: Bytes = TableDefinition::new("receipts");
const PAID_INVOICES: Bytes = TableDefinition::new("paid-invoices");
const TOKENS: Bytes = TableDefinition::new("tokens");
/// Keysend tokens by account (the BTP tokens above are another thing: how a client logs in).
const KEYSEND_TOKENS: Bytes = TableDefinition::new("keysend-tokens");
const META: Bytes = TableDefinition::new("meta");

const CURSOR_KEY: &[u8] = b"invoice-cursor";

/// The file name of the database inside a store directory.
pub const DATABASE_FILE: &str = "books.redb";

/// One write of a commit.
enum Write {
    Put(Bytes, Vec<u8>, Vec<u8>),
    Delete(Bytes, Vec<u8>),
}

#[derive(Default)]
struct JournalState {
    pending: Vec<Write>,
    /// Number of the last change queued.
    queued: u64,
    /// Every change up to this number is durable.
    durable: u64,
    committing: bool,
    /// Set when a commit failed: from then on every change is refused.
    failed: Option<String>,
}

/// The books and their database. Open it with [`EmbeddedStore::open`]; it also keeps the BTP
/// server's token bindings (it implements [`TokenStore`]).
pub struct EmbeddedStore {
    path: PathBuf,
    db: Database,
    books: Mutex<Books>,
    holds: super::HoldTable,
    tokens: Mutex<HashMap<String, TokenHash>>,
    journal: Mutex<JournalState>,
    commit_done: Condvar,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_error(context: &str) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |e| StoreError::Io(format!("{context}: {e}"))
}

fn corrupt(e: codec::CorruptRecord) -> StoreError {
    StoreError::Corrupt(e)
}

impl EmbeddedStore {
    /// Opens the store in directory `dir` (created if missing; the database is
    /// `dir/books.redb`) and loads it. Only one process may have it open for writing at a time;
    /// others may read it meanwhile ([`EmbeddedStore::read_only_snapshot`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(DATABASE_FILE);
        // One writer (this process), any number of read-only readers (`ilp-lightning status`).
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .create(&path)
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        // Create every table once, so that reads never meet a missing one.
        let setup = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            for table in [
                ACCOUNTS,
                PAYMENTS,
                INVOICES,
                RECEIPTS,
                PAID_INVOICES,
                TOKENS,
                KEYSEND_TOKENS,
                META,
            ] {
                txn.open_table(table)?;
            }
            txn.commit()?;
            Ok(())
        };
        setup().map_err(io_error("cannot create the tables"))?;
        let (books, tokens) = load(&db)?;
        let store = EmbeddedStore {
            path,
            db,
            books: Mutex::new(books),
            holds: super::HoldTable::default(),
            tokens: Mutex::new(tokens),
            journal: Mutex::new(JournalState::default()),
            commit_done: Condvar::new(),
        };
        // Paid invoices that expired an hour ago cannot be offered again: forgotten.
        let cutoff = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(3600);
        store.change(|books| Ok(((), books.forget_paid_invoices(cutoff))))?;
        Ok(store)
    }

    /// Reads the books in `dir` as they are now, without writing anything: also while the
    /// process that keeps them has them open. The copy is in memory and does not follow later
    /// changes; changing it changes nothing on disk.
    pub fn read_only_snapshot(dir: impl AsRef<Path>) -> Result<MemoryStore, StoreError> {
        let path = dir.as_ref().join(DATABASE_FILE);
        if !path.is_file() {
            return Err(StoreError::Io(format!("no books at {}", path.display())));
        }
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .open_read_only(&path)
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        let (mut books, _) = load(&db)?;
        // Reservations are not persisted; what is in flight now lives in the writer's memory.
        books.clear_reservations();
        Ok(MemoryStore::from_books(books))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn change<T>(
        &self,
        f: impl FnOnce(&mut Books) -> Result<(T, Vec<Changed>), StoreError>,
    ) -> Result<T, StoreError> {
        let (value, change_number) = {
            let mut books = self.books.lock();
            if let Some(failed) = &self.journal.lock().failed {
                return Err(StoreError::Io(format!(
                    "an earlier commit failed ({failed}); the store refuses changes until it is \
                     reopened"
                )));
            }
            let (value, changed) = f(&mut books)?;
            if changed.is_empty() {
                return Ok(value);
            }
            let writes = changed.iter().map(|c| write_of(&books, c)).collect();
            // Queued while the books are locked, so the queue has the order the books saw.
            (value, self.queue(writes))
        };
        self.wait_durable(change_number)?;
        Ok(value)
    }

    fn read<T>(&self, f: impl FnOnce(&Books) -> T) -> T {
        f(&self.books.lock())
    }

    fn queue(&self, writes: Vec<Write>) -> u64 {
        let mut journal = self.journal.lock();
        journal.pending.extend(writes);
        journal.queued += 1;
        journal.queued
    }

    /// Returns once change `number` is durable, committing it (and everything queued before and
    /// with it) unless another thread is already committing.
    fn wait_durable(&self, number: u64) -> Result<(), StoreError> {
        let mut journal = self.journal.lock();
        loop {
            if let Some(failed) = &journal.failed {
                return Err(StoreError::Io(format!("commit failed: {failed}")));
            }
            if journal.durable >= number {
                return Ok(());
            }
            if journal.committing {
                self.commit_done.wait(&mut journal);
                continue;
            }
            journal.committing = true;
            let writes = std::mem::take(&mut journal.pending);
            let upto = journal.queued;
            let result = MutexGuard::unlocked(&mut journal, || self.commit(writes));
            journal.committing = false;
            match result {
                Ok(()) => journal.durable = upto,
                Err(e) => {
                    log::error!("settlement store {}: {e}", self.path.display());
                    journal.failed = Some(e);
                }
            }
            self.commit_done.notify_all();
        }
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), String> {
        let run = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            for write in &writes {
                match write {
                    Write::Put(table, key, value) => {
                        txn.open_table(*table)?
                            .insert(key.as_slice(), value.as_slice())?;
                    }
                    Write::Delete(table, key) => {
                        txn.open_table(*table)?.remove(key.as_slice())?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(|e| e.to_string())
    }
}

/// The write that persists `changed` as the books now have it.
fn write_of(books: &Books, changed: &Changed) -> Write {
    match changed {
        Changed::Account(name) => Write::Put(
            ACCOUNTS,
            name.as_bytes().to_vec(),
            codec::encode_account(&books.account(name)),
        ),
        Changed::Payment(hash) => match books.payments.get(hash) {
            Some(intent) => Write::Put(PAYMENTS, hash.0.to_vec(), codec::encode_payment(intent)),
            None => Write::Delete(PAYMENTS, hash.0.to_vec()),
        },
        Changed::Invoice(hash) => match books.invoices.get(hash) {
            Some(invoice) => Write::Put(INVOICES, hash.0.to_vec(), codec::encode_invoice(invoice)),
            None => Write::Delete(INVOICES, hash.0.to_vec()),
        },
        Changed::Receipt(hash) => match books.receipts.get(hash) {
            Some(receipt) => Write::Put(RECEIPTS, hash.0.to_vec(), codec::encode_receipt(receipt)),
            None => Write::Delete(RECEIPTS, hash.0.to_vec()),
        },
        Changed::PaidInvoice(hash) => match books.paid_invoices.get(hash) {
            Some(expires_at) => Write::Put(
                PAID_INVOICES,
                hash.0.to_vec(),
                codec::encode_paid_invoice(*expires_at),
            ),
            None => Write::Delete(PAID_INVOICES, hash.0.to_vec()),
        },
        Changed::Cursor => Write::Put(
            META,
            CURSOR_KEY.to_vec(),
            codec::encode_cursor(&books.cursor),
        ),
        Changed::KeysendToken(account) => match books.keysend_tokens.get(account) {
            Some(token) => Write::Put(KEYSEND_TOKENS, account.as_bytes().to_vec(), token.to_vec()),
            None => Write::Delete(KEYSEND_TOKENS, account.as_bytes().to_vec()),
        },
    }
}

fn hash_key(key: &[u8]) -> Result<PaymentHash, StoreError> {
    <[u8; 32]>::try_from(key).map(PaymentHash).map_err(|_| {
        StoreError::Corrupt(codec::CorruptRecord(format!(
            "a key of {} bytes where a payment hash belongs",
            key.len()
        )))
    })
}

/// Reads one stored row (key, value) into the books.
type RowVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

fn load(db: &impl ReadableDatabase) -> Result<(Books, HashMap<String, TokenHash>), StoreError> {
    let read = io_error("cannot read the store");
    let txn = db.begin_read().map_err(|e| read(e.into()))?;
    let mut books = Books::default();
    let mut tokens = HashMap::new();
    let each = |table: Bytes, visit: &mut RowVisitor| -> Result<(), StoreError> {
        let table = txn.open_table(table).map_err(|e| read(e.into()))?;
        for row in table.iter().map_err(|e| read(e.into()))? {
            let (key, value) = row.map_err(|e| read(e.into()))?;
            visit(key.value(), value.value())?;
        }
        Ok(())
    };
    each(ACCOUNTS, &mut |key, value| {
        let name = String::from_utf8(key.to_vec()).map_err(|_| {
            StoreError::Corrupt(codec::CorruptRecord("an account name is not UTF-8".into()))
        })?;
        books
            .accounts
            .insert(name, codec::decode_account(value).map_err(corrupt)?);
        Ok(())
    })?;
    each(PAYMENTS, &mut |key, value| {
        books.payments.insert(
            hash_key(key)?,
            codec::decode_payment(value).map_err(corrupt)?,
        );
        Ok(())
    })?;
    each(INVOICES, &mut |key, value| {
        books.invoices.insert(
            hash_key(key)?,
            codec::decode_invoice(value).map_err(corrupt)?,
        );
        Ok(())
    })?;
    each(RECEIPTS, &mut |key, value| {
        books.receipts.insert(
            hash_key(key)?,
            codec::decode_receipt(value).map_err(corrupt)?,
        );
        Ok(())
    })?;
    each(PAID_INVOICES, &mut |key, value| {
        books.paid_invoices.insert(
            hash_key(key)?,
            codec::decode_paid_invoice(value).map_err(corrupt)?,
        );
        Ok(())
    })?;
    each(META, &mut |key, value| {
        if key == CURSOR_KEY {
            books.cursor = codec::decode_cursor(value).map_err(corrupt)?;
        }
        Ok(())
    })?;
    each(KEYSEND_TOKENS, &mut |key, value| {
        let account = String::from_utf8(key.to_vec()).map_err(|_| {
            StoreError::Corrupt(codec::CorruptRecord("an account name is not UTF-8".into()))
        })?;
        let token = <[u8; 32]>::try_from(value).map_err(|_| {
            StoreError::Corrupt(codec::CorruptRecord(format!(
                "the keysend token of {account} is {} bytes, not 32",
                value.len()
            )))
        })?;
        books.token_accounts.insert(token, account.clone());
        books.keysend_tokens.insert(account, token);
        Ok(())
    })?;
    each(TOKENS, &mut |key, value| {
        let account = String::from_utf8(key.to_vec()).map_err(|_| {
            StoreError::Corrupt(codec::CorruptRecord("an account name is not UTF-8".into()))
        })?;
        let hash = <[u8; 32]>::try_from(value).map_err(|_| {
            StoreError::Corrupt(codec::CorruptRecord(format!(
                "the token hash of {account} is {} bytes, not 32",
                value.len()
            )))
        })?;
        tokens.insert(account, hash);
        Ok(())
    })?;
    Ok((books, tokens))
}

books_store!(EmbeddedStore);

impl TokenStore for EmbeddedStore {
    fn check_or_bind(
        &self,
        account: &str,
        token_hash: &TokenHash,
    ) -> Result<TokenCheck, TokenStoreError> {
        let number = {
            let mut tokens = self.tokens.lock();
            match tokens.get(account) {
                Some(bound) if constant_time_eq(bound, token_hash) => {
                    return Ok(TokenCheck::Matches)
                }
                Some(_) => return Ok(TokenCheck::Mismatch),
                None => {}
            }
            tokens.insert(account.to_owned(), *token_hash);
            self.queue(vec![Write::Put(
                TOKENS,
                account.as_bytes().to_vec(),
                token_hash.to_vec(),
            )])
        };
        self.wait_durable(number)
            .map_err(|e| TokenStoreError(std::io::Error::other(e.to_string())))?;
        Ok(TokenCheck::Bound)
    }

    fn bound_accounts(&self) -> Result<Option<Vec<String>>, TokenStoreError> {
        Ok(Some(self.tokens.lock().keys().cloned().collect()))
    }

    fn unbind(&self, account: &str) -> Result<(), TokenStoreError> {
        let number = {
            let mut tokens = self.tokens.lock();
            if tokens.remove(account).is_none() {
                return Ok(());
            }
            self.queue(vec![Write::Delete(TOKENS, account.as_bytes().to_vec())])
        };
        self.wait_durable(number)
            .map_err(|e| TokenStoreError(std::io::Error::other(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settlement::book::{BookError, IssuedState, PaymentRoute};
    use std::sync::Arc;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ilp-lightning-store-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn intent(account: &str, byte: u8, amount_msat: u64) -> PaymentIntent {
        PaymentIntent {
            account: account.into(),
            payment_hash: PaymentHash([byte; 32]),
            amount_msat,
            fee_limit_msat: 10,
            route: PaymentRoute::Invoice {
                payment_request: "lnbcrt1".into(),
                expires_at: 99,
            },
            created_at_ms: u64::from(byte),
            explicit: false,
        }
    }

    #[test]
    fn everything_but_reservations_survives_a_reopen() {
        let dir = temp_dir("reopen");
        {
            let store = EmbeddedStore::open(&dir).unwrap();
            let hold = super::super::Hold::new(u64::MAX);
            store.reserve("alice", 500, None, &hold).unwrap().unwrap();
            store.post("alice", 400, &hold.id).unwrap();
            store.owe("bob", 9000).unwrap();
            store
                .begin_payment(&intent("bob", 1, 9000))
                .unwrap()
                .unwrap();
            let mut paid = intent("carol", 2, 500);
            paid.route = PaymentRoute::Invoice {
                payment_request: "lnbcrt2".into(),
                expires_at: u64::MAX,
            };
            store.owe("carol", 500).unwrap();
            store.begin_payment(&paid).unwrap().unwrap();
            store
                .finish_payment(&paid.payment_hash, PaymentResult::Succeeded { fee_msat: 1 })
                .unwrap();
            // Expired long ago: forgotten at the next open.
            let mut old = intent("carol", 3, 0);
            old.route = PaymentRoute::Invoice {
                payment_request: "lnbcrt3".into(),
                expires_at: 1,
            };
            store.begin_payment(&old).unwrap().unwrap();
            store
                .finish_payment(&old.payment_hash, PaymentResult::Succeeded { fee_msat: 0 })
                .unwrap();
            store
                .issue_invoice(&IssuedInvoice {
                    payment_hash: PaymentHash([7; 32]),
                    account: "alice".into(),
                    payment_request: "lnbcrt7".into(),
                    add_index: 3,
                    expires_at: 1000,
                    state: IssuedState::Open,
                })
                .unwrap();
            let credit = store
                .credit_invoice(
                    &PaymentHash([7; 32]),
                    2000,
                    InvoiceCursor {
                        add_index: 3,
                        settle_index: 1,
                    },
                )
                .unwrap();
            assert!(matches!(credit, Credit::Credited(_)));
            assert_eq!(
                store.check_or_bind("alice", &[1; 32]).unwrap(),
                TokenCheck::Bound
            );
            let token = store.keysend_token("bob").unwrap();
            assert_eq!(store.keysend_token("bob").unwrap(), token);
            assert!(matches!(
                store
                    .credit_keysend(
                        &PaymentHash([8; 32]),
                        "bob",
                        1500,
                        4,
                        InvoiceCursor::default()
                    )
                    .unwrap(),
                Credit::Credited(_)
            ));
        }
        let store = EmbeddedStore::open(&dir).unwrap();
        let alice = store.account("alice").unwrap();
        assert_eq!(
            (
                alice.receivable_msat,
                alice.reserved_msat,
                alice.received_msat
            ),
            (400 - 2000, 0, 2000)
        );
        let bob = store.account("bob").unwrap();
        assert_eq!((bob.payable_msat, bob.paying_msat), (0, 9000));
        assert_eq!(store.open_payments().unwrap(), vec![intent("bob", 1, 9000)]);
        // The invoice paid is remembered; the expired one is not.
        let mut again = intent("carol", 2, 500);
        again.created_at_ms = 99;
        assert!(matches!(
            store.begin_payment(&again),
            Err(StoreError::Refused(BookError::DuplicatePayment(_)))
        ));
        let mut expired_again = intent("carol", 3, 0);
        expired_again.created_at_ms = 98;
        assert!(store.begin_payment(&expired_again).unwrap().is_ok());
        // The invoice's and the keysend's.
        assert_eq!(store.pending_receipts().unwrap().len(), 2);
        assert_eq!(
            store.cursor().unwrap(),
            InvoiceCursor {
                add_index: 3,
                settle_index: 1
            }
        );
        // Replayed after the restart: still credited once.
        assert_eq!(
            store
                .credit_invoice(&PaymentHash([7; 32]), 2000, InvoiceCursor::default())
                .unwrap(),
            Credit::AlreadyCredited
        );
        assert_eq!(
            store.check_or_bind("alice", &[1; 32]).unwrap(),
            TokenCheck::Matches
        );
        assert_eq!(
            store.check_or_bind("alice", &[2; 32]).unwrap(),
            TokenCheck::Mismatch
        );
        // The keysend token and the credit of a keysend survive too.
        let token = store.keysend_token("bob").unwrap();
        assert_eq!(
            store.keysend_account(&token).unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(
            store
                .credit_keysend(
                    &PaymentHash([8; 32]),
                    "bob",
                    1500,
                    4,
                    InvoiceCursor::default()
                )
                .unwrap(),
            Credit::AlreadyCredited
        );
        assert_eq!(store.account("bob").unwrap().received_msat, 1500);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_changes_share_commits_and_all_land() {
        let dir = temp_dir("group");
        {
            let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let store = store.clone();
                    std::thread::Builder::new()
                        .name(format!("store-test-{t}"))
                        .spawn(move || {
                            for _ in 0..50 {
                                store.owe(&format!("acct{t}"), 1000).unwrap();
                            }
                        })
                        .unwrap()
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        let store = EmbeddedStore::open(&dir).unwrap();
        for t in 0..8 {
            assert_eq!(
                store.account(&format!("acct{t}")).unwrap().payable_msat,
                50_000
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refused_change_writes_nothing() {
        let dir = temp_dir("refused");
        {
            let store = EmbeddedStore::open(&dir).unwrap();
            store.owe("bob", 1).unwrap();
            assert!(store
                .post("bob", 5, &super::super::HoldId([1; 16]))
                .is_err());
        }
        let store = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(store.account("bob").unwrap().receivable_msat, 0);
        assert_eq!(store.account("bob").unwrap().payable_msat, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
