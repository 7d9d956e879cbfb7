//! The faults `SimNetwork` injects so that settlement can be tested against the ways LND
//! fails: payments held in flight and released to succeed or fail, payment and tracking streams
//! that break while the node carries on, an invoice stream that breaks mid-replay. Over real
//! TLS gRPC with a raw client; every wait is for an event.
#![cfg(feature = "sim")]

mod sim_support;

use std::time::Duration;

use grpcio::RpcStatusCode;
use ilp_plugin_lightning::lnd::methods;
use ilp_plugin_lightning::lnd::proto::{invoices, lightning};
use ilp_plugin_lightning::lnd::sim::{FailureReason, Release};
use lightning::payment::PaymentStatus;
use lightning::PaymentFailureReason as Reason;
use sim_support::*;

#[test]
fn held_payments_stay_in_flight_until_released_to_succeed_or_fail() {
    let net = three_in_a_row();
    let env = env();
    let total = net.total_balance_msat();
    let alice_node = net.node("alice").unwrap();
    let alice = Lnd::connect(&env, alice_node);
    let carol = Lnd::connect(&env, net.node("carol").unwrap());
    assert!(alice_node
        .wait_for_held_payments(1, Duration::from_millis(20))
        .is_none());
    alice_node.hold_payments(true);
    let invoices: Vec<_> = (0..3).map(|_| carol.add_invoice("", 0, 0)).collect();
    let streams: Vec<_> = invoices
        .iter()
        .map(|invoice| {
            alice.stream(
                &methods::SEND_PAYMENT_V2,
                &pay_request(&invoice.payment_request, 2_000, 10_000),
            )
        })
        .collect();
    let held = alice_node.wait_for_held_payments(3, DEADLINE).unwrap();
    let hashes: Vec<Vec<u8>> = invoices.iter().map(|i| i.r_hash.clone()).collect();
    let mut sorted_held: Vec<Vec<u8>> = held.iter().map(|h| h.to_vec()).collect();
    sorted_held.sort();
    let mut sorted_hashes = hashes.clone();
    sorted_hashes.sort();
    assert_eq!(sorted_held, sorted_hashes);
    // Locked on every hop: the money is in flight, the payee's invoices still open.
    conserved(&net, total);
    let in_flight: u64 = net
        .channel_balances()
        .iter()
        .map(|c| c.in_flight_msat)
        .sum();
    assert_eq!(
        in_flight,
        3 * (2_001_002 + 2_000_000),
        "alice→bob with bob's fee, bob→carol"
    );
    for invoice in &invoices {
        assert_eq!(
            carol.lookup(&invoice.r_hash).unwrap().state.enum_value(),
            Ok(lightning::invoice::InvoiceState::OPEN)
        );
        let now = alice
            .stream(&methods::TRACK_PAYMENT_V2, &{
                let mut track =
                    ilp_plugin_lightning::lnd::proto::router::TrackPaymentRequest::new();
                track.payment_hash = invoice.r_hash.clone();
                track
            })
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(now.status.enum_value(), Ok(PaymentStatus::IN_FLIGHT));
        assert_eq!(now.htlcs.len(), 1);
    }

    // One forwarded, one failed on the way, one forwarded to an invoice cancelled meanwhile.
    let mut cancel = invoices::CancelInvoiceMsg::new();
    cancel.payment_hash = invoices[2].r_hash.clone();
    carol.call(&methods::CANCEL_INVOICE, &cancel).unwrap();
    let hash = |i: usize| <[u8; 32]>::try_from(invoices[i].r_hash.as_slice()).unwrap();
    assert!(alice_node.release_held_payment(&hash(0), Release::Forward));
    assert!(alice_node.release_held_payment(&hash(1), Release::Fail(FailureReason::NoRoute)));
    assert!(
        !alice_node.release_held_payment(&hash(1), Release::Forward),
        "released already"
    );
    assert_eq!(alice_node.release_held_payments(Release::Forward), 1);
    assert!(alice_node.held_payments().is_empty());
    let ends: Vec<lightning::Payment> = streams
        .into_iter()
        .map(|stream| {
            let updates: Vec<_> = stream.collect::<Result<_, _>>().unwrap();
            updates.last().unwrap().clone()
        })
        .collect();
    succeeded(&ends[0]);
    failed_with(&ends[1], Reason::FAILURE_REASON_NO_ROUTE);
    failed_with(&ends[2], Reason::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS);
    conserved(&net, total);
    assert!(net.channel_balances().iter().all(|c| c.in_flight_msat == 0));
    assert_eq!(
        carol.lookup(&invoices[0].r_hash).unwrap().amt_paid_sat,
        2_000
    );

    // No longer holding: payments go through at once.
    alice_node.hold_payments(false);
    let invoice = carol.add_invoice("", 0, 0);
    succeeded(&alice.pay(&invoice.payment_request, 1_000, 10_000));
}

#[test]
fn a_broken_payment_stream_leaves_the_payment_to_complete() {
    let net = two_nodes();
    let env = env();
    let alice_node = net.node("alice").unwrap();
    let alice = Lnd::connect(&env, alice_node);
    let bob = Lnd::connect(&env, net.node("bob").unwrap());

    // The client's stream fails; the node pays anyway.
    alice_node.break_next_payment_streams(1);
    let invoice = bob.add_invoice("", 0, 0);
    let broken = alice
        .send(&pay_request(&invoice.payment_request, 3_000, 0))
        .unwrap_err();
    assert_eq!(broken.code(), RpcStatusCode::UNAVAILABLE);
    succeeded(alice.track(&invoice.r_hash).unwrap().last().unwrap());
    assert_eq!(bob.lookup(&invoice.r_hash).unwrap().amt_paid_sat, 3_000);

    // Only the next one was broken.
    let invoice = bob.add_invoice("", 0, 0);
    succeeded(&alice.pay(&invoice.payment_request, 3_000, 0));

    // Broken while held: the payment is still in flight, and ends when released.
    alice_node.break_next_payment_streams(1);
    alice_node.hold_payments(true);
    let invoice = bob.add_invoice("", 0, 0);
    let mut request = pay_request(&invoice.payment_request, 4_000, 0);
    request.no_inflight_updates = true;
    let broken = alice.send(&request).unwrap_err();
    assert_eq!(broken.code(), RpcStatusCode::UNAVAILABLE);
    alice_node.wait_for_held_payments(1, DEADLINE).unwrap();
    let mut tracker = alice.stream(&methods::TRACK_PAYMENT_V2, &{
        let mut track = ilp_plugin_lightning::lnd::proto::router::TrackPaymentRequest::new();
        track.payment_hash = invoice.r_hash.clone();
        track
    });
    let now = tracker.next().unwrap().unwrap();
    assert_eq!(now.status.enum_value(), Ok(PaymentStatus::IN_FLIGHT));
    alice_node.release_held_payments(Release::Forward);
    succeeded(&tracker.next().unwrap().unwrap());
    assert!(tracker.next().is_none());
}

#[test]
fn a_broken_tracking_stream_does_not_touch_the_payment() {
    let net = two_nodes();
    let env = env();
    let alice_node = net.node("alice").unwrap();
    let alice = Lnd::connect(&env, alice_node);
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    alice_node.hold_payments(true);
    let invoice = bob.add_invoice("", 0, 0);
    let _payment = alice.stream(
        &methods::SEND_PAYMENT_V2,
        &pay_request(&invoice.payment_request, 3_000, 0),
    );
    alice_node.wait_for_held_payments(1, DEADLINE).unwrap();
    alice_node.break_next_track_streams(1);
    let mut request = ilp_plugin_lightning::lnd::proto::router::TrackPaymentRequest::new();
    request.payment_hash = invoice.r_hash.clone();
    let broken = alice.track(&invoice.r_hash).unwrap_err();
    assert_eq!(broken.code(), RpcStatusCode::UNAVAILABLE);
    let mut healthy = alice.stream(&methods::TRACK_PAYMENT_V2, &request);
    assert_eq!(
        healthy.next().unwrap().unwrap().status.enum_value(),
        Ok(PaymentStatus::IN_FLIGHT)
    );
    alice_node.release_held_payments(Release::Forward);
    succeeded(&healthy.next().unwrap().unwrap());
    // An unknown hash is still NOT_FOUND when a break is pending: the break is for a stream.
    alice_node.break_next_track_streams(1);
    assert_eq!(
        alice.track(&[9; 32]).unwrap_err().code(),
        RpcStatusCode::NOT_FOUND
    );
}

#[test]
fn an_invoice_stream_breaks_after_its_events_and_resumes() {
    let net = two_nodes();
    let env = env();
    let bob_node = net.node("bob").unwrap();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, bob_node);
    let invoices: Vec<_> = (0..4).map(|_| bob.add_invoice("", 0, 0)).collect();
    succeeded(&alice.pay(&invoices[0].payment_request, 1, 0));
    bob_node.break_next_invoice_stream_after(3);
    let mut from = lightning::InvoiceSubscription::new();
    from.add_index = 1;
    from.settle_index = 0;
    let mut stream = bob.stream(&methods::SUBSCRIBE_INVOICES, &from);
    // Three events are sent, then the failure; a grpcio client may report the failure before
    // the last of them (it hands them out afterwards, but a consumer stops at the error), as
    // when a connection drops.
    let mut seen = Vec::new();
    let failure = loop {
        match stream.next().expect("the stream fails rather than ends") {
            Ok(invoice) => seen.push(invoice.add_index),
            Err(error) => break status(error),
        }
    };
    assert_eq!(failure.code(), RpcStatusCode::UNAVAILABLE);
    assert_eq!(seen, [2, 3, 4][..seen.len()]);
    drop(stream);
    // Resumed from what it saw: the rest of the backlog, then live events.
    from.add_index = seen.last().copied().unwrap_or(1);
    let mut resumed = bob.stream(&methods::SUBSCRIBE_INVOICES, &from);
    for add_index in from.add_index + 1..=4 {
        assert_eq!(next(&mut resumed).add_index, add_index);
    }
    let fifth = bob.add_invoice("", 0, 0);
    assert_eq!(next(&mut resumed).r_hash, fifth.r_hash);
}

/// LND `rpcperms/interceptor.go` `checkRPCState`, run before the macaroon check: with the
/// wallet locked (after a restart), every call is UNKNOWN "wallet locked, unlock it to enable
/// full RPC access"; the node's channels stay up.
#[test]
fn a_locked_wallet_refuses_every_call_until_unlocked() {
    let net = two_nodes();
    let env = env();
    let bob_node = net.node("bob").unwrap();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, bob_node);
    let invoice = bob.add_invoice("", 0, 0);
    bob_node.set_wallet_locked(true);
    let locked = "wallet locked, unlock it to enable full RPC access";
    let refused = bob
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (RpcStatusCode::UNKNOWN, locked)
    );
    // Before the macaroon: a wrong one gets the same answer.
    let stranger = Lnd::connect_with(&env, bob_node, "00".to_string());
    let refused = stranger
        .call(&methods::GET_INFO, &lightning::GetInfoRequest::new())
        .unwrap_err();
    assert_eq!(refused.message(), locked);
    let refused = bob
        .send(&pay_request(&invoice.payment_request, 1, 0))
        .unwrap_err();
    assert_eq!(refused.message(), locked);
    // Paid meanwhile: its channels are up.
    succeeded(&alice.pay(&invoice.payment_request, 5, 0));
    bob_node.set_wallet_locked(false);
    assert_eq!(bob.lookup(&invoice.r_hash).unwrap().amt_paid_sat, 5);
}
