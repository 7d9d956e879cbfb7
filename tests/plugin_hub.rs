//! `LightningPlugin` in both roles over real WebSockets on loopback: a hub routing between two
//! clients, every Reject the packet path makes, the RFC 24 handler rules, events, disconnects.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use ilp_plugin_lightning::ilp::{
    Address, ErrorCode, Fulfill, MaxPacketAmountDetails, Packet, Reject,
};
use ilp_plugin_lightning::plugin::{
    route_between_clients, AccountLimits, HandlerError, LightningPlugin, PluginBuilder,
    PluginError, PluginEvent,
};

const FULFILLMENT: [u8; 32] = [0x42; 32];
const WAIT: Duration = Duration::from_secs(20);

fn prepare(destination: &str, amount: u64, expires_in_ms: i64, data: &[u8]) -> Vec<u8> {
    common::ilp::prepare(&FULFILLMENT, destination, amount, expires_in_ms, data)
}

/// Fulfils, except by the destination's last segment: `final` → F00, `internal` → T00.
fn receiver(prepare: &[u8]) -> Result<Vec<u8>, HandlerError> {
    let Ok(Packet::Prepare(p)) = Packet::parse(prepare) else {
        return Err(HandlerError::Final("not a prepare".into()));
    };
    match p.destination().rsplit('.').next() {
        Some("final") => return Err(HandlerError::Final("no such invoice".into())),
        Some("internal") => return Err(HandlerError::Internal("database down".into())),
        _ => {}
    }
    Ok(common::ilp::fulfill(&FULFILLMENT, p.data()))
}

fn reject_of(reply: &[u8]) -> Reject<'_> {
    Reject::parse(reply).unwrap_or_else(|e| panic!("expected a Reject ({e}): {reply:02x?}"))
}

fn wait_for(events: &Receiver<PluginEvent>, wanted: &PluginEvent) {
    let deadline = Instant::now() + WAIT;
    while let Ok(event) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if &event == wanted {
            return;
        }
    }
    panic!("no {wanted:?} within {WAIT:?}");
}

fn hub(credit: u64, max_packet: u64) -> (Arc<LightningPlugin>, Receiver<PluginEvent>) {
    hub_with(|b| b.credit_limit(Some(credit)).max_packet_amount(max_packet))
}

/// A hub at test.hub routing between its clients, built with `configure`'s options, and its
/// events.
fn hub_with(
    configure: impl FnOnce(PluginBuilder) -> PluginBuilder,
) -> (Arc<LightningPlugin>, Receiver<PluginEvent>) {
    let (tx, rx) = unbounded();
    let builder = LightningPlugin::server(
        "127.0.0.1:0".parse().unwrap(),
        Address::new("test.hub").unwrap(),
    )
    .on_event(move |e| {
        let _ = tx.send(e.clone());
    });
    let hub = Arc::new(configure(builder).build().unwrap());
    route_between_clients(&hub).unwrap();
    hub.connect().unwrap();
    (hub, rx)
}

fn client(hub: &LightningPlugin, user: &str) -> LightningPlugin {
    let port = hub.local_addr().unwrap().port();
    LightningPlugin::client(&format!("btp+ws://{user}:secret-{user}@127.0.0.1:{port}"))
        .build()
        .unwrap()
}

/// A hub with credit limit 100 and maximum packet 50, alice and bob connected to it, bob
/// answering with [`receiver`].
struct Pair {
    hub: Arc<LightningPlugin>,
    hub_events: Receiver<PluginEvent>,
    alice: LightningPlugin,
    bob: LightningPlugin,
}

fn pair() -> Pair {
    let (hub, hub_events) = hub(100, 50);
    let alice = client(&hub, "alice");
    let bob = client(&hub, "bob");
    bob.register_data_handler(receiver).unwrap();
    alice.connect().unwrap();
    bob.connect().unwrap();
    wait_for(&hub_events, &PluginEvent::AccountConnected("alice".into()));
    wait_for(&hub_events, &PluginEvent::AccountConnected("bob".into()));
    Pair {
        hub,
        hub_events,
        alice,
        bob,
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.alice.disconnect();
        self.bob.disconnect();
        self.hub.disconnect();
    }
}

#[test]
fn a_hub_routes_between_its_clients_with_data_intact() {
    let (hub, hub_events) = hub(100, 50);
    let alice = client(&hub, "alice");
    let bob = client(&hub, "bob");
    bob.register_data_handler(receiver).unwrap();
    assert!(matches!(
        alice.send_data(&prepare("test.hub.bob", 1, 5_000, b"")),
        Err(PluginError::NotConnected)
    ));
    alice.connect().unwrap();
    bob.connect().unwrap();
    wait_for(&hub_events, &PluginEvent::AccountConnected("alice".into()));
    wait_for(&hub_events, &PluginEvent::AccountConnected("bob".into()));
    assert_eq!(alice.own_address().unwrap().as_str(), "test.hub.alice");
    assert_eq!(bob.own_address().unwrap().as_str(), "test.hub.bob");
    let mut accounts = hub.connected_accounts();
    accounts.sort();
    assert_eq!(accounts, ["alice", "bob"]);

    let reply = alice
        .send_data(&prepare("test.hub.bob.shop", 10, 5_000, b"order 1"))
        .unwrap();
    assert_eq!(Fulfill::parse(&reply).unwrap().data(), b"order 1");
    let balances = hub.balances().unwrap();
    assert_eq!(balances.balance("alice").receivable, 10);
    assert_eq!(balances.balance("bob").payable, 10);

    bob.disconnect();
    alice.disconnect();
    hub.disconnect();
    assert!(!hub.is_connected());
}

#[test]
fn the_receivers_errors_reach_the_sender_with_their_messages_and_cost_nothing() {
    let p = pair();
    let r = p
        .alice
        .send_data(&prepare("test.hub.bob.final", 1, 5_000, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::F00_BAD_REQUEST);
    assert_eq!(reject_of(&r).message(), "no such invoice");
    assert_eq!(reject_of(&r).triggered_by(), "test.hub.bob");
    let r = p
        .alice
        .send_data(&prepare("test.hub.bob.internal", 1, 5_000, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::T00_INTERNAL_ERROR);
    assert_eq!(reject_of(&r).message(), "database down");
    let balances = p.hub.balances().unwrap();
    assert_eq!(balances.balance("alice").receivable, 0);
    assert_eq!(balances.balance("bob").payable, 0);
}

#[test]
fn a_destination_nobody_holds_gets_f02_from_the_hub() {
    let p = pair();
    for destination in ["test.hub.carol.x", "test.elsewhere.x"] {
        let r = p
            .alice
            .send_data(&prepare(destination, 1, 5_000, b""))
            .unwrap();
        assert_eq!(
            reject_of(&r).code(),
            ErrorCode::F02_UNREACHABLE,
            "{destination}"
        );
        assert_eq!(reject_of(&r).triggered_by(), "test.hub", "{destination}");
    }
}

#[test]
fn a_packet_above_the_maximum_gets_f08_with_the_amounts() {
    let p = pair();
    let r = p
        .alice
        .send_data(&prepare("test.hub.bob.x", 51, 5_000, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::F08_AMOUNT_TOO_LARGE);
    assert_eq!(
        MaxPacketAmountDetails::parse(reject_of(&r).data()).unwrap(),
        MaxPacketAmountDetails {
            received: 51,
            maximum: 50
        }
    );
    // The maximum itself passes.
    let reply = p
        .alice
        .send_data(&prepare("test.hub.bob.x", 50, 5_000, b""))
        .unwrap();
    assert!(Fulfill::parse(&reply).is_ok());
}

#[test]
fn the_credit_limit_is_reached_exactly_then_t04() {
    let p = pair();
    for amount in [50, 40, 10] {
        let reply = p
            .alice
            .send_data(&prepare("test.hub.bob.x", amount, 5_000, b""))
            .unwrap();
        assert!(Fulfill::parse(&reply).is_ok(), "{amount}");
    }
    let r = p
        .alice
        .send_data(&prepare("test.hub.bob.x", 1, 5_000, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
    let balances = p.hub.balances().unwrap();
    assert_eq!(balances.balance("alice").receivable, 100);
    assert_eq!(balances.balance("bob").payable, 100);
}

/// The receiver holds the Prepare past its expiry: the sender gets R00 from the hub while the
/// receiver's handler is still running (the test releases it only after the R00 came back), and
/// the Fulfill it sends late moves no money.
#[test]
fn a_receiver_slower_than_the_expiry_gets_the_sender_r00_and_its_late_fulfill_counts_for_nothing() {
    let p = pair();
    let (entered_tx, entered_rx) = unbounded::<()>();
    let (release_tx, release_rx) = unbounded::<()>();
    let (answered_tx, answered_rx) = unbounded::<()>();
    p.alice
        .register_data_handler(move |prepare| {
            let _ = entered_tx.send(());
            let _ = release_rx.recv_timeout(WAIT);
            let reply = receiver(prepare);
            let _ = answered_tx.send(());
            reply
        })
        .unwrap();
    let r = p
        .bob
        .send_data(&prepare("test.hub.alice.slow", 1, 2_000, b""))
        .unwrap();
    entered_rx
        .try_recv()
        .expect("alice's handler got the Prepare before the R00");
    assert!(
        answered_rx.try_recv().is_err(),
        "the R00 came while alice's handler was still holding the Prepare"
    );
    assert_eq!(reject_of(&r).code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
    release_tx.send(()).unwrap();
    answered_rx
        .recv_timeout(WAIT)
        .expect("alice's handler answered once released");
    // The late Fulfill went to a hub that had already given up: only the packet sent after it
    // is booked.
    p.alice.deregister_data_handler();
    p.alice.register_data_handler(receiver).unwrap();
    let reply = p
        .bob
        .send_data(&prepare("test.hub.alice.x", 2, 5_000, b""))
        .unwrap();
    assert!(Fulfill::parse(&reply).is_ok());
    let balances = p.hub.balances().unwrap();
    assert_eq!(balances.balance("bob").receivable, 2);
    assert_eq!(balances.balance("alice").payable, 2);
}

#[test]
fn an_expired_prepare_never_leaves_and_garbage_is_a_typed_error() {
    let p = pair();
    let (seen_tx, seen_rx) = unbounded::<()>();
    p.alice
        .register_data_handler(move |prepare| {
            let _ = seen_tx.send(());
            receiver(prepare)
        })
        .unwrap();
    let r = p
        .bob
        .send_data(&prepare("test.hub.alice", 1, -10, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
    assert!(matches!(
        p.bob.send_data(&[13, 1, 0]),
        Err(PluginError::InvalidPrepare(_))
    ));
    // A live one does reach alice, so the expired one would have been seen first had it left.
    let reply = p
        .bob
        .send_data(&prepare("test.hub.alice", 1, 5_000, b""))
        .unwrap();
    assert!(Fulfill::parse(&reply).is_ok());
    assert_eq!(seen_rx.try_iter().count(), 1);
}

#[test]
fn a_client_that_left_gets_f02_and_the_hub_notices() {
    let p = pair();
    p.alice.disconnect();
    assert!(!p.alice.is_connected());
    wait_for(
        &p.hub_events,
        &PluginEvent::AccountDisconnected("alice".into()),
    );
    assert!(!p.hub.connected_accounts().contains(&"alice".to_string()));
    let r = p
        .bob
        .send_data(&prepare("test.hub.alice.x", 1, 5_000, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::F02_UNREACHABLE);
}

#[test]
fn handler_registration_follows_rfc_24() {
    let (hub, _events) = hub(0, 10);
    let c = client(&hub, "reg");
    c.register_data_handler(receiver).unwrap();
    assert!(matches!(
        c.register_data_handler(receiver),
        Err(PluginError::DataHandlerAlreadyRegistered)
    ));
    c.deregister_data_handler();
    c.deregister_data_handler();
    c.register_data_handler(receiver).unwrap();
    c.register_money_handler(|_| Ok(())).unwrap();
    assert!(matches!(
        c.register_money_handler(|_| Ok(())),
        Err(PluginError::MoneyHandlerAlreadyRegistered)
    ));
    c.deregister_money_handler();
    assert!(!c.has_money_handler());
    assert!(matches!(
        c.money_received(3),
        Err(PluginError::MoneyHandler(_))
    ));
    let (paid_tx, paid_rx) = unbounded();
    c.register_money_handler(move |amount| {
        paid_tx.send(amount).unwrap();
        if amount > 100 {
            return Err(HandlerError::Final("too much".into()));
        }
        Ok(())
    })
    .unwrap();
    assert!(c.has_money_handler());
    c.money_received(3).unwrap();
    assert_eq!(paid_rx.try_recv(), Ok(3));
    let refused = c.money_received(101).unwrap_err();
    assert!(refused.to_string().contains("too much"), "{refused}");

    // The hub is a server: it does not send money, and it has its handler already.
    assert!(matches!(
        hub.send_money(5),
        Err(PluginError::Unsupported(_))
    ));
    assert!(matches!(
        route_between_clients(&hub),
        Err(PluginError::DataHandlerAlreadyRegistered)
    ));
    // Without settlement the client cannot pay yet, and says so.
    c.connect().unwrap();
    let err = c.send_money(5).unwrap_err();
    assert!(err.to_string().contains("settlement"), "{err}");
    c.send_money(0).unwrap();

    // Credit limit 0: a client must prefund, so any amount is refused with T04 (zero passes).
    let other = client(&hub, "zero");
    other.register_data_handler(receiver).unwrap();
    other.connect().unwrap();
    let r = c
        .send_data(&prepare("test.hub.zero.x", 1, 5_000, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
    let r = c
        .send_data(&prepare("test.hub.zero.x", 0, 5_000, b""))
        .unwrap();
    assert!(Fulfill::parse(&r).is_ok());
}

#[test]
fn client_events_report_connect_and_a_refused_token_is_an_error() {
    let (hub, _events) = hub(10, 10);
    let port = hub.local_addr().unwrap().port();
    let (tx, rx) = unbounded();
    let c = LightningPlugin::client(&format!("btp+ws://dave:one@127.0.0.1:{port}"))
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .build()
        .unwrap();
    c.connect().unwrap();
    wait_for(&rx, &PluginEvent::Connected);
    assert!(c.is_connected());
    c.disconnect();

    let impostor = LightningPlugin::client(&format!("btp+ws://dave:two@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let err = impostor.connect().unwrap_err();
    assert!(matches!(err, PluginError::PeerError { .. }), "{err}");
    assert!(!impostor.is_connected());

    assert!(matches!(
        LightningPlugin::client("http://nope").build(),
        Err(PluginError::Config(_))
    ));
}

#[test]
fn a_client_vanishing_mid_request_gets_the_sender_a_t01_not_a_hang() {
    let (hub, hub_events) = hub(100, 100);
    let alice = client(&hub, "alice");
    let bob = client(&hub, "bob");
    let (entered_tx, entered_rx) = unbounded::<()>();
    let (release_tx, release_rx) = unbounded::<()>();
    bob.register_data_handler(move |_| {
        let _ = entered_tx.send(());
        // Blocks until the test lets it go (or the test ends).
        let _ = release_rx.recv();
        Err(HandlerError::Internal("too late".into()))
    })
    .unwrap();
    alice.connect().unwrap();
    bob.connect().unwrap();
    wait_for(&hub_events, &PluginEvent::AccountConnected("bob".into()));
    let alice = Arc::new(alice);
    let sender = {
        let alice = alice.clone();
        common::threads::spawn("sender", move || {
            alice.send_data(&prepare("test.hub.bob.x", 1, 20_000, b""))
        })
    };
    entered_rx
        .recv_timeout(WAIT)
        .expect("bob's handler was not reached");
    // Bob disconnects while its handler still holds the Prepare; its connection closes first.
    let closer = common::threads::spawn("closer", move || bob.disconnect());
    let reply = sender.join().unwrap().unwrap();
    drop(release_tx);
    closer.join().unwrap();
    assert_eq!(reject_of(&reply).code(), ErrorCode::T01_PEER_UNREACHABLE);
    assert_eq!(reject_of(&reply).triggered_by(), "test.hub");
    // Alice's credit came back with the Reject.
    assert_eq!(hub.balances().unwrap().balance("alice").receivable, 0);
}

#[test]
fn a_client_reconnects_when_its_hub_comes_back() {
    let (first, _events) = hub(100, 100);
    let listen = first.local_addr().unwrap();
    let (tx, rx) = unbounded();
    let c = LightningPlugin::client(&format!("btp+ws://erin:secret@{listen}"))
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .build()
        .unwrap();
    c.connect().unwrap();
    wait_for(&rx, &PluginEvent::Connected);
    first.disconnect();
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(PluginEvent::Disconnected(_)) => break,
            Ok(_) => {}
            Err(e) => panic!("no Disconnected event: {e}"),
        }
    }
    // Between connections, sending is a clear error rather than a Reject.
    assert!(matches!(
        c.send_data(&prepare("test.hub.erin", 0, 5_000, b"")),
        Err(PluginError::NotConnected)
    ));

    // The hub comes back on the same address; the client finds it by itself.
    let second = Arc::new(
        LightningPlugin::server(listen, Address::new("test.hub").unwrap())
            .credit_limit(Some(100))
            .build()
            .unwrap(),
    );
    second.register_data_handler(receiver).unwrap();
    second.connect().unwrap();
    wait_for(&rx, &PluginEvent::Connected);
    let reply = c
        .send_data(&prepare("test.hub.x", 1, 5_000, b"again"))
        .unwrap();
    assert_eq!(Fulfill::parse(&reply).unwrap().data(), b"again");
    assert_eq!(c.own_address().unwrap().as_str(), "test.hub.erin");
    c.disconnect();
    second.disconnect();
}

/// Eight threads race one account's Prepares through the hub against its credit limit, half of
/// them rejected downstream: whatever the interleaving, the hub's books equal what was actually
/// fulfilled (no credit lost to a Reject, none granted twice), and never pass the limit.
#[test]
fn racing_prepares_never_break_the_books_or_the_credit_limit() {
    const LIMIT: u64 = 300;
    const THREADS: usize = 8;
    const PER_THREAD: usize = 100;
    let (hub, hub_events) = hub(LIMIT, 10);
    let alice = Arc::new(client(&hub, "alice"));
    let bob = client(&hub, "bob");
    bob.register_data_handler(receiver).unwrap();
    alice.connect().unwrap();
    bob.connect().unwrap();
    wait_for(&hub_events, &PluginEvent::AccountConnected("bob".into()));

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let alice = Arc::clone(&alice);
            common::threads::spawn(&format!("racer-{t}"), move || {
                let (mut fulfilled, mut rejected_downstream, mut refused) = (0u64, 0u64, 0u64);
                for i in 0..PER_THREAD {
                    // Odd packets are refused by bob's handler (F00), even ones fulfilled.
                    let destination = if i % 2 == 0 {
                        "test.hub.bob.ok"
                    } else {
                        "test.hub.bob.final"
                    };
                    let reply = alice
                        .send_data(&prepare(destination, 1, 10_000, b""))
                        .unwrap();
                    match Packet::parse(&reply).unwrap() {
                        Packet::Fulfill(_) => fulfilled += 1,
                        Packet::Reject(r) if r.code() == ErrorCode::F00_BAD_REQUEST => {
                            rejected_downstream += 1
                        }
                        Packet::Reject(r) if r.code() == ErrorCode::T04_INSUFFICIENT_LIQUIDITY => {
                            refused += 1
                        }
                        other => panic!("unexpected reply {other:?}"),
                    }
                }
                (fulfilled, rejected_downstream, refused)
            })
        })
        .collect();
    let (mut fulfilled, mut rejected, mut refused) = (0, 0, 0);
    for worker in workers {
        let (f, r, t) = worker.join().unwrap();
        fulfilled += f;
        rejected += r;
        refused += t;
    }
    assert_eq!(
        fulfilled + rejected + refused,
        (THREADS * PER_THREAD) as u64
    );
    assert_eq!(
        fulfilled, LIMIT,
        "the limit is reached exactly, never passed"
    );
    assert!(refused > 0);
    let balances = hub.balances().unwrap();
    assert_eq!(i128::from(fulfilled), balances.balance("alice").receivable);
    assert_eq!(i128::from(fulfilled), balances.balance("bob").payable);

    bob.disconnect();
    alice.disconnect();
    hub.disconnect();
}

/// A hub with `max_in_flight` and `handler_threads` set, routing between its clients.
/// Alice fills her two places in a hub of four handler threads with Prepares bob holds: her
/// third gets T03 at once, while carol's packets to dave go through as if alice were not there.
#[test]
fn one_client_cannot_occupy_the_hubs_threads_past_its_in_flight_cap() {
    let (hub, hub_events) = hub_with(|b| b.credit_limit(None).max_in_flight(2).handler_threads(4));
    let (alice, bob, carol, dave) = (
        Arc::new(client(&hub, "alice")),
        client(&hub, "bob"),
        client(&hub, "carol"),
        client(&hub, "dave"),
    );
    let (entered_tx, entered_rx) = unbounded::<()>();
    let (release_tx, release_rx) = unbounded::<()>();
    bob.register_data_handler(move |prepare| {
        let _ = entered_tx.send(());
        let _ = release_rx.recv_timeout(WAIT);
        receiver(prepare)
    })
    .unwrap();
    dave.register_data_handler(receiver).unwrap();
    for c in [&*alice, &bob, &carol, &dave] {
        c.connect().unwrap();
    }
    for name in ["alice", "bob", "carol", "dave"] {
        wait_for(&hub_events, &PluginEvent::AccountConnected(name.into()));
    }
    let held: Vec<_> = (0..2)
        .map(|i| {
            let alice = alice.clone();
            common::threads::spawn(&format!("held-{i}"), move || {
                alice.send_data(&prepare("test.hub.bob.x", 1, 20_000, b""))
            })
        })
        .collect();
    for _ in 0..2 {
        entered_rx
            .recv_timeout(WAIT)
            .expect("bob's handler got both of alice's Prepares");
    }
    let r = alice
        .send_data(&prepare("test.hub.bob.x", 1, 20_000, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::T03_CONNECTOR_BUSY);
    assert_eq!(reject_of(&r).triggered_by(), "test.hub");
    assert!(
        entered_rx.try_recv().is_err(),
        "the third never reached bob"
    );
    for i in 0..10 {
        let reply = carol
            .send_data(&prepare("test.hub.dave.x", 1, 5_000, &[i]))
            .unwrap();
        assert_eq!(Fulfill::parse(&reply).unwrap().data(), [i]);
    }
    drop(release_tx);
    for sender in held {
        let reply = sender.join().unwrap().unwrap();
        assert!(Fulfill::parse(&reply).is_ok());
    }
    // Her places are back.
    let bob_free = alice
        .send_data(&prepare("test.hub.bob.x", 1, 20_000, b""))
        .unwrap();
    assert!(Fulfill::parse(&bob_free).is_ok());
    let balances = hub.balances().unwrap();
    assert_eq!(balances.balance("alice").receivable, 3);
    assert_eq!(balances.balance("carol").receivable, 10);
    for c in [&*alice, &bob, &carol, &dave] {
        c.disconnect();
    }
    hub.disconnect();
}

/// The hub forwards a Prepare expiring a second earlier than the one it got, so that its own
/// wait ends first; one with less than that left gets R02 from the hub and goes nowhere.
#[test]
fn a_forwarded_prepare_expires_a_margin_before_the_incoming_one() {
    let p = pair();
    let (seen_tx, seen_rx) = unbounded();
    p.bob.deregister_data_handler();
    p.bob
        .register_data_handler(move |prepare| {
            if let Ok(Packet::Prepare(parsed)) = Packet::parse(prepare) {
                let _ = seen_tx.send(parsed.expires_at());
            }
            receiver(prepare)
        })
        .unwrap();
    let sent = prepare("test.hub.bob.x", 1, 10_000, b"");
    let Ok(Packet::Prepare(original)) = Packet::parse(&sent) else {
        unreachable!()
    };
    let reply = p.alice.send_data(&sent).unwrap();
    assert!(Fulfill::parse(&reply).is_ok());
    assert_eq!(
        seen_rx.try_recv().unwrap(),
        original.expires_at().add_millis(-1_000)
    );

    let r = p
        .alice
        .send_data(&prepare("test.hub.bob.x", 1, 900, b""))
        .unwrap();
    assert_eq!(reject_of(&r).code(), ErrorCode::R02_INSUFFICIENT_TIMEOUT);
    assert_eq!(reject_of(&r).triggered_by(), "test.hub");
    assert!(seen_rx.try_recv().is_err(), "bob never saw it");
    assert_eq!(p.hub.balances().unwrap().balance("alice").receivable, 1);
}

#[test]
fn unused_accounts_that_owe_nothing_expire_and_free_their_place() {
    let expiry = Duration::from_millis(300);
    let (tx, events) = unbounded();
    let hub = Arc::new(
        LightningPlugin::server(
            "127.0.0.1:0".parse().unwrap(),
            Address::new("test.hub").unwrap(),
        )
        .credit_limit(Some(100))
        .account_limits(AccountLimits {
            max_accounts: 3,
            expire_unused_after: Some(expiry),
            ..AccountLimits::default()
        })
        .on_event(move |e| {
            let _ = tx.send(e.clone());
        })
        .build()
        .unwrap(),
    );
    route_between_clients(&hub).unwrap();
    hub.connect().unwrap();
    // alice pays bob through the hub: both have balances with it. idle has none.
    let alice = client(&hub, "alice");
    let bob = client(&hub, "bob");
    let idle = client(&hub, "idle");
    bob.register_data_handler(receiver).unwrap();
    for c in [&alice, &bob, &idle] {
        c.connect().unwrap();
    }
    for name in ["alice", "bob", "idle"] {
        wait_for(&events, &PluginEvent::AccountConnected(name.into()));
    }
    let reply = alice
        .send_data(&prepare("test.hub.bob", 10, 5_000, b""))
        .unwrap();
    Fulfill::parse(&reply).unwrap();
    for c in [&alice, &bob, &idle] {
        c.disconnect();
    }
    for name in ["alice", "bob", "idle"] {
        wait_for(&events, &PluginEvent::AccountDisconnected(name.into()));
    }
    // The hub is full: a new account is refused while idle's time is not up.
    let refused = |name: &str| match client(&hub, name).connect() {
        Err(PluginError::PeerError { message, .. }) => message,
        other => panic!("expected {name} refused, got {other:?}"),
    };
    let early = refused("carol");
    assert!(early.contains("limit of 3 accounts"), "{early}");
    // Once it is (the clock is what is under test), idle is forgotten and carol takes its place;
    // alice and bob, who have balances, are kept, so dave is refused.
    std::thread::sleep(expiry + Duration::from_millis(50));
    let carol = client(&hub, "carol");
    carol.connect().unwrap();
    let late = refused("dave");
    assert!(late.contains("limit of 3 accounts"), "{late}");
    carol.disconnect();
    // alice's binding is still there: another token for her is refused as such.
    let port = hub.local_addr().unwrap().port();
    let impostor = LightningPlugin::client(&format!("btp+ws://alice:other-token@127.0.0.1:{port}"))
        .build()
        .unwrap();
    match impostor.connect() {
        Err(PluginError::PeerError { message, .. }) => {
            assert!(message.contains("incorrect token"), "{message}")
        }
        other => panic!("expected the impostor refused, got {other:?}"),
    }
    hub.disconnect();
}
