//! The simulated Lightning network: nodes, channels with balances on both sides, routing by
//! fee, and payments. Everything here lives behind one lock ([`Ledger`]) held for a few
//! microseconds at a time; a payment locks and resolves the HTLCs of its whole route under that
//! lock, so money is never created or destroyed and no one sees a half-made payment.
//!
//! Channels follow LND's defaults for an anchor channel opened by `nodes[0]`: the opener pays
//! the commitment fee (2 500 sat/kw, LND's cap for anchor channels) and the two 330 sat anchors
//! out of its side; neither side may spend its channel reserve (1% of the capacity); the opener
//! also keeps LND's fee buffer (the fee of the commitment with one more HTLC, at twice the fee
//! rate) unspent. ChannelBalance and ListChannels report the commitment balances; payments can
//! only use what is spendable.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use futures::channel::mpsc::UnboundedSender;
use grpcio::{RpcStatus, RpcStatusCode};

use super::invoices::{InvoiceHtlc, InvoiceRecord, InvoiceState, InvoiceStore};
use super::{ChannelPolicy, FailureReason, Release};
use crate::lnd::proto::{lightning, router};

/// The chain height every simulated node reports (the chain never moves).
pub(crate) const BLOCK_HEIGHT: u32 = 1_000;
/// The custom record that carries a keysend preimage (`record.KeySendType`).
pub(crate) const KEYSEND_RECORD: u64 = 5_482_373_484;
/// Custom record types below this are LND's own (`record.CustomTypeStart`).
const CUSTOM_TYPE_START: u64 = 65_536;
/// SendPaymentV2's default timeout when `timeout_seconds` is 0.
const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The commitment fee rate of every channel, in sat per 1000 weight units: LND's default cap
/// for anchor channels (`max-commit-fee-rate-anchors`, 10 sat/vB).
pub(crate) const FEE_RATE_SAT_PER_KW: u64 = 2_500;
/// The weight of an anchor commitment transaction without HTLCs (`input.AnchorCommitWeight`).
pub(crate) const COMMIT_WEIGHT: u64 = 1_124;
/// What each HTLC output adds to it (`input.HTLCWeight`).
const HTLC_WEIGHT: u64 = 172;
/// The two anchor outputs, 330 sat each, paid by the opener.
pub(crate) const ANCHORS_SAT: u64 = 660;
/// LND's channel dust limit: smaller HTLCs get no output of their own.
const DUST_LIMIT_SAT: u64 = 354;
/// The smallest HTLC a node forwards (LND's `bitcoin.minhtlcout` default, 1 sat); a node's own
/// first hop only needs what its peer accepts (1 msat).
pub(crate) const MIN_FORWARDED_HTLC_MSAT: u64 = 1_000;
/// The most HTLCs one side may have in flight on a channel (BOLT 2 `max_accepted_htlcs`).
const MAX_HTLCS_IN_FLIGHT: usize = 483;

/// `fee_rate` sat/kw for `weight` weight units, in satoshi (`chainfee.SatPerKWeight.FeeForWeight`).
fn fee_for_weight(fee_rate: u64, weight: u64) -> u64 {
    fee_rate * weight / 1000
}

/// The commitment fee a new channel's opener pays at open, with the anchors, in satoshi.
pub(crate) const fn opening_cost_sat() -> u64 {
    FEE_RATE_SAT_PER_KW * COMMIT_WEIGHT / 1000 + ANCHORS_SAT
}

/// A node's fixed identity.
pub(crate) struct NodeIdentity {
    pub(crate) alias: String,
    pub(crate) secret_key: SecretKey,
    pub(crate) pubkey: PublicKey,
    pub(crate) pubkey_hex: String,
}

/// An HTLC on a channel, offered by `from_side`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelHtlc {
    pub(crate) from_side: usize,
    pub(crate) amt_msat: u64,
}

/// A channel between `nodes[0]` and `nodes[1]`; index 0 opened it.
pub(crate) struct Channel {
    pub(crate) chan_id: u64,
    pub(crate) nodes: [usize; 2],
    pub(crate) capacity_sat: u64,
    /// Each side's balance on the commitment, HTLCs in flight not included: what LND's
    /// ChannelBalance and ListChannels report. The opener's is net of the commitment fee and the
    /// anchors.
    pub(crate) balance_msat: [u64; 2],
    /// The policy each side applies when it forwards out over this channel.
    pub(crate) policy: [ChannelPolicy; 2],
    pub(crate) sent_msat: [u64; 2],
    pub(crate) num_updates: u64,
    pub(crate) htlcs: Vec<ChannelHtlc>,
}

impl Channel {
    /// A channel `nodes[0]` opened with `opener_funds_msat` of `capacity_sat` on its side (it
    /// pays the commitment fee and anchors from it) and the rest on the other.
    pub(crate) fn open(
        chan_id: u64,
        nodes: [usize; 2],
        capacity_sat: u64,
        opener_funds_msat: u64,
        policy: ChannelPolicy,
    ) -> Option<Channel> {
        let capacity_msat = capacity_sat.checked_mul(1000)?;
        let opener_msat = opener_funds_msat.checked_sub(opening_cost_sat() * 1000)?;
        Some(Channel {
            chan_id,
            nodes,
            capacity_sat,
            balance_msat: [opener_msat, capacity_msat.checked_sub(opener_funds_msat)?],
            policy: [policy, policy],
            sent_msat: [0, 0],
            num_updates: 0,
            htlcs: Vec::new(),
        })
    }

    /// Which side `node` is on.
    pub(crate) fn side(&self, node: usize) -> usize {
        usize::from(self.nodes[1] == node)
    }

    /// Both sides' reserve: 1% of the capacity, at least the dust limit (LND's default).
    pub(crate) fn reserve_sat(&self) -> u64 {
        (self.capacity_sat / 100).max(DUST_LIMIT_SAT)
    }

    /// The commitment fee the opener has paid (constant: see the README on what the simulator
    /// leaves out), in satoshi.
    pub(crate) fn commit_fee_sat(&self) -> u64 {
        fee_for_weight(FEE_RATE_SAT_PER_KW, COMMIT_WEIGHT)
    }

    /// Everything in HTLCs in flight, both ways.
    pub(crate) fn in_flight_msat(&self) -> u64 {
        self.htlcs.iter().map(|htlc| htlc.amt_msat).sum()
    }

    /// What HTLCs offered by `side` and in flight add up to.
    pub(crate) fn in_flight_from(&self, side: usize) -> u64 {
        self.htlcs
            .iter()
            .filter(|htlc| htlc.from_side == side)
            .map(|htlc| htlc.amt_msat)
            .sum()
    }

    /// The commitment's weight with the HTLCs now in flight (dust HTLCs have no output).
    fn commit_weight(&self) -> u64 {
        let outputs = self
            .htlcs
            .iter()
            .filter(|htlc| htlc.amt_msat >= DUST_LIMIT_SAT * 1000)
            .count() as u64;
        COMMIT_WEIGHT + HTLC_WEIGHT * outputs
    }

    /// What `side` can send in one more HTLC, as LND's `AvailableBalance` with its fee buffer
    /// (`lnwallet/channel.go` `availableCommitmentBalance`): its balance less its reserve, and
    /// for the opener less the fee buffer (the fee of the commitment with one more HTLC, at twice
    /// the fee rate) instead of the fee it pays now.
    pub(crate) fn spendable_msat(&self, side: usize) -> u64 {
        let offered = self.htlcs.iter().filter(|h| h.from_side == side).count();
        if offered >= MAX_HTLCS_IN_FLIGHT {
            return 0;
        }
        let reserve = self.reserve_sat() * 1000;
        if side == 0 {
            let fee_buffer =
                fee_for_weight(2 * FEE_RATE_SAT_PER_KW, self.commit_weight() + HTLC_WEIGHT) * 1000;
            (self.balance_msat[0] + self.commit_fee_sat() * 1000)
                .saturating_sub(reserve + fee_buffer)
        } else {
            self.balance_msat[1].saturating_sub(reserve)
        }
    }

    fn add_htlc(&mut self, from_side: usize, amt_msat: u64) {
        self.balance_msat[from_side] -= amt_msat;
        self.htlcs.push(ChannelHtlc {
            from_side,
            amt_msat,
        });
        self.num_updates += 1;
    }

    /// Removes one HTLC; its amount goes to the other side if `settled`, back otherwise.
    fn resolve_htlc(&mut self, from_side: usize, amt_msat: u64, settled: bool) {
        let wanted = ChannelHtlc {
            from_side,
            amt_msat,
        };
        if let Some(position) = self.htlcs.iter().position(|htlc| *htlc == wanted) {
            self.htlcs.swap_remove(position);
            if settled {
                self.balance_msat[1 - from_side] += amt_msat;
                self.sent_msat[from_side] += amt_msat;
            } else {
                self.balance_msat[from_side] += amt_msat;
            }
            self.num_updates += 1;
        }
    }
}

/// Who is told about a payment's updates.
enum PaymentWatcher {
    /// A SendPaymentV2 or TrackPaymentV2 stream: `lnrpc.Payment` updates.
    Stream {
        sender: UnboundedSender<Result<lightning::Payment, RpcStatus>>,
        no_inflight_updates: bool,
    },
    /// A SendPayment (bidirectional) or SendPaymentSync call: one `SendResponse` at the end.
    Legacy(UnboundedSender<lightning::SendResponse>),
}

impl PaymentWatcher {
    fn offer(&self, payment: &lightning::Payment) {
        let terminal = is_terminal(payment);
        match self {
            PaymentWatcher::Stream {
                sender,
                no_inflight_updates,
            } => {
                if terminal || !no_inflight_updates {
                    let _ = sender.unbounded_send(Ok(payment.clone()));
                }
            }
            PaymentWatcher::Legacy(sender) if terminal => {
                let _ = sender.unbounded_send(legacy_response(payment));
            }
            PaymentWatcher::Legacy(_) => {}
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

/// LND's `FailureReason.String()` (`payments/db/payment.go`): the `payment_error` of
/// SendPayment and SendPaymentSync.
fn failure_text(reason: lightning::PaymentFailureReason) -> &'static str {
    use lightning::PaymentFailureReason as R;
    match reason {
        R::FAILURE_REASON_TIMEOUT => "timeout",
        R::FAILURE_REASON_NO_ROUTE => "no_route",
        R::FAILURE_REASON_ERROR => "error",
        R::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS => "incorrect_payment_details",
        R::FAILURE_REASON_INSUFFICIENT_BALANCE => "insufficient_balance",
        R::FAILURE_REASON_CANCELED => "canceled",
        R::FAILURE_REASON_NONE => "unknown",
    }
}

/// The `SendResponse` LND's `sendPayment` writes for a final payment: hash, preimage and route
/// when it succeeded, hash and the failure reason's text otherwise.
fn legacy_response(payment: &lightning::Payment) -> lightning::SendResponse {
    let mut response = lightning::SendResponse::new();
    response.payment_hash = hex::decode(&payment.payment_hash).unwrap_or_default();
    if payment.status.enum_value() == Ok(lightning::payment::PaymentStatus::SUCCEEDED) {
        response.payment_preimage = hex::decode(&payment.payment_preimage).unwrap_or_default();
        response.payment_route = payment
            .htlcs
            .last()
            .and_then(|attempt| attempt.route.clone().into_option())
            .into();
    } else {
        let reason = payment
            .failure_reason
            .enum_value()
            .unwrap_or(lightning::PaymentFailureReason::FAILURE_REASON_ERROR);
        response.payment_error = failure_text(reason).to_string();
    }
    response
}

/// A payment a node has made or is making, and the streams watching it.
struct PaymentRecord {
    payment: lightning::Payment,
    watchers: Vec<PaymentWatcher>,
}

/// A payment whose HTLCs are locked along its route, waiting for [`Ledger::release`].
struct HeldPayment {
    intent: PaymentIntent,
    route: Vec<RouteHop>,
}

/// Faults that break the streams of a node's next payments.
#[derive(Default)]
pub(crate) struct StreamBreaks {
    /// SendPaymentV2 calls whose stream fails once the payment is dispatched.
    pub(crate) send: usize,
    /// TrackPaymentV2 calls whose stream fails after its first update.
    pub(crate) track: usize,
}

/// What one node holds besides its channels.
#[derive(Default)]
pub(crate) struct NodeState {
    pub(crate) invoices: InvoiceStore,
    payments: HashMap<[u8; 32], PaymentRecord>,
    last_payment_index: u64,
    forced_failures: VecDeque<FailureReason>,
    /// LND's `--accept-keysend` (off by default).
    pub(crate) accept_keysend: bool,
    /// New payments stop IN_FLIGHT, their HTLCs locked, until released.
    pub(crate) holding: bool,
    held: Vec<HeldPayment>,
    pub(crate) stream_breaks: StreamBreaks,
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
#[derive(Clone, Debug)]
struct RouteHop {
    channel: usize,
    from: usize,
    to: usize,
    amt_msat: u64,
}

fn unknown(message: impl Into<String>) -> RpcStatus {
    RpcStatus::with_message(RpcStatusCode::UNKNOWN, message.into())
}

/// Why LND's control tower refuses to start a payment (`payments/db` `initializable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PaymentRefusal {
    /// A payment for the hash was created and has no HTLC out yet.
    Exists,
    /// A payment for the hash has HTLCs in flight.
    InFlight,
    /// The hash was paid.
    AlreadyPaid,
}

impl PaymentRefusal {
    /// LND's text (`payments/db/errors.go`).
    pub(crate) fn text(self) -> &'static str {
        match self {
            PaymentRefusal::Exists => "payment already exists",
            PaymentRefusal::InFlight => "payment is in transition",
            PaymentRefusal::AlreadyPaid => "invoice is already paid",
        }
    }

    /// As SendPaymentV2 answers it: ALREADY_EXISTS with the text.
    pub(crate) fn status(self) -> RpcStatus {
        RpcStatus::with_message(RpcStatusCode::ALREADY_EXISTS, self.text().to_string())
    }
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

/// `lnrpc.UnmarshallAmt`: a sat/msat pair, at most one of them set, neither negative.
fn unmarshall_amt(sat: i64, msat: i64) -> Result<u64, String> {
    if sat != 0 && msat != 0 {
        return Err("sat and msat arguments are mutually exclusive".to_string());
    }
    if sat < 0 || msat < 0 {
        return Err("amount cannot be negative".to_string());
    }
    Ok(if sat != 0 {
        (sat as u64).saturating_mul(1000)
    } else {
        msat as u64
    })
}

/// `record.CustomSet.Validate`.
fn validate_custom_records(records: &HashMap<u64, Vec<u8>>) -> Result<(), String> {
    if records.keys().any(|key| *key < CUSTOM_TYPE_START) {
        return Err(format!(
            "no custom records with types below {CUSTOM_TYPE_START} allowed"
        ));
    }
    Ok(())
}

/// A decoded invoice's hash, destination and payment address, after LND's expiry check
/// (`routerrpc.ValidatePayReqExpiry`: expired once the clock is past creation + expiry).
struct PayReq {
    invoice: lightning_invoice::Bolt11Invoice,
}

impl PayReq {
    fn decode(payment_request: &str, now: i64) -> Result<PayReq, String> {
        let invoice = decode_regtest(payment_request)?;
        let valid_until = invoice
            .duration_since_epoch()
            .saturating_add(invoice.expiry_time())
            .as_secs() as i64;
        if now > valid_until {
            return Err(format!(
                "invoice expired. Valid until {}",
                go_time_string(valid_until)
            ));
        }
        Ok(PayReq { invoice })
    }

    fn hash(&self) -> [u8; 32] {
        self.invoice.payment_hash().to_byte_array()
    }

    fn destination(&self) -> PublicKey {
        self.invoice.recover_payee_pub_key()
    }

    /// `None` for an invoice of any amount.
    fn amount_msat(&self) -> Option<u64> {
        self.invoice
            .amount_milli_satoshis()
            .filter(|msat| *msat > 0)
    }
}

/// LND's default fee limit for SendPayment and SendPaymentSync without one
/// (`lnwallet.DefaultRoutingFeeLimitForAmount`): all of it up to 1 000 sat, 5% above.
fn default_fee_limit_msat(amt_msat: u64) -> u64 {
    if amt_msat <= 1_000_000 {
        amt_msat
    } else {
        amt_msat * 5 / 100
    }
}

/// `lnrpc.CalculateFeeLimit` (Go's unsigned conversions included: a negative limit is huge).
fn legacy_fee_limit_msat(fee_limit: Option<&lightning::FeeLimit>, amt_msat: u64) -> u64 {
    use lightning::fee_limit::Limit;
    match fee_limit.and_then(|limit| limit.limit.as_ref()) {
        Some(Limit::Fixed(sat)) => (*sat as u64).wrapping_mul(1000),
        Some(Limit::FixedMsat(msat)) => *msat as u64,
        Some(Limit::Percent(percent)) => amt_msat.wrapping_mul(*percent as u64) / 100,
        None => default_fee_limit_msat(amt_msat),
    }
}

impl PaymentIntent {
    /// Checks a SendPaymentV2 request as LND's router backend does, in its order and with its
    /// texts (`lnrpc/routerrpc/router_backend.go` `extractIntentFromSendRequest`).
    pub(crate) fn from_request(
        identities: &[NodeIdentity],
        sender: usize,
        request: &router::SendPaymentRequest,
        now: i64,
    ) -> Result<PaymentIntent, RpcStatus> {
        if request.time_pref < -1.0 || request.time_pref > 1.0 {
            return Err(unknown("time preference out of range"));
        }
        let fee_limit_msat =
            unmarshall_amt(request.fee_limit_sat, request.fee_limit_msat).map_err(unknown)?;
        validate_custom_records(&request.dest_custom_records).map_err(unknown)?;
        if request.max_shard_size_msat != 0
            && request.dest_custom_records.contains_key(&KEYSEND_RECORD)
        {
            return Err(unknown(
                "keysend payments cannot specify a max shard amount - MPP not supported with \
                 keysend payments",
            ));
        }
        let timeout = if request.timeout_seconds > 0 {
            Duration::from_secs(request.timeout_seconds as u64)
        } else {
            DEFAULT_PAYMENT_TIMEOUT
        };
        let requested_msat = unmarshall_amt(request.amt, request.amt_msat).map_err(unknown)?;
        if request.amp {
            return Err(RpcStatus::with_message(
                RpcStatusCode::UNIMPLEMENTED,
                "the simulator does not make AMP payments".to_string(),
            ));
        }
        let find_node = |pubkey: &PublicKey| identities.iter().position(|id| id.pubkey == *pubkey);

        let (destination, intent) = if !request.payment_request.is_empty() {
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
            let pay_req = PayReq::decode(&request.payment_request, now).map_err(unknown)?;
            let amt_msat = match pay_req.amount_msat() {
                None if requested_msat == 0 => {
                    return Err(unknown(
                        "amount must be specified when paying a zero amount invoice",
                    ))
                }
                None => requested_msat,
                Some(_) if requested_msat != 0 => {
                    return Err(unknown(
                        "amount must not be specified when paying a non-zero amount invoice",
                    ))
                }
                Some(amount) => amount,
            };
            let destination = pay_req.destination();
            (
                destination,
                PaymentIntent {
                    sender,
                    destination: find_node(&destination),
                    hash: pay_req.hash(),
                    amt_msat,
                    fee_limit_msat,
                    payment_request: request.payment_request.clone(),
                    payment_addr: Some(pay_req.invoice.payment_secret().0),
                    custom_records: request.dest_custom_records.clone(),
                    is_keysend: false,
                    timeout,
                    no_inflight_updates: request.no_inflight_updates,
                },
            )
        } else {
            let destination = PublicKey::from_slice(&request.dest).map_err(|_| {
                unknown(format!(
                    "invalid vertex length of {}, want 33",
                    request.dest.len()
                ))
            })?;
            if requested_msat == 0 {
                return Err(unknown("amount must be specified"));
            }
            let hash = to_32(&request.payment_hash).ok_or_else(|| {
                unknown(format!(
                    "invalid hash length of {}, want 32",
                    request.payment_hash.len()
                ))
            })?;
            (
                destination,
                PaymentIntent {
                    sender,
                    destination: find_node(&destination),
                    hash,
                    amt_msat: requested_msat,
                    fee_limit_msat,
                    payment_request: String::new(),
                    payment_addr: to_32(&request.payment_addr),
                    custom_records: request.dest_custom_records.clone(),
                    is_keysend: request.dest_custom_records.contains_key(&KEYSEND_RECORD),
                    timeout,
                    no_inflight_updates: request.no_inflight_updates,
                },
            )
        };
        if !request.allow_self_payment && destination == identities[sender].pubkey {
            return Err(unknown("self-payments not allowed"));
        }
        Ok(intent)
    }

    /// Checks a SendPayment / SendPaymentSync request as LND 0.20 does (`rpcserver.go`
    /// `extractPaymentIntent`), with its texts. On error, also the payment hash as far as it
    /// was known (LND answers with `payIntent.rHash`: zeros until it is set).
    pub(crate) fn from_send_request(
        identities: &[NodeIdentity],
        sender: usize,
        request: &lightning::SendRequest,
        now: i64,
    ) -> Result<PaymentIntent, (String, [u8; 32])> {
        let no_hash = |message: String| (message, [0u8; 32]);
        validate_custom_records(&request.dest_custom_records).map_err(no_hash)?;
        let find_node = |pubkey: &PublicKey| identities.iter().position(|id| id.pubkey == *pubkey);
        let is_self =
            |key: &PublicKey| !request.allow_self_payment && *key == identities[sender].pubkey;
        // The payments of this call are never split, and give up on new routes after 60 s.
        let timeout = DEFAULT_PAYMENT_TIMEOUT;
        if !request.payment_request.is_empty() {
            let pay_req = PayReq::decode(&request.payment_request, now).map_err(no_hash)?;
            let amt_msat = match pay_req.amount_msat() {
                Some(amount) => amount,
                None => {
                    let amt = unmarshall_amt(request.amt, request.amt_msat).map_err(no_hash)?;
                    if amt == 0 {
                        return Err(no_hash(
                            "amount must be specified when paying a zero amount invoice"
                                .to_string(),
                        ));
                    }
                    amt
                }
            };
            let fee_limit_msat = legacy_fee_limit_msat(request.fee_limit.as_ref(), amt_msat);
            let hash = pay_req.hash();
            let destination = pay_req.destination();
            if is_self(&destination) {
                return Err(("self-payments not allowed".to_string(), hash));
            }
            return Ok(PaymentIntent {
                sender,
                destination: find_node(&destination),
                hash,
                amt_msat,
                fee_limit_msat,
                payment_request: request.payment_request.clone(),
                payment_addr: Some(pay_req.invoice.payment_secret().0),
                custom_records: request.dest_custom_records.clone(),
                is_keysend: false,
                timeout,
                no_inflight_updates: true,
            });
        }
        let dest = if request.dest.is_empty() {
            go_hex_decode(&request.dest_string).map_err(no_hash)?
        } else {
            request.dest.clone()
        };
        if dest.len() != 33 {
            return Err(no_hash("invalid key length".to_string()));
        }
        let destination = PublicKey::from_slice(&dest)
            .map_err(|error| no_hash(format!("invalid public key: {error}")))?;
        if is_self(&destination) {
            return Err(no_hash("self-payments not allowed".to_string()));
        }
        if !request.payment_addr.is_empty() && request.payment_addr.len() != 32 {
            return Err(no_hash("invalid payment address length".to_string()));
        }
        let amt_msat = unmarshall_amt(request.amt, request.amt_msat).map_err(no_hash)?;
        let hash_bytes = if request.payment_hash_string.is_empty() {
            request.payment_hash.clone()
        } else {
            go_hex_decode(&request.payment_hash_string).map_err(no_hash)?
        };
        // LND copies whatever it got into a 32-byte array.
        let mut hash = [0u8; 32];
        let copied = hash_bytes.len().min(32);
        hash[..copied].copy_from_slice(&hash_bytes[..copied]);
        if amt_msat == 0 {
            return Err(("amount must be specified".to_string(), hash));
        }
        Ok(PaymentIntent {
            sender,
            destination: find_node(&destination),
            hash,
            amt_msat,
            fee_limit_msat: legacy_fee_limit_msat(request.fee_limit.as_ref(), amt_msat),
            payment_request: String::new(),
            payment_addr: to_32(&request.payment_addr),
            custom_records: request.dest_custom_records.clone(),
            is_keysend: request.dest_custom_records.contains_key(&KEYSEND_RECORD),
            timeout,
            no_inflight_updates: true,
        })
    }
}

/// Go's `hex.DecodeString`, with its error texts (LND passes them on): characters are checked
/// pair by pair before the length.
pub(crate) fn go_hex_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let digit = |byte: u8| char::from(byte).to_digit(16).map(|d| d as u8);
    let invalid = |byte: u8| {
        let c = char::from(byte);
        format!("encoding/hex: invalid byte: U+{:04X} {c:?}", u32::from(c))
    };
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        let high = digit(pair[0]).ok_or_else(|| invalid(pair[0]))?;
        let low = digit(pair[1]).ok_or_else(|| invalid(pair[1]))?;
        out.push(high << 4 | low);
    }
    if let Some(&last) = bytes.chunks_exact(2).remainder().first() {
        digit(last).ok_or_else(|| invalid(last))?;
        return Err("encoding/hex: odd length hex string".to_string());
    }
    Ok(out)
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

/// A payment watcher's channel, for [`Ledger::begin_payment`].
pub(crate) enum Watcher {
    /// SendPaymentV2: every update (or only the last), on a stream.
    Stream(UnboundedSender<Result<lightning::Payment, RpcStatus>>),
    /// SendPayment / SendPaymentSync: one `SendResponse` once final.
    Legacy(UnboundedSender<lightning::SendResponse>),
    /// Nobody: the caller's stream is broken (a fault) and the payment goes on alone.
    None,
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

    /// Registers a new payment (IN_FLIGHT, no HTLC yet), or refuses it as LND's control tower
    /// does (`payments/db/payment_status.go` `initializable`): created and not yet sent ("payment
    /// already exists"), HTLCs in flight ("payment is in transition"), or paid ("invoice is
    /// already paid"). A failed payment may be retried.
    pub(crate) fn begin_payment(
        &mut self,
        intent: &PaymentIntent,
        watcher: Watcher,
        now_ns: i64,
    ) -> Result<(), PaymentRefusal> {
        let state = &mut self.nodes[intent.sender];
        if let Some(existing) = state.payments.get(&intent.hash) {
            use lightning::payment::PaymentStatus;
            match existing.payment.status.enum_value() {
                Ok(PaymentStatus::SUCCEEDED) => return Err(PaymentRefusal::AlreadyPaid),
                Ok(PaymentStatus::FAILED) => {}
                _ if existing.payment.htlcs.is_empty() => return Err(PaymentRefusal::Exists),
                _ => return Err(PaymentRefusal::InFlight),
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
        // Until it succeeds, LND shows the preimage as 32 zero bytes (`MarshallPayment`).
        payment.payment_preimage = hex::encode([0u8; 32]);
        let watchers: Vec<PaymentWatcher> = match watcher {
            Watcher::Stream(sender) => vec![PaymentWatcher::Stream {
                sender,
                no_inflight_updates: intent.no_inflight_updates,
            }],
            Watcher::Legacy(sender) => vec![PaymentWatcher::Legacy(sender)],
            Watcher::None => Vec::new(),
        };
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
        sender: UnboundedSender<Result<lightning::Payment, RpcStatus>>,
    ) -> Result<(), RpcStatus> {
        let record = self.nodes[node].payments.get_mut(hash).ok_or_else(|| {
            RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                "payment isn't initiated".to_string(),
            )
        })?;
        let watcher = PaymentWatcher::Stream {
            sender,
            no_inflight_updates,
        };
        watcher.offer(&record.payment);
        if !is_terminal(&record.payment) {
            record.watchers.push(watcher);
        }
        Ok(())
    }

    /// TrackPaymentV2's check alone (for a stream that is to break): NOT_FOUND for a payment the
    /// node never started.
    pub(crate) fn check_payment_known(
        &self,
        node: usize,
        hash: &[u8; 32],
    ) -> Result<(), RpcStatus> {
        if self.nodes[node].payments.contains_key(hash) {
            Ok(())
        } else {
            Err(RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                "payment isn't initiated".to_string(),
            ))
        }
    }

    /// Takes the next forced failure of the sender, if any.
    pub(crate) fn take_forced_failure(&mut self, node: usize) -> Option<FailureReason> {
        self.nodes[node].forced_failures.pop_front()
    }

    /// Ends a payment that has no HTLC out as FAILED with `reason`.
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

    /// Routes a payment under the caller's one lock: finds the cheapest route within the fee
    /// limit, locks an HTLC on every hop, and either holds the payment there (the node holds
    /// its payments: true is returned) or lets the payee settle or refuse it at once.
    pub(crate) fn execute_payment(
        &mut self,
        identities: &[NodeIdentity],
        intent: &PaymentIntent,
        now: i64,
        now_ns: i64,
    ) -> bool {
        if let Some(reason) = self.take_forced_failure(intent.sender) {
            self.fail_payment(intent, reason, now_ns);
            return false;
        }
        let route = match self.find_route(
            intent.sender,
            intent.destination,
            intent.amt_msat,
            intent.fee_limit_msat,
        ) {
            Ok(route) => route,
            Err(reason) => {
                self.fail_payment(intent, reason, now_ns);
                return false;
            }
        };
        let total_msat = route.first().map_or(intent.amt_msat, |hop| hop.amt_msat);
        for hop in &route {
            let channel = &mut self.channels[hop.channel];
            let side = channel.side(hop.from);
            channel.add_htlc(side, hop.amt_msat);
        }
        self.last_attempt_id += 1;
        let mut attempt = lightning::HTLCAttempt::new();
        attempt.attempt_id = self.last_attempt_id;
        attempt.attempt_time_ns = now_ns;
        attempt.status = lightning::htlcattempt::HTLCStatus::IN_FLIGHT.into();
        attempt.route = Some(self.route_proto(identities, &route, intent, total_msat)).into();
        // As LND: a second IN_FLIGHT update once the HTLC is on its way.
        self.progress(intent, |payment| payment.htlcs.push(attempt));
        let held = HeldPayment {
            intent: intent.clone(),
            route,
        };
        if self.nodes[intent.sender].holding {
            self.nodes[intent.sender].held.push(held);
            return true;
        }
        self.resolve(held, Release::Forward, now, now_ns);
        false
    }

    /// Every payment `node` has sent, in the order it started them: hash, status, amount,
    /// fee and the payee's node index (from the route of its last attempt).
    pub(crate) fn sent_payments(
        &self,
        node: usize,
        identities: &[NodeIdentity],
    ) -> Vec<super::SentPayment> {
        use lightning::payment::PaymentStatus;
        let mut records: Vec<&PaymentRecord> = self.nodes[node].payments.values().collect();
        records.sort_by_key(|record| record.payment.payment_index);
        records
            .into_iter()
            .map(|record| {
                let payment = &record.payment;
                let payee = payment
                    .htlcs
                    .last()
                    .and_then(|attempt| attempt.route.hops.last())
                    .and_then(|hop| identities.iter().find(|i| i.pubkey_hex == hop.pub_key))
                    .map(|identity| identity.alias.clone());
                let mut payment_hash = [0u8; 32];
                if let Ok(bytes) = hex::decode(&payment.payment_hash) {
                    if bytes.len() == 32 {
                        payment_hash.copy_from_slice(&bytes);
                    }
                }
                super::SentPayment {
                    payment_hash,
                    status: match payment.status.enum_value() {
                        Ok(PaymentStatus::SUCCEEDED) => super::SentStatus::Succeeded,
                        Ok(PaymentStatus::FAILED) => super::SentStatus::Failed,
                        _ => super::SentStatus::InFlight,
                    },
                    amount_msat: u64::try_from(payment.value_msat).unwrap_or(0),
                    fee_msat: u64::try_from(payment.fee_msat).unwrap_or(0),
                    payee,
                }
            })
            .collect()
    }

    /// The hashes of the payments `node` holds, oldest first.
    pub(crate) fn held_payments(&self, node: usize) -> Vec<[u8; 32]> {
        self.nodes[node]
            .held
            .iter()
            .map(|held| held.intent.hash)
            .collect()
    }

    /// Lets one held payment (or, without `hash`, every one) go on as `release` says. Returns
    /// how many were released.
    pub(crate) fn release(
        &mut self,
        node: usize,
        hash: Option<&[u8; 32]>,
        release: Release,
        now: i64,
        now_ns: i64,
    ) -> usize {
        let (chosen, kept) = std::mem::take(&mut self.nodes[node].held)
            .into_iter()
            .partition::<Vec<_>, _>(|held| hash.is_none_or(|hash| held.intent.hash == *hash));
        self.nodes[node].held = kept;
        let count = chosen.len();
        for held in chosen {
            self.resolve(held, release, now, now_ns);
        }
        count
    }

    /// Ends a payment whose HTLCs are locked along its route: the payee settles or refuses it
    /// (`Release::Forward`), or it fails on the way (`Release::Fail`).
    fn resolve(&mut self, held: HeldPayment, release: Release, now: i64, now_ns: i64) {
        let HeldPayment { intent, route } = held;
        let intent = &intent;
        let preimage = match (release, route.last()) {
            (Release::Forward, Some(last)) => self
                .receiver_accepts(last.to, intent, now)
                .ok_or(FailureReason::IncorrectPaymentDetails),
            (Release::Forward, None) => Err(FailureReason::NoRoute),
            (Release::Fail(reason), _) => Err(reason),
        };
        let settled = preimage.is_ok();
        for hop in &route {
            let channel = &mut self.channels[hop.channel];
            let side = channel.side(hop.from);
            channel.resolve_htlc(side, hop.amt_msat, settled);
        }
        let preimage = match preimage {
            Ok(preimage) => preimage,
            Err(reason) => {
                let mut failure = lightning::Failure::new();
                if reason == FailureReason::IncorrectPaymentDetails {
                    failure.code =
                        lightning::failure::FailureCode::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS
                            .into();
                    failure.failure_source_index = route.len() as u32;
                } else {
                    failure.code =
                        lightning::failure::FailureCode::TEMPORARY_CHANNEL_FAILURE.into();
                    failure.failure_source_index = 1;
                }
                failure.htlc_msat = intent.amt_msat;
                failure.height = BLOCK_HEIGHT;
                return self.finish(intent, now_ns, |payment| {
                    payment.status = lightning::payment::PaymentStatus::FAILED.into();
                    payment.failure_reason = failure_reason_proto(reason).into();
                    if let Some(attempt) = payment.htlcs.last_mut() {
                        attempt.status = lightning::htlcattempt::HTLCStatus::FAILED.into();
                        attempt.failure = Some(failure).into();
                    }
                });
            }
        };
        let total_msat = route.first().map_or(intent.amt_msat, |hop| hop.amt_msat);
        let fee_msat = total_msat - intent.amt_msat;
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
        let destination = route.last().map_or(intent.sender, |hop| hop.to);
        let receiver = self.invoices(destination, now);
        if intent.is_keysend && receiver.get(&intent.hash).is_none() {
            // `receiver_accepts` has checked that the hash is new to the receiver.
            let keysend = InvoiceRecord::keysend(preimage, intent.hash, intent.amt_msat, now);
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
    /// wrong payment address, too little paid; a keysend to a node that does not accept keysend,
    /// or whose preimage does not match the hash).
    fn receiver_accepts(
        &mut self,
        destination: usize,
        intent: &PaymentIntent,
        now: i64,
    ) -> Option<[u8; 32]> {
        let accept_keysend = self.nodes[destination].accept_keysend;
        let store = self.invoices(destination, now);
        // LND only runs `processKeySend` with `--accept-keysend`; without it the HTLC is looked
        // up as an ordinary payment, for which no invoice exists.
        if intent.is_keysend && accept_keysend {
            let preimage = to_32(intent.custom_records.get(&KEYSEND_RECORD)?)?;
            let matches = sha256::Hash::hash(&preimage).to_byte_array() == intent.hash;
            return (matches && store.get(&intent.hash).is_none()).then_some(preimage);
        }
        let invoice = store.get(&intent.hash)?;
        let accepted = invoice.state == InvoiceState::Open
            && !invoice.is_keysend
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

    /// What `node` can send over all its channels together: LND's INSUFFICIENT_BALANCE
    /// threshold (`routing/pathfind.go`: the total outgoing bandwidth).
    pub(crate) fn spendable_msat(&self, node: usize) -> u64 {
        self.adjacency[node]
            .iter()
            .map(|&index| {
                let channel = &self.channels[index];
                channel.spendable_msat(channel.side(node))
            })
            .sum()
    }

    /// The cheapest route from `sender` to `destination` that delivers `amt_msat` within
    /// `fee_limit_msat`, each hop within what its sending side can spend, as LND's path finding
    /// (`routing/pathfind.go` `findPath`): INSUFFICIENT_BALANCE when all of the sender's channels
    /// together cannot carry the amount, NO_ROUTE when no single route can (the simulator does
    /// not split payments). A payment to oneself (allowed by `allow_self_payment`) goes out over
    /// one channel and comes back over another.
    fn find_route(
        &self,
        sender: usize,
        destination: Option<usize>,
        amt_msat: u64,
        fee_limit_msat: u64,
    ) -> Result<Vec<RouteHop>, FailureReason> {
        if self.spendable_msat(sender) < amt_msat {
            return Err(FailureReason::InsufficientBalance);
        }
        let Some(destination) = destination else {
            return Err(FailureReason::NoRoute);
        };
        if destination != sender {
            return self
                .cheapest_path(
                    sender,
                    destination,
                    amt_msat,
                    amt_msat,
                    fee_limit_msat,
                    None,
                )
                .map(|(route, _)| route)
                .ok_or(FailureReason::NoRoute);
        }
        // Circular: the last hop is a peer forwarding back to us over one of our channels.
        let mut best: Option<(Vec<RouteHop>, u64)> = None;
        for &last in &self.adjacency[sender] {
            let channel = &self.channels[last];
            let peer = channel.nodes[1 - channel.side(sender)];
            let peer_side = channel.side(peer);
            if channel.spendable_msat(peer_side) < amt_msat || amt_msat < MIN_FORWARDED_HTLC_MSAT {
                continue;
            }
            let at_peer = amt_msat + channel.policy[peer_side].fee_msat(amt_msat);
            let Some((mut route, total)) =
                self.cheapest_path(sender, peer, at_peer, amt_msat, fee_limit_msat, Some(last))
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(_, known)| total < *known) {
                route.push(RouteHop {
                    channel: last,
                    from: peer,
                    to: sender,
                    amt_msat,
                });
                best = Some((route, total));
            }
        }
        best.map(|(route, _)| route).ok_or(FailureReason::NoRoute)
    }

    /// Dijkstra run backwards from `target`, which must receive `target_msat`, as LND's path
    /// finding does: the label of a node is the amount that must reach it for the payment to
    /// arrive, which grows by the fee of the node's outgoing channel. Fees grow with the amount,
    /// so the labels only grow along a path and Dijkstra stays exact. Returns the route and what
    /// leaves the sender; fees are counted against `payment_msat`.
    fn cheapest_path(
        &self,
        sender: usize,
        target: usize,
        target_msat: u64,
        payment_msat: u64,
        fee_limit_msat: u64,
        excluded_channel: Option<usize>,
    ) -> Option<(Vec<RouteHop>, u64)> {
        let node_count = self.nodes.len();
        let mut needed: Vec<Option<u64>> = vec![None; node_count];
        // For each node, the channel it forwards over and the node on its other end.
        let mut next: Vec<Option<(usize, usize)>> = vec![None; node_count];
        let mut done = vec![false; node_count];
        let mut queue = BinaryHeap::new();
        needed[target] = Some(target_msat);
        queue.push(Reverse((target_msat, target)));
        while let Some(Reverse((amount, node))) = queue.pop() {
            if done[node] {
                continue;
            }
            done[node] = true;
            if node == sender {
                break;
            }
            for &channel_index in &self.adjacency[node] {
                if Some(channel_index) == excluded_channel {
                    continue;
                }
                let channel = &self.channels[channel_index];
                let side = channel.side(node);
                let previous = channel.nodes[1 - side];
                if done[previous] || channel.spendable_msat(1 - side) < amount {
                    continue;
                }
                let fee = if previous == sender {
                    0
                } else {
                    if amount < MIN_FORWARDED_HTLC_MSAT {
                        continue;
                    }
                    channel.policy[1 - side].fee_msat(amount)
                };
                let candidate = amount.saturating_add(fee);
                if candidate - payment_msat > fee_limit_msat {
                    continue;
                }
                if needed[previous].is_none_or(|known| candidate < known) {
                    needed[previous] = Some(candidate);
                    next[previous] = Some((channel_index, node));
                    queue.push(Reverse((candidate, previous)));
                }
            }
        }
        if !done[sender] || sender == target {
            return None;
        }
        let mut route = Vec::new();
        let mut node = sender;
        while node != target {
            let (channel, to) = next[node]?;
            route.push(RouteHop {
                channel,
                from: node,
                to,
                amt_msat: needed[to]?,
            });
            node = to;
        }
        Some((route, needed[sender]?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 000 000 sat channel from `a` (the opener) to `b`, half the capacity on each side
    /// before the opener pays its commitment fee and anchors.
    fn channel(a: usize, b: usize, base_fee_msat: u64) -> Channel {
        let policy = ChannelPolicy {
            base_fee_msat,
            fee_ppm: 0,
        };
        Channel::open((a * 10 + b) as u64, [a, b], 1_000_000, 500_000_000, policy).unwrap()
    }

    /// Sets `side`'s balance so that it can spend exactly `spendable_msat`.
    fn set_spendable(channel: &mut Channel, side: usize, spendable_msat: u64) {
        let unspendable = channel.balance_msat[side] - channel.spendable_msat(side);
        channel.balance_msat[side] = spendable_msat + unspendable;
        assert_eq!(channel.spendable_msat(side), spendable_msat);
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
        let route = ledger.find_route(0, Some(3), 1_000, 1_000).unwrap();
        assert_eq!(
            path(&route),
            [(0, 2, 1_200), (2, 4, 1_100), (4, 3, 1_000)],
            "each hop carries the amount plus the fees of the nodes after it"
        );
        // A direct neighbour costs nothing, whatever the limit.
        let route = ledger.find_route(0, Some(1), 1_000, 0).unwrap();
        assert_eq!(path(&route), [(0, 1, 1_000)]);
    }

    #[test]
    fn fee_limits_and_spendable_balances_prune_routes() {
        let mut ledger = diamond();
        assert!(matches!(
            ledger.find_route(0, Some(3), 1_000, 199),
            Err(FailureReason::NoRoute)
        ));
        // Node 2 (the opener of its channel to 4) cannot forward 1_100 msat any more: the
        // expensive route is what is left.
        set_spendable(&mut ledger.channels[3], 0, 1_099);
        let route = ledger.find_route(0, Some(3), 1_000, 20_000).unwrap();
        assert_eq!(path(&route), [(0, 1, 11_000), (1, 3, 1_000)]);
        assert!(matches!(
            ledger.find_route(0, Some(3), 1_000, 9_999),
            Err(FailureReason::NoRoute)
        ));
    }

    /// LND `routing/pathfind.go` `findPath`: the sender's total outgoing bandwidth below the
    /// amount is INSUFFICIENT_BALANCE; enough in total but not on one route is NO_ROUTE.
    #[test]
    fn too_little_spendable_balance_is_insufficient_balance_not_no_route() {
        let ledger = diamond();
        let total = ledger.spendable_msat(0);
        assert_eq!(total, 2 * 482_860_000);
        assert!(matches!(
            ledger.find_route(0, Some(3), total + 1, u64::MAX),
            Err(FailureReason::InsufficientBalance)
        ));
        // Enough in total, but each channel alone carries only half: no single route.
        assert!(matches!(
            ledger.find_route(0, Some(1), total, u64::MAX),
            Err(FailureReason::NoRoute)
        ));
        // Node 0 has the balance, but no channel reaches node 2.
        let lonely = Ledger::new(3, vec![channel(0, 1, 0)]);
        assert!(matches!(
            lonely.find_route(0, Some(2), 1_000, u64::MAX),
            Err(FailureReason::NoRoute)
        ));
        assert!(matches!(
            lonely.find_route(0, None, 1_000, u64::MAX),
            Err(FailureReason::NoRoute)
        ));
    }

    /// LND `lnwallet/channel.go` `availableCommitmentBalance` and `CalcFeeBuffer`: the reserve
    /// (1% of the capacity) is never spendable, and the opener keeps the fee of the commitment
    /// with one more HTLC at twice the fee rate.
    #[test]
    fn reserve_commitment_fee_and_fee_buffer_are_not_spendable() {
        let mut channel = Channel::open(
            1,
            [0, 1],
            1_000_000,
            1_000_000_000,
            ChannelPolicy::default(),
        )
        .unwrap();
        // 1 000 000 sat less 2 810 sat of commitment fee and 660 sat of anchors: what LND shows
        // as the opener's local balance of a new anchor channel.
        assert_eq!(channel.balance_msat, [996_530_000, 0]);
        assert_eq!(channel.reserve_sat(), 10_000);
        // + 2 810 (the fee paid now) - 10 000 (reserve) - 6 480 (2 x 2 500 sat/kw x 1 296 WU).
        assert_eq!(channel.spendable_msat(0), 982_860_000);
        assert_eq!(channel.spendable_msat(1), 0);
        // An HTLC in flight takes its amount off the balance, and its output weighs in the
        // fee buffer: 2 x 2 500 x 1 468 WU = 7 340 sat.
        channel.add_htlc(0, 500_000_000);
        assert_eq!(channel.balance_msat[0], 496_530_000);
        assert_eq!(channel.spendable_msat(0), 482_000_000);
        channel.resolve_htlc(0, 500_000_000, true);
        assert_eq!(channel.balance_msat, [496_530_000, 500_000_000]);
        assert_eq!(channel.spendable_msat(1), 490_000_000);
        assert_eq!(channel.in_flight_msat(), 0);
        // A dust HTLC has no output: the buffer stays.
        channel.add_htlc(1, 353_000);
        assert_eq!(
            channel.spendable_msat(0),
            496_530_000 + 2_810_000 - 16_480_000
        );
        channel.resolve_htlc(1, 353_000, false);
        assert_eq!(channel.balance_msat, [496_530_000, 500_000_000]);
        // The opener must be able to pay the commitment fee and anchors.
        assert!(Channel::open(2, [0, 1], 100_000, 3_469_999, ChannelPolicy::default()).is_none());
        assert!(Channel::open(2, [0, 1], 100_000, 3_470_000, ChannelPolicy::default()).is_some());
    }

    #[test]
    fn forwarded_htlcs_below_one_satoshi_find_no_route() {
        let ledger = diamond();
        assert!(
            ledger.find_route(0, Some(1), 999, 0).is_ok(),
            "a direct HTLC may be tiny"
        );
        assert!(matches!(
            ledger.find_route(0, Some(3), 999, u64::MAX),
            Err(FailureReason::NoRoute)
        ));
    }

    #[test]
    fn a_payment_to_oneself_goes_round_a_cycle() {
        // 0 - 1 - 2 - 0: out over one channel, back over another.
        let ledger = Ledger::new(
            3,
            vec![
                channel(0, 1, 1_000),
                channel(1, 2, 2_000),
                channel(2, 0, 500),
            ],
        );
        let route = ledger.find_route(0, Some(0), 10_000, 10_000).unwrap();
        // Back through 2 (fee 500) after 1 (fee 2 000), or back through 1 (fee 1 000) after 2
        // (fee 2 000): the first is cheaper.
        assert_eq!(
            path(&route),
            [(0, 1, 12_500), (1, 2, 10_500), (2, 0, 10_000)]
        );
        assert!(matches!(
            ledger.find_route(0, Some(0), 10_000, 2_499),
            Err(FailureReason::NoRoute)
        ));
        // A single channel has no way back.
        let single = Ledger::new(2, vec![channel(0, 1, 0)]);
        assert!(matches!(
            single.find_route(0, Some(0), 10_000, u64::MAX),
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

    /// LND `lnwallet/parameters.go` `DefaultRoutingFeeLimitForAmount` and
    /// `lnrpc.CalculateFeeLimit`, used by SendPayment and SendPaymentSync.
    #[test]
    fn legacy_fee_limits_follow_lnd() {
        assert_eq!(legacy_fee_limit_msat(None, 1_000_000), 1_000_000);
        assert_eq!(legacy_fee_limit_msat(None, 2_000_000), 100_000);
        let mut limit = lightning::FeeLimit::new();
        limit.limit = Some(lightning::fee_limit::Limit::Fixed(3));
        assert_eq!(legacy_fee_limit_msat(Some(&limit), 50_000), 3_000);
        limit.limit = Some(lightning::fee_limit::Limit::FixedMsat(42));
        assert_eq!(legacy_fee_limit_msat(Some(&limit), 50_000), 42);
        limit.limit = Some(lightning::fee_limit::Limit::Percent(10));
        assert_eq!(legacy_fee_limit_msat(Some(&limit), 50_000), 5_000);
    }

    #[test]
    fn hex_is_decoded_as_go_decodes_it() {
        assert_eq!(go_hex_decode("0aFf").unwrap(), vec![0x0a, 0xff]);
        assert_eq!(
            go_hex_decode("not hex").unwrap_err(),
            "encoding/hex: invalid byte: U+006E 'n'"
        );
        assert_eq!(
            go_hex_decode("abc").unwrap_err(),
            "encoding/hex: odd length hex string"
        );
        assert_eq!(
            go_hex_decode("abz").unwrap_err(),
            "encoding/hex: invalid byte: U+007A 'z'"
        );
    }
}
