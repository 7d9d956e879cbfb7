//! The invoice refiller thread: tells each peer that connects which node we are and keeps it
//! stocked with invoices to pay us with.
//!
//! On every connect (and reconnect) it sends `peeringRequest` and then the stock: the account's
//! open invoices that are not about to expire, topped up with new ones. An invoice paid is
//! replaced at once; one about to expire is replaced before it does. Nothing is made for a peer
//! that is gone. Each invoice is recorded (with its account) before it is sent, so a payment to
//! it is always credited to the right account, after a restart too.
//!
//! A peer may refuse our `peeringRequest` just after it connected: the JS plugin's client
//! answers a BTP Error ("Account peer is not yet loaded") to what arrives before its own connect
//! handler has run. A refused greeting is sent again as soon as the peer sends its own
//! `peeringRequest` (it is ready then), else after a backoff, as long as the peer is connected.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::engine::{unix_now, Shared};
use super::peer::{PAYMENT_REQUEST, PEERING_REQUEST};
use super::store::{IssuedInvoice, IssuedState};
use crate::btp::ProtocolDataEntry;
use crate::lnd::PaymentHash;

/// What the refiller is told.
#[derive(Debug)]
pub(crate) enum Command {
    /// The account's peer connected (again).
    Connected(String),
    /// It disconnected.
    Disconnected(String),
    /// It sent its `peeringRequest`: it takes ours now if it refused it before.
    Announced(String),
    /// One of its invoices was paid.
    Paid(String),
    /// Stop.
    Stop,
}

/// How long to wait before trying again to make an invoice for a peer when the node failed.
const RETRY: Duration = Duration::from_secs(2);
/// The longest wait between greetings a connected peer keeps refusing (a peer without
/// settlement refuses every one).
const GREET_RETRY_MAX: Duration = Duration::from_secs(60);

struct Peer {
    /// Whether it took our `peeringRequest`; no invoice is sent before.
    greeted: bool,
    /// How long to wait before greeting again after the next refusal.
    greet_backoff: Duration,
    /// Our invoices this peer holds: hash and expiry (Unix seconds).
    holds: Vec<(PaymentHash, u64)>,
    /// Set when the node failed to make an invoice or the peer refused our greeting: try again
    /// then.
    retry_at: Option<Instant>,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            greeted: false,
            greet_backoff: RETRY,
            holds: Vec::new(),
            retry_at: None,
        }
    }
}

pub(crate) fn run(shared: &Shared, commands: &Receiver<Command>) {
    let mut peers: HashMap<String, Peer> = HashMap::new();
    loop {
        let timeout = next_wake(shared, &peers);
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
                peers.insert(account.clone(), Peer::new());
                greet_and_top_up(shared, &account, &mut peers);
            }
            Some(Command::Disconnected(account)) => {
                peers.remove(&account);
            }
            Some(Command::Announced(account)) => {
                if peers.get(&account).is_some_and(|peer| !peer.greeted) {
                    greet_and_top_up(shared, &account, &mut peers);
                }
            }
            Some(Command::Paid(account)) => {
                if let Some(peer) = peers.get_mut(&account) {
                    // Whatever it held that is no longer open was paid.
                    let open = open_hashes(shared, &account);
                    peer.holds.retain(|(hash, _)| open.contains(hash));
                }
                top_up(shared, &account, &mut peers);
            }
            None => {}
        }
        if shared.is_stopping() {
            return;
        }
        refresh(shared, &mut peers);
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

/// Sends `peeringRequest` to `account`'s peer, then its stock of invoices. A refused greeting
/// is tried again when the peer announces itself or after a backoff.
fn greet_and_top_up(shared: &Shared, account: &str, peers: &mut HashMap<String, Peer>) {
    let Some(peer) = peers.get_mut(account) else {
        return;
    };
    if !peer.greeted {
        match greet(shared, account) {
            Ok(()) => {
                peer.greeted = true;
                peer.retry_at = None;
            }
            Err(e) => {
                log::warn!(
                    "settlement: {account} refused our peeringRequest ({e}); sending it again \
                     when it announces its node, or in {:?}",
                    peer.greet_backoff
                );
                peer.retry_at = Some(Instant::now() + peer.greet_backoff);
                peer.greet_backoff = (peer.greet_backoff * 2).min(GREET_RETRY_MAX);
                return;
            }
        }
    }
    top_up(shared, account, peers);
}

/// Sends `peeringRequest`.
fn greet(shared: &Shared, account: &str) -> Result<(), String> {
    let link = shared.link().ok_or("settlement is stopping")?;
    let pubkey = shared
        .own_pubkey()
        .ok_or("settlement is not running")?
        .to_hex();
    let entries = [ProtocolDataEntry::text(PEERING_REQUEST, &pubkey)];
    link.send(account, &entries, shared.options.peer_timeout)
        .map(|_| ())
}

fn send_invoice(shared: &Shared, account: &str, payment_request: &str) -> bool {
    let Some(link) = shared.link() else {
        return false;
    };
    let entries = [ProtocolDataEntry::text(PAYMENT_REQUEST, payment_request)];
    match link.send(account, &entries, shared.options.peer_timeout) {
        Ok(_) => true,
        Err(e) => {
            log::warn!("settlement: {account} did not take an invoice: {e}");
            false
        }
    }
}

/// Brings `account`'s peer up to the stock: open invoices it may not hold yet first (after a
/// reconnect it lost them), then new ones. A peer that stops answering is dropped.
fn top_up(shared: &Shared, account: &str, peers: &mut HashMap<String, Peer>) {
    let Some(peer) = peers.get_mut(account).filter(|peer| peer.greeted) else {
        return;
    };
    if !fill(shared, account, peer) {
        peers.remove(account);
    }
}

/// `false` when the peer did not take an invoice.
fn fill(shared: &Shared, account: &str, peer: &mut Peer) -> bool {
    let stock = shared.options.invoice_stock;
    let fresh_until = unix_now() + shared.options.invoice_refresh.as_secs();
    if peer.holds.len() < stock {
        let open = shared
            .store
            .open_invoices(Some(account))
            .unwrap_or_default();
        for issued in open {
            if peer.holds.len() >= stock {
                break;
            }
            if issued.expires_at <= fresh_until
                || peer.holds.iter().any(|(h, _)| *h == issued.payment_hash)
            {
                continue;
            }
            if !send_invoice(shared, account, &issued.payment_request) {
                return false;
            }
            peer.holds.push((issued.payment_hash, issued.expires_at));
        }
    }
    while peer.holds.len() < stock && !shared.is_stopping() {
        let Some(issued) = make_invoice(shared, account) else {
            peer.retry_at = Some(Instant::now() + RETRY);
            return true;
        };
        if !send_invoice(shared, account, &issued.payment_request) {
            return false;
        }
        peer.holds.push((issued.payment_hash, issued.expires_at));
        peer.retry_at = None;
    }
    true
}

/// Creates an invoice on the node and records it for `account`.
fn make_invoice(shared: &Shared, account: &str) -> Option<IssuedInvoice> {
    let expiry = shared.options.invoice_expiry;
    let created = unix_now();
    let added = match shared.node.add_invoice(expiry, None) {
        Ok(added) => added,
        Err(e) => {
            log::warn!("settlement: cannot create an invoice for {account}: {e}");
            return None;
        }
    };
    let issued = IssuedInvoice {
        payment_hash: added.payment_hash,
        account: account.to_owned(),
        payment_request: added.payment_request,
        add_index: added.add_index,
        expires_at: created + expiry.as_secs(),
        state: IssuedState::Open,
    };
    match shared.store.issue_invoice(&issued) {
        Ok(()) => Some(issued),
        Err(e) => {
            // Not recorded, so never handed out: nobody can pay it.
            log::error!("settlement: cannot record an invoice for {account}: {e}");
            None
        }
    }
}

/// Replaces invoices about to expire, and retries greetings and top-ups that failed.
fn refresh(shared: &Shared, peers: &mut HashMap<String, Peer>) {
    let limit = unix_now() + shared.options.invoice_refresh.as_secs();
    let now = Instant::now();
    let due: Vec<String> = peers
        .iter_mut()
        .filter_map(|(account, peer)| {
            let before = peer.holds.len();
            peer.holds.retain(|(_, expires_at)| *expires_at > limit);
            let retry = peer.retry_at.is_some_and(|at| at <= now);
            (before != peer.holds.len() || retry).then(|| account.clone())
        })
        .collect();
    for account in due {
        greet_and_top_up(shared, &account, peers);
    }
}
