//! One node's invoices: BOLT11 signing, add and settle indexes, states, expiry, and the
//! `SubscribeInvoices` subscribers, served as LND serves them (`invoices/invoiceregistry.go`):
//! a backlog of every invoice added after the client's add index *in its current state*, then
//! every invoice settled after its settle index, with no de-duplication; then live add and settle
//! events. Cancellations never reach this stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{All, Secp256k1, SecretKey};
use futures::channel::mpsc::UnboundedSender;
use grpcio::{RpcStatus, RpcStatusCode};
use lightning_invoice::{
    Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret, RawTaggedField, TaggedField,
};

use super::features::{self, INVOICE_FEATURES, KEYSEND_INVOICE_FEATURES, ROUTE_BLINDING_OPTIONAL};
use crate::lnd::proto::lightning;

/// LND's default invoice expiry (`invoicesrpc.DefaultInvoiceExpiry`): AddInvoice with an expiry
/// of 0 or less gets it.
pub(crate) const DEFAULT_EXPIRY_SECS: i64 = 86_400;
/// LND's maximum invoice expiry (`invoicesrpc/addinvoice.go`: one year).
pub(crate) const MAX_EXPIRY_SECS: i64 = 365 * 24 * 3600;
/// LND's default final CLTV delta (`bitcoin.timelockdelta`).
pub(crate) const DEFAULT_CLTV_EXPIRY: u64 = 80;
/// The final CLTV delta of the invoice LND makes for a keysend payment
/// (`lncfg.DefaultFinalCltvRejectDelta`).
pub(crate) const KEYSEND_CLTV_EXPIRY: u64 = 19;
/// LND's largest final CLTV delta (`invoices.MaxFinalCltvDelta`).
const MAX_CLTV_EXPIRY: u64 = u16::MAX as u64;
/// LND's memo limit (`invoices.MaxMemoSize`).
const MAX_MEMO_BYTES: usize = 1024;
/// LND's largest invoice: 100 000 BTC.
const MAX_INVOICE_SAT: u64 = 100_000 * 100_000_000;

/// The state of an invoice, as LND's `Invoice.InvoiceState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InvoiceState {
    Open,
    Settled,
    Canceled,
}

/// One HTLC that paid an invoice.
#[derive(Clone, Debug)]
pub(crate) struct InvoiceHtlc {
    pub(crate) chan_id: u64,
    pub(crate) htlc_index: u64,
    pub(crate) amt_msat: u64,
    pub(crate) time: i64,
    pub(crate) custom_records: HashMap<u64, Vec<u8>>,
}

/// An invoice as the node stores it.
#[derive(Clone, Debug)]
pub(crate) struct InvoiceRecord {
    pub(crate) memo: String,
    pub(crate) description_hash: Vec<u8>,
    pub(crate) preimage: [u8; 32],
    pub(crate) hash: [u8; 32],
    /// 32 zero bytes for a keysend invoice (LND's `BlankPayAddr`).
    pub(crate) payment_addr: [u8; 32],
    /// 0 for an invoice of any amount.
    pub(crate) value_msat: u64,
    pub(crate) creation_date: i64,
    /// Seconds; 0 for a keysend invoice (LND leaves its expiry unset).
    pub(crate) expiry: i64,
    pub(crate) cltv_expiry: u64,
    pub(crate) private: bool,
    pub(crate) payment_request: String,
    pub(crate) add_index: u64,
    pub(crate) settle_index: u64,
    pub(crate) settle_date: i64,
    pub(crate) state: InvoiceState,
    pub(crate) amt_paid_msat: u64,
    pub(crate) htlcs: Vec<InvoiceHtlc>,
    pub(crate) is_keysend: bool,
}

impl InvoiceRecord {
    /// The invoice LND inserts for an incoming keysend payment (`processKeySend`): the HTLC's
    /// amount, its preimage, a blank payment address, tlv-onion required, the final CLTV reject
    /// delta, and no expiry or payment request.
    pub(crate) fn keysend(preimage: [u8; 32], hash: [u8; 32], amt_msat: u64, now: i64) -> Self {
        InvoiceRecord {
            memo: String::new(),
            description_hash: Vec::new(),
            preimage,
            hash,
            payment_addr: [0; 32],
            value_msat: amt_msat,
            creation_date: now,
            expiry: 0,
            cltv_expiry: KEYSEND_CLTV_EXPIRY,
            private: false,
            payment_request: String::new(),
            add_index: 0,
            settle_index: 0,
            settle_date: 0,
            state: InvoiceState::Open,
            amt_paid_msat: 0,
            htlcs: Vec::new(),
            is_keysend: true,
        }
    }

    /// When LND's expiry watcher cancels it if still open (an expiry of 0 means BOLT11's
    /// default of one hour, `zpay32.DefaultInvoiceExpiry`).
    fn expires_at(&self) -> i64 {
        let expiry = if self.expiry == 0 { 3600 } else { self.expiry };
        self.creation_date.saturating_add(expiry)
    }

    /// The invoice in LND's wire form (`invoicesrpc.CreateRPCInvoice`).
    pub(crate) fn to_proto(&self) -> lightning::Invoice {
        let mut invoice = lightning::Invoice::new();
        invoice.memo = self.memo.clone();
        invoice.r_preimage = self.preimage.to_vec();
        invoice.r_hash = self.hash.to_vec();
        invoice.value = (self.value_msat / 1000) as i64;
        invoice.value_msat = self.value_msat as i64;
        invoice.settled = self.state == InvoiceState::Settled;
        invoice.creation_date = self.creation_date;
        invoice.settle_date = self.settle_date;
        invoice.payment_request = self.payment_request.clone();
        invoice.description_hash = self.description_hash.clone();
        invoice.expiry = self.expiry;
        invoice.cltv_expiry = self.cltv_expiry;
        invoice.private = self.private;
        invoice.add_index = self.add_index;
        invoice.settle_index = self.settle_index;
        // LND fills the deprecated `amt_paid` with millisatoshi, not satoshi.
        invoice.amt_paid = self.amt_paid_msat as i64;
        invoice.amt_paid_sat = (self.amt_paid_msat / 1000) as i64;
        invoice.amt_paid_msat = self.amt_paid_msat as i64;
        invoice.state = match self.state {
            InvoiceState::Open => lightning::invoice::InvoiceState::OPEN,
            InvoiceState::Settled => lightning::invoice::InvoiceState::SETTLED,
            InvoiceState::Canceled => lightning::invoice::InvoiceState::CANCELED,
        }
        .into();
        invoice.htlcs = self
            .htlcs
            .iter()
            .map(|htlc| {
                let mut out = lightning::InvoiceHTLC::new();
                out.chan_id = htlc.chan_id;
                out.htlc_index = htlc.htlc_index;
                out.amt_msat = htlc.amt_msat;
                out.accept_height = super::network::BLOCK_HEIGHT as i32;
                out.accept_time = htlc.time;
                out.resolve_time = htlc.time;
                out.expiry_height = (super::network::BLOCK_HEIGHT as u64 + self.cltv_expiry) as i32;
                out.state = lightning::InvoiceHTLCState::SETTLED.into();
                out.custom_records = htlc.custom_records.clone();
                out.mpp_total_amt_msat = htlc.amt_msat;
                out
            })
            .collect();
        invoice.features = if self.is_keysend {
            features::feature_map(KEYSEND_INVOICE_FEATURES)
        } else {
            features::feature_map(INVOICE_FEATURES)
        };
        invoice.is_keysend = self.is_keysend;
        invoice.payment_addr = self.payment_addr.to_vec();
        invoice
    }
}

/// Go's `%v` of a float64 that holds a whole number, as LND's expiry error prints it: the
/// shortest digits, in exponent form from 1e+06 on (`3.1536e+07`).
fn go_float(value: u64) -> String {
    let digits = value.to_string();
    let exponent = digits.len() - 1;
    if exponent < 6 {
        return digits;
    }
    let significant = digits.trim_end_matches('0');
    let (first, rest) = significant.split_at(1);
    let mantissa = if rest.is_empty() {
        first.to_string()
    } else {
        format!("{first}.{rest}")
    };
    format!("{mantissa}e+{exponent:02}")
}

/// btcutil's `Amount.String()`: bitcoin with the fewest digits, and " BTC".
fn btc_string(sat: u64) -> String {
    let whole = sat / 100_000_000;
    let fraction = format!("{:08}", sat % 100_000_000);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{whole} BTC")
    } else {
        format!("{whole}.{fraction} BTC")
    }
}

/// What AddInvoice asks for, checked.
pub(crate) struct NewInvoice {
    pub(crate) memo: String,
    pub(crate) description_hash: Vec<u8>,
    pub(crate) preimage: [u8; 32],
    pub(crate) value_msat: u64,
    pub(crate) expiry: i64,
    pub(crate) cltv_expiry: u64,
    pub(crate) private: bool,
}

impl NewInvoice {
    /// Validates an AddInvoice request as LND does, in its order and with its texts
    /// (`rpcserver.go` `AddInvoice`: `lnrpc.UnmarshallAmt`, the preimage; then
    /// `invoicesrpc/addinvoice.go` `AddInvoice`). `min_cltv_expiry` is the version's
    /// `routing.MinCLTVDelta` (24 from 0.21 on, 18 before). A missing preimage is drawn at
    /// random.
    pub(crate) fn from_request(
        request: &lightning::Invoice,
        min_cltv_expiry: u64,
    ) -> Result<NewInvoice, String> {
        if request.value != 0 && request.value_msat != 0 {
            return Err("sat and msat arguments are mutually exclusive".to_string());
        }
        if request.value < 0 || request.value_msat < 0 {
            return Err("amount cannot be negative".to_string());
        }
        let value_msat = if request.value != 0 {
            (request.value as u64).saturating_mul(1000)
        } else {
            request.value_msat as u64
        };
        let preimage = match request.r_preimage.len() {
            0 => super::random_32()?,
            32 => {
                let mut preimage = [0u8; 32];
                preimage.copy_from_slice(&request.r_preimage);
                preimage
            }
            other => return Err(format!("invalid preimage length of {other}, want 32")),
        };
        if request.memo.len() > MAX_MEMO_BYTES {
            return Err(format!(
                "memo too large: {} bytes (maxsize={MAX_MEMO_BYTES})",
                request.memo.len()
            ));
        }
        if !request.description_hash.is_empty() && request.description_hash.len() != 32 {
            return Err(format!(
                "description hash is {} bytes, must be 32",
                request.description_hash.len()
            ));
        }
        if value_msat / 1000 > MAX_INVOICE_SAT {
            return Err(format!(
                "invoice amount {} is too large, max is {}",
                btc_string(value_msat / 1000),
                btc_string(MAX_INVOICE_SAT)
            ));
        }
        // Zero and negative expiries both mean "the default".
        let expiry = if request.expiry > 0 {
            if request.expiry > MAX_EXPIRY_SECS {
                return Err(format!(
                    "expiry of {} seconds greater than max expiry of {} seconds",
                    go_float(request.expiry as u64),
                    go_float(MAX_EXPIRY_SECS as u64)
                ));
            }
            request.expiry
        } else {
            DEFAULT_EXPIRY_SECS
        };
        if request.cltv_expiry > MAX_CLTV_EXPIRY {
            return Err(format!(
                "CLTV delta of {} is too large, max accepted is: {MAX_CLTV_EXPIRY}",
                request.cltv_expiry
            ));
        }
        let cltv_expiry = match request.cltv_expiry {
            0 => DEFAULT_CLTV_EXPIRY,
            below if below < min_cltv_expiry => {
                return Err(format!(
                    "CLTV delta of {below} must be greater than minimum of {min_cltv_expiry}"
                ))
            }
            chosen => chosen,
        };
        Ok(NewInvoice {
            memo: request.memo.clone(),
            description_hash: request.description_hash.clone(),
            preimage,
            value_msat,
            expiry,
            cltv_expiry,
            private: request.private,
        })
    }

    /// Signs the BOLT11 payment request with the node's key and makes the stored record (indexes
    /// are assigned by [`InvoiceStore::insert`]). The invoice carries LND's invoice features:
    /// lightning-invoice sets tlv-onion, payment-addr and multi-path-payments; route-blinding
    /// (25, optional) is added to the raw invoice before it is signed.
    pub(crate) fn sign(
        self,
        secp: &Secp256k1<All>,
        node_key: &SecretKey,
        now: i64,
    ) -> Result<InvoiceRecord, String> {
        let hash = sha256::Hash::hash(&self.preimage).to_byte_array();
        let payment_addr = super::random_32()?;
        let builder = InvoiceBuilder::new(Currency::Regtest);
        let builder = if self.description_hash.len() == 32 {
            let mut description_hash = [0u8; 32];
            description_hash.copy_from_slice(&self.description_hash);
            builder.description_hash(sha256::Hash::from_byte_array(description_hash))
        } else {
            builder.description(self.memo.clone())
        };
        let mut builder = builder
            .payment_hash(sha256::Hash::from_byte_array(hash))
            .payment_secret(PaymentSecret(payment_addr))
            .duration_since_epoch(Duration::from_secs(now.max(0) as u64))
            .min_final_cltv_expiry_delta(self.cltv_expiry)
            .expiry_time(Duration::from_secs(self.expiry as u64))
            .basic_mpp();
        if self.value_msat > 0 {
            builder = builder.amount_milli_satoshis(self.value_msat);
        }
        let unable = |error: &dyn std::fmt::Display| format!("unable to create invoice: {error}");
        let mut raw = builder.build_raw().map_err(|e| unable(&e))?;
        for field in &mut raw.data.tagged_fields {
            if let RawTaggedField::KnownSemantics(TaggedField::Features(features)) = field {
                features
                    .set_optional_feature_bit(ROUTE_BLINDING_OPTIONAL as usize)
                    .map_err(|()| unable(&"feature bit out of range"))?;
            }
        }
        let signed =
            raw.sign::<_, String>(|message| Ok(secp.sign_ecdsa_recoverable(message, node_key)))?;
        let invoice = Bolt11Invoice::from_signed(signed).map_err(|e| unable(&e))?;
        Ok(InvoiceRecord {
            memo: self.memo,
            description_hash: self.description_hash,
            preimage: self.preimage,
            hash,
            payment_addr,
            value_msat: self.value_msat,
            creation_date: now,
            expiry: self.expiry,
            cltv_expiry: self.cltv_expiry,
            private: self.private,
            payment_request: invoice.to_string(),
            add_index: 0,
            settle_index: 0,
            settle_date: 0,
            state: InvoiceState::Open,
            amt_paid_msat: 0,
            htlcs: Vec::new(),
            is_keysend: false,
        })
    }
}

/// What a `SubscribeInvoices` stream carries: an invoice, or the error that ends the stream.
pub(crate) type InvoiceEvent = Result<lightning::Invoice, RpcStatus>;

/// A `SubscribeInvoices` stream and the indexes LND keeps for it.
struct Subscriber {
    sender: UnboundedSender<InvoiceEvent>,
    /// As LND's `InvoiceSubscription.addIndex`: the client's own index at first, moved only by
    /// live add events (the backlog does not move it).
    add_index: u64,
    /// The same for settles.
    settle_index: u64,
    /// A fault: the stream fails after this many more events.
    events_before_break: Option<usize>,
}

impl Subscriber {
    /// Sends one event; false once the stream has gone (or has just been broken on purpose).
    fn send(&mut self, invoice: &InvoiceRecord) -> bool {
        if self.sender.unbounded_send(Ok(invoice.to_proto())).is_err() {
            return false;
        }
        match &mut self.events_before_break {
            Some(0) | None => true,
            Some(left) => {
                *left -= 1;
                if *left > 0 {
                    return true;
                }
                let _ = self.sender.unbounded_send(Err(RpcStatus::with_message(
                    RpcStatusCode::UNAVAILABLE,
                    "the invoice stream was broken by the simulator (a fault set by \
                     break_next_invoice_stream_after)"
                        .to_string(),
                )));
                false
            }
        }
    }

    /// A live event, filtered as LND's `dispatchToClients` does: a settle already sent (by
    /// index) or an add already sent is skipped; otherwise it is sent and moves the index.
    fn offer_live(&mut self, invoice: &InvoiceRecord) -> bool {
        match invoice.state {
            InvoiceState::Settled if invoice.settle_index > self.settle_index => {
                self.settle_index = invoice.settle_index;
            }
            InvoiceState::Open if invoice.add_index > self.add_index => {
                self.add_index = invoice.add_index;
            }
            // Cancellations (and duplicates) are not delivered.
            _ => return !self.sender.is_closed(),
        }
        self.send(invoice)
    }
}

/// Why an invoice could not be cancelled or deleted (LND's texts).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InvoiceError {
    NotFound,
    AlreadySettled,
    NotCanceled,
    DuplicateHash,
}

impl std::fmt::Display for InvoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InvoiceError::NotFound => "unable to locate invoice",
            InvoiceError::AlreadySettled => "invoice already settled",
            InvoiceError::NotCanceled => "invoice not canceled",
            InvoiceError::DuplicateHash => "invoice with payment hash already exists",
        })
    }
}

/// One node's invoices.
#[derive(Default)]
pub(crate) struct InvoiceStore {
    by_add_index: BTreeMap<u64, InvoiceRecord>,
    add_index_by_hash: HashMap<[u8; 32], u64>,
    add_index_by_settle_index: BTreeMap<u64, u64>,
    /// (expires at, add index) of every OPEN invoice, for cancelling them when they expire.
    open_by_expiry: BTreeSet<(i64, u64)>,
    last_add_index: u64,
    last_settle_index: u64,
    subscribers: Vec<Subscriber>,
    /// A fault for the next subscription: break it after this many events.
    next_stream_break: Option<usize>,
}

impl InvoiceStore {
    /// How many invoices are (open, settled, cancelled).
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        self.by_add_index
            .values()
            .fold(
                (0, 0, 0),
                |(open, settled, canceled), invoice| match invoice.state {
                    InvoiceState::Open => (open + 1, settled, canceled),
                    InvoiceState::Settled => (open, settled + 1, canceled),
                    InvoiceState::Canceled => (open, settled, canceled + 1),
                },
            )
    }

    /// Cancels the OPEN invoices whose expiry has passed, as LND's expiry watcher does. Called
    /// before every read or write, so no one observes an expired invoice still OPEN.
    pub(crate) fn expire(&mut self, now: i64) {
        while let Some(&(expires_at, add_index)) = self.open_by_expiry.first() {
            if expires_at > now {
                break;
            }
            self.open_by_expiry.pop_first();
            if let Some(invoice) = self.by_add_index.get_mut(&add_index) {
                if invoice.state == InvoiceState::Open {
                    invoice.state = InvoiceState::Canceled;
                }
            }
        }
    }

    /// Stores a new invoice, assigns its add index and tells the subscribers.
    pub(crate) fn insert(&mut self, mut invoice: InvoiceRecord) -> Result<u64, InvoiceError> {
        if self.add_index_by_hash.contains_key(&invoice.hash) {
            return Err(InvoiceError::DuplicateHash);
        }
        self.last_add_index += 1;
        let add_index = self.last_add_index;
        invoice.add_index = add_index;
        self.add_index_by_hash.insert(invoice.hash, add_index);
        if invoice.state == InvoiceState::Open {
            self.open_by_expiry
                .insert((invoice.expires_at(), add_index));
        }
        self.notify(&invoice);
        self.by_add_index.insert(add_index, invoice);
        Ok(add_index)
    }

    pub(crate) fn get(&self, hash: &[u8; 32]) -> Option<&InvoiceRecord> {
        self.add_index_by_hash
            .get(hash)
            .and_then(|add_index| self.by_add_index.get(add_index))
    }

    /// Settles an OPEN invoice: the caller has checked that it may be settled.
    pub(crate) fn settle(&mut self, hash: &[u8; 32], htlc: InvoiceHtlc) {
        let Some(&add_index) = self.add_index_by_hash.get(hash) else {
            return;
        };
        let Some(invoice) = self.by_add_index.get_mut(&add_index) else {
            return;
        };
        self.last_settle_index += 1;
        invoice.state = InvoiceState::Settled;
        invoice.settle_index = self.last_settle_index;
        invoice.settle_date = htlc.time;
        invoice.amt_paid_msat += htlc.amt_msat;
        invoice.htlcs.push(htlc);
        self.open_by_expiry
            .remove(&(invoice.expires_at(), add_index));
        self.add_index_by_settle_index
            .insert(self.last_settle_index, add_index);
        let invoice = invoice.clone();
        self.notify(&invoice);
    }

    /// CancelInvoice: idempotent on a cancelled invoice, refused on a settled one.
    pub(crate) fn cancel(&mut self, hash: &[u8; 32]) -> Result<(), InvoiceError> {
        let add_index = *self
            .add_index_by_hash
            .get(hash)
            .ok_or(InvoiceError::NotFound)?;
        let invoice = self
            .by_add_index
            .get_mut(&add_index)
            .ok_or(InvoiceError::NotFound)?;
        match invoice.state {
            InvoiceState::Settled => Err(InvoiceError::AlreadySettled),
            InvoiceState::Canceled => Ok(()),
            InvoiceState::Open => {
                invoice.state = InvoiceState::Canceled;
                let key = (invoice.expires_at(), add_index);
                self.open_by_expiry.remove(&key);
                Ok(())
            }
        }
    }

    /// DeleteCanceledInvoice: only a cancelled invoice may go.
    pub(crate) fn delete_canceled(&mut self, hash: &[u8; 32]) -> Result<(), InvoiceError> {
        let add_index = *self
            .add_index_by_hash
            .get(hash)
            .ok_or(InvoiceError::NotFound)?;
        match self
            .by_add_index
            .get(&add_index)
            .map(|invoice| invoice.state)
        {
            Some(InvoiceState::Canceled) => {
                self.by_add_index.remove(&add_index);
                self.add_index_by_hash.remove(hash);
                Ok(())
            }
            Some(_) => Err(InvoiceError::NotCanceled),
            None => Err(InvoiceError::NotFound),
        }
    }
    /// ListInvoices (`rpcserver.go` ListInvoices, `channeldb` QueryInvoices): a page of invoices
    /// by add index, after `index_offset` (or, reversed, before it).
    pub(crate) fn list(
        &self,
        request: &lightning::ListInvoiceRequest,
    ) -> lightning::ListInvoiceResponse {
        let limit = if request.num_max_invoices == 0 {
            100
        } else {
            request.num_max_invoices
        } as usize;
        let keep = |invoice: &&InvoiceRecord| {
            (!request.pending_only || invoice.state == InvoiceState::Open)
                && (request.creation_date_start == 0
                    || invoice.creation_date >= request.creation_date_start as i64)
                && (request.creation_date_end == 0
                    || invoice.creation_date <= request.creation_date_end as i64)
        };
        let mut page: Vec<&InvoiceRecord> = if request.reversed {
            let end = if request.index_offset == 0 {
                u64::MAX
            } else {
                request.index_offset
            };
            let mut page: Vec<&InvoiceRecord> = self
                .by_add_index
                .range(..end)
                .rev()
                .map(|(_, invoice)| invoice)
                .filter(keep)
                .take(limit)
                .collect();
            page.reverse();
            page
        } else {
            self.by_add_index
                .range(request.index_offset.saturating_add(1)..)
                .map(|(_, invoice)| invoice)
                .filter(keep)
                .take(limit)
                .collect()
        };
        let mut response = lightning::ListInvoiceResponse::new();
        response.first_index_offset = page.first().map_or(0, |invoice| invoice.add_index);
        response.last_index_offset = page.last().map_or(0, |invoice| invoice.add_index);
        response.invoices = page.drain(..).map(InvoiceRecord::to_proto).collect();
        response
    }

    /// SubscribeInvoices, as LND's `SubscribeNotifications` and `deliverBacklogEvents`: first
    /// every invoice with an add index above `add_index` (none if it is 0), each in its state
    /// *now* — one added and settled since arrives as SETTLED — then every invoice with a
    /// settle index above `settle_index` (none if it is 0), with no de-duplication between the
    /// two; then live events. OPEN and SETTLED only: cancelled invoices are left out. Runs under
    /// the network lock, so no live event can slip between the backlog and the live part.
    pub(crate) fn subscribe(
        &mut self,
        add_index: u64,
        settle_index: u64,
        sender: UnboundedSender<InvoiceEvent>,
    ) {
        // Streams whose clients have gone are otherwise only noticed at the next event.
        self.subscribers
            .retain(|subscriber| !subscriber.sender.is_closed());
        let mut subscriber = Subscriber {
            sender,
            add_index,
            settle_index,
            events_before_break: self.next_stream_break.take(),
        };
        let added = (add_index > 0)
            .then(|| self.by_add_index.range(add_index + 1..).map(|(_, i)| i))
            .into_iter()
            .flatten();
        let settled = (settle_index > 0)
            .then(|| {
                self.add_index_by_settle_index
                    .range(settle_index + 1..)
                    .filter_map(|(_, add_index)| self.by_add_index.get(add_index))
            })
            .into_iter()
            .flatten();
        for invoice in added.chain(settled) {
            if invoice.state == InvoiceState::Canceled {
                continue;
            }
            if !subscriber.send(invoice) {
                return;
            }
        }
        self.subscribers.push(subscriber);
    }

    /// A fault: the next subscription fails (UNAVAILABLE) once it has delivered `events`
    /// events, backlog included.
    pub(crate) fn break_next_stream_after(&mut self, events: usize) {
        self.next_stream_break = Some(events.max(1));
    }

    /// Ends every stream (the node went offline or shut down).
    pub(crate) fn drop_subscribers(&mut self) {
        self.subscribers.clear();
    }

    fn notify(&mut self, invoice: &InvoiceRecord) {
        self.subscribers
            .retain_mut(|subscriber| subscriber.offer_live(invoice));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    fn record(n: u8, created: i64, expiry: i64) -> InvoiceRecord {
        InvoiceRecord {
            memo: String::new(),
            description_hash: Vec::new(),
            preimage: [n; 32],
            hash: [n; 32],
            payment_addr: [n; 32],
            value_msat: 0,
            creation_date: created,
            expiry,
            cltv_expiry: DEFAULT_CLTV_EXPIRY,
            private: false,
            payment_request: String::new(),
            add_index: 0,
            settle_index: 0,
            settle_date: 0,
            state: InvoiceState::Open,
            amt_paid_msat: 0,
            htlcs: Vec::new(),
            is_keysend: false,
        }
    }

    fn htlc(amt_msat: u64) -> InvoiceHtlc {
        InvoiceHtlc {
            chan_id: 1,
            htlc_index: 1,
            amt_msat,
            time: 100,
            custom_records: HashMap::new(),
        }
    }

    /// (add index, settle index, settled?) of every event received so far.
    fn drain(receiver: &mut mpsc::UnboundedReceiver<InvoiceEvent>) -> Vec<(u64, u64, bool)> {
        let mut events = Vec::new();
        while let Ok(event) = receiver.try_recv() {
            let invoice = event.expect("no stream error");
            events.push((invoice.add_index, invoice.settle_index, invoice.settled));
        }
        events
    }

    #[test]
    fn open_invoices_are_cancelled_once_their_expiry_is_reached() {
        let mut store = InvoiceStore::default();
        store.insert(record(1, 1_000, 60)).unwrap();
        store.insert(record(2, 1_000, 120)).unwrap();
        store.expire(1_059);
        assert_eq!(store.get(&[1; 32]).unwrap().state, InvoiceState::Open);
        store.expire(1_060);
        assert_eq!(store.get(&[1; 32]).unwrap().state, InvoiceState::Canceled);
        assert_eq!(store.get(&[2; 32]).unwrap().state, InvoiceState::Open);
        // A settled invoice is out of the expiry queue.
        store.settle(&[2; 32], htlc(5_000));
        store.expire(10_000);
        assert_eq!(store.get(&[2; 32]).unwrap().state, InvoiceState::Settled);
        assert_eq!(store.get(&[2; 32]).unwrap().amt_paid_msat, 5_000);
    }

    /// LND `invoices/invoiceregistry.go`, `deliverBacklogEvents`: the adds after the client's
    /// add index in their current state, then the settles after its settle index, with no
    /// de-duplication; `SubscribeNotifications` drops what is neither OPEN nor SETTLED; and
    /// `dispatchToClients` filters live events by the client's own indexes, which the backlog
    /// does not move.
    #[test]
    fn the_backlog_repeats_settled_invoices_as_lnd_does() {
        let mut store = InvoiceStore::default();
        for n in 1..=5 {
            store.insert(record(n, 0, 3_600)).unwrap();
        }
        store.settle(&[3; 32], htlc(1)); // settle index 1
        store.settle(&[2; 32], htlc(1)); // settle index 2
        store.settle(&[1; 32], htlc(1)); // settle index 3: added before the client's add index
        store.cancel(&[5; 32]).unwrap();

        // At (1, 1): adds 2, 3 (both SETTLED by now), 4 (open), not 5 (cancelled); then the
        // settles after 1: 2 and 1. Invoice 2 comes twice; invoice 3 comes as SETTLED although
        // its settle index (1) is not above the client's.
        let (sender, mut receiver) = mpsc::unbounded();
        store.subscribe(1, 1, sender);
        assert_eq!(
            drain(&mut receiver),
            [
                (2, 2, true),
                (3, 1, true),
                (4, 0, false),
                (2, 2, true),
                (1, 3, true)
            ]
        );

        // Index 0 means no backlog for that index.
        let (sender, mut adds_only) = mpsc::unbounded();
        store.subscribe(3, 0, sender);
        assert_eq!(drain(&mut adds_only), [(4, 0, false)]);
        let (sender, mut settles_only) = mpsc::unbounded();
        store.subscribe(0, 2, sender);
        assert_eq!(drain(&mut settles_only), [(1, 3, true)]);
        let (sender, mut live_only) = mpsc::unbounded();
        store.subscribe(0, 0, sender);
        assert!(drain(&mut live_only).is_empty());

        // Live events reach every stream once each, in order.
        store.insert(record(6, 0, 3_600)).unwrap();
        store.settle(&[4; 32], htlc(1));
        for stream in [
            &mut receiver,
            &mut adds_only,
            &mut settles_only,
            &mut live_only,
        ] {
            assert_eq!(drain(stream), [(6, 0, false), (4, 4, true)]);
        }
        // A closed stream is dropped at the next event.
        drop(live_only);
        store.insert(record(7, 0, 3_600)).unwrap();
        assert_eq!(store.subscribers.len(), 3);
        // A cancellation reaches no one.
        store.cancel(&[7; 32]).unwrap();
        assert!(drain(&mut receiver).iter().all(|event| event.0 == 7));
    }

    #[test]
    fn a_broken_stream_fails_after_its_events() {
        let mut store = InvoiceStore::default();
        for n in 1..=3 {
            store.insert(record(n, 0, 3_600)).unwrap();
        }
        store.break_next_stream_after(2);
        let (sender, mut receiver) = mpsc::unbounded();
        store.subscribe(0, 0, sender);
        store.insert(record(4, 0, 3_600)).unwrap();
        store.insert(record(5, 0, 3_600)).unwrap();
        store.insert(record(6, 0, 3_600)).unwrap();
        let events: Vec<InvoiceEvent> = std::iter::from_fn(|| receiver.try_recv().ok()).collect();
        assert_eq!(events.len(), 3, "two events, then the error");
        assert_eq!(events[1].as_ref().unwrap().add_index, 5);
        assert_eq!(
            events[2].as_ref().unwrap_err().code(),
            RpcStatusCode::UNAVAILABLE
        );
        assert!(store.subscribers.is_empty());
        // Only the next subscription was affected.
        let (sender, mut healthy) = mpsc::unbounded();
        store.subscribe(5, 0, sender);
        assert_eq!(drain(&mut healthy), [(6, 0, false)]);
    }

    #[test]
    fn cancel_and_delete_follow_lnds_rules() {
        let mut store = InvoiceStore::default();
        store.insert(record(1, 0, 3_600)).unwrap();
        assert_eq!(
            store.insert(record(1, 0, 3_600)),
            Err(InvoiceError::DuplicateHash)
        );
        assert_eq!(
            store.delete_canceled(&[1; 32]),
            Err(InvoiceError::NotCanceled)
        );
        store.cancel(&[1; 32]).unwrap();
        store.cancel(&[1; 32]).unwrap();
        store.delete_canceled(&[1; 32]).unwrap();
        assert!(store.get(&[1; 32]).is_none());
        assert_eq!(store.cancel(&[1; 32]), Err(InvoiceError::NotFound));
        store.insert(record(2, 0, 3_600)).unwrap();
        store.settle(&[2; 32], htlc(1));
        assert_eq!(store.cancel(&[2; 32]), Err(InvoiceError::AlreadySettled));
    }
    #[test]
    fn listing_pages_forwards_and_backwards() {
        let mut store = InvoiceStore::default();
        for n in 1..=5 {
            store.insert(record(n, 0, 3_600)).unwrap();
        }
        store.settle(&[3; 32], htlc(1));
        let indexes = |response: lightning::ListInvoiceResponse| -> Vec<u64> {
            response.invoices.iter().map(|i| i.add_index).collect()
        };
        let mut request = lightning::ListInvoiceRequest::new();
        assert_eq!(indexes(store.list(&request)), [1, 2, 3, 4, 5]);
        request.index_offset = 2;
        request.num_max_invoices = 2;
        assert_eq!(indexes(store.list(&request)), [3, 4]);
        request.pending_only = true;
        assert_eq!(indexes(store.list(&request)), [4, 5]);
        request.reversed = true;
        request.index_offset = 5;
        assert_eq!(indexes(store.list(&request)), [2, 4]);
    }

    /// LND `rpcserver.go` `AddInvoice` (`lnrpc.UnmarshallAmt`) and
    /// `lnrpc/invoicesrpc/addinvoice.go` `AddInvoice`: their checks, order and texts.
    #[test]
    fn add_invoice_requests_are_checked_like_lnds() {
        let check = |request: &lightning::Invoice| NewInvoice::from_request(request, 24);
        let mut request = lightning::Invoice::new();
        request.value = 1;
        request.value_msat = 1_000;
        assert_eq!(
            check(&request).err().unwrap(),
            "sat and msat arguments are mutually exclusive"
        );
        request.value_msat = 0;
        request.value = -5;
        assert_eq!(check(&request).err().unwrap(), "amount cannot be negative");
        request.value = 0;
        request.value_msat = -1;
        assert_eq!(check(&request).err().unwrap(), "amount cannot be negative");
        request.value_msat = 0;
        request.r_preimage = vec![1; 31];
        assert_eq!(
            check(&request).err().unwrap(),
            "invalid preimage length of 31, want 32"
        );
        request.r_preimage = vec![1; 32];
        request.memo = "m".repeat(1_025);
        assert_eq!(
            check(&request).err().unwrap(),
            "memo too large: 1025 bytes (maxsize=1024)"
        );
        request.memo = String::new();
        request.value = 10_000_000_000_001;
        assert_eq!(
            check(&request).err().unwrap(),
            "invoice amount 100000.00000001 BTC is too large, max is 100000 BTC"
        );
        request.value = 0;
        request.expiry = MAX_EXPIRY_SECS + 1;
        assert_eq!(
            check(&request).err().unwrap(),
            "expiry of 3.1536001e+07 seconds greater than max expiry of 3.1536e+07 seconds"
        );
        // Zero or negative: the 24 h default.
        for expiry in [0, -1, -86_400] {
            request.expiry = expiry;
            assert_eq!(check(&request).unwrap().expiry, DEFAULT_EXPIRY_SECS);
        }
        request.expiry = MAX_EXPIRY_SECS;
        assert_eq!(check(&request).unwrap().expiry, MAX_EXPIRY_SECS);
        request.expiry = 0;
        request.cltv_expiry = 65_536;
        assert_eq!(
            check(&request).err().unwrap(),
            "CLTV delta of 65536 is too large, max accepted is: 65535"
        );
        // routing.MinCLTVDelta: 24 on 0.21, 18 on 0.20 and earlier.
        request.cltv_expiry = 23;
        assert_eq!(
            check(&request).err().unwrap(),
            "CLTV delta of 23 must be greater than minimum of 24"
        );
        assert_eq!(
            NewInvoice::from_request(&request, 18).unwrap().cltv_expiry,
            23
        );
        request.cltv_expiry = 17;
        assert_eq!(
            NewInvoice::from_request(&request, 18).err().unwrap(),
            "CLTV delta of 17 must be greater than minimum of 18"
        );
        request.cltv_expiry = 0;
        let checked = check(&request).unwrap();
        assert_eq!(checked.preimage, [1; 32]);
        assert_eq!(checked.cltv_expiry, DEFAULT_CLTV_EXPIRY);
    }

    #[test]
    fn go_prints_large_floats_with_an_exponent() {
        assert_eq!(go_float(0), "0");
        assert_eq!(go_float(999_999), "999999");
        assert_eq!(go_float(1_000_000), "1e+06");
        assert_eq!(go_float(86_400_000), "8.64e+07");
        assert_eq!(btc_string(1), "0.00000001 BTC");
        assert_eq!(btc_string(150_000_000), "1.5 BTC");
    }

    /// LND `invoices/invoiceregistry.go` `processKeySend` and `invoicesrpc.CreateRPCInvoice`:
    /// a keysend invoice has a blank payment address, tlv-onion only, the final CLTV reject
    /// delta, no expiry; `amt_paid` is in millisatoshi.
    #[test]
    fn invoices_look_as_lnd_reports_them() {
        let mut keysend = InvoiceRecord::keysend([4; 32], [5; 32], 7_500, 1_000);
        keysend.state = InvoiceState::Settled;
        keysend.amt_paid_msat = 7_500;
        let proto = keysend.to_proto();
        assert!(proto.is_keysend);
        assert_eq!(proto.payment_addr, vec![0; 32]);
        assert_eq!(proto.expiry, 0);
        assert_eq!(proto.cltv_expiry, 19);
        assert_eq!(proto.features.keys().copied().collect::<Vec<_>>(), [8]);
        assert_eq!(
            (proto.amt_paid, proto.amt_paid_sat, proto.amt_paid_msat),
            (7_500, 7, 7_500)
        );
        let plain = record(1, 0, 600).to_proto();
        let mut bits: Vec<u32> = plain.features.keys().copied().collect();
        bits.sort_unstable();
        assert_eq!(bits, [8, 14, 17, 25]);
        assert_eq!(plain.payment_addr, vec![1; 32]);
    }

    #[test]
    fn signed_invoices_carry_lnds_feature_bits() {
        let secp = Secp256k1::new();
        let key = SecretKey::from_slice(&[7; 32]).unwrap();
        let mut request = lightning::Invoice::new();
        request.memo = "bits".to_string();
        let record = NewInvoice::from_request(&request, 24)
            .unwrap()
            .sign(&secp, &key, 1_700_000_000)
            .unwrap();
        let parsed: Bolt11Invoice = record.payment_request.parse().unwrap();
        let bits = features::bits_of(parsed.features().unwrap().le_flags());
        assert_eq!(bits, [8, 14, 17, 25]);
        assert_eq!(parsed.min_final_cltv_expiry_delta(), 80);
        assert_eq!(parsed.expiry_time(), Duration::from_secs(86_400));
    }
}
