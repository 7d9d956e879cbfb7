//! Test packets: a convention for tests, the demo and the `ilp-lightning client` command to move
//! amounts between plugins without an application protocol on top. **Not a payment protocol.**
//!
//! A test packet is an ILP Prepare whose `data` is its own fulfillment: its execution condition
//! is sha256(data). A receiver that follows the convention fulfils a Prepare when sha256(data)
//! equals the condition and rejects it with F05 otherwise. Every node on the path can read the
//! data and could fulfil the packet itself, so a Fulfill proves nothing about who received it;
//! real payments use a condition only the receiver can meet (STREAM, SPSP).
//!
//! [`send`] also carries the rule the command-line client needs after it prefunds: the server
//! books a prefund when its own node reports the invoice paid, a moment after the client's node
//! reports the payment done, so the client's first packets may meet T04 (over the credit limit)
//! and are worth sending again until they expire.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::packets::reject;
use super::{HandlerError, LightningPlugin, PluginError};
use crate::ilp::{
    condition_of, BuildError, ErrorCode, FulfillBuilder, Packet, Prepare, PrepareBuilder, Timestamp,
};

/// Length of a test packet's data: a 32-byte fulfillment.
pub const FULFILLMENT_LEN: usize = 32;

/// A new test packet of `amount` for `destination` that expires `lifetime` from now, with a
/// fulfillment drawn from the OS's random source.
pub fn prepare(destination: &str, amount: u64, lifetime: Duration) -> Result<Vec<u8>, BuildError> {
    let mut fulfillment = [0u8; FULFILLMENT_LEN];
    // A fulfillment of zeros after a failed draw would still be a valid test packet; the OS
    // source does not fail on the systems the crate runs on.
    let _ = getrandom::getrandom(&mut fulfillment);
    let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
    Ok(PrepareBuilder {
        amount,
        expires_at: Timestamp::now().add_millis(lifetime_ms),
        execution_condition: &condition_of(&fulfillment),
        destination,
        data: &fulfillment,
    }
    .build()?
    .to_bytes())
}

/// How a receiver answered one test packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Its data fulfils it: the serialized Fulfill, and the Prepare's amount.
    Fulfilled {
        /// The Fulfill.
        reply: Vec<u8>,
        /// The amount of the Prepare it fulfils.
        amount: u64,
    },
    /// Not a test packet: the serialized Reject F05.
    Rejected(Vec<u8>),
}

/// Answers one serialized Prepare by the convention. `own_address` is the Reject's
/// `triggered_by`. Something that is not a Prepare is an error (the plugin answers F01 before a
/// handler sees one).
pub fn answer(prepare: &[u8], own_address: &str) -> Result<Answer, HandlerError> {
    let prepare = Prepare::parse(prepare).map_err(|e| HandlerError::Final(e.to_string()))?;
    let fulfillment: Option<&[u8; FULFILLMENT_LEN]> = prepare.data().try_into().ok();
    match fulfillment {
        Some(fulfillment) if condition_of(fulfillment) == *prepare.execution_condition() => {
            let reply = FulfillBuilder {
                fulfillment,
                data: &[],
            }
            .build()
            .map_err(|e| HandlerError::Internal(e.to_string()))?
            .to_bytes();
            Ok(Answer::Fulfilled {
                reply,
                amount: prepare.amount(),
            })
        }
        _ => Ok(Answer::Rejected(reject(
            ErrorCode::F05_WRONG_CONDITION,
            own_address,
            "not a test packet: its data is not its fulfillment",
            &[],
        ))),
    }
}

/// Makes `plugin` a receiver of test packets: registers a data handler that answers by the
/// convention and calls `on_fulfilled` with the amount of each packet it fulfils (before the
/// Fulfill goes back). Fails if a data handler is registered already. The handler holds the
/// plugin weakly.
pub fn receive(
    plugin: &Arc<LightningPlugin>,
    on_fulfilled: impl Fn(u64) + Send + Sync + 'static,
) -> Result<(), PluginError> {
    let weak: Weak<LightningPlugin> = Arc::downgrade(plugin);
    plugin.register_data_handler(move |bytes| {
        let own = weak
            .upgrade()
            .and_then(|p| p.own_address())
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        match answer(bytes, &own)? {
            Answer::Fulfilled { reply, amount } => {
                on_fulfilled(amount);
                Ok(reply)
            }
            Answer::Rejected(reply) => Ok(reply),
        }
    })
}

/// First pause before a Prepare refused with T04 goes again; it doubles up to [`RETRY_MAX`].
const RETRY_START: Duration = Duration::from_millis(20);
/// Longest pause between two tries.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Sends `prepare` through `plugin`. With `retry_t04`, a T04 answer (the peer says we owe it
/// too much: after a prefund, its books may not show the payment yet) sends the same Prepare
/// again after a pause, until another answer comes or the Prepare expires; the last answer is
/// returned. Returns the serialized Fulfill or Reject.
pub fn send(
    plugin: &LightningPlugin,
    prepare: &[u8],
    retry_t04: bool,
) -> Result<Vec<u8>, PluginError> {
    let expires_at = Prepare::parse(prepare)
        .map_err(PluginError::InvalidPrepare)?
        .expires_at();
    let mut pause = RETRY_START;
    loop {
        let reply = plugin.send_data(prepare)?;
        let t04 = matches!(
            Packet::parse(&reply),
            Ok(Packet::Reject(r)) if r.code() == ErrorCode::T04_INSUFFICIENT_LIQUIDITY
        );
        if !(retry_t04 && t04) {
            return Ok(reply);
        }
        let left_ms = expires_at.unix_millis() - Timestamp::now().unix_millis();
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        // Another try needs time to travel and be answered: give up when too little is left.
        if left <= pause + RETRY_START {
            return Ok(reply);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_packet_is_fulfilled_by_its_data_and_anything_else_gets_f05() {
        let bytes = prepare("test.hub.bob", 42, Duration::from_secs(30)).unwrap();
        let parsed = Prepare::parse(&bytes).unwrap();
        assert_eq!(parsed.data().len(), FULFILLMENT_LEN);
        assert_eq!(parsed.destination(), "test.hub.bob");
        match answer(&bytes, "test.hub.bob").unwrap() {
            Answer::Fulfilled { reply, amount } => {
                assert_eq!(amount, 42);
                let Ok(Packet::Fulfill(f)) = Packet::parse(&reply) else {
                    panic!("not a Fulfill");
                };
                assert_eq!(f.fulfillment(), parsed.data());
            }
            other => panic!("{other:?}"),
        }
        // Two packets never share a fulfillment.
        let other = prepare("test.hub.bob", 42, Duration::from_secs(30)).unwrap();
        assert_ne!(Prepare::parse(&other).unwrap().data(), parsed.data());

        let fulfillment = [9u8; 32];
        let wrong = PrepareBuilder {
            amount: 1,
            expires_at: Timestamp::now().add_millis(30_000),
            execution_condition: &condition_of(&fulfillment),
            destination: "test.hub.bob",
            data: b"not the fulfillment",
        }
        .build()
        .unwrap()
        .to_bytes();
        let Answer::Rejected(reply) = answer(&wrong, "test.hub.bob").unwrap() else {
            panic!("fulfilled a packet whose data is not its fulfillment");
        };
        let Ok(Packet::Reject(r)) = Packet::parse(&reply) else {
            panic!("not a Reject");
        };
        assert_eq!(r.code(), ErrorCode::F05_WRONG_CONDITION);
        assert_eq!(r.triggered_by(), "test.hub.bob");
        assert!(answer(b"\x0c\x00", "x").is_err());
    }
}
