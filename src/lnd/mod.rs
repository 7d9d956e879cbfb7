//! What the plugin needs from a Lightning node, over LND's gRPC API, and a simulated network
//! that serves that API.
//!
//! [`Lightning`] is the seam: settlement code talks to a `dyn Lightning` and never sees gRPC.
//! [`grpc::GrpcLightning`] implements it against a real LND (0.18 to 0.21) or the simulator.
//! Every call blocks the calling thread; none needs an async runtime.
//!
//! Errors are [`LndError`]s. For anything that moves money, [`LndError::payment_certainty`]
//! says whether the error proves that nothing was paid. Only a final FAILED update or a refusal
//! by this crate before anything was sent does; every error from the node or the connection
//! during a payment — whatever its text — leaves the outcome unknown, and the caller must then
//! ask [`Lightning::track_payment`] (whose NOT_FOUND means "this node never started it") before
//! it rolls a balance back.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use futures::task::AtomicWaker;

/// LND's messages, generated from `proto/` (a subset of LND's own .proto files, with LND's names
/// and field numbers) by build.rs.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
}

pub mod grpc;
pub mod methods;
#[cfg(feature = "sim")]
pub mod sim;

/// The custom record type under which a keysend payment carries its preimage (LND's
/// `record.KeySendType`).
pub const KEYSEND_RECORD_TYPE: u64 = 5_482_373_484;

/// The lowest custom record type an application may use; LND refuses lower ones ("no custom
/// records with types below 65536 allowed").
pub const MIN_CUSTOM_RECORD_TYPE: u64 = 65_536;

/// A node's identity key: a compressed secp256k1 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 33]);

impl PublicKey {
    /// Parses the 66-hex-digit form LND uses in `identity_pubkey`.
    pub fn from_hex(hex_str: &str) -> Result<PublicKey, LndError> {
        let mut key = [0u8; 33];
        hex::decode_to_slice(hex_str, &mut key).map_err(|e| {
            LndError::BadResponse(format!(
                "a node public key must be 66 hex digits, got {:?}: {e}",
                truncate(hex_str, 80)
            ))
        })?;
        if key[0] != 2 && key[0] != 3 {
            return Err(LndError::BadResponse(format!(
                "a compressed public key starts with 02 or 03, got {hex_str}"
            )));
        }
        Ok(PublicKey(key))
    }

    /// The 66-hex-digit form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

macro_rules! hash32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Takes exactly 32 bytes; `what` names the field for the error message.
            pub fn from_slice(bytes: &[u8], what: &str) -> Result<$name, LndError> {
                <[u8; 32]>::try_from(bytes).map($name).map_err(|_| {
                    LndError::BadResponse(format!("{what} must be 32 bytes, got {}", bytes.len()))
                })
            }

            /// Parses 64 hex digits; `what` names the field for the error message.
            pub fn from_hex(hex_str: &str, what: &str) -> Result<$name, LndError> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(hex_str, &mut bytes).map_err(|e| {
                    LndError::BadResponse(format!(
                        "{what} must be 64 hex digits, got {:?}: {e}",
                        truncate(hex_str, 80)
                    ))
                })?;
                Ok($name(bytes))
            }

            /// Lower-case hex, as LND prints it.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

hash32!(
    /// The SHA-256 hash that locks a Lightning payment.
    PaymentHash
);

impl fmt::Debug for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaymentHash({})", self.to_hex())
    }
}

hash32!(
    /// The secret whose SHA-256 is the payment hash: proof of payment.
    Preimage
);

impl fmt::Debug for Preimage {
    // A preimage is proof of payment; it is not a credential, but there is no reason to spread
    // it through logs either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Preimage(..)")
    }
}

impl Preimage {
    /// 32 bytes from the operating system's random source.
    pub fn random() -> Result<Preimage, LndError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| LndError::Other(format!("no randomness for a keysend preimage: {e}")))?;
        Ok(Preimage(bytes))
    }

    /// SHA-256 of the preimage.
    pub fn payment_hash(&self) -> PaymentHash {
        PaymentHash(sha256::Hash::hash(&self.0).to_byte_array())
    }
}

/// The chain a node runs on, from GetInfo's `chains[0].network`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// Bitcoin main net.
    Mainnet,
    /// Bitcoin testnet (3 or 4).
    Testnet,
    /// Signet.
    Signet,
    /// A local regtest chain (also what the simulator reports).
    Regtest,
    /// btcd's simnet.
    Simnet,
    /// A name this crate does not know, kept as LND spelled it.
    Other(String),
}

impl Network {
    /// Maps LND's network names (`mainnet`, `testnet`, `testnet4`, `signet`, `regtest`,
    /// `simnet`).
    pub fn from_lnd_name(name: &str) -> Network {
        match name {
            "mainnet" | "bitcoin" => Network::Mainnet,
            "testnet" | "testnet3" | "testnet4" => Network::Testnet,
            "signet" => Network::Signet,
            "regtest" => Network::Regtest,
            "simnet" => Network::Simnet,
            other => Network::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
            Network::Simnet => "simnet",
            Network::Other(name) => name,
        })
    }
}

/// Who the node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Identity key; also the destination of the node's invoices.
    pub pubkey: PublicKey,
    /// The chain it is on.
    pub network: Network,
    /// The node's alias (free text, chosen by its operator).
    pub alias: String,
    /// LND's version string, e.g. `0.19.0-beta commit=v0.19.0-beta`.
    pub version: String,
    /// Whether the node takes keysend payments: GetInfo's features hold bit 55 or 54, which LND
    /// advertises only when it runs with `--accept-keysend` (off by default).
    pub accepts_keysend: bool,
}

/// A freshly created invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedInvoice {
    /// The hash a payer must lock its HTLC to.
    pub payment_hash: PaymentHash,
    /// The BOLT11 string to hand to the payer.
    pub payment_request: String,
    /// The invoice's position in the node's add sequence (see [`InvoiceCursor`]).
    pub add_index: u64,
}

/// Where an invoice is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvoiceState {
    /// Waiting for payment.
    Open,
    /// Paid.
    Settled,
    /// Cancelled (by request or on expiry); can no longer be paid.
    Canceled,
    /// HTLCs held but not settled (hold invoices only).
    Accepted,
}

/// One HTLC that paid (part of) an invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceHtlc {
    /// What the HTLC carried, in millisatoshi.
    pub amount_msat: u64,
    /// Every custom TLV record of the HTLC, keysend's preimage record included.
    pub custom_records: BTreeMap<u64, Vec<u8>>,
}

/// A view of one invoice, as LookupInvoice and SubscribeInvoices report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoice {
    /// The payment hash.
    pub payment_hash: PaymentHash,
    /// The preimage, when the node reports it (always for its own invoices on LND).
    pub preimage: Option<Preimage>,
    /// The BOLT11 string; empty for keysend.
    pub payment_request: String,
    /// The memo the invoice was created with.
    pub memo: String,
    /// The amount asked for, in millisatoshi; 0 for an any-amount invoice.
    pub value_msat: u64,
    /// State.
    pub state: InvoiceState,
    /// What was paid, in millisatoshi (0 unless settled or accepted).
    pub amount_paid_msat: u64,
    /// Position in the node's add sequence.
    pub add_index: u64,
    /// Position in the node's settle sequence; 0 until settled.
    pub settle_index: u64,
    /// Whether this invoice was created by an incoming keysend payment.
    pub is_keysend: bool,
    /// The HTLCs that paid it, with their custom records.
    pub htlcs: Vec<InvoiceHtlc>,
    /// Creation time, Unix seconds.
    pub creation_date: u64,
    /// Settle time, Unix seconds; 0 until settled.
    pub settle_date: u64,
    /// How long after creation the invoice expires.
    pub expiry: Duration,
}

impl Invoice {
    /// The custom records of all HTLCs merged (for keysend there is one HTLC).
    pub fn custom_records(&self) -> BTreeMap<u64, Vec<u8>> {
        let mut all = BTreeMap::new();
        for htlc in &self.htlcs {
            all.extend(htlc.custom_records.iter().map(|(k, v)| (*k, v.clone())));
        }
        all
    }
}

/// Why LND gave up on a payment. Every reason is final: nothing was paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// LND stopped trying after the payment's timeout (no HTLC is left in flight).
    Timeout,
    /// No route within the fee limit.
    NoRoute,
    /// An unexpected error in LND.
    Error,
    /// The payee rejected it: unknown or expired invoice, wrong amount, already settled.
    IncorrectPaymentDetails,
    /// Not enough outbound liquidity in our channels.
    InsufficientBalance,
    /// Cancelled by the caller (LND 0.19+ `cancelable`).
    Canceled,
    /// A reason code this crate does not know.
    Unknown(i32),
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Timeout => f.write_str("timed out before any route worked"),
            FailureReason::NoRoute => f.write_str("no route within the fee limit"),
            FailureReason::Error => f.write_str("LND failed the payment with an internal error"),
            FailureReason::IncorrectPaymentDetails => f.write_str(
                "the payee rejected it (unknown, expired or already settled invoice, or wrong amount)",
            ),
            FailureReason::InsufficientBalance => {
                f.write_str("not enough outbound balance in our channels")
            }
            FailureReason::Canceled => f.write_str("cancelled"),
            FailureReason::Unknown(code) => write!(f, "unknown failure reason {code}"),
        }
    }
}

/// Where a payment ended (or is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Paid.
    Succeeded {
        /// Proof of payment.
        preimage: Preimage,
        /// Routing fees paid, in millisatoshi.
        fee_msat: u64,
        /// What the payee received, in millisatoshi (fees not included).
        amount_msat: u64,
    },
    /// Definitely not paid.
    Failed(FailureReason),
    /// Not final yet (only from [`Lightning::track_payment`] when not waiting long enough).
    InFlight,
}

/// The result of a payment or of tracking one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentOutcome {
    /// Which payment.
    pub payment_hash: PaymentHash,
    /// Its status.
    pub status: PaymentStatus,
}

/// Bounds for one outgoing payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentLimits {
    /// The most we pay in routing fees, in millisatoshi. LND's own default is 0, which only
    /// allows direct channels.
    pub fee_limit_msat: u64,
    /// How long LND keeps trying new routes. HTLCs already sent are not aborted by it, so a
    /// payment can stay in flight beyond it.
    pub timeout: Duration,
}

/// A spontaneous (keysend) payment, built before it is sent so that the caller knows its hash
/// and can record it first: if sending then fails with an unknown outcome, the hash is what
/// [`Lightning::track_payment`] needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Keysend {
    destination: PublicKey,
    amount_msat: u64,
    preimage: Preimage,
    custom_records: BTreeMap<u64, Vec<u8>>,
}

impl fmt::Debug for Keysend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keysend")
            .field("destination", &self.destination)
            .field("amount_msat", &self.amount_msat)
            .field("payment_hash", &self.payment_hash())
            .field("custom_record_types", &self.custom_records.keys())
            .finish()
    }
}

impl Keysend {
    /// A keysend of `amount_msat` to `destination` with a fresh random preimage. The caller's
    /// `custom_records` must use types of at least [`MIN_CUSTOM_RECORD_TYPE`].
    pub fn new(
        destination: PublicKey,
        amount_msat: u64,
        custom_records: BTreeMap<u64, Vec<u8>>,
    ) -> Result<Keysend, LndError> {
        Keysend::with_preimage(
            destination,
            amount_msat,
            custom_records,
            Preimage::random()?,
        )
    }

    /// As [`Keysend::new`] with a given preimage (for tests and for retrying a recorded one).
    pub fn with_preimage(
        destination: PublicKey,
        amount_msat: u64,
        custom_records: BTreeMap<u64, Vec<u8>>,
        preimage: Preimage,
    ) -> Result<Keysend, LndError> {
        if amount_msat == 0 {
            return Err(LndError::InvalidRequest(
                "a keysend payment needs an amount above 0 msat".into(),
            ));
        }
        if let Some(low) = custom_records.keys().find(|k| **k < MIN_CUSTOM_RECORD_TYPE) {
            return Err(LndError::InvalidRequest(format!(
                "custom record type {low} is below {MIN_CUSTOM_RECORD_TYPE}; LND only forwards \
                 application records of type 65536 or more"
            )));
        }
        Ok(Keysend {
            destination,
            amount_msat,
            preimage,
            custom_records,
        })
    }

    /// Who gets paid.
    pub fn destination(&self) -> &PublicKey {
        &self.destination
    }

    /// How much, in millisatoshi.
    pub fn amount_msat(&self) -> u64 {
        self.amount_msat
    }

    /// The preimage the payee will learn (and return as proof).
    pub fn preimage(&self) -> &Preimage {
        &self.preimage
    }

    /// SHA-256 of the preimage: the payment's identity in LND.
    pub fn payment_hash(&self) -> PaymentHash {
        self.preimage.payment_hash()
    }

    /// The records sent to the payee: the caller's, plus the preimage under
    /// [`KEYSEND_RECORD_TYPE`].
    pub fn dest_custom_records(&self) -> BTreeMap<u64, Vec<u8>> {
        let mut records = self.custom_records.clone();
        records.insert(KEYSEND_RECORD_TYPE, self.preimage.0.to_vec());
        records
    }
}

/// A position in a node's invoice event sequences, to (re)subscribe from.
///
/// LND numbers invoices as they are added (`add_index`) and again as they are settled
/// (`settle_index`). Subscribing from a cursor first replays a backlog, then streams live events
/// (`invoices/invoiceregistry.go`, `deliverBacklogEvents`): every invoice added after
/// `add_index`, each in its state *now* (one added and settled meanwhile comes as SETTLED, even
/// if its settle index is not above `settle_index`), then every invoice settled after
/// `settle_index` — with no de-duplication, so an invoice added and settled while the client was
/// away arrives twice. Cancelled invoices never appear. An index of 0 replays nothing for that
/// index: a cursor of zeros means "only new events", and a cursor whose `settle_index` is still
/// 0 does not replay settles that happened while disconnected.
///
/// **A consumer must therefore credit each payment once, by payment hash**, in the same
/// transaction that records it as credited, and not trust the stream to deliver a settle once.
/// A consumer that must not miss a payment also looks up (with [`Lightning::lookup_invoice`])
/// the invoices it still waits for after every (re)subscribe, at least until it has seen a first
/// settle.
///
/// [`InvoiceSubscription::cursor`] stays correct under that replay: a settled invoice seen in the
/// add part of the backlog moves the add index but not the settle index (settles with lower
/// indexes may still be on their way), so resuming from the cursor after a break loses nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InvoiceCursor {
    /// The last add index seen.
    pub add_index: u64,
    /// The last settle index seen.
    pub settle_index: u64,
}

impl InvoiceCursor {
    /// Moves past `invoice`, an event that arrived in settle order (the settle part of the
    /// backlog, or live): an add moves the add index; a settle moves both indexes, since an
    /// invoice is added before it is settled. Events of the add part of a backlog must not move
    /// the settle index — [`InvoiceSubscription`] tells them apart; use its cursor.
    pub fn advance(&mut self, invoice: &Invoice) {
        match invoice.state {
            InvoiceState::Open => self.add_index = self.add_index.max(invoice.add_index),
            InvoiceState::Settled => {
                self.add_index = self.add_index.max(invoice.add_index);
                self.settle_index = self.settle_index.max(invoice.settle_index);
            }
            InvoiceState::Canceled | InvoiceState::Accepted => {}
        }
    }
}

/// Cancels an [`InvoiceSubscription`] from any thread; cheap to clone.
#[derive(Clone, Default)]
pub struct SubscriptionCanceller {
    shared: Arc<CancelShared>,
}

#[derive(Default)]
struct CancelShared {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl fmt::Debug for SubscriptionCanceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionCanceller")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl SubscriptionCanceller {
    /// Ends the subscription: a thread blocked in `next()` wakes up and gets `None`.
    pub fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
    }

    /// Whether [`SubscriptionCanceller::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// A future that completes once cancelled, for implementations that wait on a stream.
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            shared: self.shared.clone(),
        }
    }
}

/// Completes when its [`SubscriptionCanceller`] is cancelled.
#[derive(Debug)]
pub struct Cancelled {
    shared: Arc<CancelShared>,
}

impl fmt::Debug for CancelShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CancelShared")
    }
}

impl std::future::Future for Cancelled {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.cancelled.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.shared.waker.register(cx.waker());
        // Checked again after registering, or a cancel between the two would be missed.
        if self.shared.cancelled.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The source behind an [`InvoiceSubscription`]: one implementation per [`Lightning`] backend.
pub trait InvoiceEvents: Send {
    /// Blocks for the next event. `None` once `cancel` is cancelled; an error when the stream
    /// broke (the subscription then ends).
    fn next_event(&mut self, cancel: &SubscriptionCanceller) -> Option<Result<Invoice, LndError>>;
}

/// Invoice add and settle events, as a blocking iterator.
///
/// It yields `Ok(invoice)` per event, in the node's order, repeats included (see
/// [`InvoiceCursor`]: credit each payment hash once). When the stream breaks (node stopped,
/// connection lost) it yields one `Err` and then ends; to resume without losing events,
/// subscribe again from [`InvoiceSubscription::cursor`] (see [`Lightning::subscribe_invoices`]).
/// Cancelling it (from any thread, through [`InvoiceSubscription::canceller`]) or dropping it
/// ends it without an error.
pub struct InvoiceSubscription {
    events: Box<dyn InvoiceEvents>,
    canceller: SubscriptionCanceller,
    cursor: InvoiceCursor,
    finished: bool,
    /// True while the events may still be the add part of LND's backlog: strictly increasing
    /// add indexes above the starting one. A settled invoice there must not move the settle
    /// index: settles with lower indexes may come after it, in the settle part.
    replaying_adds: bool,
    last_add_index: u64,
}

impl fmt::Debug for InvoiceSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvoiceSubscription")
            .field("cursor", &self.cursor)
            .field("finished", &self.finished)
            .finish()
    }
}

impl InvoiceSubscription {
    /// Wraps a backend's event source that started from `from`.
    pub fn new(
        from: InvoiceCursor,
        events: Box<dyn InvoiceEvents>,
        canceller: SubscriptionCanceller,
    ) -> InvoiceSubscription {
        InvoiceSubscription {
            events,
            canceller,
            cursor: from,
            finished: false,
            replaying_adds: from.add_index > 0,
            last_add_index: from.add_index,
        }
    }

    /// Moves the cursor past `invoice` as LND's replay allows (see [`InvoiceCursor`]).
    fn track(&mut self, invoice: &Invoice) {
        if self.replaying_adds {
            if invoice.add_index > self.last_add_index {
                // Still ascending in add order: the add part of the backlog, or live adds
                // right after it. Every add up to here has been seen; settles have not.
                self.last_add_index = invoice.add_index;
                self.cursor.add_index = self.cursor.add_index.max(invoice.add_index);
                return;
            }
            // An invoice added earlier than the last one seen: the settle part (or a live
            // settle) has begun, and events come in settle order from now on.
            self.replaying_adds = false;
        }
        self.cursor.advance(invoice);
    }

    /// A handle that ends this subscription from another thread.
    pub fn canceller(&self) -> SubscriptionCanceller {
        self.canceller.clone()
    }

    /// The position after the last event yielded: subscribe from it to resume.
    pub fn cursor(&self) -> InvoiceCursor {
        self.cursor
    }
}

impl Iterator for InvoiceSubscription {
    type Item = Result<Invoice, LndError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.canceller.is_cancelled() {
            self.finished = true;
            return None;
        }
        match self.events.next_event(&self.canceller) {
            Some(Ok(invoice)) => {
                self.track(&invoice);
                Some(Ok(invoice))
            }
            Some(Err(e)) => {
                self.finished = true;
                Some(Err(e))
            }
            None => {
                self.finished = true;
                None
            }
        }
    }
}

impl Drop for InvoiceSubscription {
    fn drop(&mut self) {
        self.canceller.cancel();
    }
}

/// What the plugin needs from a Lightning node. Blocking; safe to call from many threads.
pub trait Lightning: Send + Sync {
    /// The node's identity, chain, alias and version.
    fn node_info(&self) -> Result<NodeInfo, LndError>;

    /// Creates an any-amount invoice that expires after `expiry`, with an optional memo.
    fn add_invoice(&self, expiry: Duration, memo: Option<&str>) -> Result<AddedInvoice, LndError>;

    /// One invoice by its payment hash; [`LndError::NotFound`] when the node has none.
    fn lookup_invoice(&self, payment_hash: &PaymentHash) -> Result<Invoice, LndError>;

    /// Invoice add and settle events from `from` on (see [`InvoiceCursor`]).
    ///
    /// LND delivers only add (open) and settle events; cancellations do not appear. After the
    /// subscription ends with an error, call this again with its
    /// [`cursor`](InvoiceSubscription::cursor) to receive what was missed. Connection and
    /// authentication errors may arrive as the subscription's first item rather than here.
    fn subscribe_invoices(&self, from: InvoiceCursor) -> Result<InvoiceSubscription, LndError>;

    /// Pays `payment_request` (normally an any-amount invoice) with `amount_msat`, and blocks
    /// until the payment is final. `Ok` carries a final status; an error whose
    /// [`payment_certainty`](LndError::payment_certainty) is `Unknown` means: track it (the
    /// payment hash is the invoice's). An invoice with an amount of its own is paid only if
    /// `amount_msat` is that amount.
    fn pay_invoice(
        &self,
        payment_request: &str,
        amount_msat: u64,
        limits: PaymentLimits,
    ) -> Result<PaymentOutcome, LndError>;

    /// Sends a keysend payment and blocks until it is final, like [`Lightning::pay_invoice`].
    fn keysend(&self, payment: &Keysend, limits: PaymentLimits)
        -> Result<PaymentOutcome, LndError>;

    /// The status of a payment this node sent. Waits up to `wait` for it to become final and
    /// returns [`PaymentStatus::InFlight`] if it has not; `Duration::ZERO` asks for the current
    /// status. [`LndError::NotFound`] (from the node's NOT_FOUND status code only) when the node
    /// never started a payment with this hash: then it was not paid.
    fn track_payment(
        &self,
        payment_hash: &PaymentHash,
        wait: Duration,
    ) -> Result<PaymentOutcome, LndError>;

    /// Cancels an open invoice so that it can no longer be paid. Succeeds if already
    /// cancelled; fails if settled.
    fn cancel_invoice(&self, payment_hash: &PaymentHash) -> Result<(), LndError>;

    /// Deletes a cancelled invoice from the node's database. [`LndError::Unsupported`] on LND
    /// before 0.20.
    fn delete_canceled_invoice(&self, payment_hash: &PaymentHash) -> Result<(), LndError>;
}

macro_rules! forward_lightning {
    ($($wrapper:ident)::+) => {
        /// Shares one node between owners (for example the plugin and its settlement threads).
        impl<T: Lightning + ?Sized> Lightning for $($wrapper)::+<T> {
            fn node_info(&self) -> Result<NodeInfo, LndError> {
                (**self).node_info()
            }
            fn add_invoice(
                &self,
                expiry: Duration,
                memo: Option<&str>,
            ) -> Result<AddedInvoice, LndError> {
                (**self).add_invoice(expiry, memo)
            }
            fn lookup_invoice(&self, payment_hash: &PaymentHash) -> Result<Invoice, LndError> {
                (**self).lookup_invoice(payment_hash)
            }
            fn subscribe_invoices(
                &self,
                from: InvoiceCursor,
            ) -> Result<InvoiceSubscription, LndError> {
                (**self).subscribe_invoices(from)
            }
            fn pay_invoice(
                &self,
                payment_request: &str,
                amount_msat: u64,
                limits: PaymentLimits,
            ) -> Result<PaymentOutcome, LndError> {
                (**self).pay_invoice(payment_request, amount_msat, limits)
            }
            fn keysend(
                &self,
                payment: &Keysend,
                limits: PaymentLimits,
            ) -> Result<PaymentOutcome, LndError> {
                (**self).keysend(payment, limits)
            }
            fn track_payment(
                &self,
                payment_hash: &PaymentHash,
                wait: Duration,
            ) -> Result<PaymentOutcome, LndError> {
                (**self).track_payment(payment_hash, wait)
            }
            fn cancel_invoice(&self, payment_hash: &PaymentHash) -> Result<(), LndError> {
                (**self).cancel_invoice(payment_hash)
            }
            fn delete_canceled_invoice(&self, payment_hash: &PaymentHash) -> Result<(), LndError> {
                (**self).delete_canceled_invoice(payment_hash)
            }
        }
    };
}

forward_lightning!(Arc);
forward_lightning!(Box);

/// What an error says about a payment it interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentCertainty {
    /// The payment was not made and cannot complete later: safe to roll back.
    NotPaid,
    /// The payment hash was paid. No error of this crate says so — LND's ALREADY_EXISTS covers
    /// payments still in flight too, so "already paid" is learnt from
    /// [`Lightning::track_payment`] — but another implementation of [`Lightning`] may know.
    Paid,
    /// It may have been paid or may still complete: call `track_payment` before rolling back.
    Unknown,
}

/// Everything that can go wrong talking to a node, typed so that settlement can act on it.
///
/// The variant is chosen from the gRPC status code; LND's message texts (it reports most of its
/// own errors as UNKNOWN with a Go error string) only pick a more helpful variant where the
/// money is not at stake (authentication, readiness, an expired invoice) — never whether a
/// payment was made: see [`LndError::payment_certainty`].
///
/// Messages never contain the macaroon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LndError {
    /// No connection to the node (not running, wrong host or port, connection lost).
    Unreachable(String),
    /// The node answers but is not ready (wallet locked, still starting).
    NotReady(String),
    /// The macaroon was refused (wrong node, wrong or missing macaroon, missing permission).
    Unauthenticated(String),
    /// The TLS handshake failed (the certificate is not the node's, or the host name does not
    /// match it).
    Tls(String),
    /// The node does not know the invoice or payment (its NOT_FOUND status code): for
    /// [`Lightning::track_payment`], proof that this node never started a payment for the hash.
    NotFound(String),
    /// LND says this node already paid this payment hash (ALREADY_EXISTS, "invoice is already
    /// paid"). Track the payment to learn its preimage.
    AlreadyPaid,
    /// LND says a payment for this hash exists and is not final (ALREADY_EXISTS, "payment is in
    /// transition" or "payment already exists"): track it instead of paying again.
    PaymentInTransition,
    /// No route to the payee within the fee limit (a final FAILED update).
    NoRoute,
    /// Not enough outbound balance (a final FAILED update).
    InsufficientBalance,
    /// The payee rejected the payment: unknown/expired/settled invoice, wrong amount (a final
    /// FAILED update).
    IncorrectPaymentDetails,
    /// Another final payment failure (LND's timeout, internal error, cancel).
    PaymentFailed(FailureReason),
    /// A deadline of ours passed before the node answered; the operation may still have
    /// happened.
    Timeout(String),
    /// The node says the invoice has expired.
    InvoiceExpired(String),
    /// The node does not offer this call (older LND, or built without the sub-server).
    Unsupported(String),
    /// This crate refused the request before sending anything (a bad amount, an unreadable
    /// invoice, a record type LND would refuse).
    InvalidRequest(String),
    /// The node refused the request (its own validation: LND's message says why).
    Refused(String),
    /// An invoice stream ended; subscribe again from the last cursor.
    StreamEnded(String),
    /// The node sent something this crate cannot read.
    BadResponse(String),
    /// The connection settings are unusable (unreadable file, bad base64, bad host).
    Config(String),
    /// Anything else the node reported.
    Other(String),
}

impl LndError {
    /// Whether an error from a payment call ([`Lightning::pay_invoice`],
    /// [`Lightning::keysend`]) proves that nothing was paid, or whether
    /// [`Lightning::track_payment`] found that the node never started the payment
    /// ([`LndError::NotFound`]). Errors of other calls mean nothing here.
    ///
    /// `NotPaid` only for a final FAILED update, a refusal by this crate before anything was
    /// sent (a bad request, bad settings), or TrackPaymentV2's NOT_FOUND. Every other error —
    /// anything the node or the transport reported during the call, whatever its status code or
    /// text, TLS and authentication failures included — is `Unknown`: the node may have
    /// dispatched the payment, so track it before rolling anything back.
    pub fn payment_certainty(&self) -> PaymentCertainty {
        match self {
            LndError::NoRoute
            | LndError::InsufficientBalance
            | LndError::IncorrectPaymentDetails
            | LndError::PaymentFailed(_)
            | LndError::InvalidRequest(_)
            | LndError::Config(_)
            | LndError::NotFound(_) => PaymentCertainty::NotPaid,
            LndError::Unreachable(_)
            | LndError::NotReady(_)
            | LndError::Unauthenticated(_)
            | LndError::Tls(_)
            | LndError::AlreadyPaid
            | LndError::PaymentInTransition
            | LndError::Timeout(_)
            | LndError::InvoiceExpired(_)
            | LndError::Unsupported(_)
            | LndError::Refused(_)
            | LndError::StreamEnded(_)
            | LndError::BadResponse(_)
            | LndError::Other(_) => PaymentCertainty::Unknown,
        }
    }

    /// Whether retrying the same call later may succeed (connection or readiness problems).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LndError::Unreachable(_)
                | LndError::NotReady(_)
                | LndError::Timeout(_)
                | LndError::StreamEnded(_)
                | LndError::PaymentInTransition
        )
    }
}

impl From<FailureReason> for LndError {
    fn from(reason: FailureReason) -> LndError {
        match reason {
            FailureReason::NoRoute => LndError::NoRoute,
            FailureReason::InsufficientBalance => LndError::InsufficientBalance,
            FailureReason::IncorrectPaymentDetails => LndError::IncorrectPaymentDetails,
            other => LndError::PaymentFailed(other),
        }
    }
}

impl fmt::Display for LndError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LndError::Unreachable(m) => write!(
                f,
                "cannot reach the LND node ({m}); check that it runs and that host and port are right"
            ),
            LndError::NotReady(m) => write!(
                f,
                "the LND node is not ready ({m}); unlock its wallet or wait until it has started"
            ),
            LndError::Unauthenticated(m) => write!(
                f,
                "LND refused the macaroon ({m}); use this node's macaroon with info, invoices and \
                 offchain permissions"
            ),
            LndError::Tls(m) => write!(
                f,
                "TLS handshake with the LND node failed ({m}); use the node's own tls.cert and a \
                 host name the certificate names (localhost or 127.0.0.1 for a local node)"
            ),
            LndError::NotFound(m) => write!(f, "not found on the LND node: {m}"),
            LndError::AlreadyPaid => f.write_str(
                "LND says this node already paid this invoice; track the payment to confirm",
            ),
            LndError::PaymentInTransition => f.write_str(
                "a payment for this hash already exists and is not final; track it instead of \
                 paying again",
            ),
            LndError::NoRoute => f.write_str("payment failed: no route within the fee limit"),
            LndError::InsufficientBalance => {
                f.write_str("payment failed: not enough outbound balance in our channels")
            }
            LndError::IncorrectPaymentDetails => f.write_str(
                "payment failed: the payee rejected it (unknown, expired or settled invoice, or \
                 wrong amount)",
            ),
            LndError::PaymentFailed(reason) => write!(f, "payment failed: {reason}"),
            LndError::Timeout(m) => write!(
                f,
                "no answer from the LND node in time ({m}); the operation may still complete"
            ),
            LndError::InvoiceExpired(m) => write!(f, "the node says the invoice has expired: {m}"),
            LndError::Unsupported(m) => write!(f, "the LND node does not support this: {m}"),
            LndError::InvalidRequest(m) => write!(f, "invalid request, not sent: {m}"),
            LndError::Refused(m) => write!(f, "the LND node refused the request: {m}"),
            LndError::StreamEnded(m) => write!(
                f,
                "the LND event stream ended ({m}); subscribe again from the last index"
            ),
            LndError::BadResponse(m) => write!(f, "unreadable answer from LND: {m}"),
            LndError::Config(m) => write!(f, "bad LND connection settings: {m}"),
            LndError::Other(m) => write!(f, "LND error: {m}"),
        }
    }
}

impl std::error::Error for LndError {}

/// Cuts `s` to at most `max` bytes on a character boundary, for error messages.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        PublicKey::from_hex("02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619")
            .unwrap()
    }

    #[test]
    fn preimage_hashes_with_sha256() {
        // sha256 of 32 zero bytes.
        let hash = Preimage([0; 32]).payment_hash();
        assert_eq!(
            hash.to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn random_preimages_differ() {
        assert_ne!(Preimage::random().unwrap(), Preimage::random().unwrap());
    }

    #[test]
    fn keysend_carries_preimage_and_caller_records() {
        let mut records = BTreeMap::new();
        records.insert(70_000, b"account-7".to_vec());
        let preimage = Preimage([7; 32]);
        let ks = Keysend::with_preimage(key(), 5_000, records, preimage).unwrap();
        let sent = ks.dest_custom_records();
        assert_eq!(sent[&KEYSEND_RECORD_TYPE], vec![7; 32]);
        assert_eq!(sent[&70_000], b"account-7".to_vec());
        assert_eq!(sent.len(), 2);
        assert_eq!(ks.payment_hash(), preimage.payment_hash());
        assert!(!format!("{ks:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn keysend_refuses_low_record_types_and_zero_amount() {
        let mut records = BTreeMap::new();
        records.insert(65_535, vec![1]);
        let err = Keysend::new(key(), 1, records).unwrap_err();
        assert!(matches!(err, LndError::InvalidRequest(ref m) if m.contains("65535")));
        let err = Keysend::new(key(), 0, BTreeMap::new()).unwrap_err();
        assert!(matches!(err, LndError::InvalidRequest(_)));
    }

    #[test]
    fn public_key_parsing() {
        assert_eq!(key().to_hex().len(), 66);
        assert!(matches!(
            PublicKey::from_hex(
                "04eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"
            ),
            Err(LndError::BadResponse(_))
        ));
        assert!(PublicKey::from_hex("02ee").is_err());
        assert!(PaymentHash::from_slice(&[0; 31], "r_hash").is_err());
        assert!(PaymentHash::from_hex(&"ab".repeat(32), "hash").is_ok());
    }

    #[test]
    fn networks() {
        assert_eq!(Network::from_lnd_name("regtest"), Network::Regtest);
        assert_eq!(Network::from_lnd_name("testnet4"), Network::Testnet);
        assert_eq!(
            Network::from_lnd_name("liquid"),
            Network::Other("liquid".into())
        );
        assert_eq!(Network::Regtest.to_string(), "regtest");
    }

    fn invoice(state: InvoiceState, add_index: u64, settle_index: u64) -> Invoice {
        Invoice {
            payment_hash: PaymentHash([0; 32]),
            preimage: None,
            payment_request: String::new(),
            memo: String::new(),
            value_msat: 0,
            state,
            amount_paid_msat: 0,
            add_index,
            settle_index,
            is_keysend: false,
            htlcs: vec![],
            creation_date: 0,
            settle_date: 0,
            expiry: Duration::from_secs(3600),
        }
    }

    #[test]
    fn cursor_advances_per_event_kind() {
        let mut c = InvoiceCursor::default();
        c.advance(&invoice(InvoiceState::Open, 3, 0));
        assert_eq!(
            c,
            InvoiceCursor {
                add_index: 3,
                settle_index: 0
            }
        );
        // A settle of an older invoice must not move the add index back.
        c.advance(&invoice(InvoiceState::Settled, 1, 2));
        assert_eq!(
            c,
            InvoiceCursor {
                add_index: 3,
                settle_index: 2
            }
        );
        // An add index seen on a settle counts: the invoice was added before.
        c.advance(&invoice(InvoiceState::Settled, 4, 3));
        assert_eq!(
            c,
            InvoiceCursor {
                add_index: 4,
                settle_index: 3
            }
        );
        c.advance(&invoice(InvoiceState::Open, 2, 0));
        assert_eq!(c.add_index, 4);
        c.advance(&invoice(InvoiceState::Canceled, 9, 9));
        assert_eq!(
            c,
            InvoiceCursor {
                add_index: 4,
                settle_index: 3
            }
        );
    }

    struct Scripted(Vec<Option<Result<Invoice, LndError>>>);

    impl InvoiceEvents for Scripted {
        fn next_event(
            &mut self,
            cancel: &SubscriptionCanceller,
        ) -> Option<Result<Invoice, LndError>> {
            if cancel.is_cancelled() || self.0.is_empty() {
                return None;
            }
            self.0.remove(0)
        }
    }

    #[test]
    fn subscription_tracks_cursor_and_ends_after_error() {
        let events = Scripted(vec![
            Some(Ok(invoice(InvoiceState::Open, 5, 0))),
            Some(Err(LndError::StreamEnded("node stopped".into()))),
            Some(Ok(invoice(InvoiceState::Open, 6, 0))),
        ]);
        let start = InvoiceCursor {
            add_index: 4,
            settle_index: 1,
        };
        let mut sub = InvoiceSubscription::new(start, Box::new(events), Default::default());
        assert!(sub.next().unwrap().is_ok());
        assert!(matches!(sub.next(), Some(Err(LndError::StreamEnded(_)))));
        assert!(sub.next().is_none());
        assert_eq!(
            sub.cursor(),
            InvoiceCursor {
                add_index: 5,
                settle_index: 1
            }
        );
    }

    #[test]
    fn cancelled_subscription_ends() {
        let events = Scripted(vec![Some(Ok(invoice(InvoiceState::Open, 5, 0)))]);
        let mut sub =
            InvoiceSubscription::new(Default::default(), Box::new(events), Default::default());
        let canceller = sub.canceller();
        canceller.cancel();
        assert!(sub.next().is_none());
        assert!(canceller.is_cancelled());
    }

    #[test]
    fn cancelled_future_wakes_a_blocked_thread() {
        let canceller = SubscriptionCanceller::default();
        let waiting = canceller.cancelled();
        let t = std::thread::Builder::new()
            .name("cancel-wait".into())
            .spawn(move || futures::executor::block_on(waiting))
            .unwrap();
        canceller.cancel();
        t.join().unwrap();
    }

    /// Issue 10 point 4: not paid only on a final FAILED update, our own refusal before
    /// sending, or TrackPaymentV2's NOT_FOUND; everything the node or the transport says during
    /// a payment is unknown.
    #[test]
    fn certainty_separates_proofs_from_unknowns() {
        for not_paid in [
            LndError::NoRoute,
            LndError::InsufficientBalance,
            LndError::IncorrectPaymentDetails,
            LndError::from(FailureReason::Timeout),
            LndError::from(FailureReason::Canceled),
            LndError::InvalidRequest("amount 0".into()),
            LndError::Config("no macaroon".into()),
            LndError::NotFound("payment isn't initiated".into()),
        ] {
            assert_eq!(
                not_paid.payment_certainty(),
                PaymentCertainty::NotPaid,
                "{not_paid}"
            );
        }
        for unknown in [
            LndError::Timeout("pay".into()),
            LndError::Unreachable("gone".into()),
            LndError::StreamEnded("closed".into()),
            LndError::AlreadyPaid,
            LndError::PaymentInTransition,
            LndError::Unauthenticated("expected 1 macaroon, got 0".into()),
            LndError::Tls("handshake".into()),
            LndError::NotReady("wallet locked".into()),
            LndError::InvoiceExpired("Valid until".into()),
            LndError::Unsupported("SendPaymentV2".into()),
            LndError::Refused("self-payments not allowed".into()),
            LndError::BadResponse("preimage".into()),
            LndError::Other("boom".into()),
        ] {
            assert_eq!(
                unknown.payment_certainty(),
                PaymentCertainty::Unknown,
                "{unknown}"
            );
        }
    }

    fn settled(add_index: u64, settle_index: u64) -> Invoice {
        invoice(InvoiceState::Settled, add_index, settle_index)
    }

    /// LND `invoices/invoiceregistry.go` `deliverBacklogEvents`: from (5, 2), the adds after 5
    /// in their current state (6 and 8 settled since, with settle indexes 9 and 4), then the
    /// settles after 2 in settle order (3 for invoice 2, 4 for 8, 9 for 6), then live events.
    /// Wherever the stream breaks, resuming from the cursor must replay every settle not yet
    /// seen.
    #[test]
    fn the_cursor_survives_lnds_replay_broken_anywhere() {
        let start = InvoiceCursor {
            add_index: 5,
            settle_index: 2,
        };
        let replay = [
            settled(6, 9),
            invoice(InvoiceState::Open, 7, 0),
            settled(8, 4),
            settled(2, 3),
            settled(8, 4),
            settled(6, 9),
            invoice(InvoiceState::Open, 10, 0),
            settled(10, 10),
        ];
        let mut cursors = Vec::new();
        for seen in 0..=replay.len() {
            let mut events: Vec<_> = replay[..seen]
                .iter()
                .cloned()
                .map(|i| Some(Ok(i)))
                .collect();
            events.push(Some(Err(LndError::StreamEnded("broken".into()))));
            let mut sub =
                InvoiceSubscription::new(start, Box::new(Scripted(events)), Default::default());
            while let Some(Ok(_)) = sub.next() {}
            let cursor = sub.cursor();
            // Every settle the resumed backlog would leave out must have been seen already.
            for (add_index, settle_index) in [(6, 9), (8, 4), (2, 3), (10, 10)] {
                let resumed_has_it =
                    add_index > cursor.add_index || settle_index > cursor.settle_index;
                let seen_it = replay[..seen]
                    .iter()
                    .any(|i| i.state == InvoiceState::Settled && i.settle_index == settle_index);
                assert!(
                    resumed_has_it || seen_it,
                    "after {seen} events, resuming from {cursor:?} misses settle {settle_index}"
                );
            }
            cursors.push((cursor.add_index, cursor.settle_index));
        }
        // The add part moves only the add index; the settle part moves both.
        assert_eq!(
            cursors,
            [
                (5, 2),
                (6, 2),
                (7, 2),
                (8, 2),
                (8, 3),
                (8, 4),
                (8, 9),
                (10, 9),
                (10, 10)
            ]
        );
    }

    #[test]
    fn failure_reasons_map_to_errors() {
        assert_eq!(LndError::from(FailureReason::NoRoute), LndError::NoRoute);
        assert_eq!(
            LndError::from(FailureReason::InsufficientBalance),
            LndError::InsufficientBalance
        );
        assert_eq!(
            LndError::from(FailureReason::IncorrectPaymentDetails),
            LndError::IncorrectPaymentDetails
        );
        assert_eq!(
            LndError::from(FailureReason::Canceled),
            LndError::PaymentFailed(FailureReason::Canceled)
        );
    }
}
