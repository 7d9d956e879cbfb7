//! The simulated Lightning network: nodes, channels with balances on both sides, routing by
//! fee, and payments. Everything here lives behind one lock ([`Ledger`]) held for a few
//! microseconds at a time; a payment moves the balances of its whole route under that one lock,
//! so money is never created or destroyed and no one sees a half-made payment.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use futures::channel::mpsc::UnboundedSender;
use grpcio::{RpcStatus, RpcStatusCode};

use super::invoices::{InvoiceHtlc, InvoiceRecord, InvoiceState, InvoiceStore};
use super::{ChannelPolicy, FailureReason};
use crate::lnd::proto::lightning;

/// The chain height every simulated node reports (the chain never moves).
pub(crate) const BLOCK_HEIGHT: u32 = 1_000;
/// The custom record that carries a keysend preimage (`record.KeySendType`).
pub(crate) const KEYSEND_RECORD: u64 = 5_482_373_484;
/// Custom record types below this are LND's own (`record.CustomTypeStart`).
const CUSTOM_TYPE_START: u64 = 65_536;
/// SendPaymentV2's default timeout when `timeout_seconds` is 0.
const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A node's fixed identity.
pub(crate) struct NodeIdentity {
    pub(crate) alias: String,
    pub(crate) secret_key: SecretKey,
    pub(crate) pubkey: PublicKey,
    pub(crate) pubkey_hex: String,
}

/// A channel between `nodes[0]` and `nodes[1]`; index 0 opened it.
pub(crate) struct Channel {
    pub(crate) chan_id: u64,
    pub(crate) nodes: [usize; 2],
    pub(crate) capacity_sat: u64,
    pub(crate) balance_msat: [u64; 2],
    /// The policy each side applies when it forwards out over this channel.
    pub(crate) policy: [ChannelPolicy; 2],
    pub(crate) sent_msat: [u64; 2],
    pub(crate) num_updates: u64,
}

impl Channel {
    /// Which side `node` is on.
    pub(crate) fn side(&self, node: usize) -> usize {
        usize::from(self.nodes[1] == node)
    }
}

/// A payment a node has made or is making, and the streams watching it.
struct PaymentRecord {
    payment: lightning::Payment,
    watchers: Vec<PaymentWatcher>,
}

struct PaymentWatcher {
    sender: UnboundedSender<lightning::Payment>,
    no_inflight_updates: bool,
}

impl PaymentWatcher {
    fn offer(&self, payment: &lightning::Payment) {
        let terminal = is_terminal(payment);
        if terminal || !self.no_inflight_updates {
            let _ = self.sender.unbounded_send(payment.clone());
        }
    }
}

fn is_terminal(payment: &lightning::Payment) -> bool {
    matches!(
        payment.status.enum_value(),
        Ok(lightning::payment::PaymentStatus::SUCCEEDED
            | lightning::payment::PaymentStatus::FAILED)
    )
}

/// What one node holds besides its channels.
#[derive(Default)]
pub(crate) struct NodeState {
    pub(crate) invoices: InvoiceStore,
    payments: HashMap<[u8; 32], PaymentRecord>,
    last_payment_index: u64,
    forced_failures: VecDeque<FailureReason>,
}

/// The whole network's mutable state.
pub(crate) struct Ledger {
    pub(crate) nodes: Vec<NodeState>,
    pub(crate) channels: Vec<Channel>,
    /// Channel indexes per node.
    pub(crate) adjacency: Vec<Vec<usize>>,
    last_htlc_index: u64,
    last_attempt_id: u64,
}

/// A payment, checked and ready to route.
#[derive(Clone)]
pub(crate) struct PaymentIntent {
    pub(crate) sender: usize,
    pub(crate) destination: Option<usize>,
    pub(crate) hash: [u8; 32],
    pub(crate) amt_msat: u64,
    pub(crate) fee_limit_msat: u64,
    pub(crate) payment_request: String,
    pub(crate) payment_addr: Option<[u8; 32]>,
    pub(crate) custom_records: HashMap<u64, Vec<u8>>,
    pub(crate) is_keysend: bool,
    pub(crate) timeout: Duration,
    pub(crate) no_inflight_updates: bool,
}

/// One hop of a route: `channel`, from `from` to `to`, carrying `amt_msat`.
struct RouteHop {
    channel: usize,
    from: usize,
    to: usize,
    amt_msat: u64,
}

fn unknown(message: impl Into<String>) -> RpcStatus {
    RpcStatus::with_message(RpcStatusCode::UNKNOWN, message.into())
}

/// `time` formatted as Go's `time.Time.String()` in UTC, which is how LND prints the end of
/// an invoice's validity ("2026-01-02 03:04:05 +0000 UTC").
pub(crate) fn go_time_string(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let seconds_of_day = unix_seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000 UTC",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60
    )
}

fn to_32(bytes: &[u8]) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).ok()
}

impl PaymentIntent {
    /// Checks a SendPaymentV2 request as LND's router backend does
    /// (`routerrpc/router_backend.go` `extractIntentFromSendRequest`), with LND's error texts.
    pub(crate) fn from_request(
        identities: &[NodeIdentity],
        sender: usize,
        request: &crate::lnd::proto::router::SendPaymentRequest,
        now: i64,
    ) -> Result<PaymentIntent, RpcStatus> {
        if request.amt != 0 && request.amt_msat != 0 {
            return Err(unknown("amt and amt_msat are mutually exclusive"));
        }
        if request.fee_limit_sat != 0 && request.fee_limit_msat != 0 {
            return Err(unknown("sat and msat arguments are mutually exclusive"));
        }
        if request.amt < 0 || request.amt_msat < 0 {
            return Err(unknown("amount cannot be negative"));
        }
        if request.fee_limit_sat < 0 || request.fee_limit_msat < 0 {
            return Err(unknown("fee limit cannot be negative"));
        }
        let requested_msat = if request.amt != 0 {
            (request.amt as u64).saturating_mul(1000)
        } else {
            request.amt_msat as u64
        };
        let fee_limit_msat = if request.fee_limit_sat != 0 {
            (request.fee_limit_sat as u64).saturating_mul(1000)
        } else {
            request.fee_limit_msat as u64
        };
        if let Some(key) = request
            .dest_custom_records
            .keys()
            .find(|key| **key < CUSTOM_TYPE_START)
        {
            return Err(unknown(format!(
                "no custom records with types below 65536 allowed (found {key})"
            )));
        }
        let timeout = if request.timeout_seconds > 0 {
            Duration::from_secs(request.timeout_seconds as u64)
        } else {
            DEFAULT_PAYMENT_TIMEOUT
        };
        if request.amp {
            return Err(RpcStatus::with_message(
                RpcStatusCode::UNIMPLEMENTED,
                "the simulator does not make AMP payments".to_string(),
            ));
        }
        if request.max_shard_size_msat != 0
            && request.dest_custom_records.contains_key(&KEYSEND_RECORD)
        {
            return Err(unknown("keysend payments cannot specify a max shard amount - MPP not supported with keysend payments"));
        }
        let find_node = |pubkey: &PublicKey| identities.iter().position(|id| id.pubkey == *pubkey);

        let mut intent = if !request.payment_request.is_empty() {
            if !request.dest.is_empty() {
                return Err(unknown("dest and payment_request cannot appear together"));
            }
            if !request.payment_hash.is_empty() {
                return Err(unknown(
                    "payment_hash and payment_request cannot appear together",
                ));
            }
            if request.final_cltv_delta != 0 {
                return Err(unknown(
                    "final_cltv_delta and payment_request cannot appear together",
                ));
            }
            let invoice = decode_regtest(&request.payment_request).map_err(unknown)?;
            let expires_at = invoice
                .duration_since_epoch()
                .saturating_add(invoice.expiry_time())
                .as_secs() as i64;
            if expires_at <= now {
                return Err(unknown(format!(
                    "invoice expired. Valid until {}",
                    go_time_string(expires_at)
                )));
            }
            let amt_msat = match invoice.amount_milli_satoshis() {
                None | Some(0) if requested_msat == 0 => {
                    return Err(unknown(
                        "amount must be specified when paying a zero amount invoice",
                    ))
                }
                None | Some(0) => requested_msat,
                Some(_) if requested_msat != 0 => {
                    return Err(unknown(
                        "amount must not be specified when paying a non-zero amount invoice",
                    ))
                }
                Some(amount) => amount,
            };
            let destination = invoice.recover_payee_pub_key();
            PaymentIntent {
                sender,
                destination: find_node(&destination),
                hash: invoice.payment_hash().to_byte_array(),
                amt_msat,
                fee_limit_msat,
                payment_request: request.payment_request.clone(),
                payment_addr: Some(invoice.payment_secret().0),
                custom_records: request.dest_custom_records.clone(),
                is_keysend: false,
                timeout,
                no_inflight_updates: request.no_inflight_updates,
            }
        } else {
            let destination = PublicKey::from_slice(&request.dest).map_err(|_| {
                unknown(format!(
                    "invalid vertex length of {}, want 33",
                    request.dest.len()
                ))
            })?;
            if requested_msat == 0 {
                return Err(unknown(
                    "amount must be specified when paying a zero amount invoice",
                ));
            }
            let hash = to_32(&request.payment_hash).ok_or_else(|| {
                unknown(format!(
                    "invalid hash length of {}, want 32",
                    request.payment_hash.len()
                ))
            })?;
            let is_keysend = request.dest_custom_records.contains_key(&KEYSEND_RECORD);
            PaymentIntent {
                sender,
                destination: find_node(&destination),
                hash,
                amt_msat: requested_msat,
                fee_limit_msat,
                payment_request: String::new(),
                payment_addr: to_32(&request.payment_addr),
                custom_records: request.dest_custom_records.clone(),
                is_keysend,
                timeout,
                no_inflight_updates: request.no_inflight_updates,
            }
        };
        if intent.destination == Some(sender) {
            return Err(unknown("self-payments not allowed"));
        }
        intent.no_inflight_updates = request.no_inflight_updates;
        Ok(intent)
    }
}

/// Parses a BOLT11 invoice and checks that it is for regtest, with LND's error texts.
pub(crate) fn decode_regtest(
    payment_request: &str,
) -> Result<lightning_invoice::Bolt11Invoice, String> {
    let invoice: lightning_invoice::Bolt11Invoice = payment_request
        .trim()
        .parse()
        .map_err(|error| format!("invalid payment request: {error}"))?;
    if invoice.currency() != lightning_invoice::Currency::Regtest {
        return Err("invoice not for current active network 'regtest'".to_string());
    }
    Ok(invoice)
}

fn failure_reason_proto(reason: FailureReason) -> lightning::PaymentFailureReason {
    use lightning::PaymentFailureReason as R;
    match reason {
        FailureReason::Timeout => R::FAILURE_REASON_TIMEOUT,
        FailureReason::NoRoute => R::FAILURE_REASON_NO_ROUTE,
        FailureReason::Error => R::FAILURE_REASON_ERROR,
        FailureReason::IncorrectPaymentDetails => R::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS,
        FailureReason::InsufficientBalance => R::FAILURE_REASON_INSUFFICIENT_BALANCE,
        FailureReason::Canceled => R::FAILURE_REASON_CANCELED,
    }
}

impl Ledger {
    pub(crate) fn new(node_count: usize, channels: Vec<Channel>) -> Ledger {
        let mut adjacency = vec![Vec::new(); node_count];
        for (index, channel) in channels.iter().enumerate() {
            adjacency[channel.nodes[0]].push(index);
            adjacency[channel.nodes[1]].push(index);
        }
        Ledger {
            nodes: (0..node_count).map(|_| NodeState::default()).collect(),
            channels,
            adjacency,
            last_htlc_index: 0,
            last_attempt_id: 0,
        }
    }

    /// The node's invoices, with expired ones cancelled first.
    pub(crate) fn invoices(&mut self, node: usize, now: i64) -> &mut InvoiceStore {
        let store = &mut self.nodes[node].invoices;
        store.expire(now);
        store
    }

    /// Queues forced failures for the node's next payments.
    pub(crate) fn force_failures(&mut self, node: usize, count: usize, reason: FailureReason) {
        self.nodes[node]
            .forced_failures
            .extend(std::iter::repeat_n(reason, count));
    }

    /// Ends the streams of a node going offline: its invoice subscriptions and the watchers of
    /// its payments (the payments themselves go on, as they would in a real node).
    pub(crate) fn drop_streams(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        state.invoices.drop_subscribers();
        for record in state.payments.values_mut() {
            record.watchers.clear();
        }
    }

    /// Registers a new payment IN_FLIGHT, or refuses it as LND's control tower does
    /// (`channeldb/payment_control.go`): already paid, or still in flight. A failed payment may
    /// be retried.
    pub(crate) fn begin_payment(
        &mut self,
        intent: &PaymentIntent,
        watcher: Option<UnboundedSender<lightning::Payment>>,
        now_ns: i64,
    ) -> Result<(), RpcStatus> {
        let state = &mut self.nodes[intent.sender];
        if let Some(existing) = state.payments.get(&intent.hash) {
            use lightning::payment::PaymentStatus;
            match existing.payment.status.enum_value() {
                Ok(PaymentStatus::SUCCEEDED) => {
                    return Err(RpcStatus::with_message(
                        RpcStatusCode::ALREADY_EXISTS,
                        "invoice is already paid".to_string(),
                    ))
                }
                Ok(PaymentStatus::FAILED) => {}
                _ => {
                    return Err(RpcStatus::with_message(
                        RpcStatusCode::ALREADY_EXISTS,
                        "payment is in transition".to_string(),
                    ))
                }
            }
        }
        state.last_payment_index += 1;
        let mut payment = lightning::Payment::new();
        payment.payment_hash = hex::encode(intent.hash);
        payment.value = (intent.amt_msat / 1000) as i64;
        payment.value_sat = (intent.amt_msat / 1000) as i64;
        payment.value_msat = intent.amt_msat as i64;
        payment.creation_date = now_ns / 1_000_000_000;
        payment.creation_time_ns = now_ns;
        payment.payment_request = intent.payment_request.clone();
        payment.status = lightning::payment::PaymentStatus::IN_FLIGHT.into();
        payment.payment_index = state.last_payment_index;
        let watchers: Vec<PaymentWatcher> = watcher
            .into_iter()
            .map(|sender| PaymentWatcher {
                sender,
                no_inflight_updates: intent.no_inflight_updates,
            })
            .collect();
        for watcher in &watchers {
            watcher.offer(&payment);
        }
        state
            .payments
            .insert(intent.hash, PaymentRecord { payment, watchers });
        Ok(())
    }

    /// TrackPaymentV2: the current state now, then every update until the end.
    pub(crate) fn track_payment(
        &mut self,
        node: usize,
        hash: &[u8; 32],
        no_inflight_updates: bool,
        sender: UnboundedSender<lightning::Payment>,
    ) -> Result<(), RpcStatus> {
        let record = self.nodes[node].payments.get_mut(hash).ok_or_else(|| {
            RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                "payment isn't initiated".to_string(),
            )
        })?;
        let watcher = PaymentWatcher {
            sender,
            no_inflight_updates,
        };
        watcher.offer(&record.payment);
        if !is_terminal(&record.payment) {
            record.watchers.push(watcher);
        }
        Ok(())
    }

    /// Takes the next forced failure of the sender, if any.
    pub(crate) fn take_forced_failure(&mut self, node: usize) -> Option<FailureReason> {
        self.nodes[node].forced_failures.pop_front()
    }

    /// Ends a payment as FAILED with `reason`, moving no money.
    pub(crate) fn fail_payment(
        &mut self,
        intent: &PaymentIntent,
        reason: FailureReason,
        now_ns: i64,
    ) {
        self.finish(intent, now_ns, |payment| {
            payment.status = lightning::payment::PaymentStatus::FAILED.into();
            payment.failure_reason = failure_reason_proto(reason).into();
        });
    }

    /// Routes and settles a payment, all under the caller's one lock: finds the cheapest route
    /// within the fee limit, lets the receiver accept or refuse it, moves the balances of every
    /// hop, settles the receiver's invoice (or creates a keysend one), and ends the payment.
    pub(crate) fn execute_payment(
        &mut self,
        identities: &[NodeIdentity],
        intent: &PaymentIntent,
        now: i64,
        now_ns: i64,
    ) {
        if let Some(reason) = self.take_forced_failure(intent.sender) {
            return self.fail_payment(intent, reason, now_ns);
        }
        let Some(destination) = intent.destination else {
            return self.fail_payment(intent, FailureReason::NoRoute, now_ns);
        };
        let route = match self.find_route(
            intent.sender,
            destination,
            intent.amt_msat,
            intent.fee_limit_msat,
        ) {
            Ok(route) => route,
            Err(reason) => return self.fail_payment(intent, reason, now_ns),
        };
        let total_msat = route.first().map_or(intent.amt_msat, |hop| hop.amt_msat);
        let fee_msat = total_msat - intent.amt_msat;
        self.last_attempt_id += 1;
        let mut attempt = lightning::HTLCAttempt::new();
        attempt.attempt_id = self.last_attempt_id;
        attempt.attempt_time_ns = now_ns;
        attempt.status = lightning::htlcattempt::HTLCStatus::IN_FLIGHT.into();
        attempt.route = Some(self.route_proto(identities, &route, intent, total_msat)).into();
        // As LND: a second IN_FLIGHT update once the HTLC is on its way.
        self.progress(intent, |payment| payment.htlcs.push(attempt));

        let preimage = match self.receiver_accepts(destination, intent, now) {
            Some(preimage) => preimage,
            None => {
                let mut failure = lightning::Failure::new();
                failure.code =
                    lightning::failure::FailureCode::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS.into();
                failure.htlc_msat = intent.amt_msat;
                failure.height = BLOCK_HEIGHT;
                failure.failure_source_index = route.len() as u32;
                return self.finish(intent, now_ns, |payment| {
                    payment.status = lightning::payment::PaymentStatus::FAILED.into();
                    payment.failure_reason =
                        lightning::PaymentFailureReason::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS
                            .into();
                    if let Some(attempt) = payment.htlcs.last_mut() {
                        attempt.status = lightning::htlcattempt::HTLCStatus::FAILED.into();
                        attempt.failure = Some(failure).into();
                    }
                });
            }
        };

        for hop in &route {
            let channel = &mut self.channels[hop.channel];
            let from = channel.side(hop.from);
            channel.balance_msat[from] -= hop.amt_msat;
            channel.balance_msat[1 - from] += hop.amt_msat;
            channel.sent_msat[from] += hop.amt_msat;
            channel.num_updates += 1;
        }
        self.last_htlc_index += 1;
        let htlc = InvoiceHtlc {
            chan_id: route
                .last()
                .map_or(0, |hop| self.channels[hop.channel].chan_id),
            htlc_index: self.last_htlc_index,
            amt_msat: intent.amt_msat,
            time: now,
            custom_records: intent.custom_records.clone(),
        };
        let receiver = self.invoices(destination, now);
        if intent.is_keysend {
            let keysend = InvoiceRecord {
                memo: String::new(),
                description_hash: Vec::new(),
                preimage,
                hash: intent.hash,
                payment_addr: [0; 32],
                value_msat: intent.amt_msat,
                creation_date: now,
                expiry: super::invoices::DEFAULT_EXPIRY_SECS,
                cltv_expiry: super::invoices::DEFAULT_CLTV_EXPIRY,
                private: false,
                payment_request: String::new(),
                add_index: 0,
                settle_index: 0,
                settle_date: 0,
                state: InvoiceState::Open,
                amt_paid_msat: 0,
                htlcs: Vec::new(),
                is_keysend: true,
            };
            // `receiver_accepts` has checked that the hash is new to the receiver.
            let _ = receiver.insert(keysend);
        }
        receiver.settle(&intent.hash, htlc);

        self.finish(intent, now_ns, |payment| {
            if let Some(attempt) = payment.htlcs.last_mut() {
                attempt.status = lightning::htlcattempt::HTLCStatus::SUCCEEDED.into();
                attempt.preimage = preimage.to_vec();
            }
            payment.status = lightning::payment::PaymentStatus::SUCCEEDED.into();
            payment.payment_preimage = hex::encode(preimage);
            payment.fee = (fee_msat / 1000) as i64;
            payment.fee_sat = (fee_msat / 1000) as i64;
            payment.fee_msat = fee_msat as i64;
        });
    }

    /// What the final node says to the HTLC: the preimage, or `None` for
    /// incorrect_or_unknown_payment_details (unknown hash, settled, cancelled or expired invoice,
    /// wrong payment address, too little paid, keysend preimage not matching the hash).
    fn receiver_accepts(
        &mut self,
        destination: usize,
        intent: &PaymentIntent,
        now: i64,
    ) -> Option<[u8; 32]> {
        let store = self.invoices(destination, now);
        if intent.is_keysend {
            let preimage = to_32(intent.custom_records.get(&KEYSEND_RECORD)?)?;
            let matches = sha256::Hash::hash(&preimage).to_byte_array() == intent.hash;
            return (matches && store.get(&intent.hash).is_none()).then_some(preimage);
        }
        let invoice = store.get(&intent.hash)?;
        let accepted = invoice.state == InvoiceState::Open
            && intent.payment_addr == Some(invoice.payment_addr)
            && intent.amt_msat >= invoice.value_msat;
        accepted.then_some(invoice.preimage)
    }

    /// Applies a non-final `update` to the sender's record of the payment and tells its
    /// watchers.
    fn progress(&mut self, intent: &PaymentIntent, update: impl FnOnce(&mut lightning::Payment)) {
        let Some(record) = self.nodes[intent.sender].payments.get_mut(&intent.hash) else {
            return;
        };
        update(&mut record.payment);
        for watcher in &record.watchers {
            watcher.offer(&record.payment);
        }
    }

    /// Applies the final `update` to the sender's record of the payment and tells its
    /// watchers; the payment being over, their streams end.
    fn finish(
        &mut self,
        intent: &PaymentIntent,
        now_ns: i64,
        update: impl FnOnce(&mut lightning::Payment),
    ) {
        let Some(record) = self.nodes[intent.sender].payments.get_mut(&intent.hash) else {
            return;
        };
        update(&mut record.payment);
        if let Some(attempt) = record.payment.htlcs.last_mut() {
            attempt.resolve_time_ns = now_ns;
        }
        for watcher in record.watchers.drain(..) {
            watcher.offer(&record.payment);
        }
    }

    fn route_proto(
        &self,
        identities: &[NodeIdentity],
        route: &[RouteHop],
        intent: &PaymentIntent,
        total_msat: u64,
    ) -> lightning::Route {
        let mut out = lightning::Route::new();
        out.total_amt_msat = total_msat as i64;
        out.total_amt = (total_msat / 1000) as i64;
        out.total_fees_msat = (total_msat - intent.amt_msat) as i64;
        out.total_fees = ((total_msat - intent.amt_msat) / 1000) as i64;
        out.first_hop_amount_msat = total_msat as i64;
        let hop_count = route.len() as u32;
        out.total_time_lock = BLOCK_HEIGHT + 80 + 40 * hop_count.saturating_sub(1);
        for (position, hop) in route.iter().enumerate() {
            let channel = &self.channels[hop.channel];
            let forwarded = route
                .get(position + 1)
                .map_or(intent.amt_msat, |next| next.amt_msat);
            let mut out_hop = lightning::Hop::new();
            out_hop.chan_id = channel.chan_id;
            out_hop.chan_capacity = channel.capacity_sat as i64;
            out_hop.amt_to_forward_msat = forwarded as i64;
            out_hop.amt_to_forward = (forwarded / 1000) as i64;
            out_hop.fee_msat = (hop.amt_msat - forwarded) as i64;
            out_hop.fee = ((hop.amt_msat - forwarded) / 1000) as i64;
            out_hop.expiry = BLOCK_HEIGHT + 80 + 40 * (hop_count - 1 - position as u32);
            out_hop.pub_key = identities[hop.to].pubkey_hex.clone();
            out_hop.tlv_payload = true;
            if position + 1 == route.len() {
                out_hop.custom_records = intent.custom_records.clone();
            }
            out.hops.push(out_hop);
        }
        out
    }

    /// The cheapest route from `sender` to `destination` that delivers `amt_msat` within
    /// `fee_limit_msat`, each hop with enough balance on the sending side.
    ///
    /// Dijkstra run backwards from the destination, as LND's path finding does: the label of a
    /// node is the amount that must reach it for the payment to arrive, which grows by the fee
    /// of the node's outgoing channel. Fees grow with the amount, so the labels only grow
    /// along a path and Dijkstra stays exact.
    fn find_route(
        &self,
        sender: usize,
        destination: usize,
        amt_msat: u64,
        fee_limit_msat: u64,
    ) -> Result<Vec<RouteHop>, FailureReason> {
        let node_count = self.nodes.len();
        let mut needed: Vec<Option<u64>> = vec![None; node_count];
        // For each node, the channel it forwards over and the node on its other end.
        let mut next: Vec<Option<(usize, usize)>> = vec![None; node_count];
        let mut done = vec![false; node_count];
        let mut queue = BinaryHeap::new();
        needed[destination] = Some(amt_msat);
        queue.push(Reverse((amt_msat, destination)));
        while let Some(Reverse((amount, node))) = queue.pop() {
            if done[node] {
                continue;
            }
            done[node] = true;
            if node == sender {
                break;
            }
            for &channel_index in &self.adjacency[node] {
                let channel = &self.channels[channel_index];
                let side = channel.side(node);
                let previous = channel.nodes[1 - side];
                if done[previous] || channel.balance_msat[1 - side] < amount {
                    continue;
                }
                let fee = if previous == sender {
                    0
                } else {
                    channel.policy[1 - side].fee_msat(amount)
                };
                let candidate = amount.saturating_add(fee);
                if candidate - amt_msat > fee_limit_msat {
                    continue;
                }
                if needed[previous].is_none_or(|known| candidate < known) {
                    needed[previous] = Some(candidate);
                    next[previous] = Some((channel_index, node));
                    queue.push(Reverse((candidate, previous)));
                }
            }
        }
        if !done[sender] || sender == destination {
            let local_msat: u64 = self.adjacency[sender]
                .iter()
                .map(|&index| {
                    let channel = &self.channels[index];
                    channel.balance_msat[channel.side(sender)]
                })
                .sum();
            return Err(if local_msat < amt_msat {
                FailureReason::InsufficientBalance
            } else {
                FailureReason::NoRoute
            });
        }
        let mut route = Vec::new();
        let mut node = sender;
        while node != destination {
            let (channel, to) = next[node].ok_or(FailureReason::NoRoute)?;
            route.push(RouteHop {
                channel,
                from: node,
                to,
                amt_msat: needed[to].unwrap_or(amt_msat),
            });
            node = to;
        }
        Ok(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(a: usize, b: usize, base_fee_msat: u64) -> Channel {
        Channel {
            chan_id: (a * 10 + b) as u64,
            nodes: [a, b],
            capacity_sat: 1_000,
            balance_msat: [500_000, 500_000],
            policy: [ChannelPolicy {
                base_fee_msat,
                fee_ppm: 0,
            }; 2],
            sent_msat: [0, 0],
            num_updates: 0,
        }
    }

    /// 0 reaches 3 through 1 (one expensive hop) or through 2 and 4 (two cheap hops).
    fn diamond() -> Ledger {
        Ledger::new(
            5,
            vec![
                channel(0, 1, 0),
                channel(1, 3, 10_000),
                channel(0, 2, 0),
                channel(2, 4, 100),
                channel(4, 3, 100),
            ],
        )
    }

    fn path(route: &[RouteHop]) -> Vec<(usize, usize, u64)> {
        route
            .iter()
            .map(|hop| (hop.from, hop.to, hop.amt_msat))
            .collect()
    }

    #[test]
    fn the_cheapest_route_wins_over_the_shortest() {
        let ledger = diamond();
        let route = ledger.find_route(0, 3, 1_000, 1_000).unwrap();
        assert_eq!(
            path(&route),
            [(0, 2, 1_200), (2, 4, 1_100), (4, 3, 1_000)],
            "each hop carries the amount plus the fees of the nodes after it"
        );
        // A direct neighbour costs nothing, whatever the limit.
        let route = ledger.find_route(0, 1, 1_000, 0).unwrap();
        assert_eq!(path(&route), [(0, 1, 1_000)]);
    }

    #[test]
    fn fee_limits_and_balances_prune_routes() {
        let mut ledger = diamond();
        assert!(matches!(
            ledger.find_route(0, 3, 1_000, 199),
            Err(FailureReason::NoRoute)
        ));
        // Node 2 cannot forward 1_100 msat to 4 any more: the expensive route is what is left.
        ledger.channels[3].balance_msat = [1_099, 998_901];
        let route = ledger.find_route(0, 3, 1_000, 20_000).unwrap();
        assert_eq!(path(&route), [(0, 1, 11_000), (1, 3, 1_000)]);
        assert!(matches!(
            ledger.find_route(0, 3, 1_000, 9_999),
            Err(FailureReason::NoRoute)
        ));
    }

    #[test]
    fn too_little_local_balance_is_insufficient_balance_not_no_route() {
        let ledger = diamond();
        assert!(matches!(
            ledger.find_route(0, 3, 1_000_001, u64::MAX),
            Err(FailureReason::InsufficientBalance)
        ));
        // Node 0 has the balance, but no channel reaches node 2.
        let lonely = Ledger::new(3, vec![channel(0, 1, 0)]);
        assert!(matches!(
            lonely.find_route(0, 2, 1_000, u64::MAX),
            Err(FailureReason::NoRoute)
        ));
    }

    #[test]
    fn expiry_is_printed_as_go_prints_a_utc_time() {
        assert_eq!(go_time_string(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time_string(951_782_400), "2000-02-29 00:00:00 +0000 UTC");
        assert_eq!(
            go_time_string(1_700_000_000),
            "2023-11-14 22:13:20 +0000 UTC"
        );
    }

    #[test]
    fn policies_charge_base_plus_proportional_fees() {
        let policy = ChannelPolicy {
            base_fee_msat: 1_000,
            fee_ppm: 250,
        };
        assert_eq!(policy.fee_msat(0), 1_000);
        assert_eq!(policy.fee_msat(4_000_000), 2_000);
        assert_eq!(
            ChannelPolicy::default().fee_msat(10_000_000),
            1_010,
            "LND's defaults"
        );
    }
}
