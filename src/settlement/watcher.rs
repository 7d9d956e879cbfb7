//! The invoice watcher thread: follows the node's invoice events and credits the account that
//! owns each invoice paid, once per payment hash.
//!
//! It subscribes from the stored cursor, moved back to just before the oldest invoice of ours
//! still open: LND's backlog then replays every such invoice in its current state, so one paid
//! while we were down is credited now. LND's backlog also repeats invoices (an invoice added and
//! settled while we were away arrives twice); the books credit a payment hash once, in the same
//! transaction that moves the cursor. The money handler hears of each credit after it is
//! durable; one it did not hear of before a crash is told after the restart (at least once
//! across crashes, exactly once without).
//!
//! A keysend payment is credited the same way, to the account whose token (custom record
//! [`KEYSEND_TOKEN_RECORD`]) it carries: the token is looked up in the books, and the payment
//! hash recorded as credited in the transaction that credits it.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::engine::Shared;
use super::offer::KEYSEND_TOKEN_RECORD;
use super::refiller::Command;
use super::store::{Credit, KeysendToken, Receipt, StoreError};
use crate::lnd::{Invoice, InvoiceCursor, InvoiceState, PaymentHash, SubscriptionCanceller};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Lets `stop()` end the watcher's blocking read.
#[derive(Clone, Default)]
pub(crate) struct Handle {
    canceller: Arc<Mutex<Option<SubscriptionCanceller>>>,
    cancelled: Arc<Mutex<bool>>,
}

impl Handle {
    pub(crate) fn cancel(&self) {
        *self.cancelled.lock() = true;
        if let Some(canceller) = self.canceller.lock().as_ref() {
            canceller.cancel();
        }
    }

    /// Remembers the current subscription's canceller; `false` if already cancelled.
    fn track(&self, canceller: SubscriptionCanceller) -> bool {
        let mut slot = self.canceller.lock();
        if *self.cancelled.lock() {
            canceller.cancel();
            return false;
        }
        *slot = Some(canceller);
        true
    }
}

/// Where to subscribe from: the stored cursor, but never past the oldest open invoice of ours.
fn start_cursor(shared: &Shared) -> InvoiceCursor {
    let mut cursor = shared.store.cursor().unwrap_or_default();
    if let Ok(open) = shared.store.open_invoices(None) {
        if let Some(oldest) = open.iter().map(|i| i.add_index).min() {
            cursor.add_index = cursor.add_index.min(oldest.saturating_sub(1));
        }
    }
    cursor
}

/// Tells the money handler about a credit, then marks it told.
pub(crate) fn deliver(shared: &Shared, receipt: &Receipt) {
    let units = shared
        .unit_of(&receipt.account)
        .whole_units(u128::from(receipt.amount_msat));
    if units > 0 {
        if let Some(link) = shared.link() {
            if let Err(e) = link.money_received(&receipt.account, units) {
                log::warn!(
                    "settlement: money handler for {} ({units}): {e}",
                    receipt.account
                );
            }
        }
    }
    if let Err(e) = shared.store.receipt_delivered(&receipt.payment_hash) {
        log::error!(
            "settlement: cannot mark receipt {} told: {e}",
            receipt.payment_hash
        );
    }
}

/// Credits the open invoices of ours added before `before` that are settled: after a
/// subscription from add index 0, LND replays nothing, so a payment made between our subscribe
/// call and LND registering it would be missed without this.
fn catch_up(shared: &Shared, before: u64) {
    let Ok(open) = shared.store.open_invoices(None) else {
        return;
    };
    for issued in open.iter().filter(|i| i.add_index < before) {
        match shared.node.lookup_invoice(&issued.payment_hash) {
            Ok(invoice) if invoice.state == InvoiceState::Settled => {
                credit(
                    shared,
                    &invoice.payment_hash,
                    invoice.amount_paid_msat,
                    InvoiceCursor::default(),
                );
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "settlement: cannot look up invoice {}: {e}",
                issued.payment_hash
            ),
        }
    }
}

/// Credits a settled keysend payment to the account whose token it carries (once per payment
/// hash) and moves the cursor with it; `false` when the books refused the change. A keysend
/// without our record is another application's; one with a token we never made is ignored.
fn credit_keysend(shared: &Shared, invoice: &Invoice, cursor: InvoiceCursor) -> bool {
    let hash = &invoice.payment_hash;
    let records = invoice.custom_records();
    let Some(token) = records.get(&KEYSEND_TOKEN_RECORD) else {
        log::debug!("settlement: keysend {hash} is not for us (no token record)");
        return true;
    };
    let account = KeysendToken::try_from(token.as_slice())
        .ok()
        .map(|token| shared.store.keysend_account(&token))
        .transpose();
    let account = match account {
        Ok(Some(Some(account))) => account,
        Ok(_) => {
            log::warn!(
                "settlement: keysend {hash} of {} msat carries a token we never handed out: \
                 not credited to anyone",
                invoice.amount_paid_msat
            );
            return true;
        }
        Err(e) => {
            log::error!("settlement: cannot look up the token of keysend {hash}: {e}");
            return false;
        }
    };
    booked(
        shared,
        hash,
        shared.store.credit_keysend(
            hash,
            &account,
            invoice.amount_paid_msat,
            invoice.add_index,
            cursor,
        ),
    )
}

/// Credits one settled invoice (once per payment hash) and moves the cursor with it; `false`
/// when the books refused the change.
fn credit(shared: &Shared, hash: &PaymentHash, amount_msat: u64, cursor: InvoiceCursor) -> bool {
    booked(
        shared,
        hash,
        shared.store.credit_invoice(hash, amount_msat, cursor),
    )
}

/// Tells of a credit the books made.
fn booked(shared: &Shared, hash: &PaymentHash, credit: Result<Credit, StoreError>) -> bool {
    match credit {
        Ok(Credit::Credited(receipt)) => {
            log::info!(
                "settlement: {} paid us {} msat",
                receipt.account,
                receipt.amount_msat
            );
            deliver(shared, &receipt);
            shared.tell_refiller(Command::Paid(receipt.account.clone()));
            true
        }
        Ok(Credit::AlreadyCredited | Credit::NotOurs) => true,
        Err(e) => {
            // Not credited and the cursor did not move: resubscribing replays it.
            log::error!("settlement: cannot credit invoice {hash}: {e}");
            false
        }
    }
}

pub(crate) fn run(shared: &Shared, handle: &Handle) {
    // Credits a previous run booked but did not tell the money handler about.
    if let Ok(pending) = shared.store.pending_receipts() {
        for receipt in pending {
            deliver(shared, &receipt);
        }
    }
    let mut cursor = start_cursor(shared);
    let mut backoff = BACKOFF_START;
    while !shared.is_stopping() {
        let subscribed_from = cursor;
        let mut subscription = match shared.node.subscribe_invoices(cursor) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("settlement: cannot follow the node's invoices: {e}");
                if shared.wait_or_stop(backoff) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if !handle.track(subscription.canceller()) {
            return;
        }
        let mut caught_up = subscribed_from.add_index > 0;
        while let Some(event) = subscription.next() {
            let invoice = match event {
                Ok(invoice) => invoice,
                Err(e) => {
                    log::warn!("settlement: the node's invoice stream broke: {e}");
                    break;
                }
            };
            backoff = BACKOFF_START;
            if !caught_up {
                // The first event proves the subscription live since before this invoice.
                catch_up(shared, invoice.add_index);
                caught_up = true;
            }
            let seen = subscription.cursor();
            let settled = invoice.state == InvoiceState::Settled;
            if settled && invoice.is_keysend && !credit_keysend(shared, &invoice, seen) {
                break;
            }
            if settled
                && !invoice.is_keysend
                && !credit(
                    shared,
                    &invoice.payment_hash,
                    invoice.amount_paid_msat,
                    seen,
                )
            {
                break;
            }
            cursor = seen;
        }
        // What the stream moved past without a credit is saved now, so that a restart does not
        // replay it.
        if let Err(e) = shared.store.advance_cursor(cursor) {
            log::warn!("settlement: cannot save the invoice cursor: {e}");
        }
        if shared.wait_or_stop(backoff) {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
