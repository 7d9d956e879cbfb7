//! The books: per-account balances and the rules that move them, with no I/O.
//!
//! Every change of money is one method of [`Books`]; each checks its arithmetic and either
//! applies completely or not at all. The stores ([`super::store`]) run these methods under their
//! lock and persist the records a method reports as changed, so that the memory store, the
//! embedded database and the tests share one set of rules.
//!
//! All amounts are millisatoshis. Two balances per account, as in the JS reference:
//! `receivable` (the peer owes us) and `payable` (we owe the peer). Both are signed: a client
//! that prefunded is owed money (its `receivable` on the server is negative, its `payable` on the
//! client negative too).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::lnd::{InvoiceCursor, PaymentHash, Preimage, PublicKey};

/// One account's position and history, in millisatoshis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountBook {
    /// What the peer owes us: up when a Prepare of its is fulfilled, down when its Lightning
    /// payment arrives. Negative when it paid ahead (prefunded).
    pub receivable_msat: i128,
    /// Prepares of the peer accepted and not answered yet; they count against its credit limit.
    /// Not persisted: after a restart no Prepare is in flight.
    pub reserved_msat: u128,
    /// What we owe the peer: up when it fulfils a Prepare of ours, down when we pay it. Negative
    /// when we paid ahead.
    pub payable_msat: i128,
    /// The part of what we owed that is in a Lightning payment whose outcome is not final yet.
    pub paying_msat: u128,
    /// Lightning payments to the peer that succeeded: their sum, not counting fees.
    pub paid_msat: u128,
    /// Routing fees those payments cost us (ours to bear, never charged to the peer).
    pub fees_msat: u128,
    /// How many payments to the peer succeeded.
    pub payments: u64,
    /// Lightning payments from the peer credited: their sum.
    pub received_msat: u128,
    /// How many payments from the peer were credited.
    pub receipts: u64,
}

impl AccountBook {
    /// What the peer would owe if every accepted Prepare were fulfilled.
    pub fn exposure_msat(&self) -> i128 {
        self.receivable_msat
            .saturating_add_unsigned(self.reserved_msat)
    }
}

/// What a peer puts in a keysend payment to us so that we know whose it is: 32 random bytes we
/// made for its account and handed it in the `ilpLightningSettlement` sub-protocol.
pub type KeysendToken = [u8; 32];

/// How an outgoing payment reaches the peer.
#[derive(Clone, PartialEq, Eq)]
pub enum PaymentRoute {
    /// Paying a BOLT11 invoice the peer sent us.
    Invoice {
        /// The BOLT11 string.
        payment_request: String,
        /// When it expires, Unix seconds.
        expires_at: u64,
    },
    /// A keysend payment to the peer's node; the preimage is ours, so a retry reuses it and
    /// LND refuses to pay the same hash twice.
    Keysend {
        /// The peer's node.
        destination: PublicKey,
        /// Our preimage (its hash is the payment hash).
        preimage: Preimage,
        /// Custom records sent with it (types ≥ 65536).
        records: BTreeMap<u64, Vec<u8>>,
    },
}

impl fmt::Debug for PaymentRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaymentRoute::Invoice { expires_at, .. } => f
                .debug_struct("Invoice")
                .field("expires_at", expires_at)
                .finish_non_exhaustive(),
            // The preimage is a secret until the payment succeeds: never printed.
            PaymentRoute::Keysend {
                destination,
                records,
                ..
            } => f
                .debug_struct("Keysend")
                .field("destination", destination)
                .field("record_types", &records.keys())
                .finish_non_exhaustive(),
        }
    }
}

/// A payment we are about to make or are making, recorded before LND is asked so that a crash
/// at any point leaves a record to reconcile against the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntent {
    /// Who is paid.
    pub account: String,
    /// The payment's identity at LND (known before paying: decoded from the invoice, or the
    /// hash of our keysend preimage).
    pub payment_hash: PaymentHash,
    /// What the peer receives, fees not included.
    pub amount_msat: u64,
    /// The most we accept to pay in routing fees.
    pub fee_limit_msat: u64,
    /// Invoice or keysend.
    pub route: PaymentRoute,
    /// When the intent was recorded, Unix milliseconds.
    pub created_at_ms: u64,
    /// Asked for by `send_money` (a prefund may exceed what is owed), not by the settle rules.
    pub explicit: bool,
}

/// How a payment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentResult {
    /// Paid, with this fee.
    Succeeded {
        /// Routing fee paid.
        fee_msat: u64,
    },
    /// Definitely not paid: the amount is owed again.
    Failed,
}

/// Where an invoice we issued is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssuedState {
    /// Handed to the peer (or about to be), payable.
    Open,
    /// Paid and credited.
    Paid,
    /// Cancelled or expired unpaid: can no longer be paid.
    Closed,
}

/// An invoice we created for an account's peer to pay us with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedInvoice {
    /// Its payment hash.
    pub payment_hash: PaymentHash,
    /// The account whose peer may pay it.
    pub account: String,
    /// Its BOLT11 string (to hand out again after a reconnect).
    pub payment_request: String,
    /// Its position in the node's add sequence.
    pub add_index: u64,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
    /// Open, paid or closed.
    pub state: IssuedState,
}

/// Money received that the user's money handler has not been told about yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The payment.
    pub payment_hash: PaymentHash,
    /// From whom.
    pub account: String,
    /// How much.
    pub amount_msat: u64,
}

/// What crediting an invoice payment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credit {
    /// Credited now, to this account; its receipt waits for the money handler.
    Credited(Receipt),
    /// This payment hash was credited before (LND replays settled invoices): nothing changed.
    AlreadyCredited,
    /// Not an invoice of ours (another application on the node): ignored.
    NotOurs,
}

/// A credit limit refused a Prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// What the peer would owe with it, msat.
    pub would_owe_msat: i128,
    /// Its limit, msat.
    pub limit_msat: u128,
}

/// Another payment to the account is still in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentBusy {
    /// The payment in flight.
    pub in_flight: PaymentHash,
}

/// A change that the rules refuse: the books stay as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookError {
    /// An amount would not fit in the books' integers.
    Overflow(&'static str),
    /// Fewer millisatoshis are reserved than a Prepare's answer releases.
    NotReserved {
        /// The account.
        account: String,
        /// What is reserved.
        reserved_msat: u128,
        /// What the answer releases.
        amount_msat: u128,
    },
    /// A payment with this hash was recorded before (each invoice and preimage is used once).
    DuplicatePayment(PaymentHash),
    /// An invoice with this hash was recorded before.
    DuplicateInvoice(PaymentHash),
    /// A new keysend token is another account's already.
    DuplicateToken,
}

impl fmt::Display for BookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BookError::Overflow(what) => write!(f, "amount out of range: {what}"),
            BookError::NotReserved {
                account,
                reserved_msat,
                amount_msat,
            } => write!(
                f,
                "account {account}: answering a Prepare of {amount_msat} msat but only \
                 {reserved_msat} msat are reserved"
            ),
            BookError::DuplicatePayment(hash) => {
                write!(f, "a payment with hash {hash} was recorded before")
            }
            BookError::DuplicateInvoice(hash) => {
                write!(f, "an invoice with hash {hash} was recorded before")
            }
            BookError::DuplicateToken => f.write_str("that keysend token is taken"),
        }
    }
}

impl std::error::Error for BookError {}

/// A record a method changed, for the store to persist (present: write it; gone: delete it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Changed {
    /// `accounts[name]`.
    Account(String),
    /// `payments[hash]` (open payment intents).
    Payment(PaymentHash),
    /// `invoices[hash]`.
    Invoice(PaymentHash),
    /// `receipts[hash]`.
    Receipt(PaymentHash),
    /// `paid_invoices[hash]`.
    PaidInvoice(PaymentHash),
    /// The invoice cursor.
    Cursor,
    /// `keysend_tokens[account]`.
    KeysendToken(String),
}

/// Which incoming Prepare a reservation belongs to: 16 bytes, unique per Prepare (a random
/// prefix per process and a counter), so that every step of its booking — reserve, post,
/// void — can be repeated harmlessly and a sweeper can find what a dead process left held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId(pub [u8; 16]);

impl HoldId {
    /// A new id, never given before by any process (with overwhelming probability).
    pub fn next() -> HoldId {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;
        static PREFIX: OnceLock<[u8; 8]> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| {
            let mut bytes = [0u8; 8];
            if getrandom::getrandom(&mut bytes).is_err() {
                // No randomness: the process id and the clock still set processes apart.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                bytes = (now ^ u64::from(std::process::id()) << 32).to_be_bytes();
            }
            bytes
        });
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(prefix);
        id[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        HoldId(id)
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An incoming Prepare's reservation: whose it is and until when it may stay open. A hold
/// still open a margin past its Prepare's expiry is voided by a sweeper (the process that
/// held it died, or forgot it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The Prepare's identity.
    pub id: HoldId,
    /// When the Prepare expires, in Unix milliseconds.
    pub expires_at_ms: u64,
}

impl Hold {
    /// A new hold for a Prepare expiring at `expires_at_ms`.
    pub fn new(expires_at_ms: u64) -> Hold {
        Hold {
            id: HoldId::next(),
            expires_at_ms,
        }
    }
}

/// Everything the books hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Books {
    /// Accounts by name.
    pub accounts: HashMap<String, AccountBook>,
    /// Outgoing payments not final yet, by hash.
    pub payments: HashMap<PaymentHash, PaymentIntent>,
    /// Invoices of peers we paid, by hash, with their expiry (Unix seconds): a peer may offer
    /// one again (it does after a reconnect, while our payment is still in flight), and LND,
    /// asked to pay it, answers with the earlier payment's success — which must not be booked
    /// a second time. Kept until the invoice can no longer be offered (it expired).
    pub paid_invoices: HashMap<PaymentHash, u64>,
    /// Invoices we issued, by hash.
    pub invoices: HashMap<PaymentHash, IssuedInvoice>,
    /// Credited payments the money handler has not been told about.
    pub receipts: HashMap<PaymentHash, Receipt>,
    /// Where the invoice stream resumes.
    pub cursor: InvoiceCursor,
    /// The keysend token of each account that has one (made once, kept for good: a keysend in
    /// flight across a reconnect or a restart is still credited).
    pub keysend_tokens: HashMap<String, KeysendToken>,
    /// The same, by token.
    pub token_accounts: HashMap<KeysendToken, String>,
}

fn add_signed(value: i128, amount: u128, what: &'static str) -> Result<i128, BookError> {
    i128::try_from(amount)
        .ok()
        .and_then(|a| value.checked_add(a))
        .ok_or(BookError::Overflow(what))
}

fn sub_signed(value: i128, amount: u128, what: &'static str) -> Result<i128, BookError> {
    i128::try_from(amount)
        .ok()
        .and_then(|a| value.checked_sub(a))
        .ok_or(BookError::Overflow(what))
}

impl Books {
    /// The account's book (zero for one never seen).
    pub fn account(&self, name: &str) -> AccountBook {
        self.accounts.get(name).copied().unwrap_or_default()
    }

    fn update<T>(
        &mut self,
        name: &str,
        change: impl FnOnce(&mut AccountBook) -> Result<T, BookError>,
    ) -> Result<T, BookError> {
        // Work on a copy so that a refused change leaves the books as they were.
        let mut book = self.account(name);
        let result = change(&mut book)?;
        self.accounts.insert(name.to_owned(), book);
        Ok(result)
    }

    /// An incoming Prepare of `amount_msat`: reserved against the peer's credit limit
    /// (`None`: no limit), or refused with nothing changed.
    pub fn reserve(
        &mut self,
        account: &str,
        amount_msat: u128,
        limit_msat: Option<u128>,
    ) -> Result<Result<(), OverLimit>, BookError> {
        self.update(account, |book| {
            let would_owe = add_signed(book.exposure_msat(), amount_msat, "reservation")?;
            if let Some(limit) = limit_msat {
                if would_owe > i128::try_from(limit).unwrap_or(i128::MAX) {
                    return Ok(Err(OverLimit {
                        would_owe_msat: would_owe,
                        limit_msat: limit,
                    }));
                }
            }
            book.reserved_msat = book
                .reserved_msat
                .checked_add(amount_msat)
                .ok_or(BookError::Overflow("reservation"))?;
            Ok(Ok(()))
        })
    }

    fn release(book: &mut AccountBook, account: &str, amount_msat: u128) -> Result<(), BookError> {
        book.reserved_msat =
            book.reserved_msat
                .checked_sub(amount_msat)
                .ok_or_else(|| BookError::NotReserved {
                    account: account.to_owned(),
                    reserved_msat: book.reserved_msat,
                    amount_msat,
                })?;
        Ok(())
    }

    /// Our answer to a reserved Prepare was a Reject: the reservation is released.
    pub fn void(&mut self, account: &str, amount_msat: u128) -> Result<(), BookError> {
        self.update(account, |book| Self::release(book, account, amount_msat))
    }

    /// Our answer to a reserved Prepare was a Fulfill: the peer owes it now.
    pub fn post(&mut self, account: &str, amount_msat: u128) -> Result<Vec<Changed>, BookError> {
        self.update(account, |book| {
            Self::release(book, account, amount_msat)?;
            book.receivable_msat = add_signed(book.receivable_msat, amount_msat, "receivable")?;
            Ok(())
        })?;
        Ok(vec![Changed::Account(account.to_owned())])
    }

    /// The peer fulfilled a Prepare of ours: we owe it `amount_msat` more.
    pub fn owe(&mut self, account: &str, amount_msat: u128) -> Result<Vec<Changed>, BookError> {
        self.update(account, |book| {
            book.payable_msat = add_signed(book.payable_msat, amount_msat, "payable")?;
            Ok(())
        })?;
        Ok(vec![Changed::Account(account.to_owned())])
    }

    /// Records a payment before it is made: its amount leaves `payable` (which may go negative
    /// for an explicit prefund) and counts as `paying` until the outcome is known. Refused while
    /// another payment to the account is in flight (one at a time per account), and for a hash
    /// in flight or paid already.
    pub fn begin_payment(
        &mut self,
        intent: &PaymentIntent,
    ) -> Result<Result<Vec<Changed>, PaymentBusy>, BookError> {
        if self.payments.contains_key(&intent.payment_hash)
            || self.paid_invoices.contains_key(&intent.payment_hash)
        {
            return Err(BookError::DuplicatePayment(intent.payment_hash));
        }
        if let Some(busy) = self.payments.values().find(|p| p.account == intent.account) {
            return Ok(Err(PaymentBusy {
                in_flight: busy.payment_hash,
            }));
        }
        let amount = u128::from(intent.amount_msat);
        self.update(&intent.account, |book| {
            book.payable_msat = sub_signed(book.payable_msat, amount, "payable")?;
            book.paying_msat = book
                .paying_msat
                .checked_add(amount)
                .ok_or(BookError::Overflow("paying"))?;
            Ok(())
        })?;
        self.payments.insert(intent.payment_hash, intent.clone());
        Ok(Ok(vec![
            Changed::Account(intent.account.clone()),
            Changed::Payment(intent.payment_hash),
        ]))
    }

    /// Books a payment's final outcome: success adds to `paid` and `fees`, failure gives the
    /// amount back to `payable`. `None` if no such payment is open (already finished: a repeat
    /// is harmless).
    pub fn finish_payment(
        &mut self,
        payment_hash: &PaymentHash,
        result: PaymentResult,
    ) -> Result<Option<(PaymentIntent, Vec<Changed>)>, BookError> {
        let Some(intent) = self.payments.get(payment_hash).cloned() else {
            return Ok(None);
        };
        let amount = u128::from(intent.amount_msat);
        self.update(&intent.account, |book| {
            book.paying_msat = book
                .paying_msat
                .checked_sub(amount)
                .ok_or(BookError::Overflow("paying"))?;
            match result {
                PaymentResult::Succeeded { fee_msat } => {
                    book.paid_msat = book
                        .paid_msat
                        .checked_add(amount)
                        .ok_or(BookError::Overflow("paid"))?;
                    book.fees_msat = book
                        .fees_msat
                        .checked_add(u128::from(fee_msat))
                        .ok_or(BookError::Overflow("fees"))?;
                    book.payments = book.payments.saturating_add(1);
                }
                PaymentResult::Failed => {
                    book.payable_msat = add_signed(book.payable_msat, amount, "payable")?;
                }
            }
            Ok(())
        })?;
        self.payments.remove(payment_hash);
        let mut changed = vec![
            Changed::Account(intent.account.clone()),
            Changed::Payment(*payment_hash),
        ];
        if let (PaymentResult::Succeeded { .. }, PaymentRoute::Invoice { expires_at, .. }) =
            (result, &intent.route)
        {
            self.paid_invoices.insert(*payment_hash, *expires_at);
            changed.push(Changed::PaidInvoice(*payment_hash));
        }
        Ok(Some((intent, changed)))
    }

    /// Records an invoice we created for `invoice.account`'s peer.
    pub fn issue_invoice(&mut self, invoice: &IssuedInvoice) -> Result<Vec<Changed>, BookError> {
        if self.invoices.contains_key(&invoice.payment_hash) {
            return Err(BookError::DuplicateInvoice(invoice.payment_hash));
        }
        self.invoices.insert(invoice.payment_hash, invoice.clone());
        Ok(vec![Changed::Invoice(invoice.payment_hash)])
    }

    /// A settled invoice seen on the node: credits its account once per payment hash, and moves
    /// the cursor to `cursor` (never backwards) in the same change.
    pub fn credit_invoice(
        &mut self,
        payment_hash: &PaymentHash,
        amount_msat: u64,
        cursor: InvoiceCursor,
    ) -> Result<(Credit, Vec<Changed>), BookError> {
        let mut changed = self.advance_cursor(cursor);
        let Some(invoice) = self.invoices.get(payment_hash).cloned() else {
            return Ok((Credit::NotOurs, changed));
        };
        if invoice.state == IssuedState::Paid {
            return Ok((Credit::AlreadyCredited, changed));
        }
        let amount = u128::from(amount_msat);
        self.update(&invoice.account, |book| {
            book.receivable_msat = sub_signed(book.receivable_msat, amount, "receivable")?;
            book.received_msat = book
                .received_msat
                .checked_add(amount)
                .ok_or(BookError::Overflow("received"))?;
            book.receipts = book.receipts.saturating_add(1);
            Ok(())
        })?;
        if let Some(issued) = self.invoices.get_mut(payment_hash) {
            issued.state = IssuedState::Paid;
        }
        let receipt = Receipt {
            payment_hash: *payment_hash,
            account: invoice.account.clone(),
            amount_msat,
        };
        self.receipts.insert(*payment_hash, receipt.clone());
        changed.extend([
            Changed::Account(invoice.account),
            Changed::Invoice(*payment_hash),
            Changed::Receipt(*payment_hash),
        ]);
        Ok((Credit::Credited(receipt), changed))
    }

    /// The account's keysend token: the one it has, or `fresh` bound to it now. A `fresh` token
    /// that another account holds already (32 random bytes: it does not happen) is refused.
    pub fn bind_keysend_token(
        &mut self,
        account: &str,
        fresh: KeysendToken,
    ) -> Result<(KeysendToken, Vec<Changed>), BookError> {
        if let Some(token) = self.keysend_tokens.get(account) {
            return Ok((*token, Vec::new()));
        }
        if self.token_accounts.contains_key(&fresh) {
            return Err(BookError::DuplicateToken);
        }
        self.keysend_tokens.insert(account.to_owned(), fresh);
        self.token_accounts.insert(fresh, account.to_owned());
        Ok((fresh, vec![Changed::KeysendToken(account.to_owned())]))
    }

    /// A settled keysend payment that carried `account`'s token: credited once per payment
    /// hash (recorded as a paid invoice of the account's, so that a replay finds it), with the
    /// cursor moved in the same change.
    pub fn credit_keysend(
        &mut self,
        payment_hash: &PaymentHash,
        account: &str,
        amount_msat: u64,
        add_index: u64,
        cursor: InvoiceCursor,
    ) -> Result<(Credit, Vec<Changed>), BookError> {
        if self.invoices.contains_key(payment_hash) {
            let changed = self.advance_cursor(cursor);
            return Ok((Credit::AlreadyCredited, changed));
        }
        self.invoices.insert(
            *payment_hash,
            IssuedInvoice {
                payment_hash: *payment_hash,
                account: account.to_owned(),
                payment_request: String::new(),
                add_index,
                expires_at: 0,
                state: IssuedState::Open,
            },
        );
        // Its record is written with the credit (`credit_invoice` reports it changed).
        match self.credit_invoice(payment_hash, amount_msat, cursor) {
            Ok(credited) => Ok(credited),
            Err(e) => {
                self.invoices.remove(payment_hash);
                Err(e)
            }
        }
    }

    /// An open invoice was cancelled or expired unpaid. Nothing happens to a paid one.
    pub fn close_invoice(&mut self, payment_hash: &PaymentHash) -> Vec<Changed> {
        match self.invoices.get_mut(payment_hash) {
            Some(invoice) if invoice.state == IssuedState::Open => {
                invoice.state = IssuedState::Closed;
                vec![Changed::Invoice(*payment_hash)]
            }
            _ => Vec::new(),
        }
    }

    /// The money handler was told about a receipt.
    pub fn receipt_delivered(&mut self, payment_hash: &PaymentHash) -> Vec<Changed> {
        match self.receipts.remove(payment_hash) {
            Some(_) => vec![Changed::Receipt(*payment_hash)],
            None => Vec::new(),
        }
    }

    /// Moves the cursor forward (each index separately; never backwards).
    pub fn advance_cursor(&mut self, cursor: InvoiceCursor) -> Vec<Changed> {
        let next = InvoiceCursor {
            add_index: self.cursor.add_index.max(cursor.add_index),
            settle_index: self.cursor.settle_index.max(cursor.settle_index),
        };
        if next == self.cursor {
            return Vec::new();
        }
        self.cursor = next;
        vec![Changed::Cursor]
    }

    /// Forgets the paid invoices that expired before `before` (Unix seconds): no peer can offer
    /// them any more, since an invoice is only taken well before it expires.
    pub fn forget_paid_invoices(&mut self, before: u64) -> Vec<Changed> {
        let expired: Vec<PaymentHash> = self
            .paid_invoices
            .iter()
            .filter(|(_, expires_at)| **expires_at < before)
            .map(|(hash, _)| *hash)
            .collect();
        expired
            .into_iter()
            .map(|hash| {
                self.paid_invoices.remove(&hash);
                Changed::PaidInvoice(hash)
            })
            .collect()
    }

    /// Drops every reservation: after a restart no Prepare is in flight any more.
    pub fn clear_reservations(&mut self) {
        for book in self.accounts.values_mut() {
            book.reserved_msat = 0;
        }
    }

    /// The open payment to `account`, if any.
    pub fn payment_of(&self, account: &str) -> Option<&PaymentIntent> {
        self.payments.values().find(|p| p.account == account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> PaymentHash {
        PaymentHash([byte; 32])
    }

    fn intent(account: &str, byte: u8, amount_msat: u64) -> PaymentIntent {
        PaymentIntent {
            account: account.into(),
            payment_hash: hash(byte),
            amount_msat,
            fee_limit_msat: 1000,
            route: PaymentRoute::Invoice {
                payment_request: "lnbcrt1...".into(),
                expires_at: 4_000_000_000,
            },
            created_at_ms: 1,
            explicit: false,
        }
    }

    #[test]
    fn reservations_count_against_the_limit_until_answered() {
        let mut books = Books::default();
        books.reserve("alice", 6000, Some(10_000)).unwrap().unwrap();
        let refused = books
            .reserve("alice", 5000, Some(10_000))
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.would_owe_msat, 11_000);
        assert_eq!(books.account("alice").reserved_msat, 6000);
        books.void("alice", 6000).unwrap();
        books
            .reserve("alice", 10_000, Some(10_000))
            .unwrap()
            .unwrap();
        books.post("alice", 10_000).unwrap();
        let alice = books.account("alice");
        assert_eq!((alice.receivable_msat, alice.reserved_msat), (10_000, 0));
        // Posted debt counts too.
        assert!(books.reserve("alice", 1, Some(10_000)).unwrap().is_err());
        assert!(books.reserve("alice", 1, None).unwrap().is_ok());
    }

    #[test]
    fn a_prefunded_peer_may_spend_what_it_paid_ahead() {
        let mut books = Books::default();
        let (credit, _) = {
            books
                .issue_invoice(&IssuedInvoice {
                    payment_hash: hash(1),
                    account: "alice".into(),
                    payment_request: "lnbcrt1".into(),
                    add_index: 1,
                    expires_at: 10,
                    state: IssuedState::Open,
                })
                .unwrap();
            books
                .credit_invoice(&hash(1), 5000, InvoiceCursor::default())
                .unwrap()
        };
        assert!(matches!(credit, Credit::Credited(_)));
        assert_eq!(books.account("alice").receivable_msat, -5000);
        books.reserve("alice", 5000, Some(0)).unwrap().unwrap();
        assert!(books.reserve("alice", 1, Some(0)).unwrap().is_err());
    }

    #[test]
    fn answering_more_than_was_reserved_is_refused_and_changes_nothing() {
        let mut books = Books::default();
        books.reserve("alice", 10, None).unwrap().unwrap();
        let before = books.clone();
        assert!(matches!(
            books.post("alice", 11),
            Err(BookError::NotReserved { .. })
        ));
        assert!(books.void("alice", 11).is_err());
        assert_eq!(books, before);
    }

    #[test]
    fn payments_move_payable_and_end_once() {
        let mut books = Books::default();
        books.owe("bob", 7000).unwrap();
        books
            .begin_payment(&intent("bob", 1, 7000))
            .unwrap()
            .unwrap();
        let bob = books.account("bob");
        assert_eq!((bob.payable_msat, bob.paying_msat), (0, 7000));
        // One payment per account at a time; a hash is never used twice.
        let busy = books
            .begin_payment(&intent("bob", 2, 1))
            .unwrap()
            .unwrap_err();
        assert_eq!(busy.in_flight, hash(1));
        assert_eq!(
            books.begin_payment(&intent("carol", 1, 1)).unwrap_err(),
            BookError::DuplicatePayment(hash(1))
        );
        books
            .finish_payment(&hash(1), PaymentResult::Succeeded { fee_msat: 12 })
            .unwrap()
            .unwrap();
        // A repeated outcome changes nothing.
        assert!(books
            .finish_payment(&hash(1), PaymentResult::Failed)
            .unwrap()
            .is_none());
        let bob = books.account("bob");
        assert_eq!(
            (
                bob.payable_msat,
                bob.paying_msat,
                bob.paid_msat,
                bob.fees_msat,
                bob.payments
            ),
            (0, 0, 7000, 12, 1)
        );
    }

    #[test]
    fn an_invoice_paid_once_is_never_begun_again_until_it_expired() {
        let mut books = Books::default();
        books.owe("bob", 6000).unwrap();
        books
            .begin_payment(&intent("bob", 1, 3000))
            .unwrap()
            .unwrap();
        let (_, changed) = books
            .finish_payment(&hash(1), PaymentResult::Succeeded { fee_msat: 0 })
            .unwrap()
            .unwrap();
        assert!(changed.contains(&Changed::PaidInvoice(hash(1))));
        // The peer offers the same invoice again: refused, nothing changes.
        let before = books.clone();
        assert_eq!(
            books.begin_payment(&intent("bob", 1, 3000)).unwrap_err(),
            BookError::DuplicatePayment(hash(1))
        );
        assert_eq!(books, before);
        // A failed payment's invoice may be tried again.
        books
            .begin_payment(&intent("bob", 2, 3000))
            .unwrap()
            .unwrap();
        books
            .finish_payment(&hash(2), PaymentResult::Failed)
            .unwrap()
            .unwrap();
        books
            .begin_payment(&intent("bob", 2, 3000))
            .unwrap()
            .unwrap();
        // Forgotten once expired (the test intents expire at 4 000 000 000).
        assert!(books.forget_paid_invoices(4_000_000_000).is_empty());
        assert_eq!(
            books.forget_paid_invoices(4_000_000_001),
            vec![Changed::PaidInvoice(hash(1))]
        );
        assert!(books.paid_invoices.is_empty());
    }

    #[test]
    fn a_failed_payment_is_owed_again() {
        let mut books = Books::default();
        books.owe("bob", 3000).unwrap();
        books
            .begin_payment(&intent("bob", 1, 3000))
            .unwrap()
            .unwrap();
        books
            .finish_payment(&hash(1), PaymentResult::Failed)
            .unwrap()
            .unwrap();
        let bob = books.account("bob");
        assert_eq!(
            (bob.payable_msat, bob.paying_msat, bob.paid_msat),
            (3000, 0, 0)
        );
        assert!(books.payment_of("bob").is_none());
    }

    #[test]
    fn an_explicit_prefund_takes_payable_below_zero() {
        let mut books = Books::default();
        let mut prefund = intent("peer", 1, 50_000);
        prefund.explicit = true;
        books.begin_payment(&prefund).unwrap().unwrap();
        books
            .finish_payment(&hash(1), PaymentResult::Succeeded { fee_msat: 0 })
            .unwrap();
        assert_eq!(books.account("peer").payable_msat, -50_000);
    }

    #[test]
    fn an_invoice_is_credited_once_however_often_it_is_replayed() {
        let mut books = Books::default();
        books
            .issue_invoice(&IssuedInvoice {
                payment_hash: hash(1),
                account: "alice".into(),
                payment_request: "lnbcrt1".into(),
                add_index: 4,
                expires_at: 10,
                state: IssuedState::Open,
            })
            .unwrap();
        let cursor = InvoiceCursor {
            add_index: 4,
            settle_index: 2,
        };
        let (first, changed) = books.credit_invoice(&hash(1), 9000, cursor).unwrap();
        assert!(
            matches!(first, Credit::Credited(ref r) if r.account == "alice" && r.amount_msat == 9000)
        );
        assert!(changed.contains(&Changed::Cursor));
        for _ in 0..3 {
            let (again, _) = books.credit_invoice(&hash(1), 9000, cursor).unwrap();
            assert_eq!(again, Credit::AlreadyCredited);
        }
        let (other, _) = books
            .credit_invoice(&hash(2), 1, InvoiceCursor::default())
            .unwrap();
        assert_eq!(other, Credit::NotOurs);
        let alice = books.account("alice");
        assert_eq!(
            (alice.receivable_msat, alice.received_msat, alice.receipts),
            (-9000, 9000, 1)
        );
        assert_eq!(books.cursor, cursor);
        // The cursor never moves back.
        books.advance_cursor(InvoiceCursor::default());
        assert_eq!(books.cursor, cursor);
        assert_eq!(books.receipts.len(), 1);
        books.receipt_delivered(&hash(1));
        assert!(books.receipts.is_empty());
        // A paid invoice is never closed.
        assert!(books.close_invoice(&hash(1)).is_empty());
    }

    #[test]
    fn keysend_tokens_are_made_once_and_keysends_credited_once() {
        let mut books = Books::default();
        let (token, changed) = books.bind_keysend_token("alice", [1; 32]).unwrap();
        assert_eq!((token, changed.len()), ([1; 32], 1));
        let (again, changed) = books.bind_keysend_token("alice", [2; 32]).unwrap();
        assert_eq!((again, changed.len()), ([1; 32], 0));
        assert_eq!(
            books.bind_keysend_token("bob", [1; 32]),
            Err(BookError::DuplicateToken)
        );
        assert_eq!(books.token_accounts[&[1; 32]], "alice");
        let cursor = InvoiceCursor {
            add_index: 9,
            settle_index: 3,
        };
        let (first, _) = books
            .credit_keysend(&hash(5), "alice", 1500, 9, cursor)
            .unwrap();
        assert!(matches!(first, Credit::Credited(ref r) if r.amount_msat == 1500));
        let (replay, _) = books
            .credit_keysend(&hash(5), "alice", 1500, 9, cursor)
            .unwrap();
        assert_eq!(replay, Credit::AlreadyCredited);
        let alice = books.account("alice");
        assert_eq!((alice.receivable_msat, alice.receipts), (-1500, 1));
        assert_eq!(books.invoices[&hash(5)].state, IssuedState::Paid);
        assert_eq!(books.cursor, cursor);
    }

    #[test]
    fn arithmetic_that_does_not_fit_is_refused() {
        let mut books = Books::default();
        books.owe("bob", i128::MAX as u128).unwrap();
        let before = books.clone();
        assert!(matches!(books.owe("bob", 1), Err(BookError::Overflow(_))));
        assert_eq!(books, before);
        assert!(matches!(
            books.reserve("carol", u128::MAX, None),
            Err(BookError::Overflow(_))
        ));
    }
}
