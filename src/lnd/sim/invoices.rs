//! One node's invoices: BOLT11 signing, add and settle indexes, states, expiry, and the
//! `SubscribeInvoices` subscribers, delivered with LND's own filtering rules
//! (`invoices/invoiceregistry.go`): only OPEN ("add") and SETTLED events, each at most once per
//! subscriber, in index order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{All, Secp256k1, SecretKey};
use futures::channel::mpsc::UnboundedSender;
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};

use crate::lnd::proto::lightning;

/// LND's default invoice expiry (`zpay32.DefaultInvoiceExpiry`).
pub(crate) const DEFAULT_EXPIRY_SECS: i64 = 86_400;
/// LND's maximum invoice expiry (`invoicesrpc/addinvoice.go`: one year).
pub(crate) const MAX_EXPIRY_SECS: i64 = 365 * 24 * 3600;
/// LND's default final CLTV delta (`bitcoin.timelockdelta`).
pub(crate) const DEFAULT_CLTV_EXPIRY: u64 = 80;
/// LND's memo limit (`channeldb.MaxMemoSize`).
const MAX_MEMO_BYTES: usize = 1024;

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
    pub(crate) payment_addr: [u8; 32],
    /// 0 for an invoice of any amount.
    pub(crate) value_msat: u64,
    pub(crate) creation_date: i64,
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
    fn expires_at(&self) -> i64 {
        self.creation_date.saturating_add(self.expiry)
    }

    /// The invoice in LND's wire form.
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
        invoice.amt_paid = (self.amt_paid_msat / 1000) as i64;
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
        invoice.features = invoice_features(self.is_keysend);
        invoice.is_keysend = self.is_keysend;
        if !self.is_keysend {
            invoice.payment_addr = self.payment_addr.to_vec();
        }
        invoice
    }
}

fn feature(name: &str, is_required: bool) -> lightning::Feature {
    let mut feature = lightning::Feature::new();
    feature.name = name.to_string();
    feature.is_required = is_required;
    feature.is_known = true;
    feature
}

/// The features LND puts in its invoices: TLV onion and payment address required, MPP optional
/// (keysend invoices: TLV only).
pub(crate) fn invoice_features(is_keysend: bool) -> HashMap<u32, lightning::Feature> {
    let mut features = HashMap::new();
    features.insert(8, feature("tlv-onion", true));
    if !is_keysend {
        features.insert(14, feature("payment-addr", true));
        features.insert(17, feature("multi-path-payments", false));
    }
    features
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
    /// Validates an AddInvoice request as LND does (`invoicesrpc/addinvoice.go`), with LND's
    /// error texts. A missing preimage is drawn at random.
    pub(crate) fn from_request(request: &lightning::Invoice) -> Result<NewInvoice, String> {
        if request.memo.len() > MAX_MEMO_BYTES {
            return Err(format!(
                "memo too large: {} bytes (maxsize={MAX_MEMO_BYTES})",
                request.memo.len()
            ));
        }
        if request.value != 0 && request.value_msat != 0 {
            return Err("sat and msat arguments are mutually exclusive".to_string());
        }
        let value_msat = if request.value != 0 {
            request.value.checked_mul(1000)
        } else {
            Some(request.value_msat)
        }
        .ok_or_else(|| format!("value of {} sat is too large", request.value))?;
        if value_msat < 0 {
            return Err(format!(
                "payments of negative value are not allowed, value is {value_msat}"
            ));
        }
        if request.expiry < 0 {
            return Err(format!(
                "expiry of {} seconds must be non-negative",
                request.expiry
            ));
        }
        if request.expiry > MAX_EXPIRY_SECS {
            return Err(format!(
                "expiry of {} seconds greater than max expiry of {MAX_EXPIRY_SECS} seconds",
                request.expiry
            ));
        }
        if !request.description_hash.is_empty() && request.description_hash.len() != 32 {
            return Err(format!(
                "description hash is {} bytes, must be 32",
                request.description_hash.len()
            ));
        }
        if request.cltv_expiry > u64::from(u16::MAX) {
            return Err(format!(
                "CLTV delta of {} is too large, max accepted is: {}",
                request.cltv_expiry,
                u16::MAX
            ));
        }
        let preimage = match request.r_preimage.len() {
            0 => super::random_32()?,
            32 => {
                let mut preimage = [0u8; 32];
                preimage.copy_from_slice(&request.r_preimage);
                preimage
            }
            other => return Err(format!("invalid preimage length of {other}, want 32")),
        };
        Ok(NewInvoice {
            memo: request.memo.clone(),
            description_hash: request.description_hash.clone(),
            preimage,
            value_msat: value_msat as u64,
            expiry: if request.expiry == 0 {
                DEFAULT_EXPIRY_SECS
            } else {
                request.expiry
            },
            cltv_expiry: if request.cltv_expiry == 0 {
                DEFAULT_CLTV_EXPIRY
            } else {
                request.cltv_expiry
            },
            private: request.private,
        })
    }

    /// Signs the BOLT11 payment request with the node's key and makes the stored record (indexes
    /// are assigned by [`InvoiceStore::insert`]).
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
        let signed = builder
            .build_signed(|message| secp.sign_ecdsa_recoverable(message, node_key))
            .map_err(|error| format!("unable to create invoice: {error}"))?;
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
            payment_request: signed.to_string(),
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

/// A `SubscribeInvoices` stream and how far it has been served.
struct Subscriber {
    sender: UnboundedSender<lightning::Invoice>,
    add_index: u64,
    settle_index: u64,
}

impl Subscriber {
    /// Delivers `invoice` if it is news to this subscriber; false once the stream has gone.
    fn offer(&mut self, invoice: &InvoiceRecord) -> bool {
        match invoice.state {
            InvoiceState::Open if invoice.add_index > self.add_index => {
                self.add_index = invoice.add_index;
            }
            InvoiceState::Settled if invoice.settle_index > self.settle_index => {
                self.settle_index = invoice.settle_index;
            }
            _ => return !self.sender.is_closed(),
        }
        self.sender.unbounded_send(invoice.to_proto()).is_ok()
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
}

impl InvoiceStore {
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

    /// SubscribeInvoices: replays the adds after `add_index` (if non-zero), then the settles
    /// after `settle_index` (if non-zero), then keeps the stream for live events. Runs under the
    /// network lock, so no event can slip between the replay and the live part.
    pub(crate) fn subscribe(
        &mut self,
        add_index: u64,
        settle_index: u64,
        sender: UnboundedSender<lightning::Invoice>,
    ) {
        // Streams whose clients have gone are otherwise only noticed at the next event.
        self.subscribers
            .retain(|subscriber| !subscriber.sender.is_closed());
        let mut subscriber = Subscriber {
            sender,
            add_index,
            settle_index,
        };
        if add_index > 0 {
            for invoice in self.by_add_index.range(add_index + 1..).map(|(_, i)| i) {
                subscriber.offer(invoice);
            }
        }
        if settle_index > 0 {
            let settled: Vec<u64> = self
                .add_index_by_settle_index
                .range(settle_index + 1..)
                .map(|(_, add_index)| *add_index)
                .collect();
            for add_index in settled {
                if let Some(invoice) = self.by_add_index.get(&add_index) {
                    subscriber.offer(invoice);
                }
            }
        }
        self.subscribers.push(subscriber);
    }

    /// Ends every stream (the node went offline or shut down).
    pub(crate) fn drop_subscribers(&mut self) {
        self.subscribers.clear();
    }

    fn notify(&mut self, invoice: &InvoiceRecord) {
        self.subscribers
            .retain_mut(|subscriber| subscriber.offer(invoice));
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

    fn drain(receiver: &mut mpsc::UnboundedReceiver<lightning::Invoice>) -> Vec<(u64, u64)> {
        let mut events = Vec::new();
        while let Ok(invoice) = receiver.try_recv() {
            events.push((invoice.add_index, invoice.settle_index));
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

    #[test]
    fn subscribers_get_each_add_and_settle_once_and_never_a_cancel() {
        let mut store = InvoiceStore::default();
        for n in 1..=4 {
            store.insert(record(n, 0, 3_600)).unwrap();
        }
        store.settle(&[2; 32], htlc(1));
        store.settle(&[3; 32], htlc(1));
        store.cancel(&[4; 32]).unwrap();

        // Adds after 1: 2 and 3 are settled by now and come as settles, 4 is cancelled and
        // does not come.
        let (sender, mut receiver) = mpsc::unbounded();
        store.subscribe(1, 0, sender);
        assert_eq!(drain(&mut receiver), [(2, 1), (3, 2)]);
        // The same, by a client that has seen settle 1 already.
        let (sender, mut seen_one) = mpsc::unbounded();
        store.subscribe(1, 1, sender);
        assert_eq!(drain(&mut seen_one), [(3, 2)]);
        // Settles only, after 1.
        let (sender, mut settles) = mpsc::unbounded();
        store.subscribe(0, 1, sender);
        assert_eq!(drain(&mut settles), [(3, 2)]);
        // Nothing to replay with 0 and 0.
        let (sender, mut live) = mpsc::unbounded();
        store.subscribe(0, 0, sender);
        assert!(drain(&mut live).is_empty());

        // Live events reach every stream, in order.
        store.insert(record(5, 0, 3_600)).unwrap();
        store.settle(&[1; 32], htlc(1));
        for receiver in [&mut receiver, &mut seen_one, &mut settles, &mut live] {
            assert_eq!(drain(receiver), [(5, 0), (1, 3)]);
        }
        // A closed stream is dropped at the next event.
        drop(live);
        store.insert(record(6, 0, 3_600)).unwrap();
        assert_eq!(store.subscribers.len(), 3);
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

    #[test]
    fn add_invoice_requests_are_checked_like_lnds() {
        let mut request = lightning::Invoice::new();
        request.value = 1;
        request.value_msat = 1_000;
        assert_eq!(
            NewInvoice::from_request(&request).err().unwrap(),
            "sat and msat arguments are mutually exclusive"
        );
        request.value_msat = 0;
        request.value = -5;
        assert!(NewInvoice::from_request(&request)
            .err()
            .unwrap()
            .starts_with("payments of negative value are not allowed"));
        request.value = 0;
        request.r_preimage = vec![1; 31];
        assert_eq!(
            NewInvoice::from_request(&request).err().unwrap(),
            "invalid preimage length of 31, want 32"
        );
        request.r_preimage = vec![1; 32];
        request.memo = "m".repeat(1_025);
        assert!(NewInvoice::from_request(&request)
            .err()
            .unwrap()
            .starts_with("memo too large"));
        request.memo = String::new();
        let checked = NewInvoice::from_request(&request).unwrap();
        assert_eq!(checked.preimage, [1; 32]);
        assert_eq!(checked.expiry, DEFAULT_EXPIRY_SECS);
        assert_eq!(checked.cltv_expiry, DEFAULT_CLTV_EXPIRY);
    }
}
