//! `LightningPlugin` in both roles over loopback: data both ways, routing, IL-DCP, and how
//! handler failures and bad packets become Rejects.

use std::sync::Arc;
use std::time::Duration;

use ilp_plugin_lightning::btp::{ClientConfig, ProtocolDataEntry};
use ilp_plugin_lightning::ilp::ildcp::{self, IldcpResponse};
use ilp_plugin_lightning::ilp::{
    condition_of, Address, ErrorCode, FulfillBuilder, MaxPacketAmountDetails, Packet,
    PrepareBuilder, Timestamp,
};
use ilp_plugin_lightning::plugin::{
    DataHandler, DataHandlerError, LightningPlugin, PluginError, Settlement,
};
use parking_lot::Mutex;

const FULFILLMENT: [u8; 32] = [7; 32];

fn prepare(destination: &str, amount: u64, expires_in_ms: i64, condition: &[u8; 32]) -> Vec<u8> {
    PrepareBuilder {
        amount,
        expires_at: Timestamp::now().add_millis(expires_in_ms),
        execution_condition: condition,
        destination,
        data: b"hi",
    }
    .build()
    .unwrap()
    .to_bytes()
}

fn fulfilling_handler(tag: &'static str) -> DataHandler {
    Arc::new(move |_peer: &str, p| match p.data() {
        b"fail" => Err(DataHandlerError::Final("nope".into())),
        _ => Ok(FulfillBuilder {
            fulfillment: &FULFILLMENT,
            data: tag.as_bytes(),
        }
        .build()
        .unwrap()
        .to_bytes()),
    })
}

fn hub() -> LightningPlugin {
    let plugin = LightningPlugin::builder()
        .server("127.0.0.1:0", Address::new("test.hub").unwrap())
        .max_packet_amount(1000)
        .build()
        .unwrap();
    plugin.connect().unwrap();
    plugin
}

fn client_of(hub: &LightningPlugin, user: &str) -> LightningPlugin {
    let addr = hub.btp_server().unwrap().local_addr();
    let plugin = LightningPlugin::builder()
        .client(format!("btp+ws://{user}:token@{addr}"))
        .client_config(ClientConfig {
            connect_timeout: Duration::from_secs(20),
            ..ClientConfig::default()
        })
        .build()
        .unwrap();
    plugin.connect().unwrap();
    plugin
}

fn expect_reject(bytes: &[u8]) -> (ErrorCode, String, Vec<u8>) {
    match Packet::parse(bytes).unwrap() {
        Packet::Reject(r) => (r.code(), r.message().to_string(), r.data().to_vec()),
        other => panic!("expected a Reject, got {other:?}"),
    }
}

#[test]
fn data_flows_both_ways_with_routing_and_ildcp() {
    let hub = hub();
    hub.register_data_handler(fulfilling_handler("hub"));
    let alice = client_of(&hub, "alice");
    alice.register_data_handler(fulfilling_handler("alice"));
    assert!(alice.is_connected() && hub.is_connected());

    // IL-DCP: the hub tells alice her address.
    let reply = alice
        .send_data(&ildcp::request(Timestamp::now().add_millis(30_000)))
        .unwrap();
    let info = IldcpResponse::from_reply(&reply).unwrap();
    assert_eq!(info.client_address.as_str(), "test.hub.alice");
    assert_eq!((info.asset_code.as_str(), info.asset_scale), ("BTC", 8));

    // Client → hub.
    let condition = condition_of(&FULFILLMENT);
    let reply = alice
        .send_data(&prepare("test.hub", 10, 30_000, &condition))
        .unwrap();
    match Packet::parse(&reply).unwrap() {
        Packet::Fulfill(f) => assert_eq!(f.data(), b"hub"),
        other => panic!("{other:?}"),
    }
    // Hub → client, routed by address.
    let reply = hub
        .send_data(&prepare("test.hub.alice.wallet", 10, 30_000, &condition))
        .unwrap();
    match Packet::parse(&reply).unwrap() {
        Packet::Fulfill(f) => assert_eq!(f.data(), b"alice"),
        other => panic!("{other:?}"),
    }
    // Unknown or disconnected account: F02.
    let (code, _, _) = expect_reject(
        &hub.send_data(&prepare("test.hub.bob", 1, 30_000, &condition))
            .unwrap(),
    );
    assert_eq!(code, ErrorCode::F02_UNREACHABLE);
    let (code, _, _) = expect_reject(
        &hub.send_data(&prepare("test.other", 1, 30_000, &condition))
            .unwrap(),
    );
    assert_eq!(code, ErrorCode::F02_UNREACHABLE);

    alice.disconnect();
    assert!(!alice.is_connected());
    assert!(matches!(
        alice.send_data(&prepare("test.hub", 1, 30_000, &condition)),
        Err(PluginError::NotConnected)
    ));
    hub.disconnect();
}

#[test]
fn failures_become_rejects() {
    let hub = hub();
    let alice = client_of(&hub, "alice");
    let condition = condition_of(&FULFILLMENT);

    // No handler: T00.
    let (code, message, _) = expect_reject(
        &alice
            .send_data(&prepare("test.hub", 1, 30_000, &condition))
            .unwrap(),
    );
    assert_eq!(code, ErrorCode::T00_INTERNAL_ERROR);
    assert!(message.contains("no data handler"), "{message}");

    hub.register_data_handler(fulfilling_handler("hub"));
    // Handler error: F00 with its message.
    let mut failing = prepare("test.hub", 1, 30_000, &condition);
    failing = {
        let p = ilp_plugin_lightning::ilp::Prepare::parse(&failing).unwrap();
        PrepareBuilder {
            amount: p.amount(),
            expires_at: p.expires_at(),
            execution_condition: p.execution_condition(),
            destination: p.destination(),
            data: b"fail",
        }
        .build()
        .unwrap()
        .to_bytes()
    };
    let (code, message, _) = expect_reject(&alice.send_data(&failing).unwrap());
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::F00_BAD_REQUEST, "nope")
    );

    // Temporary handler error: T00.
    hub.register_data_handler(Arc::new(|_: &str, _: &_| {
        Err(DataHandlerError::Temporary("busy".into()))
    }));
    let (code, message, _) = expect_reject(
        &alice
            .send_data(&prepare("test.hub", 1, 30_000, &condition))
            .unwrap(),
    );
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::T00_INTERNAL_ERROR, "busy")
    );
    hub.register_data_handler(fulfilling_handler("hub"));

    // Too large: F08 with the details.
    let (code, _, data) = expect_reject(
        &alice
            .send_data(&prepare("test.hub", 5000, 30_000, &condition))
            .unwrap(),
    );
    assert_eq!(code, ErrorCode::F08_AMOUNT_TOO_LARGE);
    assert_eq!(
        MaxPacketAmountDetails::parse(&data).unwrap(),
        MaxPacketAmountDetails {
            received: 5000,
            maximum: 1000
        }
    );

    // A Fulfill that does not match the condition: F05.
    let (code, _, _) = expect_reject(
        &alice
            .send_data(&prepare("test.hub", 1, 30_000, &[1; 32]))
            .unwrap(),
    );
    assert_eq!(code, ErrorCode::F05_WRONG_CONDITION);

    // Already expired: R00 without asking the peer.
    let (code, _, _) = expect_reject(
        &alice
            .send_data(&prepare("test.hub", 1, -1000, &condition))
            .unwrap(),
    );
    assert_eq!(code, ErrorCode::R00_TRANSFER_TIMED_OUT);

    // Straight over BTP, past the client's own checks: bad ILP gets F01, expired gets R00.
    let btp = alice.btp_client().unwrap();
    let reply = btp
        .request(
            &[ProtocolDataEntry::octets("ilp", b"\x0c\x05junk")],
            None,
            None,
        )
        .unwrap();
    assert_eq!(
        expect_reject(reply.ilp().unwrap()).0,
        ErrorCode::F01_INVALID_PACKET
    );
    let expired = prepare("test.hub", 1, -1000, &condition);
    let reply = btp
        .request(&[ProtocolDataEntry::octets("ilp", &expired)], None, None)
        .unwrap();
    assert_eq!(
        expect_reject(reply.ilp().unwrap()).0,
        ErrorCode::R00_TRANSFER_TIMED_OUT
    );

    // A handler slower than the packet's expiry: R00 at the sender.
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    hub.register_data_handler(Arc::new(move |_: &str, _: &_| {
        // Held until the sender has given up on the packet.
        let _ = release_rx.recv_timeout(Duration::from_secs(20));
        Err(DataHandlerError::Final("too late anyway".into()))
    }));
    let (code, _, _) = expect_reject(
        &alice
            .send_data(&prepare("test.hub", 1, 300, &condition))
            .unwrap(),
    );
    assert_eq!(code, ErrorCode::R00_TRANSFER_TIMED_OUT);
    drop(release_tx);

    // Not a Prepare at all: a typed error, nothing sent.
    assert!(matches!(
        alice.send_data(b"\x0d\x00"),
        Err(PluginError::InvalidPrepare(_))
    ));
    alice.disconnect();
    hub.disconnect();
}

struct Recorder(Mutex<Vec<(String, u64)>>);

impl Settlement for Recorder {
    fn send_money(&self, peer: &str, amount: u64) -> Result<(), String> {
        self.0.lock().push((peer.to_string(), amount));
        Ok(())
    }
}

#[test]
fn money_goes_through_settlement_and_money_handler() {
    let hub = hub();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    hub.register_money_handler(Arc::new(move |peer: &str, amount| {
        sink.lock().push((peer.to_string(), amount));
        Ok(())
    }));
    let alice = client_of(&hub, "alice");
    // A BTP Transfer reaches the money handler with the account it came from.
    alice
        .btp_client()
        .unwrap()
        .request(&[], Some(42), None)
        .unwrap();
    assert_eq!(*received.lock(), vec![("alice".to_string(), 42)]);
    hub.deregister_money_handler();
    assert!(alice
        .btp_client()
        .unwrap()
        .request(&[], Some(1), None)
        .is_err());

    assert!(matches!(
        alice.send_money(5),
        Err(PluginError::NoSettlement)
    ));
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    let paying = LightningPlugin::builder()
        .client(format!(
            "btp+ws://bob:t@{}",
            hub.btp_server().unwrap().local_addr()
        ))
        .settlement(recorder.clone())
        .build()
        .unwrap();
    paying.connect().unwrap();
    paying.send_money(7).unwrap();
    assert_eq!(*recorder.0.lock(), vec![("server".to_string(), 7)]);
    paying.disconnect();
    alice.disconnect();
    hub.disconnect();
}
