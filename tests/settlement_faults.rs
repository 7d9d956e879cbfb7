//! Settlement when things go wrong, over loopback against the simulator: a node that goes away
//! for a while, payment streams that break mid-flight, a peer that offers bad invoices or one
//! already paid, a plugin stopped while it is paid. Each test checks that what moved on the
//! channels is what the books of both sides say, once.
#![cfg(feature = "sim")]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use parking_lot::Mutex;

use common::lightning::{
    client, fulfil_by_data, hub, is_fulfill, moved_msat, network, node_client, reject_code,
    sim_paid, with_events, Events, WAIT,
};
use ilp_plugin_lightning::btp::ProtocolDataEntry;
use ilp_plugin_lightning::ilp::Address;
use ilp_plugin_lightning::lnd::sim::{ChannelBalance, Release, SentStatus, SimNetwork};
use ilp_plugin_lightning::lnd::{LndError, PaymentHash, PaymentLimits, PaymentStatus};
use ilp_plugin_lightning::plugin::{LightningPlugin, PluginBuilder, PluginError, PEER_ACCOUNT};
use ilp_plugin_lightning::settlement::peer::{PAYMENT_REQUEST, PEERING_REQUEST};
use ilp_plugin_lightning::settlement::{EmbeddedStore, SettlementOptions, Store};

/// A packet for `destination` whose data is its fulfillment (the receivers' test convention).
fn packet(destination: &str, amount: u64, nonce: u64) -> Vec<u8> {
    let mut fulfillment = [0x11; 32];
    fulfillment[..8].copy_from_slice(&nonce.to_be_bytes());
    common::ilp::prepare(&fulfillment, destination, amount, 30_000, &fulfillment)
}

fn send_fulfilled(sender: &LightningPlugin, destination: &str, amount: u64, nonce: u64) {
    let reply = sender
        .send_data(&packet(destination, amount, nonce))
        .expect("packet answered");
    assert!(
        is_fulfill(&reply),
        "packet {nonce} to {destination}: {:?}",
        reject_code(&reply)
    );
}

/// Records what a money handler was called with.
fn count_money(plugin: &LightningPlugin) -> Arc<Mutex<Vec<u64>>> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let record = calls.clone();
    plugin
        .register_money_handler(move |amount| {
            record.lock().push(amount);
            Ok(())
        })
        .unwrap();
    calls
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "ilp-lightning-faults-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A hub with alice, who prefunded `prefund` sat, and bob, who fulfils what she sends him.
struct HubAliceBob {
    sim: SimNetwork,
    before: Vec<ChannelBalance>,
    hub: Arc<LightningPlugin>,
    hub_events: Events,
    alice: LightningPlugin,
    bob: LightningPlugin,
    bob_events: Events,
}

fn hub_alice_bob(
    prefund: u64,
    configure_bob: impl FnOnce(PluginBuilder) -> PluginBuilder,
) -> HubAliceBob {
    let sim = network(&["hub", "alice", "bob"]);
    let before = sim.channel_balances();
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), configure_bob);
    fulfil_by_data(&bob);
    alice.send_money(prefund).expect("alice prefunds");
    hub_events.wait_for_money("alice", prefund);
    HubAliceBob {
        sim,
        before,
        hub,
        hub_events,
        alice,
        bob,
        bob_events,
    }
}

impl HubAliceBob {
    /// Checks that the hub's books, bob's, the hub's node and their channel all say the hub
    /// paid bob `msat`, with nothing more owed or in flight; the number of payments.
    fn assert_hub_paid_bob(&self, msat: u128) -> u64 {
        let hub_bob = self.hub.settlement().unwrap().account("bob").unwrap();
        let bob_side = self
            .bob
            .settlement()
            .unwrap()
            .account(PEER_ACCOUNT)
            .unwrap();
        assert_eq!(
            (hub_bob.paid_msat, hub_bob.payable_msat, hub_bob.paying_msat),
            (msat, 0, 0)
        );
        assert_eq!(
            (
                bob_side.received_msat,
                bob_side.receivable_msat,
                bob_side.receipts
            ),
            (msat, 0, hub_bob.payments)
        );
        assert_eq!(
            sim_paid(self.sim.node("hub").unwrap(), "bob"),
            (hub_bob.payments, msat, hub_bob.fees_msat)
        );
        assert_eq!(
            moved_msat(&self.before, &self.sim.channel_balances(), "hub", "bob"),
            msat as i128
        );
        hub_bob.payments
    }
}

#[test]
fn an_invoice_offered_again_after_it_was_paid_is_never_paid_or_booked_twice() {
    // One invoice at a time, so that the hub's only invoice of bob's is the one offered again.
    let t = hub_alice_bob(100, |b| {
        b.settlement_options(SettlementOptions {
            invoice_stock: 1,
            ..SettlementOptions::client()
        })
    });
    let hub_node = t.sim.node("hub").unwrap();

    // The hub's payment to bob stays in flight...
    hub_node.hold_payments(true);
    send_fulfilled(&t.alice, "test.hub.bob", 10, 1);
    let held = hub_node
        .wait_for_held_payments(1, WAIT)
        .expect("hub pays bob")[0];
    // ...while bob offers its invoice again, as its refiller does after a reconnect with every
    // invoice still open.
    let invoice = t
        .bob
        .settlement()
        .unwrap()
        .store()
        .invoice(&PaymentHash(held))
        .unwrap()
        .expect("the hub pays an invoice of bob's");
    t.bob
        .request(
            PEER_ACCOUNT,
            &[ProtocolDataEntry::text(
                PAYMENT_REQUEST,
                &invoice.payment_request,
            )],
        )
        .expect("the hub takes the invoice");
    hub_node.hold_payments(false);
    assert_eq!(hub_node.release_held_payments(Release::Forward), 1);
    t.hub_events.wait_for_payments("bob", 10_000);
    t.bob_events.wait_for_money(PEER_ACCOUNT, 10);

    // The next payment must use another invoice: that one is paid.
    send_fulfilled(&t.alice, "test.hub.bob", 10, 2);
    t.hub_events.wait_for_payments("bob", 10_000);
    t.bob_events.wait_for_money(PEER_ACCOUNT, 10);
    assert_eq!(t.assert_hub_paid_bob(20_000), 2);
}

#[test]
fn lnd_unreachable_for_a_while_packets_within_credit_flow_and_settlement_catches_up() {
    let t = hub_alice_bob(1_000, |b| b);
    let (hub_node, bob_node) = (t.sim.node("hub").unwrap(), t.sim.node("bob").unwrap());
    let bob_money = count_money(&t.bob);

    // The hub's node is away: packets within alice's credit still go through; nothing can be
    // paid to bob meanwhile.
    hub_node.set_offline(true).unwrap();
    for nonce in 0..10 {
        send_fulfilled(&t.alice, "test.hub.bob", 10, nonce);
    }
    let owed = t.hub.settlement().unwrap().account("bob").unwrap();
    assert_eq!(owed.paid_msat, 0);
    assert_eq!(owed.payable_msat + owed.paying_msat as i128, 100_000);
    assert!(hub_node.payments().is_empty());
    hub_node.set_offline(false).unwrap();
    t.hub_events.wait_for_payments("bob", 100_000);
    t.bob_events.wait_for_money(PEER_ACCOUNT, 100);

    // Bob's node is away: the hub pays it (its channels work), bob hears of it once back.
    bob_node.set_offline(true).unwrap();
    for nonce in 10..15 {
        send_fulfilled(&t.alice, "test.hub.bob", 10, nonce);
    }
    t.hub_events.wait_for_payments("bob", 50_000);
    let bob_side = t.bob.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(bob_side.received_msat, 100_000);
    bob_node.set_offline(false).unwrap();
    t.bob_events.wait_for_money(PEER_ACCOUNT, 50);

    let payments = t.assert_hub_paid_bob(150_000);
    assert_eq!(bob_money.lock().iter().sum::<u64>(), 150);
    assert_eq!(bob_money.lock().len() as u64, payments);
}

#[test]
fn a_payment_whose_stream_breaks_mid_flight_is_tracked_and_booked_once() {
    let t = hub_alice_bob(100, |b| b);
    let hub_node = t.sim.node("hub").unwrap();

    // SendPaymentV2's stream breaks once the payment is dispatched, and so does the first
    // TrackPaymentV2 after its first update: the hub cannot tell, tracks, and learns.
    hub_node.break_next_payment_streams(1);
    hub_node.break_next_track_streams(1);
    send_fulfilled(&t.alice, "test.hub.bob", 10, 1);
    t.hub_events.wait_for_payments("bob", 10_000);
    t.bob_events.wait_for_money(PEER_ACCOUNT, 10);

    // Broken while the payment is held in flight: the hub tracks it until it is released.
    hub_node.hold_payments(true);
    hub_node.break_next_payment_streams(1);
    send_fulfilled(&t.alice, "test.hub.bob", 20, 2);
    let held = hub_node
        .wait_for_held_payments(1, WAIT)
        .expect("hub pays bob");
    let in_flight = t.hub.settlement().unwrap().account("bob").unwrap();
    assert_eq!(
        (in_flight.paying_msat, in_flight.paid_msat),
        (20_000, 10_000)
    );
    hub_node.hold_payments(false);
    assert!(hub_node.release_held_payment(&held[0], Release::Forward));
    t.hub_events.wait_for_payments("bob", 20_000);
    t.bob_events.wait_for_money(PEER_ACCOUNT, 20);

    let payments = hub_node.payments();
    assert_eq!(payments.len(), 2, "one payment per debt: {payments:?}");
    assert!(payments.iter().all(|p| p.status == SentStatus::Succeeded));
    assert_eq!(t.assert_hub_paid_bob(30_000), 2);
}

/// A BOLT11 invoice signed with `key`, as a peer's node would make it.
fn signed_invoice(
    key: &SecretKey,
    currency: Currency,
    amount_msat: Option<u64>,
    created: Duration,
    expiry: Duration,
    hash_seed: u8,
) -> (String, PaymentHash) {
    let hash = sha256::Hash::hash(&[hash_seed]);
    let builder = InvoiceBuilder::new(currency)
        .description("ilp".into())
        .payment_hash(hash)
        .payment_secret(PaymentSecret([hash_seed; 32]))
        .duration_since_epoch(created)
        .expiry_time(expiry)
        .min_final_cltv_expiry_delta(40);
    let builder = match amount_msat {
        Some(amount) => builder.amount_milli_satoshis(amount),
        None => builder,
    };
    let invoice = builder
        .build_signed(|digest| Secp256k1::new().sign_ecdsa_recoverable(digest, key))
        .unwrap();
    (invoice.to_string(), PaymentHash(hash.to_byte_array()))
}

/// Offers `invoice` to the hub and returns its refusal.
fn refused(peer: &LightningPlugin, invoice: &str) -> String {
    match peer.request(
        PEER_ACCOUNT,
        &[ProtocolDataEntry::text(PAYMENT_REQUEST, invoice)],
    ) {
        Err(PluginError::PeerError { message, .. }) => message,
        other => panic!("the hub took a bad invoice: {other:?}"),
    }
}

#[test]
fn invoices_with_a_wrong_payee_an_amount_an_expiry_or_another_network_are_refused_never_paid() {
    let sim = network(&["hub", "alice", "mallory", "carol"]);
    let hub_node = sim.node("hub").unwrap();
    let mallory_node = sim.node("mallory").unwrap();
    let (hub, hub_events) = hub(hub_node, |b| b);
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    // Mallory speaks settlement's messages by hand: a plain client, without a node of its own.
    let url = format!(
        "btp+ws://mallory:secret-mallory@{}",
        hub.local_addr().unwrap()
    );
    let mallory = LightningPlugin::client(&url).build().unwrap();
    mallory.connect().unwrap();
    fulfil_by_data(&mallory);

    // The hub owes mallory for a packet it fulfilled.
    alice.send_money(100).expect("alice prefunds");
    hub_events.wait_for_money("alice", 100);
    send_fulfilled(&alice, "test.hub.mallory", 10, 1);
    assert_eq!(
        hub.settlement()
            .unwrap()
            .account("mallory")
            .unwrap()
            .payable_msat,
        10_000
    );

    // First session: mallory says it is a node whose key the test holds, and signs with it.
    let key = SecretKey::from_slice(&[7; 32]).unwrap();
    let other_key = SecretKey::from_slice(&[8; 32]).unwrap();
    let announced = bitcoin::secp256k1::PublicKey::from_secret_key(&Secp256k1::new(), &key);
    mallory
        .request(
            PEER_ACCOUNT,
            &[ProtocolDataEntry::text(
                PEERING_REQUEST,
                &hex::encode(announced.serialize()),
            )],
        )
        .expect("the hub takes the key");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let hour = Duration::from_secs(3600);
    let mut bad = Vec::new();
    let mut offer = |invoice: (String, PaymentHash), reason: &str| {
        let message = refused(&mallory, &invoice.0);
        assert!(
            message.contains(reason),
            "refusal {message:?} does not say {reason:?}"
        );
        bad.push(invoice.1);
    };
    offer(
        signed_invoice(&other_key, Currency::Regtest, None, now, hour, 1),
        "not the peer's node",
    );
    offer(
        signed_invoice(&key, Currency::Regtest, Some(10_000), now, hour, 2),
        "amount of 10000 msat",
    );
    offer(
        signed_invoice(&key, Currency::Regtest, None, now - 2 * hour, hour, 3),
        "too soon to be paid",
    );
    offer(
        signed_invoice(&key, Currency::Bitcoin, None, now, hour, 4),
        "our node is on regtest",
    );
    assert!(refused(&mallory, "lnbcrt1notaninvoice").contains("invalid invoice"));

    // Second session: mallory's real node, and invoices made by nodes.
    mallory.disconnect();
    mallory.connect().unwrap();
    mallory
        .request(
            PEER_ACCOUNT,
            &[ProtocolDataEntry::text(
                PEERING_REQUEST,
                mallory_node.pubkey_hex(),
            )],
        )
        .expect("the hub takes the key");
    let carols = node_client(sim.node("carol").unwrap())
        .add_invoice(hour, None)
        .unwrap();
    let mallorys = node_client(mallory_node);
    let expiring = mallorys.add_invoice(Duration::from_secs(30), None).unwrap();
    offer(
        (carols.payment_request, carols.payment_hash),
        "not the peer's node",
    );
    offer(
        (expiring.payment_request, expiring.payment_hash),
        "too soon to be paid",
    );
    // Nothing was paid so far: the hub tried none of them.
    let hub_client = node_client(hub_node);
    for hash in &bad {
        assert!(
            matches!(
                hub_client.track_payment(hash, Duration::ZERO),
                Err(LndError::NotFound(_))
            ),
            "the hub's node has a payment for refused invoice {hash}"
        );
    }
    let book = hub.settlement().unwrap().account("mallory").unwrap();
    assert_eq!(
        (book.payable_msat, book.paying_msat, book.paid_msat),
        (10_000, 0, 0)
    );

    // A good invoice is taken and paid: the hub was waiting for one.
    let good = mallorys.add_invoice(hour, None).unwrap();
    mallory
        .request(
            PEER_ACCOUNT,
            &[ProtocolDataEntry::text(
                PAYMENT_REQUEST,
                &good.payment_request,
            )],
        )
        .expect("the hub takes a good invoice");
    hub_events.wait_for_payments("mallory", 10_000);
    let payments = hub_node.payments();
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].payment_hash, good.payment_hash.0);
    assert_eq!(payments[0].status, SentStatus::Succeeded);
    let book = hub.settlement().unwrap().account("mallory").unwrap();
    assert_eq!((book.payable_msat, book.paid_msat), (0, 10_000));
}

#[test]
fn the_money_handler_hears_of_each_payment_once_and_a_restart_credits_what_was_paid_meanwhile() {
    let sim = network(&["hub", "alice"]);
    let hub_node = sim.node("hub").unwrap();
    let alice_node = sim.node("alice").unwrap();
    let dir = temp_dir("restart");
    let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
    let (first, first_events) = hub(hub_node, |b| b.store(store.clone()));
    let first_money = count_money(&first);
    let listen = first.local_addr().unwrap();
    let (alice, _alice_events) = client(&first, "alice", alice_node, |b| b);

    alice.send_money(100).expect("alice prefunds");
    first_events.wait_for_money("alice", 100);
    alice.send_money(50).expect("alice pays");
    first_events.wait_for_money("alice", 50);
    // The invoice stream ends and the watcher subscribes again: LND replays what it settled.
    hub_node.set_offline(true).unwrap();
    hub_node.set_offline(false).unwrap();
    alice.send_money(25).expect("alice pays");
    first_events.wait_for_money("alice", 25);
    assert_eq!(*first_money.lock(), vec![100, 50, 25]);

    // The hub stops; alice's node pays one of its invoices directly meanwhile.
    let unpaid = store
        .open_invoices(Some("alice"))
        .unwrap()
        .pop()
        .expect("the hub issued invoices to alice");
    first.disconnect();
    drop(first);
    drop(store);
    let paid = node_client(alice_node)
        .pay_invoice(
            &unpaid.payment_request,
            77_000,
            PaymentLimits {
                fee_limit_msat: 10_000,
                timeout: Duration::from_secs(30),
            },
        )
        .expect("alice's node pays");
    assert!(matches!(paid.status, PaymentStatus::Succeeded { .. }));

    // Started again on the same books (and port): it credits that payment, once.
    let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
    let (builder, second_events) = with_events(
        LightningPlugin::server(listen, Address::new("test.hub").unwrap())
            .lightning(node_client(hub_node))
            .store(store.clone()),
    );
    let second = builder.build().unwrap();
    let second_money = count_money(&second);
    second.connect().expect("hub starts again");
    second_events.wait_for_money("alice", 77);
    // Alice reconnects by herself and pays again.
    alice.send_money(5).expect("alice pays the restarted hub");
    second_events.wait_for_money("alice", 5);
    assert_eq!(*second_money.lock(), vec![77, 5]);

    let book = store.account("alice").unwrap();
    assert_eq!((book.received_msat, book.receipts), (257_000, 5));
    assert_eq!(book.receivable_msat, -257_000);
    assert_eq!(sim_paid(alice_node, "hub"), (5, 257_000, 0));
    // The watcher marks a receipt delivered just after the money handler (and the event) heard
    // of it: bounded wait for that write.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !store.pending_receipts().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a receipt stays undelivered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(alice);
    drop(second);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_receiving_through_the_hub_is_paid_what_it_fulfilled() {
    let t = hub_alice_bob(500, |b| b);
    let bob_money = count_money(&t.bob);

    let amounts = [7u64, 13, 21, 1, 50, 8];
    for (nonce, amount) in amounts.iter().enumerate() {
        send_fulfilled(&t.alice, "test.hub.bob", *amount, nonce as u64);
    }
    // A packet bob refuses (its data is not its fulfillment) costs nobody anything.
    let mut wrong = packet("test.hub.bob", 40, 99);
    let data_at = wrong.len() - 32;
    wrong[data_at] ^= 1;
    let reply = t.alice.send_data(&wrong).unwrap();
    assert!(!is_fulfill(&reply));
    let total: u64 = amounts.iter().sum();
    t.bob_events.wait_for_money(PEER_ACCOUNT, total);
    t.hub_events.wait_for_payments("bob", total * 1000);

    let total_msat = u128::from(total) * 1000;
    let payments = t.assert_hub_paid_bob(total_msat);
    assert_eq!(bob_money.lock().len() as u64, payments);
    assert_eq!(bob_money.lock().iter().sum::<u64>(), total);
    let alice_book = t.hub.settlement().unwrap().account("alice").unwrap();
    assert_eq!(alice_book.receivable_msat, -500_000 + total_msat as i128);
}

#[test]
fn a_debt_booked_before_a_crash_is_paid_after_the_restart_without_new_traffic() {
    let sim = network(&["hub", "bob"]);
    let hub_node = sim.node("hub").unwrap();
    let dir = temp_dir("owed");
    let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
    // The books as a hub leaves them when it is killed between booking bob's Fulfill and
    // paying for it.
    store.owe("bob", 30_000).unwrap();
    let (hub, hub_events) = hub(hub_node, |b| b.store(store.clone()));
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    hub_events.wait_for_payments("bob", 30_000);
    bob_events.wait_for_money(PEER_ACCOUNT, 30);
    let hub_bob = store.account("bob").unwrap();
    assert_eq!((hub_bob.payable_msat, hub_bob.paid_msat), (0, 30_000));
    assert_eq!(sim_paid(hub_node, "bob"), (1, 30_000, 0));
    drop(bob);
    drop(hub);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_stopped_while_settlement_is_busy_settles_again_once_reconnected() {
    let sim = network(&["hub", "alice", "bob"]);
    let bob_node = sim.node("bob").unwrap();
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    // Bob's node answers slowly: its refiller is inside AddInvoice when bob disconnects.
    bob_node.set_latency(Duration::from_millis(500));
    let (bob, bob_events) = client(&hub, "bob", bob_node, |b| b);
    bob.disconnect();
    bob_node.set_latency(Duration::ZERO);
    bob.connect().expect("bob reconnects");
    fulfil_by_data(&bob);

    alice.send_money(100).expect("alice prefunds");
    hub_events.wait_for_money("alice", 100);
    send_fulfilled(&alice, "test.hub.bob", 10, 1);
    // Bob's new session tells the hub its node and hands it invoices: the hub pays.
    hub_events.wait_for_payments("bob", 10_000);
    bob_events.wait_for_money(PEER_ACCOUNT, 10);
}
