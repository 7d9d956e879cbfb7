//! [`Settlement`]: the settlement hooks of a plugin that pays and is paid over Lightning.
//!
//! It keeps the books in a [`Store`], tells peers its node and hands them invoices (the refiller
//! thread), credits the invoices they pay (the invoice watcher thread), and pays what it owes
//! (payer threads, one payment in flight per account). See the crate's README for the rules.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use super::amount::Unit;
use super::book::KeysendToken;
use super::hooks::{CreditRefused, Exchange, Hold, PrepareRefused, SettlementHooks};
use super::offer::{Offer, OfferError, SETTLEMENT_PROTOCOL};
use super::peer::{
    check_invoice, parse_peering_request, InvoicePool, PeerRefused, PAYMENT_REQUEST,
    PEERING_REQUEST,
};
use super::store::{AccountBook, Store, StoreError};
use super::{payer, refiller, watcher};
use crate::btp::{OwnedEntry, ProtocolData, ProtocolDataEntry};
use crate::lnd::{Lightning, LndError, NodeInfo, PublicKey};

/// How settlement reaches the peers and the user; the plugin implements it.
pub trait PeerLink: Send + Sync {
    /// Sends a BTP Message carrying `entries` to `account`'s peer and waits (up to `timeout`)
    /// for its Response.
    fn send(
        &self,
        account: &str,
        entries: &[ProtocolDataEntry<'_>],
        timeout: Duration,
    ) -> Result<Vec<OwnedEntry>, String>;
    /// `account`'s peer paid us `amount` (in the account's units): tell the money handler.
    fn money_received(&self, account: &str, amount: u64) -> Result<(), String>;
    /// We paid `account`'s peer `amount_msat` (booked as paid), with `fee_msat` in routing fees.
    fn money_sent(&self, account: &str, amount_msat: u64, fee_msat: u64);
    /// A payment of `amount_msat` to `account`'s peer failed for good (`why`); the amount is
    /// owed again.
    fn payment_failed(&self, account: &str, amount_msat: u64, why: &str);
    /// An invoice we had issued to `account`'s peer and no longer needed was cancelled on the
    /// node (and `deleted` from its database too, where the node can) and closed in the books.
    fn invoice_cancelled(&self, account: &str, deleted: bool) {
        let _ = (account, deleted);
    }
}

/// How much routing fee a payment may cost: the larger of a floor and a share of the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeLimit {
    /// At least this, in millisatoshis.
    pub floor_msat: u64,
    /// Parts per million of the amount.
    pub ppm: u64,
}

impl Default for FeeLimit {
    /// 10 sat, or 1% of the amount if that is more.
    fn default() -> Self {
        FeeLimit {
            floor_msat: 10_000,
            ppm: 10_000,
        }
    }
}

impl FeeLimit {
    /// The limit for a payment of `amount_msat`.
    pub fn for_amount(&self, amount_msat: u64) -> u64 {
        let share = u128::from(amount_msat) * u128::from(self.ppm) / 1_000_000;
        u64::try_from(share)
            .unwrap_or(u64::MAX)
            .max(self.floor_msat)
    }
}

/// The rules and knobs of settlement. Start from [`SettlementOptions::server`] or
/// [`SettlementOptions::client`], which carry the JS reference's defaults for each role.
#[derive(Debug, Clone)]
pub struct SettlementOptions {
    /// The unit we want for ILP amounts (default satoshis, as the JS plugin). Millisatoshis
    /// apply to an account only when its peer agreed to them in the `ilpLightningSettlement`
    /// sub-protocol; every other account (a JS peer's) is in satoshis. Credit limits,
    /// thresholds and `settle_to` are in this unit.
    pub unit: Unit,
    /// How much a peer may owe us before its Prepares get T04, in units; `None`: unlimited.
    /// Server default 0 (clients prefund), client default unlimited.
    pub credit_limit: Option<u64>,
    /// Pay a peer by ourselves once we owe it more than this, in units; `None`: only when asked
    /// (`send_money`) or when the peer answers T04. Server default 0, client `None`.
    pub settle_threshold: Option<u64>,
    /// What we still owe after settling by ourselves, in units (default 0).
    pub settle_to: u64,
    /// Invoices each connected peer holds of ours (default 20).
    pub invoice_stock: usize,
    /// How long an invoice we no longer need (its peer gone, replaced before it expired, over
    /// the stock) stays open before it is cancelled (default 10 minutes). It must be longer
    /// than any payment to it may take to arrive: a payment on its way to a cancelled invoice
    /// fails. A peer that reconnects within it gets the invoice back.
    pub invoice_grace: Duration,
    /// Lifetime of the invoices we create (default 1 hour, LND's default for the JS plugin).
    pub invoice_expiry: Duration,
    /// An invoice is replaced this long before it expires (default 5 minutes).
    pub invoice_refresh: Duration,
    /// We do not pay an invoice expiring sooner than this (default 60 s, as the JS plugin).
    pub pay_margin: Duration,
    /// Routing fees a payment may cost.
    pub fee_limit: FeeLimit,
    /// How long LND looks for routes for a payment (default 60 s).
    pub payment_timeout: Duration,
    /// Threads that pay, each one account at a time (default 4).
    pub payer_threads: usize,
    /// How long a settlement message to a peer may wait for its answer (default 10 s).
    pub peer_timeout: Duration,
    /// Settle by keysend with peers that agree to it in the `ilpLightningSettlement`
    /// sub-protocol (default true): we pay a peer that gave us its token by keysend, and give
    /// ours (and then no invoices) to peers when our node accepts keysend. Off: invoices only.
    pub keysend: bool,
}

impl SettlementOptions {
    fn common() -> Self {
        SettlementOptions {
            unit: Unit::SATOSHI,
            credit_limit: None,
            settle_threshold: None,
            settle_to: 0,
            invoice_stock: 20,
            invoice_grace: Duration::from_secs(600),
            invoice_expiry: Duration::from_secs(3600),
            invoice_refresh: Duration::from_secs(300),
            pay_margin: Duration::from_secs(60),
            fee_limit: FeeLimit::default(),
            payment_timeout: Duration::from_secs(60),
            payer_threads: 4,
            peer_timeout: Duration::from_secs(10),
            keysend: true,
        }
    }

    /// Server defaults: clients prefund (credit limit 0) and are paid after each Fulfill so that
    /// we owe them nothing.
    pub fn server() -> Self {
        SettlementOptions {
            credit_limit: Some(0),
            settle_threshold: Some(0),
            ..Self::common()
        }
    }

    /// Client defaults: the server may owe us without limit; we pay on `send_money` and when the
    /// server answers T04.
    pub fn client() -> Self {
        Self::common()
    }
}

/// Why settlement could not start.
#[derive(Debug)]
pub enum StartError {
    /// The node did not answer GetInfo.
    Node(LndError),
    /// The books could not be read.
    Store(StoreError),
    /// A thread could not be started.
    Thread(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Node(e) => write!(f, "settlement needs the Lightning node: {e}"),
            StartError::Store(e) => write!(f, "settlement cannot read its books: {e}"),
            StartError::Thread(e) => write!(f, "cannot start a settlement thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// One peer's session: what it told us since it connected.
#[derive(Debug, Default)]
pub(crate) struct PeerSession {
    pub(crate) connected: bool,
    pub(crate) pubkey: Option<PublicKey>,
    pub(crate) invoices: InvoicePool,
    /// The token the peer gave us to pay it by keysend.
    pub(crate) peer_token: Option<KeysendToken>,
    /// We offered the peer our keysend token this session.
    pub(crate) offered_token: bool,
    /// The peer asked for our invoices (it has no other way to pay us). Once true it stays
    /// true for the session.
    pub(crate) wants_invoices: bool,
    /// A keysend to the peer failed with INCORRECT_PAYMENT_DETAILS: invoices only from now on.
    pub(crate) keysend_refused: bool,
    /// The peer told us its terms this session.
    pub(crate) heard_offer: bool,
}

impl PeerSession {
    /// Where a keysend to this peer goes, and with which token, if we pay it by keysend.
    fn keysend_route(&self, options: &SettlementOptions) -> Option<(PublicKey, KeysendToken)> {
        if !options.keysend || self.keysend_refused {
            return None;
        }
        Some((self.pubkey?, self.peer_token?))
    }
}

/// How a payment to a peer goes.
pub(crate) enum PayBy {
    /// By keysend to its node, with its token.
    Keysend(PublicKey, KeysendToken),
    /// With one of its invoices.
    Invoice,
}

/// What the threads share.
pub(crate) struct Shared {
    pub(crate) options: SettlementOptions,
    pub(crate) node: Arc<dyn Lightning>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) link: RwLock<Option<Arc<dyn PeerLink>>>,
    pub(crate) identity: RwLock<Option<NodeInfo>>,
    pub(crate) peers: Mutex<HashMap<String, PeerSession>>,
    /// Each account's agreed unit (see [`SettlementOptions::unit`]); satoshis when absent.
    units: RwLock<HashMap<String, Unit>>,
    pub(crate) payer: payer::Queue,
    /// Accounts whose payment in flight this process works on (and so renews the lease of).
    pub(crate) leased: Mutex<HashSet<String>>,
    /// The refiller of the current run. Each run has its own channel: a command the last
    /// run's refiller did not read (its `Stop`, when it was busy as it stopped) must not reach
    /// the next one.
    refill: RwLock<Sender<refiller::Command>>,
    /// Closed (dropped) to tell every thread to stop; threads wait on it instead of sleeping.
    pub(crate) stop: RwLock<Option<Sender<()>>>,
    pub(crate) stopped: RwLock<Receiver<()>>,
}

impl Shared {
    pub(crate) fn link(&self) -> Option<Arc<dyn PeerLink>> {
        self.link.read().clone()
    }

    /// Waits up to `timeout` unless told to stop; `true` when stopping.
    pub(crate) fn wait_or_stop(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.read().clone();
        !matches!(
            stopped.recv_timeout(timeout),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        )
    }

    /// Tells the current run's refiller (a stopped one hears nothing).
    pub(crate) fn tell_refiller(&self, command: refiller::Command) {
        let _ = self.refill.read().send(command);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.read().is_none()
    }

    /// Our own node.
    pub(crate) fn own_pubkey(&self) -> Option<PublicKey> {
        self.identity.read().as_ref().map(|i| i.pubkey)
    }

    /// The unit of `account`'s ILP amounts: millisatoshis if its peer agreed to them, else
    /// satoshis.
    pub(crate) fn unit_of(&self, account: &str) -> Unit {
        self.units
            .read()
            .get(account)
            .copied()
            .unwrap_or(Unit::SATOSHI)
    }

    /// Our terms for `account`, to send or to answer the peer's with.
    pub(crate) fn our_offer(&self, account: &str) -> Offer {
        let node_takes_keysend = self
            .identity
            .read()
            .as_ref()
            .is_some_and(|i| i.accepts_keysend);
        let keysend_token = if self.options.keysend && node_takes_keysend {
            match self.store.keysend_token(account) {
                Ok(token) => Some(token),
                Err(e) => {
                    log::error!("settlement: no keysend token for {account}: {e}");
                    None
                }
            }
        } else {
            None
        };
        let mut peers = self.peers.lock();
        let session = peers.entry(account.to_owned()).or_default();
        session.offered_token |= keysend_token.is_some();
        // We need invoices unless we can pay by keysend: a peer that offered no token (or has
        // not said yet) is paid by invoice, and so is one whose node refused a keysend.
        let want_invoices = !self.options.keysend
            || session.keysend_refused
            || (session.wants_invoices_known() && session.peer_token.is_none());
        Offer {
            keysend_token,
            asset_scale: self.options.unit.asset_scale(),
            want_invoices,
        }
    }

    /// Takes the peer's terms for `account` (from its request or its answer to ours).
    pub(crate) fn learn(&self, account: &str, offer: &Offer) {
        let unit = if offer.asset_scale == 3 && self.options.unit == Unit::MILLISATOSHI {
            Unit::MILLISATOSHI
        } else {
            Unit::SATOSHI
        };
        let previous = self.units.write().insert(account.to_owned(), unit);
        if previous != Some(unit) {
            log::info!("settlement: account {account} is in {unit}");
        }
        let (token_arrived, newly_wants) = {
            let mut peers = self.peers.lock();
            let session = peers.entry(account.to_owned()).or_default();
            session.heard_offer = true;
            let token_arrived = session.peer_token.is_none() && offer.keysend_token.is_some();
            if self.options.keysend {
                session.peer_token = offer.keysend_token;
            }
            let newly_wants = offer.want_invoices && !session.wants_invoices;
            session.wants_invoices |= offer.want_invoices;
            (token_arrived, newly_wants && session.offered_token)
        };
        if token_arrived && self.options.keysend {
            log::info!("settlement: paying {account} by keysend");
            // A payment waiting for an invoice can go now.
            self.payer.invoice_arrived(account);
        }
        if newly_wants {
            log::info!("settlement: {account} asks for invoices: stocking it");
            self.tell_refiller(refiller::Command::WantsInvoices(account.to_owned()));
        }
    }

    /// How to pay `account` now.
    pub(crate) fn pay_by(&self, account: &str) -> PayBy {
        match self
            .peers
            .lock()
            .get(account)
            .and_then(|s| s.keysend_route(&self.options))
        {
            Some((destination, token)) => PayBy::Keysend(destination, token),
            None => PayBy::Invoice,
        }
    }

    /// Whether `account`'s peer needs our invoices: it cannot pay us by keysend (we offered no
    /// token) or said it wants them.
    pub(crate) fn needs_invoices(&self, account: &str) -> bool {
        self.peers
            .lock()
            .get(account)
            .is_none_or(|s| !s.offered_token || s.wants_invoices)
    }

    /// A keysend to `account` failed with INCORRECT_PAYMENT_DETAILS: its node does not accept
    /// keysend after all. Invoices from now on, for the session; the peer is told so.
    pub(crate) fn keysend_refused(&self, account: &str) {
        if let Some(session) = self.peers.lock().get_mut(account) {
            session.keysend_refused = true;
        }
        log::warn!(
            "settlement: {account}'s node refused a keysend (INCORRECT_PAYMENT_DETAILS: it does \
             not run with --accept-keysend); paying it by invoice for the rest of the session"
        );
        self.tell_refiller(refiller::Command::SendOffer(account.to_owned()));
    }
}

impl PeerSession {
    fn wants_invoices_known(&self) -> bool {
        self.heard_offer
    }
}

/// The peer's offer in a Response's (or request's) entries; a Response without one is a peer
/// that does not speak the sub-protocol (a JS plugin).
pub(crate) fn offer_in(entries: &[crate::btp::OwnedEntry]) -> Result<Offer, OfferError> {
    match entries.iter().find(|e| e.name == SETTLEMENT_PROTOCOL) {
        Some(entry) => Offer::parse(
            std::str::from_utf8(&entry.data).map_err(|_| OfferError("not UTF-8".into()))?,
        ),
        None => Ok(Offer::LEGACY),
    }
}

struct Running {
    threads: Vec<JoinHandle<()>>,
    watcher: watcher::Handle,
}

/// Settlement over Lightning: the [`SettlementHooks`] of a plugin that has a node.
///
/// Build it with [`Settlement::new`], give it to the plugin
/// ([`PluginBuilder::lightning`](crate::plugin::PluginBuilder::lightning) does both); the plugin
/// starts it on `connect()` and stops it (joining its threads) on `disconnect()`.
pub struct Settlement {
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

impl fmt::Debug for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settlement")
            .field("options", &self.shared.options)
            .field("running", &self.running.lock().is_some())
            .finish()
    }
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Settlement {
    /// Settlement through `node` with the books in `store`.
    pub fn new(
        node: Arc<dyn Lightning>,
        store: Arc<dyn Store>,
        options: SettlementOptions,
    ) -> Settlement {
        let (refill, _) = unbounded();
        let (stop, stopped) = bounded(0);
        Settlement {
            shared: Arc::new(Shared {
                payer: payer::Queue::new(),
                leased: Mutex::new(HashSet::new()),
                options,
                node,
                store,
                link: RwLock::new(None),
                identity: RwLock::new(None),
                peers: Mutex::new(HashMap::new()),
                units: RwLock::new(HashMap::new()),
                refill: RwLock::new(refill),
                stop: RwLock::new(Some(stop)),
                stopped: RwLock::new(stopped),
            }),
            running: Mutex::new(None),
        }
    }

    /// The options.
    pub fn options(&self) -> &SettlementOptions {
        &self.shared.options
    }

    /// The books.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Our node, as GetInfo described it at start (`None` before).
    pub fn node_info(&self) -> Option<NodeInfo> {
        self.shared.identity.read().clone()
    }

    /// One account's book.
    pub fn account(&self, name: &str) -> Result<AccountBook, StoreError> {
        self.shared.store.account(name)
    }

    /// Asks the node who it is, picks up what a previous run left (payments in flight, money
    /// received that the money handler did not hear of, invoices paid while we were down) and
    /// starts the threads. Peers are reached through `link`.
    pub fn start(&self, link: Arc<dyn PeerLink>) -> Result<(), StartError> {
        let mut running = self.running.lock();
        if running.is_some() {
            return Ok(());
        }
        let info = self.shared.node.node_info().map_err(StartError::Node)?;
        // Read before any thread starts, so that a failure leaves nothing running.
        let open = self
            .shared
            .store
            .open_payments()
            .map_err(StartError::Store)?;
        let accounts = self.shared.store.accounts().map_err(StartError::Store)?;
        log::info!(
            "settlement: node {} on {} ({})",
            info.pubkey,
            info.network,
            info.version
        );
        *self.shared.identity.write() = Some(info);
        *self.shared.link.write() = Some(link);
        let (stop, stopped) = bounded(0);
        *self.shared.stop.write() = Some(stop);
        *self.shared.stopped.write() = stopped;

        let spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(body)
                .map_err(|e| StartError::Thread(e.to_string()))
        };
        let mut threads = Vec::new();
        for i in 0..self.shared.options.payer_threads.max(1) {
            let shared = self.shared.clone();
            threads.push(spawn(
                format!("settlement-payer-{i}"),
                Box::new(move || payer::run(&shared)),
            )?);
        }
        let shared = self.shared.clone();
        let (refill, commands) = unbounded();
        *self.shared.refill.write() = refill;
        threads.push(spawn(
            "settlement-refiller".into(),
            Box::new(move || refiller::run(&shared, &commands)),
        )?);
        let watcher = watcher::Handle::default();
        let shared = self.shared.clone();
        let handle = watcher.clone();
        threads.push(spawn(
            "settlement-invoices".into(),
            Box::new(move || watcher::run(&shared, &handle)),
        )?);
        {
            let shared = self.shared.clone();
            threads.push(spawn(
                "settlement-upkeep".into(),
                Box::new(move || payer::upkeep(&shared)),
            )?);
        }
        // Payments a previous run left in flight are finished before anything else is paid.
        for intent in open {
            log::info!(
                "settlement: resolving payment {} to {} left by a previous run",
                intent.payment_hash,
                intent.account
            );
            self.shared.payer.request(&intent.account, false);
        }
        // What we owe past the threshold is paid without waiting for the next Fulfill: a
        // previous run may have booked one and stopped before paying it.
        for (account, book) in accounts {
            if payer::should_settle(&self.shared, &account, &book, false) {
                self.shared.payer.request(&account, false);
            }
        }
        *running = Some(Running { threads, watcher });
        Ok(())
    }

    /// Stops the threads and waits for them. A payment in flight stays recorded and is resolved
    /// by the next start.
    pub fn stop(&self) {
        let running = self.running.lock().take();
        let Some(running) = running else {
            return;
        };
        // Dropping the only sender wakes every thread waiting on `stopped`.
        self.shared.stop.write().take();
        running.watcher.cancel();
        self.shared.payer.close();
        self.shared.tell_refiller(refiller::Command::Stop);
        let me = std::thread::current().id();
        for thread in running.threads {
            // Stopping from one of our own threads (a money handler that disconnects the
            // plugin): that thread ends by itself once it returns.
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
        self.shared.payer.reopen();
        self.shared.link.write().take();
        let mut peers = self.shared.peers.lock();
        peers.clear();
    }

    fn to_msat(&self, account: &str, amount: u64) -> u128 {
        self.shared.unit_of(account).to_msat(amount)
    }

    fn limit_msat(&self) -> Option<u128> {
        self.shared
            .options
            .credit_limit
            .map(|l| self.shared.options.unit.to_msat(l))
    }

    /// The peer's `ilpLightningSettlement` offer: taken, and answered with ours.
    fn handle_offer(&self, account: &str, text: &str) -> Result<OwnedEntry, String> {
        let offer = Offer::parse(text).map_err(|e| e.to_string())?;
        self.shared.learn(account, &offer);
        let ours = self.shared.our_offer(account);
        Ok(OwnedEntry {
            name: SETTLEMENT_PROTOCOL.into(),
            content_type: crate::btp::ContentType::ApplicationJson,
            data: ours.to_json().into_bytes(),
        })
    }

    fn handle_peering(&self, account: &str, text: &str) -> Result<(), PeerRefused> {
        let announced = parse_peering_request(text)?;
        let mut peers = self.shared.peers.lock();
        let session = peers.entry(account.to_owned()).or_default();
        match session.pubkey {
            Some(linked) if linked != announced => {
                return Err(PeerRefused::PubkeyChanged { linked, announced })
            }
            Some(_) => {}
            None => {
                log::info!("settlement: account {account} is node {announced}");
                session.pubkey = Some(announced);
            }
        }
        drop(peers);
        // A peer that announces itself is ready for ours, if it refused it before.
        self.shared
            .tell_refiller(refiller::Command::Announced(account.to_owned()));
        Ok(())
    }

    fn handle_invoice(&self, account: &str, text: &str) -> Result<(), PeerRefused> {
        let network = self
            .shared
            .identity
            .read()
            .as_ref()
            .map(|i| i.network.clone())
            .ok_or_else(|| PeerRefused::Unreadable("settlement is not running".into()))?;
        {
            let mut peers = self.shared.peers.lock();
            let session = peers.entry(account.to_owned()).or_default();
            let peer = session.pubkey.ok_or(PeerRefused::NoPubkey)?;
            let invoice = check_invoice(
                text,
                &peer,
                &network,
                unix_now(),
                self.shared.options.pay_margin.as_secs(),
            )?;
            session.invoices.add(invoice)?;
        }
        // Something may be waiting for an invoice to pay this peer.
        self.shared.payer.invoice_arrived(account);
        Ok(())
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SettlementHooks for Settlement {
    fn on_incoming_prepare(
        &self,
        account: &str,
        amount: u64,
        hold: &Hold,
    ) -> Result<(), PrepareRefused> {
        let limit = self.limit_msat();
        match self
            .shared
            .store
            .reserve(account, self.to_msat(account, amount), limit, hold)
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(over)) => {
                let unit = self.shared.unit_of(account);
                // Rounded up, so that the message never understates the debt.
                let per_unit = i128::from(unit.msat_per_unit());
                let would_owe = (over.would_owe_msat + per_unit - 1).div_euclid(per_unit);
                Err(CreditRefused {
                    account: account.to_owned(),
                    would_owe,
                    limit: unit.whole_units(over.limit_msat),
                }
                .into())
            }
            Err(e) => Err(PrepareRefused::Unavailable(e.to_string())),
        }
    }

    fn on_incoming_fulfilled(&self, account: &str, amount: u64, hold: &Hold) -> Result<(), String> {
        self.shared
            .store
            .post(account, self.to_msat(account, amount), &hold.id)
            .map_err(|e| e.to_string())
    }

    fn on_incoming_rejected(&self, account: &str, amount: u64, hold: &Hold) {
        if let Err(e) = self
            .shared
            .store
            .void(account, self.to_msat(account, amount), &hold.id)
        {
            log::error!("settlement: cannot release a reservation of {account}: {e}");
        }
    }

    fn on_outgoing_fulfilled(&self, account: &str, amount: u64) {
        match self
            .shared
            .store
            .owe(account, self.to_msat(account, amount))
        {
            Ok(book) => {
                if payer::should_settle(&self.shared, account, &book, false) {
                    self.shared.payer.request(account, false);
                }
            }
            // The peer fulfilled and we could not write it down: loud, because we now owe it
            // money the books do not show.
            Err(e) => {
                log::error!("settlement: cannot book {amount} owed to {account} for a Fulfill: {e}")
            }
        }
    }

    fn on_outgoing_rejected(&self, account: &str, _amount: u64, code: &str) {
        // The peer's T04 says it wants to be paid before it takes more (JS: settle on T04).
        if code == "T04" {
            self.shared.payer.request(account, true);
        }
    }

    fn send_money(&self, account: &str, amount: u64) -> Result<(), String> {
        if self.running.lock().is_none() {
            return Err("settlement is not running (connect first)".into());
        }
        payer::send_money(&self.shared, account, self.to_msat(account, amount))
    }

    fn asset_scale(&self, account: &str) -> Option<u8> {
        Some(self.shared.unit_of(account).asset_scale())
    }

    fn on_authenticated(&self, account: &str, exchange: &Exchange<'_>) {
        if self.running.lock().is_none() {
            return;
        }
        let ours = self.shared.our_offer(account).to_json();
        let entries = [ProtocolDataEntry::json(SETTLEMENT_PROTOCOL, &ours)];
        // A peer that does not answer it (a JS server) is one that does not speak it.
        let offer = match exchange(&entries) {
            Ok(answer) => offer_in(&answer).unwrap_or_else(|e| {
                log::warn!("settlement: {account}'s answer to our offer: {e}");
                Offer::LEGACY
            }),
            Err(e) => {
                log::debug!("settlement: {account} did not take our offer: {e}");
                Offer::LEGACY
            }
        };
        self.shared.learn(account, &offer);
    }

    fn on_connected(&self, account: &str) {
        self.shared
            .peers
            .lock()
            .entry(account.to_owned())
            .or_default()
            .connected = true;
        self.shared
            .tell_refiller(refiller::Command::Connected(account.to_owned()));
    }

    fn on_disconnected(&self, account: &str) {
        // The peer's key and invoices are for one session, as in the JS plugin.
        self.shared.peers.lock().remove(account);
        self.shared
            .tell_refiller(refiller::Command::Disconnected(account.to_owned()));
    }

    fn on_message(
        &self,
        account: &str,
        protocol_data: &ProtocolData<'_>,
    ) -> Result<Vec<OwnedEntry>, String> {
        let mut known = false;
        let mut answer = Vec::new();
        for entry in protocol_data.iter() {
            let text = || {
                entry
                    .data_as_str()
                    .ok_or_else(|| format!("{} must be UTF-8 text", entry.name))
            };
            let result = match entry.name {
                PEERING_REQUEST => self.handle_peering(account, text()?),
                PAYMENT_REQUEST => self.handle_invoice(account, text()?),
                SETTLEMENT_PROTOCOL => {
                    known = true;
                    match self.handle_offer(account, text()?) {
                        Ok(ours) => {
                            answer.push(ours);
                            continue;
                        }
                        Err(why) => {
                            log::warn!("settlement: refused the offer of {account}: {why}");
                            return Err(why);
                        }
                    }
                }
                _ => continue,
            };
            known = true;
            if let Err(refused) = result {
                log::warn!(
                    "settlement: refused {} from {account}: {refused}",
                    entry.name
                );
                return Err(refused.to_string());
            }
        }
        if known {
            Ok(answer)
        } else {
            Err(format!(
                "no handler for sub-protocol {:?}",
                protocol_data.primary().map(|e| e.name).unwrap_or_default()
            ))
        }
    }
}
