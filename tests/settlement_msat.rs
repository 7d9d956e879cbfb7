//! Millisatoshi precision over loopback: a hub configured for asset scale 3 and clients that ask
//! for it agree on millisatoshis in the `ilpLightningSettlement` sub-protocol before IL-DCP,
//! whose answer then says scale 3 to them (and 0 to everyone else); 1.5 sat streamed is settled
//! to the millisatoshi. A peer in satoshis is paid whole satoshis and the rest stays owed.
#![cfg(feature = "sim")]

mod common;

use common::lightning::{
    client, fulfil_by_data, hub, is_fulfill, moved_msat, network, reject_code,
};
use ilp_plugin_lightning::btp::ProtocolDataEntry;
use ilp_plugin_lightning::ilp::ildcp::{self, IldcpResponse};
use ilp_plugin_lightning::ilp::Timestamp;
use ilp_plugin_lightning::plugin::{LightningPlugin, PluginBuilder, PEER_ACCOUNT};
use ilp_plugin_lightning::settlement::{SettlementHooks, SettlementOptions, Unit};

fn packet(destination: &str, amount: u64, nonce: u8) -> Vec<u8> {
    let fulfillment = [nonce; 32];
    common::ilp::prepare(&fulfillment, destination, amount, 30_000, &fulfillment)
}

fn in_msat(builder: PluginBuilder) -> PluginBuilder {
    builder.settlement_options(SettlementOptions {
        unit: Unit::MILLISATOSHI,
        ..SettlementOptions::client()
    })
}

/// The asset scale the hub tells `client` by IL-DCP.
fn ildcp_scale(client: &LightningPlugin) -> u8 {
    let request = ildcp::request(Timestamp::now().add_millis(ildcp::REQUEST_LIFETIME_MS));
    let answer = client
        .request(PEER_ACCOUNT, &[ProtocolDataEntry::octets("ilp", &request)])
        .expect("the hub answers IL-DCP");
    let ilp = answer
        .iter()
        .find(|e| e.name == "ilp")
        .expect("an ilp entry");
    IldcpResponse::from_reply(&ilp.data)
        .expect("an IL-DCP response")
        .asset_scale
}

#[test]
fn one_and_a_half_satoshis_stream_and_settle_to_the_millisatoshi() {
    let sim = network(&["hub", "alice", "bob", "carol"]);
    let before = sim.channel_balances();
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b.asset("BTC", 3));
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), in_msat);
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), in_msat);
    // Carol did not ask for millisatoshis: she stays in satoshis, as a JS client would.
    let (carol, _carol_events) = client(&hub, "carol", sim.node("carol").unwrap(), |b| b);
    fulfil_by_data(&bob);
    assert_eq!(ildcp_scale(&alice), 3);
    assert_eq!(ildcp_scale(&bob), 3);
    assert_eq!(ildcp_scale(&carol), 0);
    let settlement = hub.settlement().unwrap();
    assert_eq!(settlement.asset_scale("alice"), Some(3));
    assert_eq!(settlement.asset_scale("carol"), Some(0));

    // Alice prefunds 1.5 sat, in millisatoshis, and streams it to bob in three packets.
    alice.send_money(1_500).expect("alice prefunds 1.5 sat");
    hub_events.wait_for_money("alice", 1_500);
    assert_eq!(settlement.account("alice").unwrap().receivable_msat, -1_500);
    for nonce in 0..3u8 {
        let reply = alice
            .send_data(&packet("test.hub.bob", 500, nonce))
            .unwrap();
        assert!(
            is_fulfill(&reply),
            "packet {nonce}: {:?}",
            reject_code(&reply)
        );
    }
    // The hub owes bob 1 500 msat and pays exactly that: nothing rounded away.
    hub_events.wait_for_payments("bob", 1_500);
    bob_events.wait_for_money(PEER_ACCOUNT, 1_500);
    let bob_book = settlement.account("bob").unwrap();
    assert_eq!(
        (
            bob_book.payable_msat,
            bob_book.paying_msat,
            bob_book.paid_msat
        ),
        (0, 0, 1_500)
    );
    assert_eq!(settlement.account("alice").unwrap().receivable_msat, 0);
    let bob_side = bob.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(
        (bob_side.received_msat, bob_side.receivable_msat),
        (1_500, 0)
    );
    let after = sim.channel_balances();
    assert_eq!(moved_msat(&before, &after, "alice", "hub"), 1_500);
    assert_eq!(moved_msat(&before, &after, "hub", "bob"), 1_500);
    // Alice has spent what she prefunded, to the millisatoshi.
    let refused = alice.send_data(&packet("test.hub.bob", 1, 9)).unwrap();
    assert_eq!(reject_code(&refused).as_deref(), Some("T04"));
}

#[test]
fn a_peer_in_satoshis_is_paid_whole_satoshis_and_the_rest_stays_owed() {
    let sim = network(&["hub", "alice", "bob"]);
    // The hub pays bob once it owes him more than 2 sat (2 000 msat).
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| {
        b.asset("BTC", 3).settlement_options(SettlementOptions {
            settle_threshold: Some(2_000),
            ..SettlementOptions::server()
        })
    });
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), in_msat);
    alice.send_money(10_000).expect("alice prefunds 10 sat");
    hub_events.wait_for_money("alice", 10_000);
    let settlement = hub.settlement().unwrap();

    // Bob in millisatoshis: 1.5 sat is owed to him, below the threshold: not paid yet.
    {
        let (bob, _bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), in_msat);
        fulfil_by_data(&bob);
        let reply = alice.send_data(&packet("test.hub.bob", 1_500, 1)).unwrap();
        assert!(is_fulfill(&reply), "{:?}", reject_code(&reply));
        assert_eq!(settlement.account("bob").unwrap().payable_msat, 1_500);
        bob.disconnect();
    }
    hub_events.wait_for("bob gone", |e| {
        matches!(e, ilp_plugin_lightning::plugin::PluginEvent::AccountDisconnected(a) if a == "bob")
    });

    // Bob back in satoshis. Alice sends him 1.5 sat more: he gets 1 sat of it (the hub rounds
    // down, as a connector does), and the hub now owes him 2.5 sat — past the threshold. It
    // pays him the 2 whole satoshis and keeps the half owed: neither rounded away nor paid
    // over.
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);
    assert_eq!(ildcp_scale(&bob), 0);
    let reply = alice.send_data(&packet("test.hub.bob", 1_500, 2)).unwrap();
    assert!(is_fulfill(&reply), "{:?}", reject_code(&reply));
    hub_events.wait_for_payments("bob", 2_000);
    bob_events.wait_for_money(PEER_ACCOUNT, 2);
    let bob_book = settlement.account("bob").unwrap();
    assert_eq!(
        (
            bob_book.payable_msat,
            bob_book.paying_msat,
            bob_book.paid_msat
        ),
        (500, 0, 2_000)
    );
    // Alice paid 3 sat for what bob got 2.5 of: the hub keeps the 0.5 sat it rounded off.
    assert_eq!(settlement.account("alice").unwrap().receivable_msat, -7_000);

    // 4 sat more: 4.5 sat owed, the 4 whole ones paid, the half still owed.
    let reply = alice.send_data(&packet("test.hub.bob", 4_000, 3)).unwrap();
    assert!(is_fulfill(&reply), "{:?}", reject_code(&reply));
    hub_events.wait_for_payments("bob", 4_000);
    let bob_book = settlement.account("bob").unwrap();
    assert_eq!((bob_book.payable_msat, bob_book.paid_msat), (500, 6_000));
}
