//! Keysend settlement over loopback: plugins agree on it in the `ilpLightningSettlement`
//! sub-protocol and pay each other by keysend with the receiver's token, with no invoice at all;
//! they fall back to invoices when a node does not accept keysend, from the start (GetInfo's
//! feature bits) or as the payment finds out (INCORRECT_PAYMENT_DETAILS); a keysend with a token
//! nobody handed out credits no one.
#![cfg(feature = "sim")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::lightning::{
    client, fulfil_by_data, hub, is_fulfill, node_client, reject_code, sim_paid, Events,
};
use ilp_plugin_lightning::lnd::sim::{SimNetwork, SimNode};
use ilp_plugin_lightning::lnd::{Keysend, PaymentLimits, PaymentStatus, PublicKey};
use ilp_plugin_lightning::plugin::{LightningPlugin, PluginEvent, PEER_ACCOUNT};
use ilp_plugin_lightning::settlement::offer::KEYSEND_TOKEN_RECORD;

const ADD_INVOICE: &str = "/lnrpc.Lightning/AddInvoice";

/// hub, alice and bob, fully connected; the nodes in `keysend` run with `--accept-keysend`.
fn network(keysend: &[&str]) -> SimNetwork {
    let builder = ["hub", "alice", "bob"]
        .iter()
        .fold(SimNetwork::builder(), |b, n| b.node(n));
    keysend
        .iter()
        .fold(builder, |b, n| b.accept_keysend(n))
        .fully_connected(1_000_000)
        .start()
        .expect("simulated network starts")
}

fn packet(destination: &str, amount: u64, nonce: u8) -> Vec<u8> {
    let fulfillment = [nonce; 32];
    common::ilp::prepare(&fulfillment, destination, amount, 30_000, &fulfillment)
}

fn invoices_added(node: &SimNode) -> u64 {
    node.calls().get(ADD_INVOICE).copied().unwrap_or(0)
}

/// Alice prefunds 1 000 sat and streams 10 × 10 sat to bob through the hub; returns once bob
/// and the hub have booked the hub's payment of 100 sat to bob.
fn prefund_and_stream(
    hub: &LightningPlugin,
    hub_events: &Events,
    alice: &LightningPlugin,
    bob_events: &Events,
) {
    alice.send_money(1_000).expect("alice prefunds");
    hub_events.wait_for_money("alice", 1_000);
    for nonce in 0..10u8 {
        let reply = alice.send_data(&packet("test.hub.bob", 10, nonce)).unwrap();
        assert!(
            is_fulfill(&reply),
            "packet {nonce}: {:?}",
            reject_code(&reply)
        );
    }
    bob_events.wait_for_money(PEER_ACCOUNT, 100);
    hub_events.wait_for_payments("bob", 100_000);
    let bob_book = hub.settlement().unwrap().account("bob").unwrap();
    assert_eq!(
        (
            bob_book.payable_msat,
            bob_book.paying_msat,
            bob_book.paid_msat
        ),
        (0, 0, 100_000)
    );
    let alice_book = hub.settlement().unwrap().account("alice").unwrap();
    assert_eq!(
        (alice_book.received_msat, alice_book.receivable_msat),
        (1_000_000, -900_000)
    );
}

#[test]
fn peers_that_accept_keysend_settle_without_a_single_invoice() {
    let sim = network(&["hub", "alice", "bob"]);
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);
    assert!(
        hub.settlement()
            .unwrap()
            .node_info()
            .unwrap()
            .accepts_keysend
    );

    prefund_and_stream(&hub, &hub_events, &alice, &bob_events);

    for name in ["hub", "alice", "bob"] {
        let node = sim.node(name).unwrap();
        assert_eq!(invoices_added(node), 0, "{name} made invoices");
        let (open, settled, cancelled) = node.invoice_counts();
        assert_eq!((open, cancelled), (0, 0), "{name}");
        // The invoices the receivers hold are those their keysends created on arrival.
        if name != "alice" {
            assert!(settled >= 1, "{name}: {settled} settled");
        }
    }
    let (payments, amount, _) = sim_paid(sim.node("hub").unwrap(), "bob");
    assert!(payments >= 1);
    assert_eq!(amount, 100_000);
    // Bob's books mirror the hub's.
    let bob_side = bob.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(bob_side.received_msat, 100_000);
    assert_eq!(bob_side.receipts, payments);
    // The tokens are per account and stable.
    let store = hub.settlement().unwrap().store();
    let alice_token = store.keysend_token("alice").unwrap();
    assert_ne!(alice_token, store.keysend_token("bob").unwrap());
    assert_eq!(store.keysend_token("alice").unwrap(), alice_token);
}

#[test]
fn a_receiver_whose_node_refuses_keysend_gets_invoices_and_is_paid_with_them() {
    // Bob's node runs without --accept-keysend: he offers no token and stocks the hub with
    // invoices; alice and the hub still settle by keysend.
    let sim = network(&["hub", "alice"]);
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);
    assert!(
        !bob.settlement()
            .unwrap()
            .node_info()
            .unwrap()
            .accepts_keysend
    );

    prefund_and_stream(&hub, &hub_events, &alice, &bob_events);

    assert!(invoices_added(sim.node("bob").unwrap()) > 0);
    assert_eq!(invoices_added(sim.node("hub").unwrap()), 0);
    assert_eq!(invoices_added(sim.node("alice").unwrap()), 0);
    // Bob was credited through his own invoices.
    let bob_side = bob.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(bob_side.received_msat, 100_000);
}

#[test]
fn a_keysend_the_node_refuses_falls_back_to_invoices() {
    // Bob's node advertised keysend when his plugin started, then stopped taking it (LND
    // restarted without --accept-keysend): the hub's keysend fails with
    // INCORRECT_PAYMENT_DETAILS, the hub says it wants invoices, bob sends some, and the hub
    // pays the same debt with one of them.
    let sim = network(&["hub", "alice", "bob"]);
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);
    assert!(
        bob.settlement()
            .unwrap()
            .node_info()
            .unwrap()
            .accepts_keysend
    );
    alice.send_money(1_000).expect("alice prefunds");
    hub_events.wait_for_money("alice", 1_000);
    assert_eq!(invoices_added(sim.node("bob").unwrap()), 0);

    sim.node("bob").unwrap().set_accept_keysend(false);
    let reply = alice.send_data(&packet("test.hub.bob", 25, 1)).unwrap();
    assert!(is_fulfill(&reply), "{:?}", reject_code(&reply));
    let failed = hub_events.wait_for(
        "the refused keysend",
        |e| matches!(e, PluginEvent::PaymentFailed { account, .. } if account == "bob"),
    );
    if let PluginEvent::PaymentFailed { reason, .. } = failed {
        assert!(reason.contains("payee rejected"), "{reason}");
    }
    hub_events.wait_for_payments("bob", 25_000);
    bob_events.wait_for_money(PEER_ACCOUNT, 25);
    assert!(invoices_added(sim.node("bob").unwrap()) > 0);
    let bob_book = hub.settlement().unwrap().account("bob").unwrap();
    assert_eq!(
        (
            bob_book.payable_msat,
            bob_book.paying_msat,
            bob_book.paid_msat,
            bob_book.payments
        ),
        (0, 0, 25_000, 1)
    );
    // The next debt goes by invoice straight away.
    let reply = alice.send_data(&packet("test.hub.bob", 5, 2)).unwrap();
    assert!(is_fulfill(&reply));
    hub_events.wait_for_payments("bob", 5_000);
    assert_eq!(
        hub.settlement().unwrap().account("bob").unwrap().paid_msat,
        30_000
    );
}

#[test]
fn a_keysend_with_an_unknown_token_credits_nobody() {
    let sim = network(&["hub", "alice", "bob"]);
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let (_alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let settlement = hub.settlement().unwrap();
    let token = settlement.store().keysend_token("alice").unwrap();
    let hub_key = PublicKey(sim.node("hub").unwrap().pubkey());
    let alice_node = node_client(sim.node("alice").unwrap());
    let limits = PaymentLimits {
        fee_limit_msat: 10_000,
        timeout: Duration::from_secs(30),
    };
    let keysend = |amount_msat: u64, token: &[u8]| {
        let records = BTreeMap::from([(KEYSEND_TOKEN_RECORD, token.to_vec())]);
        let payment = Keysend::new(hub_key, amount_msat, records).unwrap();
        let outcome = alice_node.keysend(&payment, limits).unwrap();
        assert!(
            matches!(outcome.status, PaymentStatus::Succeeded { .. }),
            "{outcome:?}"
        );
    };
    // A token nobody was given, and one of the wrong length: the node takes the money (it
    // accepts keysend), the books credit no one.
    keysend(5_000, &[0x5a; 32]);
    keysend(6_000, b"short");
    // Alice's real token: credited to alice, once.
    keysend(7_000, &token);
    hub_events.wait_for_money("alice", 7);
    let alice_book = settlement.account("alice").unwrap();
    assert_eq!(
        (
            alice_book.received_msat,
            alice_book.receipts,
            alice_book.receivable_msat
        ),
        (7_000, 1, -7_000)
    );
    let others: Vec<_> = settlement
        .store()
        .accounts()
        .unwrap()
        .into_iter()
        .filter(|(name, book)| name != "alice" && book.received_msat > 0)
        .collect();
    assert!(others.is_empty(), "{others:?}");
}
