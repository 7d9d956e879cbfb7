//! Lightning settlement end to end over loopback: a hub and clients, each with its own simulated
//! LND node reached over gRPC with TLS, exchanging packets over BTP and settling over the
//! simulated channels.
#![cfg(feature = "sim")]

mod common;

use std::sync::Arc;

use common::lightning::{client, fulfil_by_data, hub, is_fulfill, network, reject_code};
use ilp_plugin_lightning::plugin::PEER_ACCOUNT;

/// A packet for `destination` whose data is its fulfillment (the receivers' test convention).
fn packet(destination: &str, amount: u64, nonce: u8) -> Vec<u8> {
    let fulfillment = [nonce; 32];
    common::ilp::prepare(&fulfillment, destination, amount, 30_000, &fulfillment)
}

#[test]
fn clients_prefund_stream_through_the_hub_and_the_hub_pays_the_receiver() {
    let sim = network(&["hub", "alice", "bob"]);
    let before = sim.channel_balances();
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);

    // Without prefunding, the hub (credit limit 0) refuses.
    let refused = alice.send_data(&packet("test.hub.bob", 10, 1)).unwrap();
    assert_eq!(reject_code(&refused).as_deref(), Some("T04"));

    alice.send_money(1_000).expect("alice prefunds");
    hub_events.wait_for_money("alice", 1_000);
    let book = hub.settlement().unwrap().account("alice").unwrap();
    assert_eq!(book.receivable_msat, -1_000_000);

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

    let settlement = hub.settlement().unwrap();
    let alice_book = settlement.account("alice").unwrap();
    assert_eq!(alice_book.receivable_msat, -900_000);
    assert_eq!(alice_book.received_msat, 1_000_000);
    let bob_book = settlement.account("bob").unwrap();
    assert_eq!(bob_book.payable_msat, 0);
    assert_eq!(bob_book.paying_msat, 0);
    assert_eq!(bob_book.paid_msat, 100_000);
    assert!(bob_book.payments >= 1 && bob_book.payments <= 10);
    // Direct channels: no routing fees.
    assert_eq!(bob_book.fees_msat, 0);

    // Bob's and alice's own books mirror the hub's.
    let bob_side = bob.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(bob_side.received_msat, 100_000);
    assert_eq!(bob_side.receivable_msat, -100_000 + 100_000);
    let alice_side = alice.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(alice_side.paid_msat, 1_000_000);
    assert_eq!(alice_side.payable_msat, -1_000_000 + 100_000);

    // What moved on the channels is what the books say.
    let moved = |from: &str, to: &str| -> i128 {
        let after = sim.channel_balances();
        let side = |list: &[ilp_plugin_lightning::lnd::sim::ChannelBalance]| -> i128 {
            list.iter()
                .find(|c| c.node_a == from && c.node_b == to)
                .map(|c| i128::from(c.balance_a_msat))
                .or_else(|| {
                    list.iter()
                        .find(|c| c.node_a == to && c.node_b == from)
                        .map(|c| -i128::from(c.balance_a_msat))
                })
                .expect("channel exists")
        };
        side(&before) - side(&after)
    };
    assert_eq!(moved("alice", "hub"), 1_000_000);
    assert_eq!(moved("hub", "bob"), 100_000);
    let _ = Arc::strong_count(&hub);
}
