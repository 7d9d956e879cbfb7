//! `LightningPlugin` in both roles over loopback: data both ways, IL-DCP, raw BTP that skips the
//! client's own checks, and settlement hooks. (Adapted from H4's first plugin tests.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use ilp_plugin_lightning::btp::{
    BtpClient, ClientConfig, OwnedEntry, Packet as BtpPacket, ProtocolData, ProtocolDataEntry,
    Reply,
};
use ilp_plugin_lightning::ilp::ildcp::{self, IldcpResponse};
use ilp_plugin_lightning::ilp::{Address, ErrorCode, Fulfill, Packet, Reject, Timestamp};
use ilp_plugin_lightning::plugin::{
    HandlerError, Hold, LightningPlugin, PluginError, PrepareRefused, SettlementHooks,
};
use parking_lot::Mutex;

const FULFILLMENT: [u8; 32] = [5; 32];

fn prepare(destination: &str, amount: u64, expires_in_ms: i64) -> Vec<u8> {
    common::ilp::prepare(&FULFILLMENT, destination, amount, expires_in_ms, b"")
}

/// Fulfils with `tag` as data.
fn fulfilling(tag: &'static [u8]) -> impl Fn(&[u8]) -> Result<Vec<u8>, HandlerError> {
    move |_| Ok(common::ilp::fulfill(&FULFILLMENT, tag))
}

fn hub() -> LightningPlugin {
    let hub = LightningPlugin::server(
        "127.0.0.1:0".parse().unwrap(),
        Address::new("test.hub").unwrap(),
    )
    .credit_limit(None)
    .max_packet_amount(1000)
    .asset("XAM", 9)
    .build()
    .unwrap();
    hub.connect().unwrap();
    hub
}

fn url(hub: &LightningPlugin, user: &str) -> String {
    format!("btp+ws://{user}:t-{user}@{}", hub.local_addr().unwrap())
}

fn code_of(reply: &[u8]) -> ErrorCode {
    Reject::parse(reply)
        .unwrap_or_else(|e| panic!("not a Reject ({e}): {reply:02x?}"))
        .code()
}

#[test]
fn data_flows_both_ways_and_ildcp_tells_the_configured_asset() {
    let hub = hub();
    hub.register_data_handler(fulfilling(b"hub")).unwrap();
    let alice = LightningPlugin::client(&url(&hub, "alice"))
        .build()
        .unwrap();
    alice.register_data_handler(fulfilling(b"alice")).unwrap();
    alice.connect().unwrap();

    // IL-DCP again, by hand: the hub answers it, not its data handler.
    let reply = alice
        .send_data(&ildcp::request(Timestamp::now().add_millis(30_000)))
        .unwrap();
    let info = IldcpResponse::from_reply(&reply).unwrap();
    assert_eq!(info.client_address.as_str(), "test.hub.alice");
    assert_eq!((info.asset_code.as_str(), info.asset_scale), ("XAM", 9));

    // Client → the hub's own handler.
    let reply = alice.send_data(&prepare("test.hub", 10, 30_000)).unwrap();
    assert_eq!(Fulfill::parse(&reply).unwrap().data(), b"hub");
    // Hub → client, routed by address.
    let reply = hub
        .send_data(&prepare("test.hub.alice.wallet", 10, 30_000))
        .unwrap();
    assert_eq!(Fulfill::parse(&reply).unwrap().data(), b"alice");
    assert_eq!(hub.balances().unwrap().balance("alice").payable, 10);
    assert_eq!(hub.balances().unwrap().balance("alice").receivable, 10);
    // Above the hub's maximum.
    let reply = alice.send_data(&prepare("test.hub", 1001, 30_000)).unwrap();
    assert_eq!(code_of(&reply), ErrorCode::F08_AMOUNT_TOO_LARGE);
    alice.disconnect();
    hub.disconnect();
}

#[test]
fn raw_btp_past_the_clients_checks_still_gets_rejects() {
    let hub = hub();
    hub.register_data_handler(fulfilling(b"hub")).unwrap();
    let refuse_all =
        |_: &BtpPacket<'_>| Reply::Error(ilp_plugin_lightning::btp::ErrorReply::not_accepted("no"));
    let btp = BtpClient::connect(
        &url(&hub, "raw"),
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        },
        Arc::new(refuse_all),
    )
    .unwrap();
    let ask = |ilp: &[u8]| -> Vec<u8> {
        let reply = btp
            .request(&[ProtocolDataEntry::octets("ilp", ilp)], None, None)
            .unwrap();
        reply.ilp().unwrap().to_vec()
    };
    assert_eq!(
        code_of(&ask(b"\x0c\x05junk")),
        ErrorCode::F01_INVALID_PACKET
    );
    assert_eq!(
        code_of(&ask(&prepare("test.hub", 1, -1000))),
        ErrorCode::R00_TRANSFER_TIMED_OUT
    );
    // A Fulfill is not something to answer.
    let fulfill = common::ilp::fulfill(&FULFILLMENT, b"");
    assert_eq!(code_of(&ask(&fulfill)), ErrorCode::F01_INVALID_PACKET);
    assert!(matches!(
        Packet::parse(&ask(&prepare("test.hub", 1, 5_000))),
        Ok(Packet::Fulfill(_))
    ));
    // Money does not travel in BTP Transfers here, and other sub-protocols are refused.
    assert!(btp.request(&[], Some(42), None).is_err());
    assert!(btp
        .request(&[ProtocolDataEntry::text("custom", "hello")], None, None)
        .is_err());
    btp.disconnect();
    hub.disconnect();
}

/// Counts what settlement would see, and pays by recording.
#[derive(Default)]
struct Recorder {
    paid: Mutex<Vec<(String, u64)>>,
    fulfilled: Mutex<u64>,
}

impl SettlementHooks for Recorder {
    fn on_incoming_prepare(&self, _: &str, _: u64, _: &Hold) -> Result<(), PrepareRefused> {
        Ok(())
    }
    fn on_incoming_rejected(&self, _: &str, _: u64, _: &Hold) {}
    fn on_outgoing_fulfilled(&self, _: &str, amount: u64) {
        *self.fulfilled.lock() += amount;
    }
    fn on_outgoing_rejected(&self, _: &str, _: u64, _: &str) {}
    fn send_money(&self, account: &str, amount: u64) -> Result<(), String> {
        self.paid.lock().push((account.to_owned(), amount));
        Ok(())
    }
}

#[test]
fn send_money_and_the_packet_flow_reach_the_settlement_hooks() {
    let hub = hub();
    hub.register_data_handler(fulfilling(b"hub")).unwrap();
    let recorder = Arc::new(Recorder::default());
    let paying = LightningPlugin::client(&url(&hub, "bob"))
        .settlement_hooks(recorder.clone())
        .build()
        .unwrap();
    assert!(paying.balances().is_none());
    paying.connect().unwrap();
    paying.send_data(&prepare("test.hub", 7, 5_000)).unwrap();
    assert_eq!(*recorder.fulfilled.lock(), 7);
    paying.send_money(7).unwrap();
    assert_eq!(*recorder.paid.lock(), vec![("peer".to_owned(), 7)]);

    // With the built-in balances there is nothing to pay with: a clear error.
    let plain = LightningPlugin::client(&url(&hub, "carl")).build().unwrap();
    plain.connect().unwrap();
    assert!(matches!(
        plain.send_money(1),
        Err(PluginError::Settlement(_))
    ));
    paying.disconnect();
    plain.disconnect();
    hub.disconnect();
}

/// Answers `peeringRequest` with its own key and remembers who connected.
struct Peering {
    key: &'static str,
    connected: Mutex<Vec<String>>,
    disconnected: Mutex<Vec<String>>,
}

impl SettlementHooks for Peering {
    fn on_incoming_prepare(&self, _: &str, _: u64, _: &Hold) -> Result<(), PrepareRefused> {
        Ok(())
    }
    fn on_incoming_rejected(&self, _: &str, _: u64, _: &Hold) {}
    fn on_outgoing_fulfilled(&self, _: &str, _: u64) {}
    fn on_outgoing_rejected(&self, _: &str, _: u64, _: &str) {}
    fn on_connected(&self, account: &str) {
        self.connected.lock().push(account.to_owned());
    }
    fn on_disconnected(&self, account: &str) {
        self.disconnected.lock().push(account.to_owned());
    }
    fn on_message(
        &self,
        account: &str,
        data: &ProtocolData<'_>,
    ) -> Result<Vec<OwnedEntry>, String> {
        match data.get("peeringRequest").and_then(|e| e.data_as_str()) {
            Some(their_key) => Ok(vec![OwnedEntry::text(
                "peeringResponse",
                format!("{} knows {account} as {their_key}", self.key),
            )]),
            None => Err("only peering here".into()),
        }
    }
}

fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn settlement_hooks_see_connections_and_exchange_their_own_messages() {
    let hub_hooks = Arc::new(Peering {
        key: "hub-key",
        connected: Mutex::new(Vec::new()),
        disconnected: Mutex::new(Vec::new()),
    });
    let hub = LightningPlugin::server(
        "127.0.0.1:0".parse().unwrap(),
        Address::new("test.hub").unwrap(),
    )
    .settlement_hooks(hub_hooks.clone())
    .build()
    .unwrap();
    hub.connect().unwrap();
    let client_hooks = Arc::new(Peering {
        key: "dana-key",
        connected: Mutex::new(Vec::new()),
        disconnected: Mutex::new(Vec::new()),
    });
    let dana = LightningPlugin::client(&url(&hub, "dana"))
        .settlement_hooks(client_hooks.clone())
        .build()
        .unwrap();
    dana.connect().unwrap();
    eventually("hub sees dana", || *hub_hooks.connected.lock() == ["dana"]);
    eventually("dana sees the hub", || {
        *client_hooks.connected.lock() == ["peer"]
    });

    // Both directions, answered by the other side's hooks.
    let reply = dana
        .request(
            "peer",
            &[ProtocolDataEntry::text("peeringRequest", "dana-key")],
        )
        .unwrap();
    assert_eq!(reply[0].name, "peeringResponse");
    assert_eq!(reply[0].data, b"hub-key knows dana as dana-key");
    let reply = hub
        .request(
            "dana",
            &[ProtocolDataEntry::text("peeringRequest", "hub-key")],
        )
        .unwrap();
    assert_eq!(reply[0].data, b"dana-key knows peer as hub-key");
    // What the hooks refuse comes back as the peer's BTP Error.
    let err = dana
        .request(
            "peer",
            &[ProtocolDataEntry::text("paymentRequest", "lnbc1...")],
        )
        .unwrap_err();
    match err {
        PluginError::PeerError { code, message, .. } => {
            assert_eq!(code, "F00");
            assert_eq!(message, "only peering here");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(matches!(
        hub.request("nobody", &[ProtocolDataEntry::text("peeringRequest", "x")]),
        Err(PluginError::NotConnected)
    ));

    dana.disconnect();
    eventually("hub sees dana leave", || {
        *hub_hooks.disconnected.lock() == ["dana"]
    });
    hub.disconnect();
}

/// Runs `connect()` of `client` on a thread; returns what it gave, through a channel.
fn connect_in_background(
    client: &Arc<LightningPlugin>,
) -> crossbeam_channel::Receiver<Result<(), PluginError>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let client = client.clone();
    std::thread::spawn(move || {
        let _ = tx.send(client.connect());
    });
    rx
}

/// disconnect() returns, and the connect() it interrupted fails, well before any of the
/// client's own timeouts (a minute each here; the WebSocket handshake's is 10 s).
fn disconnect_cuts_connect_short(
    client: &Arc<LightningPlugin>,
    connecting: crossbeam_channel::Receiver<Result<(), PluginError>>,
) {
    let started = std::time::Instant::now();
    client.disconnect();
    let result = connecting
        .recv_timeout(Duration::from_secs(60))
        .expect("connect() never returned");
    let took = started.elapsed();
    match result {
        Err(PluginError::Transport(why)) => assert!(why.contains("disconnect()"), "{why}"),
        other => panic!("expected connect() to be abandoned, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(8),
        "disconnect() and connect() took {took:?}"
    );
    assert!(!client.is_connected());
}

#[test]
fn disconnect_does_not_wait_behind_a_connect_stuck_in_the_handshake() {
    // A server that accepts and never answers the WebSocket handshake.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = Arc::new(
        LightningPlugin::client(&format!("btp+ws://alice:token@127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let connecting = connect_in_background(&client);
    // Accepted: the client is in its handshake now.
    let (_socket, _) = listener.accept().unwrap();
    disconnect_cuts_connect_short(&client, connecting);
}

#[test]
fn disconnect_does_not_wait_behind_a_connect_waiting_for_its_address() {
    // A server that authenticates the client and never answers its IL-DCP request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (asked_tx, asked) = crossbeam_channel::bounded(1);
    let server = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(socket).unwrap();
        let mut frames = 0;
        while let Ok(message) = ws.read() {
            if let tungstenite::Message::Binary(frame) = message {
                frames += 1;
                if frames == 1 {
                    let id = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
                    let ok = BtpPacket::Response(ilp_plugin_lightning::btp::Response::new(
                        id,
                        ProtocolData::EMPTY,
                    ))
                    .to_bytes();
                    ws.send(tungstenite::Message::Binary(ok)).unwrap();
                } else {
                    let _ = asked_tx.send(());
                }
            }
        }
    });
    let client = Arc::new(
        LightningPlugin::client(&format!("btp+ws://alice:token@127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let connecting = connect_in_background(&client);
    asked
        .recv_timeout(Duration::from_secs(30))
        .expect("the client never asked for its address");
    disconnect_cuts_connect_short(&client, connecting);
    server.join().unwrap();
}
