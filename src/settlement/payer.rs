//! The payer threads: they pay what we owe, one payment in flight per account, and find out how
//! every payment ended before its amount is booked as paid or owed again.
//!
//! A payment is recorded (its intent: account, amount, payment hash) before LND is asked. Its
//! amount counts as "paying" until LND gives a final answer: SUCCEEDED books it as paid, FAILED
//! gives it back. Every other answer — an error, a broken stream, a deadline — leaves the outcome
//! unknown: the payment is tracked (TrackPaymentV2) until it is final. When LND says it never
//! started the payment, it is sent again with the same invoice or keysend preimage: LND refuses to
//! pay one payment hash twice, so a second send cannot pay twice. Only an invoice that expired
//! long ago and was never started is given up as not paid.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

use super::amount::Unit;
use super::engine::{unix_now, unix_now_ms, PayBy, SettlementOptions, Shared};
use super::offer::KEYSEND_TOKEN_RECORD;
use super::peer::PeerInvoice;
use super::store::{
    AccountBook, BookError, PaymentIntent, PaymentResult, PaymentRoute, StoreError,
};
use crate::lnd::{
    FailureReason, Keysend, LndError, PaymentCertainty, PaymentLimits, PaymentOutcome,
    PaymentStatus, Preimage,
};

/// How long one TrackPaymentV2 call waits for a final state before we look up again (and check
/// whether we are stopping).
const TRACK_WAIT: Duration = Duration::from_secs(5);
/// Backoff between attempts to reach a node that does not answer.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An invoice LND never started paying is given up this long after it expired: no request of
/// ours can still be on its way to LND by then, and LND refuses to start an expired invoice.
const NEVER_STARTED_GRACE_SECS: u64 = 120;
/// How often a store that one process uses is swept for holds of expired Prepares.
const HOLD_SWEEP_EVERY: Duration = Duration::from_secs(5);

struct Explicit {
    id: u64,
    amount_msat: u128,
    reply: Sender<Result<(), String>>,
}

#[derive(Default)]
struct State {
    order: VecDeque<String>,
    queued: HashSet<String>,
    running: HashSet<String>,
    /// Asked for while a worker was on the account: it looks again when done.
    again: HashSet<String>,
    /// Pay what is owed even below the threshold (the peer answered T04).
    force: HashSet<String>,
    /// Accounts with nothing to pay with: worked on again when the peer sends an invoice.
    waiting_invoice: HashMap<String, bool>,
    explicit: HashMap<String, Vec<Explicit>>,
    next_id: u64,
    closed: bool,
}

/// The work queue of the payer threads: accounts to look at, each at most once in the queue and
/// on at most one thread.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

impl Queue {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Looks at `account` soon (`force`: pay what is owed even below the threshold).
    pub(crate) fn request(&self, account: &str, force: bool) {
        let mut state = self.state.lock();
        Self::request_locked(&mut state, account, force);
        self.ready.notify_one();
    }

    fn request_locked(state: &mut State, account: &str, force: bool) {
        if force {
            state.force.insert(account.to_owned());
        }
        if state.running.contains(account) {
            state.again.insert(account.to_owned());
        } else if state.queued.insert(account.to_owned()) {
            state.order.push_back(account.to_owned());
        }
    }

    /// The peer sent an invoice: if a payment was waiting for one, it goes ahead.
    pub(crate) fn invoice_arrived(&self, account: &str) {
        let mut state = self.state.lock();
        if let Some(force) = state.waiting_invoice.remove(account) {
            Self::request_locked(&mut state, account, force);
            self.ready.notify_one();
        }
    }

    fn wait_for_invoice(&self, account: &str, force: bool, explicit: Vec<Explicit>) {
        let mut state = self.state.lock();
        state.waiting_invoice.insert(account.to_owned(), force);
        Self::restore_locked(&mut state, account, explicit);
    }

    /// Puts explicit payments taken up and not paid back in front, in their order.
    fn restore_explicit(&self, account: &str, explicit: Vec<Explicit>) {
        Self::restore_locked(&mut self.state.lock(), account, explicit);
    }

    fn restore_locked(state: &mut State, account: &str, explicit: Vec<Explicit>) {
        if explicit.is_empty() {
            return;
        }
        let queue = state.explicit.entry(account.to_owned()).or_default();
        let later = std::mem::take(queue);
        queue.extend(explicit);
        queue.extend(later);
    }

    fn next(&self) -> Option<(String, bool)> {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(account) = state.order.pop_front() {
                state.queued.remove(&account);
                state.running.insert(account.clone());
                let force = state.force.remove(&account);
                return Some((account, force));
            }
            self.ready.wait(&mut state);
        }
    }

    fn done(&self, account: &str) {
        let mut state = self.state.lock();
        state.running.remove(account);
        if state.again.remove(account) {
            state.queued.insert(account.to_owned());
            state.order.push_back(account.to_owned());
            self.ready.notify_one();
        }
    }

    fn take_explicit(&self, account: &str) -> Vec<Explicit> {
        self.state
            .lock()
            .explicit
            .remove(account)
            .unwrap_or_default()
    }

    fn add_explicit(
        &self,
        account: &str,
        amount_msat: u128,
        reply: Sender<Result<(), String>>,
    ) -> Result<u64, String> {
        let mut state = self.state.lock();
        if state.closed {
            return Err("settlement is stopping".into());
        }
        state.next_id += 1;
        let id = state.next_id;
        state
            .explicit
            .entry(account.to_owned())
            .or_default()
            .push(Explicit {
                id,
                amount_msat,
                reply,
            });
        Self::request_locked(&mut state, account, false);
        self.ready.notify_one();
        Ok(id)
    }

    /// Withdraws an explicit payment not taken up yet; `false` if a worker has it.
    fn withdraw_explicit(&self, account: &str, id: u64) -> bool {
        let mut state = self.state.lock();
        let Some(queue) = state.explicit.get_mut(account) else {
            return false;
        };
        let before = queue.len();
        queue.retain(|e| e.id != id);
        before != queue.len()
    }

    /// Wakes every worker to stop; explicit payments not taken up are refused.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        for (_, waiting) in state.explicit.drain() {
            for explicit in waiting {
                let _ = explicit
                    .reply
                    .send(Err("settlement stopped before paying".into()));
            }
        }
        self.ready.notify_all();
    }

    /// Ready for the next start: nothing queued.
    pub(crate) fn reopen(&self) {
        *self.state.lock() = State::default();
    }
}

/// What we would pay `book`'s peer by ourselves now, in millisatoshis (0: nothing). Never more
/// than is owed above `settle_to`; only past the threshold unless `force`. Rounded down to the
/// account's `unit` (a peer in satoshis is paid whole satoshis): the rest stays owed.
pub(crate) fn auto_amount(
    options: &SettlementOptions,
    account_unit: Unit,
    book: &AccountBook,
    force: bool,
) -> u128 {
    let unit = options.unit;
    let settle_to = i128::try_from(unit.to_msat(options.settle_to)).unwrap_or(i128::MAX);
    let owed = book.payable_msat.saturating_sub(settle_to);
    if owed <= 0 {
        return 0;
    }
    let past_threshold = options.settle_threshold.is_some_and(|threshold| {
        book.payable_msat > i128::try_from(unit.to_msat(threshold)).unwrap_or(i128::MAX)
    });
    if !(force || past_threshold) {
        return 0;
    }
    account_unit.round_down_msat(owed.unsigned_abs())
}

/// Whether [`auto_amount`] would pay `account` anything.
pub(crate) fn should_settle(
    shared: &Shared,
    account: &str,
    book: &AccountBook,
    force: bool,
) -> bool {
    auto_amount(&shared.options, shared.unit_of(account), book, force) > 0
}

/// A payer thread: works on accounts until the queue closes.
pub(crate) fn run(shared: &Shared) {
    while let Some((account, force)) = shared.payer.next() {
        settle(shared, &account, force);
        shared.payer.done(&account);
    }
}

fn reply_all(explicit: Vec<Explicit>, result: &Result<(), String>) {
    for e in explicit {
        let _ = e.reply.send(result.clone());
    }
}

fn take_invoice(shared: &Shared, account: &str) -> Option<PeerInvoice> {
    let margin = shared.options.pay_margin.as_secs();
    shared
        .peers
        .lock()
        .get_mut(account)
        .and_then(|s| s.invoices.take(unix_now(), margin))
}

fn put_back_invoice(shared: &Shared, account: &str, invoice: PeerInvoice) {
    if let Some(session) = shared.peers.lock().get_mut(account) {
        session.invoices.put_back(invoice);
    }
}

/// Pays what `account` is owed (and what `send_money` asked for), one payment at a time, until
/// nothing is left or a payment fails.
fn settle(shared: &Shared, account: &str, mut force: bool) {
    loop {
        if shared.is_stopping() {
            return;
        }
        // Whatever is in flight is finished before anything new is paid.
        let open = shared
            .store
            .open_payments()
            .map(|open| open.into_iter().find(|p| p.account == account));
        match open {
            Ok(Some(intent)) => {
                // Another process's payment is its own to finish, while that process lives.
                match shared.store.claim_payment(account) {
                    Ok(true) => {}
                    Ok(false) => {
                        log::debug!(
                            "settlement: payment {} to {account} is another process's",
                            intent.payment_hash
                        );
                        return;
                    }
                    Err(e) => {
                        log::error!("settlement: cannot take the lease of {account}: {e}");
                        return;
                    }
                }
                if with_lease(shared, account, || finish(shared, &intent, false, None)).is_none() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                log::error!("settlement: cannot read the payments of {account}: {e}");
                return;
            }
        }
        let explicit = shared.payer.take_explicit(account);
        let book = match shared.store.account(account) {
            Ok(book) => book,
            Err(e) => {
                log::error!("settlement: cannot read the books of {account}: {e}");
                reply_all(explicit, &Err(e.to_string()));
                return;
            }
        };
        let asked: u128 = explicit.iter().map(|e| e.amount_msat).sum();
        let unit = shared.unit_of(account);
        let total = asked.saturating_add(auto_amount(&shared.options, unit, &book, force));
        if total == 0 {
            reply_all(explicit, &Ok(()));
            return;
        }
        let Ok(amount_msat) = u64::try_from(total) else {
            reply_all(
                explicit,
                &Err(format!("{total} msat is more than one payment can carry")),
            );
            return;
        };
        let (intent, invoice) = match shared.pay_by(account) {
            PayBy::Keysend(destination, token) => {
                let preimage = match Preimage::random() {
                    Ok(preimage) => preimage,
                    Err(e) => {
                        reply_all(explicit, &Err(e.to_string()));
                        return;
                    }
                };
                let intent = PaymentIntent {
                    account: account.to_owned(),
                    payment_hash: preimage.payment_hash(),
                    amount_msat,
                    fee_limit_msat: shared.options.fee_limit.for_amount(amount_msat),
                    route: PaymentRoute::Keysend {
                        destination,
                        preimage,
                        records: BTreeMap::from([(KEYSEND_TOKEN_RECORD, token.to_vec())]),
                    },
                    created_at_ms: unix_now_ms(),
                    explicit: !explicit.is_empty(),
                };
                (intent, None)
            }
            PayBy::Invoice => {
                let Some(invoice) = take_invoice(shared, account) else {
                    log::debug!(
                        "settlement: {amount_msat} msat to pay {account}, waiting for an invoice \
                         of its"
                    );
                    shared.payer.wait_for_invoice(account, force, explicit);
                    // An invoice (or a keysend token) that arrived since we looked found nobody
                    // waiting: look again.
                    let arrived = shared
                        .peers
                        .lock()
                        .get(account)
                        .is_some_and(|s| !s.invoices.is_empty() || s.peer_token.is_some());
                    if arrived {
                        shared.payer.invoice_arrived(account);
                    }
                    return;
                };
                let intent = PaymentIntent {
                    account: account.to_owned(),
                    payment_hash: invoice.payment_hash,
                    amount_msat,
                    fee_limit_msat: shared.options.fee_limit.for_amount(amount_msat),
                    route: PaymentRoute::Invoice {
                        payment_request: invoice.payment_request.clone(),
                        expires_at: invoice.expires_at,
                    },
                    created_at_ms: unix_now_ms(),
                    explicit: !explicit.is_empty(),
                };
                (intent, Some(invoice))
            }
        };
        match shared.store.begin_payment(&intent) {
            Ok(Ok(())) => {}
            Ok(Err(busy)) => {
                // Recorded meanwhile by someone else: resolve it first, then come back to this.
                log::debug!(
                    "settlement: {account} has payment {} in flight",
                    busy.in_flight
                );
                if let Some(invoice) = invoice {
                    put_back_invoice(shared, account, invoice);
                }
                shared.payer.restore_explicit(account, explicit);
                continue;
            }
            Err(StoreError::Refused(BookError::DuplicatePayment(hash))) => {
                // Offered again by the peer (after a reconnect it offers every invoice still
                // open, ours in flight included): paid or being paid, so never paid again.
                log::info!("settlement: {account}'s invoice {hash} is paid already: dropped");
                shared.payer.restore_explicit(account, explicit);
                continue;
            }
            Err(e) => {
                log::error!("settlement: cannot record a payment to {account}: {e}");
                if let Some(invoice) = invoice {
                    put_back_invoice(shared, account, invoice);
                }
                reply_all(explicit, &Err(e.to_string()));
                return;
            }
        }
        log::debug!(
            "settlement: paying {account} {amount_msat} msat (hash {})",
            intent.payment_hash
        );
        let Some((result, reason)) =
            with_lease(shared, account, || finish(shared, &intent, true, invoice))
        else {
            reply_all(
                explicit,
                &Err(
                    "settlement stopped; the payment's outcome is booked at the next start".into(),
                ),
            );
            return;
        };
        match result {
            PaymentResult::Succeeded { .. } => {
                reply_all(explicit, &Ok(()));
                force = false;
            }
            PaymentResult::Failed => {
                let why = reason.map_or_else(
                    || "the payment failed".to_owned(),
                    |r| format!("the payment failed: {r}"),
                );
                reply_all(explicit, &Err(why));
                // Not again right away: the next Fulfill, T04 or invoice retries.
                return;
            }
        }
    }
}

/// Runs `work` on `account`'s payment with its lease renewed meanwhile by the upkeep thread.
fn with_lease<T>(shared: &Shared, account: &str, work: impl FnOnce() -> T) -> T {
    shared.leased.lock().insert(account.to_owned());
    let result = work();
    shared.leased.lock().remove(account);
    result
}

/// The upkeep thread. Every few seconds it voids holds of Prepares long expired (a process
/// that died left them, or an answer never came); with a store that several processes share,
/// it also renews the leases of the payments this process works on, and hands the payer any
/// payment left open by a process that died (the payer takes its lease over once it ran out,
/// and finishes it by tracking it).
pub(crate) fn upkeep(shared: &Shared) {
    let shared_store = shared.store.upkeep_every();
    let every = shared_store.unwrap_or(HOLD_SWEEP_EVERY);
    while !shared.wait_or_stop(every) {
        match shared.store.sweep_holds(unix_now_ms()) {
            Ok(0) => {}
            Ok(voided) => log::info!("settlement: voided {voided} holds of expired Prepares"),
            Err(e) => log::warn!("settlement: cannot sweep the holds: {e}"),
        }
        if shared_store.is_none() {
            continue;
        }
        let ours: Vec<String> = shared.leased.lock().iter().cloned().collect();
        for account in ours {
            match shared.store.claim_payment(&account) {
                Ok(true) => {}
                Ok(false) => log::warn!(
                    "settlement: another process took over the payment to {account} (this one \
                     was too slow to renew its lease); both track it, neither pays it again"
                ),
                Err(e) => log::warn!("settlement: cannot renew the lease of {account}: {e}"),
            }
        }
        let open = match shared.store.open_payments() {
            Ok(open) => open,
            Err(e) => {
                log::warn!("settlement: cannot read the payments in flight: {e}");
                continue;
            }
        };
        let leased = shared.leased.lock().clone();
        for intent in open.iter().filter(|p| !leased.contains(&p.account)) {
            shared.payer.request(&intent.account, false);
        }
    }
}

/// Pays (`fresh`: a new payment, with `invoice` when it pays one) or resolves `intent` until its
/// outcome is final, and books it. `None` when stopping first.
fn finish(
    shared: &Shared,
    intent: &PaymentIntent,
    fresh: bool,
    invoice: Option<PeerInvoice>,
) -> Option<(PaymentResult, Option<FailureReason>)> {
    let (result, reason) = outcome(shared, intent, fresh)?;
    match shared.store.finish_payment(&intent.payment_hash, result) {
        Ok(_) => {}
        Err(e) => {
            // The outcome is known but not written: the intent stays open and the next look
            // (or the next start) resolves it again from LND.
            log::error!(
                "settlement: cannot book the outcome of payment {}: {e}",
                intent.payment_hash
            );
            return None;
        }
    }
    match result {
        PaymentResult::Succeeded { fee_msat } => {
            log::info!(
                "settlement: paid {} {} msat (fee {fee_msat} msat)",
                intent.account,
                intent.amount_msat
            );
            if let Some(link) = shared.link() {
                link.money_sent(&intent.account, intent.amount_msat, fee_msat);
            }
        }
        PaymentResult::Failed => {
            let why = reason.map_or_else(|| "not sent".to_owned(), |r| r.to_string());
            log::warn!(
                "settlement: payment of {} msat to {} failed: {why}",
                intent.amount_msat,
                intent.account,
            );
            if let Some(link) = shared.link() {
                link.payment_failed(&intent.account, intent.amount_msat, &why);
            }
            // An invoice that failed for a reason of the route, not of the invoice, can be paid
            // again later.
            if let Some(invoice) = invoice {
                if reason.is_some_and(|r| r != FailureReason::IncorrectPaymentDetails) {
                    put_back_invoice(shared, &intent.account, invoice);
                }
            }
            // A keysend the peer's node refused: it does not accept keysend after all.
            if matches!(intent.route, PaymentRoute::Keysend { .. })
                && reason == Some(FailureReason::IncorrectPaymentDetails)
            {
                shared.keysend_refused(&intent.account);
                // What was to be paid waits for the invoices the peer now sends.
                shared.payer.request(&intent.account, false);
            }
        }
    }
    Some((result, reason))
}

fn send(shared: &Shared, intent: &PaymentIntent) -> Result<PaymentOutcome, LndError> {
    let limits = PaymentLimits {
        fee_limit_msat: intent.fee_limit_msat,
        timeout: shared.options.payment_timeout,
    };
    match &intent.route {
        PaymentRoute::Invoice {
            payment_request, ..
        } => shared
            .node
            .pay_invoice(payment_request, intent.amount_msat, limits),
        PaymentRoute::Keysend {
            destination,
            preimage,
            records,
        } => {
            let payment = Keysend::with_preimage(
                *destination,
                intent.amount_msat,
                records.clone(),
                *preimage,
            )?;
            shared.node.keysend(&payment, limits)
        }
    }
}

fn final_result(outcome: &PaymentOutcome) -> Option<(PaymentResult, Option<FailureReason>)> {
    match outcome.status {
        PaymentStatus::Succeeded { fee_msat, .. } => {
            Some((PaymentResult::Succeeded { fee_msat }, None))
        }
        PaymentStatus::Failed(reason) => Some((PaymentResult::Failed, Some(reason))),
        PaymentStatus::InFlight => None,
    }
}

struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        wait
    }
}

/// The payment's final outcome, from LND: sending it if `fresh`, then tracking it as long as
/// its outcome is unknown. `None` when stopping first.
fn outcome(
    shared: &Shared,
    intent: &PaymentIntent,
    fresh: bool,
) -> Option<(PaymentResult, Option<FailureReason>)> {
    let mut backoff = Backoff(BACKOFF_START);
    let mut sent = if fresh {
        Some(send(shared, intent))
    } else {
        None
    };
    loop {
        match sent.take() {
            Some(Ok(outcome)) => {
                if let Some(done) = final_result(&outcome) {
                    return Some(done);
                }
            }
            Some(Err(e)) if e.payment_certainty() == PaymentCertainty::NotPaid => {
                log::warn!(
                    "settlement: payment {} refused before sending: {e}",
                    intent.payment_hash
                );
                return Some((PaymentResult::Failed, None));
            }
            Some(Err(e)) => log::warn!(
                "settlement: payment {} to {}: outcome unknown ({e}); tracking it",
                intent.payment_hash,
                intent.account
            ),
            None => {}
        }
        // Track until final, or until LND says it never started the payment.
        loop {
            if shared.is_stopping() {
                return None;
            }
            match shared.node.track_payment(&intent.payment_hash, TRACK_WAIT) {
                Ok(outcome) => {
                    if let Some(done) = final_result(&outcome) {
                        return Some(done);
                    }
                }
                Err(LndError::NotFound(_)) => break,
                Err(e) => {
                    log::warn!(
                        "settlement: cannot track payment {} yet: {e}",
                        intent.payment_hash
                    );
                    if shared.wait_or_stop(backoff.next()) {
                        return None;
                    }
                }
            }
        }
        if let PaymentRoute::Invoice { expires_at, .. } = &intent.route {
            if unix_now() > expires_at.saturating_add(NEVER_STARTED_GRACE_SECS) {
                log::info!(
                    "settlement: payment {} was never started and its invoice expired: not paid",
                    intent.payment_hash
                );
                return Some((PaymentResult::Failed, None));
            }
        }
        if shared.wait_or_stop(backoff.next()) {
            return None;
        }
        log::info!(
            "settlement: LND never started payment {}: sending it again (same hash)",
            intent.payment_hash
        );
        sent = Some(send(shared, intent));
    }
}

/// `send_money`: pays `account`'s peer `amount_msat` now (a prefund may exceed what is owed) and
/// waits for the outcome.
pub(crate) fn send_money(shared: &Shared, account: &str, amount_msat: u128) -> Result<(), String> {
    let (reply, result) = bounded(1);
    let id = shared.payer.add_explicit(account, amount_msat, reply)?;
    let invoice_wait = shared.options.peer_timeout * 3;
    match result.recv_timeout(invoice_wait) {
        Ok(result) => result,
        Err(RecvTimeoutError::Disconnected) => Err("settlement stopped before paying".into()),
        Err(RecvTimeoutError::Timeout) => {
            if shared.payer.withdraw_explicit(account, id) {
                return Err(format!(
                    "no invoice of the peer's to pay with after {} s",
                    invoice_wait.as_secs()
                ));
            }
            // A payer has it: its outcome comes within the payment's own timeout, or is
            // unknown and tracked.
            match result.recv_timeout(shared.options.payment_timeout + TRACK_WAIT) {
                Ok(result) => result,
                Err(_) => Err(
                    "the payment's outcome is not known yet; it is tracked and booked when final"
                        .into(),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_amount_follows_threshold_settle_to_and_units() {
        let mut options = SettlementOptions::server();
        let book = |payable_msat| AccountBook {
            payable_msat,
            ..AccountBook::default()
        };
        let sat = Unit::SATOSHI;
        assert_eq!(auto_amount(&options, sat, &book(5_500), false), 5_000);
        assert_eq!(auto_amount(&options, sat, &book(0), false), 0);
        assert_eq!(auto_amount(&options, sat, &book(-9_000), true), 0);
        options.settle_threshold = Some(10);
        assert_eq!(auto_amount(&options, sat, &book(10_000), false), 0);
        assert_eq!(auto_amount(&options, sat, &book(10_000), true), 10_000);
        assert_eq!(auto_amount(&options, sat, &book(11_000), false), 11_000);
        options.settle_to = 4;
        assert_eq!(auto_amount(&options, sat, &book(11_000), false), 7_000);
        options.settle_threshold = None;
        assert_eq!(auto_amount(&options, sat, &book(11_000), false), 0);
        assert_eq!(auto_amount(&options, sat, &book(11_000), true), 7_000);
        options.unit = Unit::MILLISATOSHI;
        options.settle_to = 0;
        // An account in millisatoshis is paid to the millisatoshi; one in satoshis is paid the
        // whole satoshis and keeps the rest owed.
        assert_eq!(
            auto_amount(&options, Unit::MILLISATOSHI, &book(5_500), true),
            5_500
        );
        assert_eq!(auto_amount(&options, sat, &book(5_500), true), 5_000);
    }

    #[test]
    fn the_queue_runs_an_account_once_at_a_time_and_remembers_asks_meanwhile() {
        let queue = Queue::new();
        queue.request("a", false);
        queue.request("a", true);
        queue.request("b", false);
        assert_eq!(queue.next(), Some(("a".to_owned(), true)));
        queue.request("a", false);
        assert_eq!(queue.next(), Some(("b".to_owned(), false)));
        queue.done("a");
        assert_eq!(queue.next(), Some(("a".to_owned(), false)));
        queue.done("a");
        queue.done("b");
        queue.wait_for_invoice("c", true, Vec::new());
        queue.invoice_arrived("c");
        queue.invoice_arrived("c");
        assert_eq!(queue.next(), Some(("c".to_owned(), true)));
        queue.close();
        assert_eq!(queue.next(), None);
    }
}
