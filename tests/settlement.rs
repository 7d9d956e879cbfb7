//! Lightning settlement end to end over loopback: a hub and clients, each with its own simulated
//! LND node reached over gRPC with TLS, exchanging packets over BTP and settling over the
//! simulated channels.
#![cfg(feature = "sim")]

mod common;

use std::sync::Arc;

use common::lightning::{client, fulfil_by_data, hub, is_fulfill, network, reject_code};
use ilp_plugin_lightning::plugin::{PluginEvent, PEER_ACCOUNT};

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

#[test]
fn a_t04_from_the_hub_makes_the_client_pay_what_it_owes() {
    let sim = network(&["hub", "alice", "bob"]);
    // The hub lends each client up to 30 sat; alice does not prefund.
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b.credit_limit(Some(30)));
    let (alice, alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, _bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);

    for nonce in 0..3u8 {
        let reply = alice.send_data(&packet("test.hub.bob", 10, nonce)).unwrap();
        assert!(is_fulfill(&reply), "packet {nonce} within credit");
    }
    // Alice owes 30: the next packet passes the limit. Her plugin hears T04 and pays the 30 it
    // owes (not more), after which the hub takes packets again.
    let refused = alice.send_data(&packet("test.hub.bob", 10, 3)).unwrap();
    assert_eq!(reject_code(&refused).as_deref(), Some("T04"));
    hub_events.wait_for_money("alice", 30);
    alice_events.wait_for_payments(PEER_ACCOUNT, 30_000);
    let alice_side = alice.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(alice_side.payable_msat, 0);
    assert_eq!(alice_side.paid_msat, 30_000);
    let reply = alice.send_data(&packet("test.hub.bob", 10, 4)).unwrap();
    assert!(is_fulfill(&reply), "credit is back after the payment");
    assert_eq!(
        hub.settlement()
            .unwrap()
            .account("alice")
            .unwrap()
            .receivable_msat,
        10_000
    );
}

#[test]
fn routing_fees_are_booked_and_capped_by_the_fee_limit() {
    use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, SimNetwork};
    use ilp_plugin_lightning::settlement::{FeeLimit, SettlementOptions};

    // hub — carol — bob: the hub reaches bob only through carol, who charges 2 sat + 1%.
    let policy = ChannelPolicy {
        base_fee_msat: 2_000,
        fee_ppm: 10_000,
    };
    let sim = SimNetwork::builder()
        .node("hub")
        .node("alice")
        .node("bob")
        .node("carol")
        .channel("alice", "hub", 1_000_000, policy)
        .channel("hub", "carol", 1_000_000, policy)
        .channel("carol", "bob", 1_000_000, policy)
        .start()
        .expect("network starts");
    let fee_cap = |floor_msat| {
        let mut options = SettlementOptions::server();
        options.fee_limit = FeeLimit { floor_msat, ppm: 0 };
        options
    };
    // First a cap below carol's fee: the payment fails, bob is owed again, nothing is lost.
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| {
        b.settlement_options(fee_cap(1_000))
    });
    let (alice, _) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, _) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);
    alice.send_money(500).expect("alice prefunds");
    hub_events.wait_for_money("alice", 500);
    let reply = alice.send_data(&packet("test.hub.bob", 100, 1)).unwrap();
    assert!(is_fulfill(&reply));
    let failed = hub_events.wait_for(
        "the payment to bob to fail",
        |e| matches!(e, PluginEvent::PaymentFailed { account, .. } if account == "bob"),
    );
    let PluginEvent::PaymentFailed {
        amount_msat,
        reason,
        ..
    } = failed
    else {
        unreachable!()
    };
    assert_eq!(amount_msat, 100_000);
    assert!(reason.contains("no route"), "{reason}");
    let settlement = hub.settlement().unwrap();
    let book = settlement.account("bob").unwrap();
    assert_eq!(
        (book.payable_msat, book.paying_msat, book.paid_msat),
        (100_000, 0, 0)
    );
    assert!(settlement.store().open_payments().unwrap().is_empty());
    drop((alice, bob));
    hub.disconnect();
    drop(hub);

    // Then a cap above it: paid, and the fee (2 sat + 1% of 100 sat = 3 sat) is booked.
    let (hub, hub_events) = hub_with(&sim, fee_cap(10_000));
    let (alice, _) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);
    alice.send_money(500).expect("alice prefunds");
    hub_events.wait_for_money("alice", 500);
    let reply = alice.send_data(&packet("test.hub.bob", 100, 2)).unwrap();
    assert!(is_fulfill(&reply));
    bob_events.wait_for_money(PEER_ACCOUNT, 100);
    hub_events.wait_for_payments("bob", 100_000);
    let book = hub.settlement().unwrap().account("bob").unwrap();
    assert_eq!((book.paid_msat, book.fees_msat), (100_000, 3_000));
}

fn hub_with(
    sim: &ilp_plugin_lightning::lnd::sim::SimNetwork,
    options: ilp_plugin_lightning::settlement::SettlementOptions,
) -> (
    Arc<ilp_plugin_lightning::plugin::LightningPlugin>,
    common::lightning::Events,
) {
    hub(sim.node("hub").unwrap(), |b| b.settlement_options(options))
}
