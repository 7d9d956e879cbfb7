//! The invoice refiller thread: tells each peer that connects which node we are and keeps it
//! stocked with invoices to pay us with.
//!
//! On every connect (and reconnect) it sends `peeringRequest` and then the stock: the account's
//! open invoices that are not about to expire, topped up with new ones. An invoice paid is
//! replaced at once; one about to expire is replaced before it does. Nothing is made for a peer
//! that is gone. Each invoice is recorded (with its account) before it is sent, so a payment to
//! it is always credited to the right account, after a restart too.
//!
//! Invoices no longer needed are retired and, after a grace period, cancelled: those of a peer
//! that disconnected, those replaced before they expired, those over the stock (it was
//! reduced). A retired invoice is not handed out again, except to its own peer when it
//! reconnects within the grace period; it is cancelled only once no payment to it can still
//! be on its way ([`SettlementOptions::invoice_grace`](super::SettlementOptions)), then deleted
//! from the node where it can (`DeleteCanceledInvoice`, LND 0.20 and later) and closed in the
//! books. An invoice paid meanwhile is credited as any other: a cancel that the node refuses is
//! checked against the invoice's state, and one found settled is left to the watcher.
//!
//! A peer that does not take a message (not reachable yet, slow, a failed node call) is tried
//! again with a growing delay for as long as it stays connected: without our key and invoices
//! it could never pay us. A peer that refused our `peeringRequest` is greeted again at once when
//! it sends its own: the JS plugin's client refuses what arrives before its connect handler ran
//! ("Account peer is not yet loaded"), and its own greeting says it is ready.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::engine::{offer_in, unix_now, Shared};
use super::offer::SETTLEMENT_PROTOCOL;
use super::peer::{PAYMENT_REQUEST, PEERING_REQUEST};
use super::store::{IssuedInvoice, IssuedState};
use crate::btp::ProtocolDataEntry;
use crate::lnd::{InvoiceState, LndError, PaymentHash};

/// What the refiller is told.
#[derive(Debug)]
pub(crate) enum Command {
    /// The account's peer connected (again).
    Connected(String),
    /// It disconnected.
    Disconnected(String),
    /// One of its invoices was paid.
    Paid(String),
    /// It sent its own `peeringRequest`: it is ready for ours now, if it refused it before.
    Announced(String),
    /// It asked for our invoices (in its `ilpLightningSettlement` offer).
    WantsInvoices(String),
    /// Our terms for it changed (a keysend to it was refused): send our offer again.
    SendOffer(String),
    /// Stop.
    Stop,
}

/// The first wait before trying a peer (or the node) again after a failure; it doubles with
/// each failure in a row, up to [`RETRY_MAX`].
const RETRY_START: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Peer {
    /// Whether it took our `peeringRequest` this session.
    greeted: bool,
    /// Whether it answered our `ilpLightningSettlement` offer this session.
    agreed: bool,
    /// Our invoices this peer holds: hash and expiry (Unix seconds).
    holds: Vec<(PaymentHash, u64)>,
    /// Set after a failure: try again then.
    retry_at: Option<Instant>,
    /// The wait after the next failure.
    backoff: Option<Duration>,
}

impl Peer {
    fn failed(&mut self) {
        let wait = self.backoff.unwrap_or(RETRY_START);
        self.retry_at = Some(Instant::now() + wait);
        self.backoff = Some((wait * 2).min(RETRY_MAX));
    }

    fn succeeded(&mut self) {
        self.retry_at = None;
        self.backoff = None;
    }

    /// Whether failures were met in a row already (later ones are logged quietly).
    fn failing(&self) -> bool {
        self.backoff.is_some()
    }
}

/// Invoices no longer handed out, waiting to be cancelled.
#[derive(Default)]
struct Retired {
    /// Each invoice's account and when to cancel it.
    due: HashMap<PaymentHash, (String, Instant)>,
    /// The node said it has no `DeleteCanceledInvoice` (LND before 0.20): cancel only.
    delete_unsupported: bool,
}

impl Retired {
    /// Retires every open invoice of ours that no connected peer holds, and forgets those that
    /// are held again or no longer open (paid, closed).
    fn sweep(&mut self, shared: &Shared, peers: &HashMap<String, Peer>) {
        let Ok(open) = shared.store.open_invoices(None) else {
            return;
        };
        let grace = shared.options.invoice_grace;
        let now = Instant::now();
        let mut unneeded = HashMap::with_capacity(open.len());
        for invoice in open {
            let held = peers.get(&invoice.account).is_some_and(|peer| {
                peer.holds
                    .iter()
                    .any(|(hash, _)| *hash == invoice.payment_hash)
            });
            if !held {
                unneeded.insert(invoice.payment_hash, invoice.account);
            }
        }
        self.due.retain(|hash, _| unneeded.contains_key(hash));
        for (hash, account) in unneeded {
            self.due.entry(hash).or_insert_with(|| {
                log::debug!("settlement: invoice {hash} of {account} retired");
                (account, now + grace)
            });
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|(_, at)| *at).min()
    }

    /// Cancels the retired invoices whose grace period is over.
    fn cancel_due(&mut self, shared: &Shared) {
        let now = Instant::now();
        let due: Vec<(PaymentHash, String)> = self
            .due
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(hash, (account, _))| (*hash, account.clone()))
            .collect();
        for (hash, account) in due {
            if shared.is_stopping() {
                return;
            }
            match self.cancel(shared, &hash, &account) {
                Ok(()) => {
                    self.due.remove(&hash);
                }
                Err(e) => {
                    log::warn!("settlement: cannot cancel invoice {hash} of {account} yet: {e}");
                    let retry = now + RETRY_MAX.min(shared.options.invoice_grace).max(RETRY_START);
                    self.due.insert(hash, (account, retry));
                }
            }
        }
    }

    /// Cancels one invoice on the node, deletes it where the node can, and closes it in the
    /// books; one found settled is left open for the watcher to credit.
    fn cancel(&mut self, shared: &Shared, hash: &PaymentHash, account: &str) -> Result<(), String> {
        if let Err(refused) = shared.node.cancel_invoice(hash) {
            // Refused: learn why from the invoice's state, not from the message.
            match shared.node.lookup_invoice(hash) {
                Ok(invoice) if invoice.state == InvoiceState::Settled => {
                    log::info!(
                        "settlement: invoice {hash} of {account} was paid as it was retired"
                    );
                    return Ok(());
                }
                Ok(invoice) if invoice.state == InvoiceState::Canceled => {}
                Err(LndError::NotFound(_)) => {}
                Ok(_) => return Err(refused.to_string()),
                Err(e) => return Err(format!("{refused}; and looking it up: {e}")),
            }
        }
        let deleted = !self.delete_unsupported
            && match shared.node.delete_canceled_invoice(hash) {
                Ok(()) | Err(LndError::NotFound(_)) => true,
                Err(LndError::Unsupported(e)) => {
                    log::info!(
                        "settlement: the node keeps cancelled invoices (no DeleteCanceledInvoice \
                         before LND 0.20): {e}"
                    );
                    self.delete_unsupported = true;
                    false
                }
                Err(e) => {
                    // Cancelled is what matters; the record stays on the node.
                    log::warn!("settlement: cannot delete cancelled invoice {hash}: {e}");
                    false
                }
            };
        shared
            .store
            .close_invoice(hash)
            .map_err(|e| format!("cannot close it in the books: {e}"))?;
        log::debug!("settlement: invoice {hash} of {account} cancelled (deleted: {deleted})");
        if let Some(link) = shared.link() {
            link.invoice_cancelled(account, deleted);
        }
        Ok(())
    }
}

pub(crate) fn run(shared: &Shared, commands: &Receiver<Command>) {
    let mut peers: HashMap<String, Peer> = HashMap::new();
    let mut retired = Retired::default();
    retired.sweep(shared, &peers);
    loop {
        let timeout = [
            next_wake(shared, &peers),
            retired
                .next_due()
                .map(|at| at.saturating_duration_since(Instant::now())),
        ]
        .into_iter()
        .flatten()
        .min();
        let command = match timeout {
            Some(wait) => match commands.recv_timeout(wait) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match commands.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            },
        };
        match command {
            Some(Command::Stop) => return,
            Some(Command::Connected(account)) => {
                // A new session: whatever the peer held of ours before is gone with it.
                let peer = peers.entry(account.clone()).or_default();
                *peer = Peer::default();
                serve(shared, &account, peer);
            }
            Some(Command::Disconnected(account)) => {
                peers.remove(&account);
            }
            Some(Command::Announced(account)) => {
                // The JS plugin's client answers "Account peer is not yet loaded" to what
                // arrives before its connect handler ran; once it announces its node it is ready.
                if let Some(peer) = peers.get_mut(&account).filter(|peer| !peer.greeted) {
                    peer.succeeded();
                    serve(shared, &account, peer);
                }
            }
            Some(Command::WantsInvoices(account)) => {
                if let Some(peer) = peers.get_mut(&account).filter(|p| p.retry_at.is_none()) {
                    serve(shared, &account, peer);
                }
            }
            Some(Command::SendOffer(account)) => {
                if let Some(peer) = peers.get_mut(&account) {
                    peer.agreed = false;
                    if peer.retry_at.is_none() {
                        serve(shared, &account, peer);
                    }
                }
            }
            Some(Command::Paid(account)) => {
                if let Some(peer) = peers.get_mut(&account) {
                    // Whatever it held that is no longer open was paid.
                    let open = open_hashes(shared, &account);
                    peer.holds.retain(|(hash, _)| open.contains(hash));
                    if peer.retry_at.is_none() {
                        serve(shared, &account, peer);
                    }
                }
            }
            None => {}
        }
        if shared.is_stopping() {
            return;
        }
        refresh(shared, &mut peers);
        retired.sweep(shared, &peers);
        retired.cancel_due(shared);
    }
}

fn open_hashes(shared: &Shared, account: &str) -> Vec<PaymentHash> {
    shared
        .store
        .open_invoices(Some(account))
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.payment_hash)
        .collect()
}

/// The time until the next invoice needs replacing or a failed top-up is retried.
fn next_wake(shared: &Shared, peers: &HashMap<String, Peer>) -> Option<Duration> {
    let refresh = shared.options.invoice_refresh.as_secs();
    let now = unix_now();
    let now_instant = Instant::now();
    peers
        .values()
        .flat_map(|peer| {
            let replace = peer.holds.iter().map(move |(_, expires_at)| {
                Duration::from_secs(expires_at.saturating_sub(refresh).saturating_sub(now))
            });
            let retry = peer
                .retry_at
                .map(|at| at.saturating_duration_since(now_instant));
            replace.chain(retry)
        })
        .min()
}

/// Greets `account`'s peer if it was not yet, then brings it up to the stock; a failure is
/// tried again later (see [`Peer::failed`]).
fn serve(shared: &Shared, account: &str, peer: &mut Peer) {
    if !peer.greeted {
        match greet(shared, account) {
            Ok(()) => peer.greeted = true,
            Err(e) => {
                if peer.failing() {
                    log::debug!("settlement: cannot send peeringRequest to {account} yet: {e}");
                } else {
                    log::warn!("settlement: cannot send peeringRequest to {account}: {e}");
                }
                peer.failed();
                return;
            }
        }
    }
    if !peer.agreed {
        match agree(shared, account) {
            Ok(()) => peer.agreed = true,
            Err(e) => {
                log::warn!("settlement: cannot send our offer to {account}: {e}");
                peer.failed();
                return;
            }
        }
    }
    // A peer that pays us by keysend needs no invoices.
    if !shared.needs_invoices(account) {
        peer.succeeded();
        return;
    }
    match fill(shared, account, peer) {
        Ok(()) => peer.succeeded(),
        Err(e) => {
            if peer.failing() {
                log::debug!("settlement: {account} still does not take invoices: {e}");
            } else {
                log::warn!("settlement: {account} did not take an invoice: {e}");
            }
            peer.failed();
        }
    }
}

/// Sends `peeringRequest`.
fn greet(shared: &Shared, account: &str) -> Result<(), String> {
    let link = shared.link().ok_or("settlement is stopping")?;
    let pubkey = shared.own_pubkey().ok_or("no node key yet")?.to_hex();
    let entries = [ProtocolDataEntry::text(PEERING_REQUEST, &pubkey)];
    link.send(account, &entries, shared.options.peer_timeout)
        .map(|_| ())
}

/// Sends our `ilpLightningSettlement` offer and takes the peer's answer (a peer that answers
/// without one does not speak the sub-protocol: invoices, in satoshis).
fn agree(shared: &Shared, account: &str) -> Result<(), String> {
    let link = shared.link().ok_or("settlement is stopping")?;
    let ours = shared.our_offer(account).to_json();
    let entries = [ProtocolDataEntry::json(SETTLEMENT_PROTOCOL, &ours)];
    let answer = link.send(account, &entries, shared.options.peer_timeout)?;
    let theirs = offer_in(&answer).map_err(|e| e.to_string())?;
    shared.learn(account, &theirs);
    Ok(())
}

fn send_invoice(shared: &Shared, account: &str, payment_request: &str) -> Result<(), String> {
    let link = shared.link().ok_or("settlement is stopping")?;
    let entries = [ProtocolDataEntry::text(PAYMENT_REQUEST, payment_request)];
    link.send(account, &entries, shared.options.peer_timeout)
        .map(|_| ())
}

/// Brings `account`'s peer up to the stock: open invoices it may not hold yet first (after a
/// reconnect it lost them), then new ones. Fails when the peer did not take one, or the node
/// could not make one.
fn fill(shared: &Shared, account: &str, peer: &mut Peer) -> Result<(), String> {
    let stock = shared.options.invoice_stock;
    let fresh_until = unix_now() + shared.options.invoice_refresh.as_secs();
    if peer.holds.len() < stock {
        let open = shared
            .store
            .open_invoices(Some(account))
            .map_err(|e| e.to_string())?;
        for issued in open {
            if peer.holds.len() >= stock {
                break;
            }
            if issued.expires_at <= fresh_until
                || peer.holds.iter().any(|(h, _)| *h == issued.payment_hash)
            {
                continue;
            }
            send_invoice(shared, account, &issued.payment_request)?;
            peer.holds.push((issued.payment_hash, issued.expires_at));
        }
    }
    while peer.holds.len() < stock && !shared.is_stopping() {
        let issued = make_invoice(shared, account)?;
        send_invoice(shared, account, &issued.payment_request)?;
        peer.holds.push((issued.payment_hash, issued.expires_at));
    }
    Ok(())
}

/// Creates an invoice on the node and records it for `account`.
fn make_invoice(shared: &Shared, account: &str) -> Result<IssuedInvoice, String> {
    let expiry = shared.options.invoice_expiry;
    let created = unix_now();
    let added = shared
        .node
        .add_invoice(expiry, None)
        .map_err(|e| format!("the node cannot create an invoice: {e}"))?;
    let issued = IssuedInvoice {
        payment_hash: added.payment_hash,
        account: account.to_owned(),
        payment_request: added.payment_request,
        add_index: added.add_index,
        expires_at: created + expiry.as_secs(),
        state: IssuedState::Open,
    };
    match shared.store.issue_invoice(&issued) {
        Ok(()) => Ok(issued),
        Err(e) => {
            // Not recorded, so never handed out: nobody can pay it.
            log::error!("settlement: cannot record an invoice for {account}: {e}");
            Err(format!("cannot record an invoice: {e}"))
        }
    }
}

/// Replaces invoices about to expire, and tries again the peers that failed.
fn refresh(shared: &Shared, peers: &mut HashMap<String, Peer>) {
    let limit = unix_now() + shared.options.invoice_refresh.as_secs();
    let now = Instant::now();
    for (account, peer) in peers.iter_mut() {
        let before = peer.holds.len();
        peer.holds.retain(|(_, expires_at)| *expires_at > limit);
        let expired = before != peer.holds.len();
        let due = match peer.retry_at {
            Some(at) => at <= now,
            None => expired,
        };
        if due && !shared.is_stopping() {
            serve(shared, account, peer);
        }
    }
}
