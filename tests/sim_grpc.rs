//! The simulated Lightning network, driven over real TLS gRPC by a raw grpcio client built from
//! the `lnd::methods` descriptors — what any LND client in any language would send. The points
//! where the simulator follows LND's own code closely have tests of their own in
//! tests/sim_lnd_fidelity.rs; its faults in tests/sim_faults.rs.
#![cfg(feature = "sim")]

mod sim_support;

use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use grpcio::{ChannelBuilder, ChannelCredentialsBuilder, RpcStatusCode};
use ilp_plugin_lightning::lnd::methods;
use ilp_plugin_lightning::lnd::proto::{invoices, lightning, router};
use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, FailureReason, Release, SimNetwork};
use lightning::payment::PaymentStatus;
use lightning::PaymentFailureReason as Reason;
use sim_support::*;

#[test]
fn get_info_over_tls_identifies_the_node() {
    let net = two_nodes();
    let env = env();
    let alice = net.node("alice").unwrap();
    let info = Lnd::connect(&env, alice)
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap();
    assert_eq!(info.identity_pubkey, alice.pubkey_hex());
    assert_eq!(info.alias, "alice");
    assert_eq!(info.chains.len(), 1);
    assert_eq!(info.chains[0].network, "regtest");
    assert!(info.synced_to_chain && info.synced_to_graph);
    assert!(info.version.contains("beta"), "{}", info.version);
    assert_eq!(info.num_active_channels, 1);
    assert_eq!(alice.grpc_address(), format!("127.0.0.1:{}", alice.port()));

    let bob = net.node("bob").unwrap();
    let bob_info = Lnd::connect(&env, bob)
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap();
    assert_eq!(bob_info.identity_pubkey, bob.pubkey_hex());
    assert_ne!(bob.port(), alice.port());
}

#[test]
fn add_invoice_makes_a_bolt11_signed_by_the_node_and_lookup_finds_it() {
    let net = two_nodes();
    let env = env();
    let alice = net.node("alice").unwrap();
    let lnd = Lnd::connect(&env, alice);

    let added = lnd.add_invoice("ilp", 0, 0);
    assert_eq!(added.r_hash.len(), 32);
    assert_eq!(added.add_index, 1);
    let parsed: lightning_invoice::Bolt11Invoice = added.payment_request.parse().unwrap();
    assert_eq!(parsed.currency(), lightning_invoice::Currency::Regtest);
    assert_eq!(parsed.amount_milli_satoshis(), None);
    assert_eq!(parsed.recover_payee_pub_key().serialize(), alice.pubkey());
    assert_eq!(
        bitcoin::hashes::Hash::to_byte_array(*parsed.payment_hash()).to_vec(),
        added.r_hash
    );
    assert_eq!(parsed.expiry_time(), Duration::from_secs(86_400));
    assert_eq!(parsed.payment_secret().0.to_vec(), added.payment_addr);

    let found = lnd.lookup(&added.r_hash).unwrap();
    assert_eq!(found.payment_request, added.payment_request);
    assert_eq!(
        found.state.enum_value(),
        Ok(lightning::invoice::InvoiceState::OPEN)
    );
    assert_eq!(found.add_index, 1);
    assert_eq!(found.memo, "ilp");
    assert_eq!(found.value, 0);
    assert_eq!(found.expiry, 86_400);
    assert_eq!(found.r_preimage.len(), 32);

    let second = lnd.add_invoice("", 1_234, 600);
    assert_eq!(second.add_index, 2);
    let parsed: lightning_invoice::Bolt11Invoice = second.payment_request.parse().unwrap();
    assert_eq!(parsed.amount_milli_satoshis(), Some(1_234_000));
    assert_eq!(parsed.expiry_time(), Duration::from_secs(600));

    let missing = lnd.lookup(&[7u8; 32]).unwrap_err();
    assert_eq!(missing.code(), RpcStatusCode::NOT_FOUND);
    assert_eq!(missing.message(), "unable to locate invoice");
    let short = lnd.lookup(&[7u8; 31]).unwrap_err();
    assert_eq!(short.code(), RpcStatusCode::UNKNOWN);

    // Bob does not know Alice's invoice.
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    assert_eq!(
        bob.lookup(&added.r_hash).unwrap_err().code(),
        RpcStatusCode::NOT_FOUND
    );
}

#[test]
fn payments_route_directly_and_through_a_hop_with_fees_and_fee_limits() {
    let net = three_in_a_row();
    let env = env();
    let total = net.total_balance_msat();
    // Two channels of 1 000 000 sat, less what each opener paid for its commitment fee and
    // anchors (3 470 sat).
    assert_eq!(total, 2 * (1_000_000 - 3_470) * 1000);
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    let carol = Lnd::connect(&env, net.node("carol").unwrap());

    // Direct: no fee, even with a zero fee limit.
    let invoice = bob.add_invoice("direct", 0, 0);
    let payment = alice.pay(&invoice.payment_request, 10_000, 0);
    succeeded(&payment);
    assert_eq!(payment.value_sat, 10_000);
    assert_eq!(payment.fee_msat, 0);
    let preimage = hex::decode(&payment.payment_preimage).unwrap();
    assert_eq!(
        sha256::Hash::hash(&preimage).to_byte_array().to_vec(),
        invoice.r_hash
    );
    assert_eq!(payment.payment_hash, hex::encode(&invoice.r_hash));
    let settled = bob.lookup(&invoice.r_hash).unwrap();
    assert_eq!(
        settled.state.enum_value(),
        Ok(lightning::invoice::InvoiceState::SETTLED)
    );
    assert_eq!(settled.amt_paid_sat, 10_000);
    assert_eq!(settled.amt_paid_msat, 10_000_000);
    assert_eq!(settled.settle_index, 1);
    assert!(settled.settle_date > 0);
    assert_eq!(settled.htlcs.len(), 1);
    // Alice opened the channel: 500 000 sat less 3 470 sat, less the 10 000 paid.
    assert_eq!(net.node("alice").unwrap().local_balance_msat(), 486_530_000);
    conserved(&net, total);

    // Paying it again: LND's control tower refuses.
    let again = alice
        .send(&pay_request(&invoice.payment_request, 10_000, 0))
        .unwrap_err();
    assert_eq!(again.code(), RpcStatusCode::ALREADY_EXISTS);
    assert_eq!(again.message(), "invoice is already paid");

    // Through Bob: fee = 1000 msat base + 10 msat (1 ppm of 10_000_000 msat).
    let far = carol.add_invoice("two hops", 0, 0);
    let no_fee = alice.pay(&far.payment_request, 10_000, 0);
    failed_with(&no_fee, Reason::FAILURE_REASON_NO_ROUTE);
    let short = alice.pay(&far.payment_request, 10_000, 1_009);
    failed_with(&short, Reason::FAILURE_REASON_NO_ROUTE);
    conserved(&net, total);
    let bob_before = net.node("bob").unwrap().local_balance_msat();
    let routed = alice.pay(&far.payment_request, 10_000, 1_010);
    succeeded(&routed);
    assert_eq!(routed.fee_msat, 1_010);
    assert_eq!(routed.fee_sat, 1);
    assert_eq!(routed.value_msat, 10_000_000);
    let route = routed.htlcs[0].route.as_ref().unwrap();
    assert_eq!(route.hops.len(), 2);
    assert_eq!(route.total_amt_msat, 10_001_010);
    assert_eq!(
        route.hops[1].pub_key,
        net.node("carol").unwrap().pubkey_hex()
    );
    assert_eq!(
        net.node("bob").unwrap().local_balance_msat(),
        bob_before + 1_010
    );
    assert_eq!(net.node("carol").unwrap().local_balance_msat(), 510_000_000);
    assert_eq!(net.node("alice").unwrap().local_balance_msat(), 476_528_990);
    conserved(&net, total);
    let paid = carol.lookup(&far.r_hash).unwrap();
    assert_eq!(paid.amt_paid_msat, 10_000_000);

    // no_inflight_updates: only the final update.
    let quiet_invoice = bob.add_invoice("quiet", 1, 0);
    let mut quiet = pay_request(&quiet_invoice.payment_request, 0, 0);
    quiet.no_inflight_updates = true;
    let updates = alice.send(&quiet).unwrap();
    assert_eq!(updates.len(), 1);
    succeeded(&updates[0]);
    assert_eq!(updates[0].value_sat, 1);

    // TrackPaymentV2: a finished payment gives its final state and ends.
    let mut track = router::TrackPaymentRequest::new();
    track.payment_hash = far.r_hash.clone();
    let tracked: Vec<_> = alice
        .stream(&methods::TRACK_PAYMENT_V2, &track)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tracked.len(), 1);
    succeeded(&tracked[0]);
    assert_eq!(tracked[0].fee_msat, 1_010);
    track.payment_hash = vec![9; 32];
    let unknown = status(
        alice
            .stream(&methods::TRACK_PAYMENT_V2, &track)
            .next()
            .unwrap()
            .unwrap_err(),
    );
    assert_eq!(unknown.code(), RpcStatusCode::NOT_FOUND);
    assert_eq!(unknown.message(), "payment isn't initiated");

    // DecodePayReq.
    let mut decode = lightning::PayReqString::new();
    decode.pay_req = far.payment_request.clone();
    let decoded = alice.call(&methods::DECODE_PAY_REQ, &decode).unwrap();
    assert_eq!(decoded.destination, net.node("carol").unwrap().pubkey_hex());
    assert_eq!(decoded.payment_hash, hex::encode(&far.r_hash));
    assert_eq!(decoded.num_satoshis, 0);
    assert_eq!(decoded.expiry, 86_400);
    assert_eq!(decoded.description, "two hops");
    assert_eq!(decoded.payment_addr, far.payment_addr);

    // ChannelBalance and ListChannels agree with the ledger.
    let balance = alice
        .call(
            &methods::CHANNEL_BALANCE,
            &lightning::ChannelBalanceRequest::new(),
        )
        .unwrap();
    assert_eq!(
        balance.local_balance.msat,
        net.node("alice").unwrap().local_balance_msat()
    );
    assert_eq!(
        balance.local_balance.msat + balance.remote_balance.msat,
        (1_000_000 - 3_470) * 1000
    );
    let channels = bob
        .call(
            &methods::LIST_CHANNELS,
            &lightning::ListChannelsRequest::new(),
        )
        .unwrap();
    assert_eq!(channels.channels.len(), 2);
    for channel in &channels.channels {
        assert_eq!(channel.capacity, 1_000_000);
        assert!(channel.local_balance + channel.remote_balance <= 996_530);
        assert!(channel.local_balance + channel.remote_balance >= 996_529);
        assert_eq!(channel.commit_fee, 2_810);
        assert_eq!(channel.local_chan_reserve_sat, 10_000);
        assert_eq!(channel.unsettled_balance, 0);
    }
}

#[test]
fn payment_errors_carry_lnds_codes_and_reasons() {
    let net = three_in_a_row();
    let env = env();
    let total = net.total_balance_msat();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, net.node("bob").unwrap());

    // More than Alice holds.
    let big = bob.add_invoice("big", 0, 0);
    failed_with(
        &alice.pay(&big.payment_request, 600_000, 10_000_000),
        Reason::FAILURE_REASON_INSUFFICIENT_BALANCE,
    );
    // A zero-amount invoice needs an amount.
    let refused = alice
        .send(&pay_request(&big.payment_request, 0, 0))
        .unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNKNOWN);
    assert_eq!(
        refused.message(),
        "amount must be specified when paying a zero amount invoice"
    );
    // Paying oneself.
    let own = alice.add_invoice("own", 0, 0);
    let refused = alice
        .send(&pay_request(&own.payment_request, 5, 0))
        .unwrap_err();
    assert_eq!(refused.message(), "self-payments not allowed");
    // Not a BOLT11.
    let refused = alice
        .send(&pay_request("lnbcrt1garbage", 5, 0))
        .unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNKNOWN);

    // Expired: the network's clock moves past the invoice's expiry.
    let soon = bob.add_invoice("soon", 0, 60);
    net.advance_clock(Duration::from_secs(120));
    let refused = alice
        .send(&pay_request(&soon.payment_request, 5, 0))
        .unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNKNOWN);
    assert!(
        refused
            .message()
            .starts_with("invoice expired. Valid until "),
        "{}",
        refused.message()
    );
    assert_eq!(
        bob.lookup(&soon.r_hash).unwrap().state.enum_value(),
        Ok(lightning::invoice::InvoiceState::CANCELED)
    );

    // Cancelled: idempotent, then the receiver refuses the payment.
    let cancelled = bob.add_invoice("cancel me", 0, 0);
    let mut cancel = invoices::CancelInvoiceMsg::new();
    cancel.payment_hash = cancelled.r_hash.clone();
    bob.call(&methods::CANCEL_INVOICE, &cancel).unwrap();
    bob.call(&methods::CANCEL_INVOICE, &cancel).unwrap();
    failed_with(
        &alice.pay(&cancelled.payment_request, 5, 0),
        Reason::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS,
    );
    // Deleted, and then unknown to the receiver.
    let mut delete = lightning::DelCanceledInvoiceReq::new();
    delete.invoice_hash = hex::encode(&cancelled.r_hash);
    let deleted = bob
        .call(&methods::DELETE_CANCELED_INVOICE, &delete)
        .unwrap();
    assert!(
        deleted.status.contains("deleted successfully"),
        "{}",
        deleted.status
    );
    assert_eq!(
        bob.lookup(&cancelled.r_hash).unwrap_err().code(),
        RpcStatusCode::NOT_FOUND
    );
    failed_with(
        &alice.pay(&cancelled.payment_request, 5, 0),
        Reason::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS,
    );
    delete.invoice_hash = String::new();
    assert_eq!(
        bob.call(&methods::DELETE_CANCELED_INVOICE, &delete)
            .unwrap_err()
            .message(),
        "invoice hash must be provided"
    );

    // A settled invoice can be neither cancelled nor deleted.
    let settled = bob.add_invoice("settled", 0, 0);
    succeeded(&alice.pay(&settled.payment_request, 7, 0));
    cancel.payment_hash = settled.r_hash.clone();
    let refused = bob.call(&methods::CANCEL_INVOICE, &cancel).unwrap_err();
    assert_eq!(refused.message(), "invoice already settled");
    delete.invoice_hash = hex::encode(&settled.r_hash);
    let refused = bob
        .call(&methods::DELETE_CANCELED_INVOICE, &delete)
        .unwrap_err();
    assert_eq!(refused.message(), "invoice not canceled");

    // A forced failure, then the retry of the same invoice succeeds.
    let flaky = bob.add_invoice("flaky", 0, 0);
    net.node("alice")
        .unwrap()
        .fail_next_payments(1, FailureReason::NoRoute);
    failed_with(
        &alice.pay(&flaky.payment_request, 9, 0),
        Reason::FAILURE_REASON_NO_ROUTE,
    );
    succeeded(&alice.pay(&flaky.payment_request, 9, 0));

    // A node too slow for the payment's timeout.
    let slow = bob.add_invoice("slow", 0, 0);
    net.node("alice")
        .unwrap()
        .set_latency(Duration::from_secs(5));
    let mut request = pay_request(&slow.payment_request, 9, 0);
    request.timeout_seconds = 1;
    let updates = alice.send(&request).unwrap();
    failed_with(updates.last().unwrap(), Reason::FAILURE_REASON_TIMEOUT);
    conserved(&net, total);
}

/// LND `payments/db/payment_status.go` `initializable`: with an HTLC in flight, a second
/// payment of the hash is "payment is in transition" (ALREADY_EXISTS); a tracker joining then
/// sees the end too.
#[test]
fn a_second_payment_while_the_first_is_in_flight_is_in_transition() {
    let net = two_nodes();
    let env = env();
    let alice_node = net.node("alice").unwrap();
    let alice = Lnd::connect(&env, alice_node);
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    let invoice = bob.add_invoice("once", 0, 0);
    alice_node.hold_payments(true);
    let mut first = alice.stream(
        &methods::SEND_PAYMENT_V2,
        &pay_request(&invoice.payment_request, 21, 0),
    );
    let held = alice_node.wait_for_held_payments(1, DEADLINE).unwrap();
    assert_eq!(held[0].to_vec(), invoice.r_hash);
    // The first update (no HTLC yet), and the second once the HTLC is out.
    for htlcs in [0, 1] {
        let update = first.next().unwrap().unwrap();
        assert_eq!(update.status.enum_value(), Ok(PaymentStatus::IN_FLIGHT));
        assert_eq!(update.htlcs.len(), htlcs);
    }
    let refused = alice
        .send(&pay_request(&invoice.payment_request, 21, 0))
        .unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::ALREADY_EXISTS);
    assert_eq!(refused.message(), "payment is in transition");
    let mut tracker = alice.stream(&methods::TRACK_PAYMENT_V2, &{
        let mut track = router::TrackPaymentRequest::new();
        track.payment_hash = invoice.r_hash.clone();
        track
    });
    let now = tracker.next().unwrap().unwrap();
    assert_eq!(now.status.enum_value(), Ok(PaymentStatus::IN_FLIGHT));
    assert_eq!(now.htlcs.len(), 1);

    assert_eq!(alice_node.release_held_payments(Release::Forward), 1);
    let tracked: Vec<lightning::Payment> = tracker.collect::<Result<_, _>>().unwrap();
    assert_eq!(tracked.len(), 1, "the end, then the stream closes");
    succeeded(&tracked[0]);
    let rest: Vec<lightning::Payment> = first.collect::<Result<_, _>>().unwrap();
    assert_eq!(rest.len(), 1);
    succeeded(&rest[0]);
    assert_eq!(bob.lookup(&invoice.r_hash).unwrap().amt_paid_sat, 21);
}

#[test]
fn concurrent_payments_keep_every_channel_consistent() {
    // A ring: paying the next node is direct, paying the one after goes through a hop.
    let names = ["alice", "bob", "carol", "dave"];
    let mut builder = SimNetwork::builder();
    for name in names {
        builder = builder.node(name);
    }
    for i in 0..names.len() {
        builder = builder.channel(
            names[i],
            names[(i + 1) % names.len()],
            1_000_000,
            ChannelPolicy {
                base_fee_msat: 500,
                fee_ppm: 100,
            },
        );
    }
    let net = builder.start().unwrap();
    let total = net.total_balance_msat();
    let before: Vec<u64> = net.nodes().iter().map(|n| n.local_balance_msat()).collect();
    let env = env();
    const PAYMENTS_PER_THREAD: usize = 12;
    // Per thread: (payer, [(payee, amount msat)], fees paid msat).
    type Outcome = (usize, Vec<(usize, u64)>, u64);
    let results: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..names.len())
            .map(|i| {
                let net = &net;
                let env = &env;
                scope.spawn(move || {
                    let payer = Lnd::connect(env, net.node(names[i]).unwrap());
                    let targets = [(i + 1) % names.len(), (i + 2) % names.len()];
                    let payees = targets.map(|t| Lnd::connect(env, net.node(names[t]).unwrap()));
                    let mut received = Vec::new();
                    let mut fees = 0u64;
                    for round in 0..PAYMENTS_PER_THREAD {
                        let invoice = payees[round % 2].add_invoice("", 0, 0);
                        let amount = 1_000 + round as i64;
                        let payment = payer.pay(&invoice.payment_request, amount, 5_000);
                        succeeded(&payment);
                        assert_eq!(payment.fee_msat == 0, round % 2 == 0, "{payment:?}");
                        received.push((targets[round % 2], amount as u64 * 1000));
                        fees += payment.fee_msat as u64;
                    }
                    (i, received, fees)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    conserved(&net, total);
    // Every node's balance moved by exactly: received - sent - fees paid + fees earned, and
    // the fees earned add up to the fees paid.
    let after: Vec<u64> = net.nodes().iter().map(|n| n.local_balance_msat()).collect();
    let mut expected_without_earnings: Vec<i128> = before.iter().map(|b| *b as i128).collect();
    let mut fees_paid = 0i128;
    for (payer, received, fees) in &results {
        for (payee, amount) in received {
            expected_without_earnings[*payee] += *amount as i128;
            expected_without_earnings[*payer] -= *amount as i128;
        }
        expected_without_earnings[*payer] -= *fees as i128;
        fees_paid += *fees as i128;
    }
    let earned: Vec<i128> = after
        .iter()
        .zip(&expected_without_earnings)
        .map(|(after, expected)| *after as i128 - expected)
        .collect();
    assert!(earned.iter().all(|e| *e >= 0), "{earned:?}");
    assert_eq!(earned.iter().sum::<i128>(), fees_paid);
    assert!(fees_paid > 0);
}

#[test]
fn a_node_goes_offline_and_comes_back_on_the_same_port() {
    let net = two_nodes();
    let env = env();
    let bob_node = net.node("bob").unwrap();
    let port = bob_node.port();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, bob_node);
    let first = bob.add_invoice("before", 0, 0);
    let second = bob.add_invoice("while away", 0, 0);
    let mut from = lightning::InvoiceSubscription::new();
    from.add_index = 1;
    let mut stream = bob.stream(&methods::SUBSCRIBE_INVOICES, &from);
    let event = next(&mut stream);
    assert_eq!((event.add_index, event.settle_index), (2, 0));
    succeeded(&alice.pay(&first.payment_request, 11, 0));
    let event = next(&mut stream);
    assert_eq!((event.add_index, event.settle_index), (1, 1));

    bob_node.set_offline(true).unwrap();
    assert!(bob_node.is_offline());
    // The open stream ends with an error, not a clean end.
    match stream.next() {
        Some(Err(_)) => {}
        other => panic!("expected the stream to fail, got {other:?}"),
    }
    let down = Lnd::connect(&env, bob_node)
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap_err();
    assert_eq!(down.code(), RpcStatusCode::UNAVAILABLE);

    // Bob's channels stay up: he is paid while his API is down.
    succeeded(&alice.pay(&second.payment_request, 77, 0));

    bob_node.set_offline(false).unwrap();
    assert!(!bob_node.is_offline());
    assert_eq!(bob_node.port(), port);
    // The same client reconnects (same cert, same macaroon) and resumes the stream from the
    // last indexes it saw: the settle it missed is replayed.
    let info = bob
        .client
        .unary_call(
            &methods::GET_INFO,
            &lightning::GetInfoRequest::new(),
            bob.options().wait_for_ready(true),
        )
        .unwrap();
    assert_eq!(info.identity_pubkey, bob_node.pubkey_hex());
    let mut resume = lightning::InvoiceSubscription::new();
    resume.add_index = 2;
    resume.settle_index = 1;
    let mut resumed = bob.stream(&methods::SUBSCRIBE_INVOICES, &resume);
    let missed = resumed.next().unwrap().unwrap();
    assert_eq!((missed.add_index, missed.settle_index), (2, 2));
    assert_eq!(missed.amt_paid_sat, 77);
}

#[test]
fn a_client_trusting_another_nodes_certificate_cannot_connect() {
    let net = two_nodes();
    let env = env();
    let alice = net.node("alice").unwrap();
    let bob = net.node("bob").unwrap();
    assert_ne!(alice.tls_cert_pem(), bob.tls_cert_pem());
    let credentials = ChannelCredentialsBuilder::new()
        .root_cert(bob.tls_cert_pem().as_bytes().to_vec())
        .build();
    let channel = ChannelBuilder::new(env.clone())
        .set_credentials(credentials)
        .connect(&format!("localhost:{}", alice.port()));
    let lnd = Lnd {
        client: grpcio::Client::new(channel),
        macaroon_hex: alice.macaroon_hex(),
    };
    let refused = lnd
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNAVAILABLE);
}

#[test]
fn latency_delays_replies_past_a_short_deadline() {
    let net = two_nodes();
    let env = env();
    let alice = net.node("alice").unwrap();
    let lnd = Lnd::connect(&env, alice);
    // An hour against 300 ms: no load can make the answer win.
    alice.set_latency(Duration::from_secs(3600));
    let options = lnd.options().timeout(Duration::from_millis(300));
    let late = lnd
        .client
        .unary_call(
            &methods::GET_INFO,
            &lightning::GetInfoRequest::new(),
            options,
        )
        .unwrap_err();
    assert_eq!(status(late).code(), RpcStatusCode::DEADLINE_EXCEEDED);
    // "Never answer": Instant + Duration::MAX used to panic in the simulator's handler.
    alice.set_latency(Duration::MAX);
    let never = lnd
        .client
        .unary_call(
            &methods::GET_INFO,
            &lightning::GetInfoRequest::new(),
            lnd.options().timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    assert_eq!(status(never).code(), RpcStatusCode::DEADLINE_EXCEEDED);
    alice.set_latency(Duration::ZERO);
    lnd.call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap();
}

#[test]
fn an_lnd_older_than_0_20_has_no_delete_canceled_invoice() {
    let net = SimNetwork::builder()
        .node("old")
        .lnd_version("0.19.2-beta commit=sim")
        .start()
        .unwrap();
    let env = env();
    let lnd = Lnd::connect(&env, net.node("old").unwrap());
    let info = lnd
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap();
    assert_eq!(info.version, "0.19.2-beta commit=sim");
    let mut delete = lightning::DelCanceledInvoiceReq::new();
    delete.invoice_hash = "00".repeat(32);
    let refused = lnd
        .call(&methods::DELETE_CANCELED_INVOICE, &delete)
        .unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNIMPLEMENTED);
}

#[test]
fn a_payment_outlives_its_stream_when_the_node_goes_offline() {
    let net = two_nodes();
    let env = env();
    let alice_node = net.node("alice").unwrap();
    let alice = Lnd::connect(&env, alice_node);
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    let invoice = bob.add_invoice("outlives", 0, 0);
    alice_node.hold_payments(true);
    let mut stream = alice.stream(
        &methods::SEND_PAYMENT_V2,
        &pay_request(&invoice.payment_request, 500, 0),
    );
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first.status.enum_value(), Ok(PaymentStatus::IN_FLIGHT));
    alice_node.wait_for_held_payments(1, DEADLINE).unwrap();
    alice_node.set_offline(true).unwrap();
    // Whatever updates were on their way, the stream ends with an error, not a clean end.
    let ended = loop {
        match stream.next() {
            Some(Ok(update)) => {
                assert_eq!(update.status.enum_value(), Ok(PaymentStatus::IN_FLIGHT))
            }
            other => break other,
        }
    };
    assert!(matches!(ended, Some(Err(_))), "{ended:?}");
    // The node, still running, lets the HTLC go on while its API is down.
    assert_eq!(alice_node.release_held_payments(Release::Forward), 1);
    alice_node.set_offline(false).unwrap();
    // Back: the payment went on without its stream; tracking it shows how it ended.
    let mut track = router::TrackPaymentRequest::new();
    track.payment_hash = invoice.r_hash.clone();
    let options = alice.options().wait_for_ready(true);
    let updates: Vec<lightning::Payment> = futures::executor::block_on_stream(
        alice
            .client
            .server_streaming(&methods::TRACK_PAYMENT_V2, &track, options)
            .unwrap(),
    )
    .collect::<Result<_, _>>()
    .unwrap();
    succeeded(updates.last().unwrap());
    assert_eq!(
        bob.lookup(&invoice.r_hash).unwrap().amt_paid_sat,
        500,
        "Bob was paid"
    );
}

#[test]
fn invoices_for_another_network_are_refused() {
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    let net = two_nodes();
    let env = env();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[3u8; 32]).unwrap();
    let mainnet = lightning_invoice::InvoiceBuilder::new(lightning_invoice::Currency::Bitcoin)
        .description("elsewhere".to_string())
        .payment_hash(sha256::Hash::hash(b"preimage"))
        .payment_secret(lightning_invoice::PaymentSecret([5u8; 32]))
        .duration_since_epoch(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap(),
        )
        .min_final_cltv_expiry_delta(80)
        .amount_milli_satoshis(10_000)
        .build_signed(|message| secp.sign_ecdsa_recoverable(message, &key))
        .unwrap()
        .to_string();
    let mut decode = lightning::PayReqString::new();
    decode.pay_req = mainnet.clone();
    let refused = alice.call(&methods::DECODE_PAY_REQ, &decode).unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNKNOWN);
    assert_eq!(
        refused.message(),
        "invoice not for current active network 'regtest'"
    );
    let refused = alice.send(&pay_request(&mainnet, 0, 0)).unwrap_err();
    assert_eq!(
        refused.message(),
        "invoice not for current active network 'regtest'"
    );
}

#[test]
fn a_channel_funded_by_one_side_only_pays_one_way() {
    // Bob opens with all the capacity on his side: Alice has nothing to send.
    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .channel_with_balance("bob", "alice", 100_000, 100_000, ChannelPolicy::default())
        .start()
        .unwrap();
    let env = env();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    let to_bob = bob.add_invoice("", 0, 0);
    failed_with(
        &alice.pay(&to_bob.payment_request, 1, 0),
        Reason::FAILURE_REASON_INSUFFICIENT_BALANCE,
    );
    let to_alice = alice.add_invoice("", 0, 0);
    succeeded(&bob.pay(&to_alice.payment_request, 40_000, 0));
    // Now Alice has something to send back, less her reserve (1% of 100 000 sat).
    assert_eq!(net.node("alice").unwrap().spendable_msat(), 39_000_000);
    succeeded(&alice.pay(&to_bob.payment_request, 1, 0));
    assert_eq!(net.node("alice").unwrap().local_balance_msat(), 39_999_000);
}

#[test]
fn a_network_that_makes_no_sense_is_refused() {
    let policy = ChannelPolicy::default();
    let refused = |builder: ilp_plugin_lightning::lnd::sim::SimNetworkBuilder| {
        builder.start().err().unwrap().to_string()
    };
    assert!(refused(SimNetwork::builder()).contains("no nodes"));
    assert!(refused(SimNetwork::builder().node("a").node("a")).contains("twice"));
    assert!(refused(
        SimNetwork::builder()
            .node("a")
            .channel("a", "z", 10, policy)
    )
    .contains("no node called \"z\""));
    assert!(refused(
        SimNetwork::builder()
            .node("a")
            .channel("a", "a", 10, policy)
    )
    .contains("itself"));
    assert!(refused(
        SimNetwork::builder()
            .node("a")
            .node("b")
            .channel_with_balance("a", "b", 10, 11, policy)
    )
    .contains("cannot hold 11 sat"));
    assert!(refused(
        SimNetwork::builder()
            .node("a")
            .node("b")
            .channel("a", "b", 0, policy)
    )
    .contains("capacity 0"));
    // The opener pays the commitment fee and anchors out of its side.
    assert!(refused(
        SimNetwork::builder()
            .node("a")
            .node("b")
            .channel_with_balance("a", "b", 10_000, 3_469, policy)
    )
    .contains("less than the commitment fee and anchors it pays (3470 sat)"));
    assert!(
        refused(SimNetwork::builder().node("a").lnd_version("0.17.4")).contains("0.18 to 0.21")
    );
    assert!(refused(SimNetwork::builder().node("a").lnd_version("1.0")).contains("0.18 to 0.21"));
    assert!(refused(SimNetwork::builder().node("a").accept_keysend("z")).contains("no node called"));
}
