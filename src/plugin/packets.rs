//! The packet path of the plugin, free of I/O: how an incoming Prepare is checked, answered and
//! accounted, and how the reply to a Prepare we sent is checked and accounted.
//!
//! Every failure becomes an ILP Reject that says what went wrong; nothing here panics on bad
//! input, and a panicking data handler is caught and answered with T00.

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::ilp::ildcp::{self, IldcpResponse};
use crate::ilp::packet::MAX_MESSAGE_LEN;
use crate::ilp::{
    Address, ErrorCode, MaxPacketAmountDetails, Packet, Prepare, RejectBuilder, Timestamp,
};
use parking_lot::Mutex;

use crate::settlement::hooks::Hold;
use crate::settlement::{PrepareRefused, SettlementHooks};

/// What a data handler returns when it cannot answer with a Fulfill or Reject of its own; the
/// plugin turns it into a Reject carrying the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Retrying will not help: Reject F00 (Bad Request).
    Final(String),
    /// Something went wrong on our side: Reject T00 (Internal Error).
    Internal(String),
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Final(m) => write!(f, "final error: {m}"),
            HandlerError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for HandlerError {}

/// Answers incoming Prepares: gets the serialized Prepare, returns a serialized Fulfill or Reject
/// (or an error that becomes a Reject). Runs on the transport's handler threads, several at once.
pub type DataHandler = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, HandlerError> + Send + Sync>;

/// Told about money received from the peer (in the asset's units), once settlement exists.
pub type MoneyHandler = Arc<dyn Fn(u64) -> Result<(), HandlerError> + Send + Sync>;

/// A serialized Reject. `triggered_by` must be empty or a valid address and `data` short; the
/// message is cut (on a character boundary) to the 8191 bytes a Reject may carry.
pub fn reject(code: ErrorCode, triggered_by: &str, message: &str, data: &[u8]) -> Vec<u8> {
    let mut end = message.len().min(MAX_MESSAGE_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let build = |triggered_by| {
        RejectBuilder {
            code,
            triggered_by,
            message: &message[..end],
            data,
        }
        .build()
    };
    // An unusable `triggered_by` (it comes from configuration) must not cost the Reject.
    build(triggered_by)
        .or_else(|_| build(""))
        .map(|r| r.to_bytes())
        .unwrap_or_default()
}

/// Counts each account's Prepares in the data handler, up to a cap.
pub struct InFlight {
    max: usize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One Prepare's place under an [`InFlight`] cap, given back when dropped.
pub struct InFlightSlot<'a> {
    owner: &'a InFlight,
    account: &'a str,
}

impl InFlight {
    /// A cap of `max` Prepares per account.
    pub fn new(max: usize) -> Self {
        InFlight {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more of `account`'s Prepares, or the cap when it has none left.
    pub fn enter<'a>(&'a self, account: &'a str) -> Result<InFlightSlot<'a>, usize> {
        let mut counts = self.counts.lock();
        let count = counts.entry(account.to_owned()).or_insert(0);
        if *count >= self.max {
            return Err(self.max);
        }
        *count += 1;
        Ok(InFlightSlot {
            owner: self,
            account,
        })
    }

    /// How many of `account`'s Prepares are in the handler now.
    pub fn count(&self, account: &str) -> usize {
        self.counts.lock().get(account).copied().unwrap_or(0)
    }
}

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock();
        if let Some(count) = counts.get_mut(self.account) {
            *count -= 1;
            // An account with nothing in flight takes no memory: accounts come and go.
            if *count == 0 {
                counts.remove(self.account);
            }
        }
    }
}

/// Everything the incoming path needs to know about the account a Prepare came from.
pub struct Incoming<'a> {
    /// Our own ILP address (the Rejects' `triggeredBy`); empty if not known yet.
    pub own_address: &'a str,
    /// The account the Prepare belongs to.
    pub account: &'a str,
    /// Prepares above this amount get F08.
    pub max_packet_amount: Option<u64>,
    /// Caps the Prepares each account has in the data handler at once (T03 past it).
    pub in_flight: Option<&'a InFlight>,
    /// The balance hooks.
    pub hooks: &'a dyn SettlementHooks,
    /// Server role: how to answer IL-DCP for this account. Client role: `None`, and IL-DCP
    /// requests go to the data handler like any other Prepare.
    pub ildcp: Option<IldcpServe<'a>>,
}

/// What a server tells its clients by IL-DCP; a client's address is `<server>.<account>`.
#[derive(Debug, Clone, Copy)]
pub struct IldcpServe<'a> {
    /// The server's own address.
    pub server_address: &'a Address,
    /// The asset code.
    pub asset_code: &'a str,
    /// The asset scale.
    pub asset_scale: u8,
}

impl IldcpServe<'_> {
    /// The answer for `account`, or why there is none (the account is not an address segment).
    pub fn response_for(&self, account: &str) -> Result<IldcpResponse, String> {
        let client_address = self
            .server_address
            .with_suffix(account)
            .map_err(|e| format!("account {account:?} cannot be an ILP address segment: {e}"))?;
        Ok(IldcpResponse {
            client_address,
            asset_scale: self.asset_scale,
            asset_code: self.asset_code.to_owned(),
        })
    }
}

/// The incoming Prepare a data handler answers: whose it is and the hold its amount is
/// reserved under. The hub reads it when it forwards the Prepare to another process, which
/// posts the hold itself when the Fulfill comes (see `plugin::cluster`).
#[cfg(feature = "redis")]
#[derive(Debug, Clone)]
pub(crate) struct PrepareOrigin {
    pub(crate) account: String,
    pub(crate) amount: u64,
    pub(crate) hold: Hold,
}

#[cfg(feature = "redis")]
thread_local! {
    static ANSWERING: std::cell::RefCell<Option<PrepareOrigin>> =
        const { std::cell::RefCell::new(None) };
}

/// While alive, the Prepare the data handler on this thread answers.
#[cfg(feature = "redis")]
struct Answering;

#[cfg(feature = "redis")]
impl Answering {
    fn set(origin: PrepareOrigin) -> Answering {
        ANSWERING.with(|a| *a.borrow_mut() = Some(origin));
        Answering
    }
}

#[cfg(feature = "redis")]
impl Drop for Answering {
    fn drop(&mut self) {
        ANSWERING.with(|a| a.borrow_mut().take());
    }
}

/// The Prepare the data handler running on this thread answers (`None` outside one).
#[cfg(feature = "redis")]
pub(crate) fn answering() -> Option<PrepareOrigin> {
    ANSWERING.with(|a| a.borrow().clone())
}

/// Checks one incoming packet and answers it, calling `handler` when the checks pass.
pub fn answer_prepare(ctx: &Incoming<'_>, packet: &[u8], handler: Option<&DataHandler>) -> Vec<u8> {
    let prepare = match Prepare::parse(packet) {
        Ok(p) => p,
        Err(e) => {
            return reject(
                ErrorCode::F01_INVALID_PACKET,
                ctx.own_address,
                &format!("invalid ILP Prepare: {e}"),
                &[],
            )
        }
    };
    let now = Timestamp::now();
    if let Some(info) = ctx.ildcp {
        if ildcp::is_request(&prepare) {
            if prepare.expires_at() < now {
                return reject(
                    ErrorCode::F00_BAD_REQUEST,
                    ctx.own_address,
                    "IL-DCP request packet is expired.",
                    &[],
                );
            }
            return match info.response_for(ctx.account) {
                Ok(response) => response.to_fulfill_bytes(),
                Err(message) => reject(ErrorCode::F00_BAD_REQUEST, ctx.own_address, &message, &[]),
            };
        }
    }
    if prepare.expires_at() <= now {
        return reject(
            ErrorCode::R00_TRANSFER_TIMED_OUT,
            ctx.own_address,
            &format!("packet expired at {} (now {})", prepare.expires_at(), now),
            &[],
        );
    }
    if let Some(maximum) = ctx.max_packet_amount {
        if prepare.amount() > maximum {
            let details = MaxPacketAmountDetails {
                received: prepare.amount(),
                maximum,
            };
            return reject(
                ErrorCode::F08_AMOUNT_TOO_LARGE,
                ctx.own_address,
                &format!(
                    "packet amount {} is above the maximum of {maximum}",
                    prepare.amount()
                ),
                &details.to_bytes(),
            );
        }
    }
    let Some(handler) = handler else {
        return reject(
            ErrorCode::T00_INTERNAL_ERROR,
            ctx.own_address,
            "no data handler registered",
            &[],
        );
    };
    // Held until the handler answered, on every path out.
    let _slot = match ctx.in_flight.map(|cap| cap.enter(ctx.account)) {
        Some(Err(max)) => {
            return reject(
                ErrorCode::T03_CONNECTOR_BUSY,
                ctx.own_address,
                &format!("this account already has {max} packets in flight"),
                &[],
            )
        }
        Some(Ok(slot)) => Some(slot),
        None => None,
    };
    let expires_at_ms = u64::try_from(prepare.expires_at().unix_millis()).unwrap_or(0);
    let hold = Hold::new(expires_at_ms);
    match ctx
        .hooks
        .on_incoming_prepare(ctx.account, prepare.amount(), &hold)
    {
        Ok(()) => {}
        Err(refused @ PrepareRefused::OverLimit(_)) => {
            return reject(
                ErrorCode::T04_INSUFFICIENT_LIQUIDITY,
                ctx.own_address,
                &refused.to_string(),
                &[],
            )
        }
        Err(refused @ PrepareRefused::Unavailable(_)) => {
            return reject(
                ErrorCode::T00_INTERNAL_ERROR,
                ctx.own_address,
                &refused.to_string(),
                &[],
            )
        }
    }
    let answer = match catch_unwind(AssertUnwindSafe(|| {
        // Only hubs that forward to other processes read it (and pay its allocation).
        #[cfg(feature = "redis")]
        let _answering = Answering::set(PrepareOrigin {
            account: ctx.account.to_owned(),
            amount: prepare.amount(),
            hold,
        });
        handler(packet)
    })) {
        Ok(Ok(reply)) => check_handler_reply(ctx, &prepare, reply),
        Ok(Err(HandlerError::Final(message))) => {
            reject(ErrorCode::F00_BAD_REQUEST, ctx.own_address, &message, &[])
        }
        Ok(Err(HandlerError::Internal(message))) => reject(
            ErrorCode::T00_INTERNAL_ERROR,
            ctx.own_address,
            &message,
            &[],
        ),
        Err(_) => reject(
            ErrorCode::T00_INTERNAL_ERROR,
            ctx.own_address,
            "data handler panicked",
            &[],
        ),
    };
    // A Fulfill goes out only once it is booked: a Fulfill the books missed would be money
    // the peer owes and nobody remembers.
    let answer = if answer.first() == Some(&13) {
        match ctx
            .hooks
            .on_incoming_fulfilled(ctx.account, prepare.amount(), &hold)
        {
            Ok(()) => return answer,
            Err(why) => reject(
                ErrorCode::T00_INTERNAL_ERROR,
                ctx.own_address,
                &format!("cannot book the Fulfill: {why}"),
                &[],
            ),
        }
    } else {
        answer
    };
    ctx.hooks
        .on_incoming_rejected(ctx.account, prepare.amount(), &hold);
    answer
}

/// The handler's reply goes out only if it is a Reject or a Fulfill of this Prepare's condition:
/// a peer would refuse anything else, and our balance would count a payment that never happened.
fn check_handler_reply(ctx: &Incoming<'_>, prepare: &Prepare<'_>, reply: Vec<u8>) -> Vec<u8> {
    let problem = match Packet::parse(&reply) {
        Ok(Packet::Fulfill(f)) if f.fulfills(prepare.execution_condition()) => return reply,
        Ok(Packet::Fulfill(_)) => "its fulfillment does not match the condition".to_owned(),
        Ok(Packet::Reject(_)) => return reply,
        Ok(Packet::Prepare(_)) => "it is a Prepare".to_owned(),
        Err(e) => e.to_string(),
    };
    reject(
        ErrorCode::T00_INTERNAL_ERROR,
        ctx.own_address,
        &format!("data handler returned an invalid reply: {problem}"),
        &[],
    )
}

/// The parts of a Prepare we sent that its reply is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Its amount.
    pub amount: u64,
    /// Its condition.
    pub condition: [u8; 32],
    /// When it expires.
    pub expires_at: Timestamp,
}

impl Sent {
    /// Reads what is needed from a Prepare.
    pub fn of(prepare: &Prepare<'_>) -> Self {
        Sent {
            amount: prepare.amount(),
            condition: *prepare.execution_condition(),
            expires_at: prepare.expires_at(),
        }
    }
}

/// Why a peer's reply to our Prepare is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidReply(pub String);

impl fmt::Display for InvalidReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the peer's reply is not a Fulfill or Reject: {}", self.0)
    }
}

impl std::error::Error for InvalidReply {}

/// Checks the reply to a Prepare we sent to `account` and books it. A Fulfill that comes too
/// late becomes R00, one whose fulfillment does not match F05 (as mini-accounts does): the
/// caller must not pay for either.
pub fn check_reply(
    hooks: &dyn SettlementHooks,
    own_address: &str,
    account: &str,
    sent: &Sent,
    reply: Vec<u8>,
) -> Result<Vec<u8>, InvalidReply> {
    match Packet::parse(&reply) {
        Ok(Packet::Fulfill(fulfill)) => {
            if Timestamp::now() > sent.expires_at {
                hooks.on_outgoing_rejected(account, sent.amount, "R00");
                return Ok(reject(
                    ErrorCode::R00_TRANSFER_TIMED_OUT,
                    own_address,
                    "Packet expired",
                    &[],
                ));
            }
            if !fulfill.fulfills(&sent.condition) {
                hooks.on_outgoing_rejected(account, sent.amount, "F05");
                return Ok(reject(
                    ErrorCode::F05_WRONG_CONDITION,
                    own_address,
                    &format!(
                        "condition and fulfillment don't match. condition={} fulfillment={}",
                        hex::encode(sent.condition),
                        hex::encode(fulfill.fulfillment())
                    ),
                    &[],
                ));
            }
            hooks.on_outgoing_fulfilled(account, sent.amount);
            Ok(reply)
        }
        Ok(Packet::Reject(r)) => {
            hooks.on_outgoing_rejected(account, sent.amount, r.code().as_str());
            Ok(reply)
        }
        Ok(Packet::Prepare(_)) => {
            hooks.on_outgoing_rejected(account, sent.amount, "T00");
            Err(InvalidReply("it is a Prepare".into()))
        }
        Err(e) => {
            hooks.on_outgoing_rejected(account, sent.amount, "T00");
            Err(InvalidReply(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ilp::{condition_of, Address, Fulfill, FulfillBuilder, PrepareBuilder, Reject};
    use crate::settlement::Balances;

    const FULFILLMENT: [u8; 32] = [9; 32];

    fn prepare(amount: u64, expires_in_ms: i64, destination: &str) -> Vec<u8> {
        PrepareBuilder {
            amount,
            expires_at: Timestamp::now().add_millis(expires_in_ms),
            execution_condition: &condition_of(&FULFILLMENT),
            destination,
            data: b"ping",
        }
        .build()
        .unwrap()
        .to_bytes()
    }

    fn fulfilling_handler() -> DataHandler {
        Arc::new(|_: &[u8]| {
            Ok(FulfillBuilder {
                fulfillment: &FULFILLMENT,
                data: b"pong",
            }
            .build()
            .unwrap()
            .to_bytes())
        })
    }

    fn ctx<'a>(balances: &'a Balances, max: Option<u64>) -> Incoming<'a> {
        Incoming {
            own_address: "test.hub",
            account: "alice",
            max_packet_amount: max,
            in_flight: None,
            hooks: balances,
            ildcp: None,
        }
    }

    fn rejected(reply: &[u8]) -> Reject<'_> {
        match Packet::parse(reply).unwrap() {
            Packet::Reject(r) => r,
            other => panic!("expected a Reject, got {other:?}"),
        }
    }

    #[test]
    fn a_good_prepare_reaches_the_handler_and_counts_against_the_peer() {
        let balances = Balances::new(Some(100));
        let reply = answer_prepare(
            &ctx(&balances, None),
            &prepare(7, 30_000, "test.hub.alice.x"),
            Some(&fulfilling_handler()),
        );
        let fulfill = Fulfill::parse(&reply).unwrap();
        assert_eq!(fulfill.data(), b"pong");
        assert_eq!(balances.balance("alice").receivable, 7);
    }

    #[test]
    fn bad_bytes_get_f01_with_the_parse_error() {
        let balances = Balances::new(None);
        let mut bytes = prepare(7, 30_000, "test.hub.alice");
        bytes.truncate(20);
        let reply = answer_prepare(&ctx(&balances, None), &bytes, Some(&fulfilling_handler()));
        let r = rejected(&reply);
        assert_eq!(r.code(), ErrorCode::F01_INVALID_PACKET);
        assert_eq!(r.triggered_by(), "test.hub");
        assert!(
            r.message().starts_with("invalid ILP Prepare"),
            "{}",
            r.message()
        );
        // A Fulfill is not a Prepare either.
        let fulfill = FulfillBuilder {
            fulfillment: &FULFILLMENT,
            data: b"",
        }
        .build()
        .unwrap()
        .to_bytes();
        let r2 = answer_prepare(&ctx(&balances, None), &fulfill, Some(&fulfilling_handler()));
        assert_eq!(rejected(&r2).code(), ErrorCode::F01_INVALID_PACKET);
        assert_eq!(balances.balance("alice").receivable, 0);
    }

    #[test]
    fn expired_prepares_get_r00_and_never_reach_the_handler() {
        let balances = Balances::new(None);
        let called: DataHandler = Arc::new(|_: &[u8]| panic!("must not be called"));
        let reply = answer_prepare(
            &ctx(&balances, None),
            &prepare(1, -1, "test.hub.a"),
            Some(&called),
        );
        assert_eq!(rejected(&reply).code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
    }

    #[test]
    fn above_max_packet_amount_gets_f08_with_the_amounts() {
        let balances = Balances::new(None);
        let reply = answer_prepare(
            &ctx(&balances, Some(10)),
            &prepare(11, 30_000, "test.hub.a"),
            Some(&fulfilling_handler()),
        );
        let r = rejected(&reply);
        assert_eq!(r.code(), ErrorCode::F08_AMOUNT_TOO_LARGE);
        assert_eq!(
            MaxPacketAmountDetails::parse(r.data()).unwrap(),
            MaxPacketAmountDetails {
                received: 11,
                maximum: 10
            }
        );
        let ok = answer_prepare(
            &ctx(&balances, Some(10)),
            &prepare(10, 30_000, "test.hub.a"),
            Some(&fulfilling_handler()),
        );
        assert!(Fulfill::parse(&ok).is_ok());
    }

    #[test]
    fn over_the_credit_limit_gets_t04() {
        let balances = Balances::new(Some(5));
        let handler = fulfilling_handler();
        let c = ctx(&balances, None);
        assert!(Fulfill::parse(&answer_prepare(
            &c,
            &prepare(5, 30_000, "test.a"),
            Some(&handler)
        ))
        .is_ok());
        let reply = answer_prepare(&c, &prepare(1, 30_000, "test.a"), Some(&handler));
        let r = rejected(&reply);
        assert_eq!(r.code(), ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
        assert!(r.message().contains("Exceeded maximum balance"));
        assert_eq!(balances.balance("alice").receivable, 5);
    }

    #[test]
    fn handler_errors_become_f00_or_t00_with_their_message_and_give_the_credit_back() {
        let balances = Balances::new(Some(5));
        let c = ctx(&balances, None);
        let final_error: DataHandler =
            Arc::new(|_: &[u8]| Err(HandlerError::Final("no such invoice".into())));
        let r = answer_prepare(&c, &prepare(5, 30_000, "test.a"), Some(&final_error));
        assert_eq!(rejected(&r).code(), ErrorCode::F00_BAD_REQUEST);
        assert_eq!(rejected(&r).message(), "no such invoice");
        let internal: DataHandler =
            Arc::new(|_: &[u8]| Err(HandlerError::Internal("db down".into())));
        let r = answer_prepare(&c, &prepare(5, 30_000, "test.a"), Some(&internal));
        assert_eq!(rejected(&r).code(), ErrorCode::T00_INTERNAL_ERROR);
        assert_eq!(rejected(&r).message(), "db down");
        let panicking: DataHandler = Arc::new(|_: &[u8]| panic!("boom"));
        let r = answer_prepare(&c, &prepare(5, 30_000, "test.a"), Some(&panicking));
        assert_eq!(rejected(&r).message(), "data handler panicked");
        let wrong: DataHandler = Arc::new(|_: &[u8]| {
            Ok(FulfillBuilder {
                fulfillment: &[1; 32],
                data: b"",
            }
            .build()
            .unwrap()
            .to_bytes())
        });
        let r = answer_prepare(&c, &prepare(5, 30_000, "test.a"), Some(&wrong));
        assert!(rejected(&r)
            .message()
            .contains("does not match the condition"));
        let garbage: DataHandler = Arc::new(|_: &[u8]| Ok(vec![1, 2, 3]));
        let r = answer_prepare(&c, &prepare(5, 30_000, "test.a"), Some(&garbage));
        assert_eq!(rejected(&r).code(), ErrorCode::T00_INTERNAL_ERROR);
        assert_eq!(balances.balance("alice").receivable, 0);
        let none = answer_prepare(&c, &prepare(5, 30_000, "test.a"), None);
        assert_eq!(rejected(&none).message(), "no data handler registered");
    }

    #[test]
    fn ildcp_is_answered_for_the_account_when_serving() {
        let balances = Balances::new(Some(0));
        let info = IldcpResponse {
            client_address: Address::new("test.hub.alice").unwrap(),
            asset_scale: 0,
            asset_code: "BTC".into(),
        };
        let hub = Address::new("test.hub").unwrap();
        let serve = IldcpServe {
            server_address: &hub,
            asset_code: "BTC",
            asset_scale: 0,
        };
        let c = Incoming {
            ildcp: Some(serve),
            ..ctx(&balances, Some(0))
        };
        let request = ildcp::request(Timestamp::now().add_millis(60_000));
        let reply = answer_prepare(&c, &request, None);
        assert_eq!(IldcpResponse::from_reply(&reply).unwrap(), info);
        let stale = ildcp::request(Timestamp::now().add_millis(-1));
        let r = answer_prepare(&c, &stale, None);
        assert_eq!(rejected(&r).code(), ErrorCode::F00_BAD_REQUEST);
        // An account that cannot be an address segment gets F00, not a bad address.
        let odd = Incoming {
            account: "not a segment!",
            ..c
        };
        let r = answer_prepare(&odd, &request, None);
        assert_eq!(rejected(&r).code(), ErrorCode::F00_BAD_REQUEST);
    }

    #[test]
    fn replies_to_our_prepares_are_checked_and_booked() {
        let balances = Balances::new(None);
        let bytes = prepare(4, 30_000, "test.hub.bob");
        let sent = Sent::of(&Prepare::parse(&bytes).unwrap());
        let good = FulfillBuilder {
            fulfillment: &FULFILLMENT,
            data: b"",
        }
        .build()
        .unwrap()
        .to_bytes();
        assert_eq!(
            check_reply(&balances, "test.hub", "bob", &sent, good.clone()).unwrap(),
            good
        );
        assert_eq!(balances.balance("bob").payable, 4);
        let wrong = FulfillBuilder {
            fulfillment: &[0; 32],
            data: b"",
        }
        .build()
        .unwrap()
        .to_bytes();
        let r = check_reply(&balances, "test.hub", "bob", &sent, wrong).unwrap();
        assert_eq!(rejected(&r).code(), ErrorCode::F05_WRONG_CONDITION);
        let late = Sent {
            expires_at: Timestamp::now().add_millis(-1),
            ..sent
        };
        let r = check_reply(&balances, "test.hub", "bob", &late, good).unwrap();
        assert_eq!(rejected(&r).code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
        assert!(check_reply(&balances, "test.hub", "bob", &sent, vec![12, 0]).is_err());
        assert_eq!(balances.balance("bob").payable, 4);
    }

    #[test]
    fn reject_cuts_long_messages_on_a_character_boundary() {
        let long = "é".repeat(5000);
        let r = reject(ErrorCode::T00_INTERNAL_ERROR, "not an address!", &long, &[]);
        let parsed = rejected(&r);
        assert!(parsed.message().len() <= MAX_MESSAGE_LEN);
        assert_eq!(parsed.triggered_by(), "");
    }

    #[test]
    fn an_account_past_its_in_flight_cap_gets_t03_and_its_places_come_back() {
        let balances = Balances::new(None);
        let cap = InFlight::new(2);
        let c = Incoming {
            in_flight: Some(&cap),
            ..ctx(&balances, None)
        };
        let first = cap.enter("alice").unwrap();
        let second = cap.enter("alice").unwrap();
        assert_eq!(cap.count("alice"), 2);
        let reply = answer_prepare(
            &c,
            &prepare(1, 5_000, "test.hub.x"),
            Some(&fulfilling_handler()),
        );
        let r = rejected(&reply);
        assert_eq!(r.code(), ErrorCode::T03_CONNECTOR_BUSY);
        assert_eq!(r.message(), "this account already has 2 packets in flight");
        // Another account is not held up by alice's packets.
        assert!(cap.enter("bob").is_ok());
        drop(first);
        let reply = answer_prepare(
            &c,
            &prepare(1, 5_000, "test.hub.x"),
            Some(&fulfilling_handler()),
        );
        assert!(Packet::parse(&reply).is_ok_and(|p| matches!(p, Packet::Fulfill(_))));
        // The place the handler took is back once it answered; nothing is kept for idle accounts.
        assert_eq!(cap.count("alice"), 1);
        drop(second);
        assert_eq!(cap.count("alice"), 0);
        assert!(cap.counts.lock().is_empty());
    }
}
