//! Issue 9: the simulator behaves as LND does wherever a plugin can tell the difference. One
//! test per point, over real TLS gRPC with a raw client; each cites the LND code
//! (lightningnetwork/lnd, master of 2026-08 unless a version is named) it follows.
#![cfg(feature = "sim")]

mod sim_support;

use std::collections::BTreeSet;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use futures::{SinkExt, StreamExt};
use grpcio::{MetadataBuilder, RpcStatusCode, WriteFlags};
use ilp_plugin_lightning::lnd::methods;
use ilp_plugin_lightning::lnd::proto::{invoices, lightning, router};
use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, Release, SimNetwork};
use lightning::invoice::InvoiceState::{OPEN, SETTLED};
use lightning::payment::PaymentStatus;
use lightning::PaymentFailureReason as Reason;
use sim_support::*;

const ZERO_PREIMAGE: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const KEYSEND_RECORD: u64 = 5_482_373_484;

/// (add index, settle index, state) of an invoice event.
fn event(invoice: &lightning::Invoice) -> (u64, u64, lightning::invoice::InvoiceState) {
    (
        invoice.add_index,
        invoice.settle_index,
        invoice.state.enum_value().unwrap(),
    )
}

fn subscribe(lnd: &Lnd, add_index: u64, settle_index: u64) -> Stream<lightning::Invoice> {
    let mut from = lightning::InvoiceSubscription::new();
    from.add_index = add_index;
    from.settle_index = settle_index;
    lnd.stream(&methods::SUBSCRIBE_INVOICES, &from)
}

/// Point 1. LND `invoices/invoiceregistry.go`: `deliverBacklogEvents` queues every invoice
/// added after the client's add index in its current state, then every invoice settled after
/// its settle index, with no de-duplication; `SubscribeNotifications` drops what is neither
/// OPEN nor SETTLED; `dispatchToClients` sends live events once, filtered by the client's own
/// indexes. `channeldb/invoices.go` `InvoicesAddedSince`/`InvoicesSettledSince`: 0 means none.
#[test]
fn p1_subscribe_invoices_replays_settled_invoices_again() {
    let net = two_nodes();
    let env = env();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    let invoices: Vec<_> = (1..=5)
        .map(|n| bob.add_invoice(&n.to_string(), 0, 0))
        .collect();
    // Settle index 1 for invoice 3, 2 for invoice 1, 3 for invoice 2; invoice 5 cancelled.
    for n in [3, 1, 2] {
        succeeded(&alice.pay(&invoices[n - 1].payment_request, n as i64, 0));
    }
    let mut cancel = invoices::CancelInvoiceMsg::new();
    cancel.payment_hash = invoices[4].r_hash.clone();
    bob.call(&methods::CANCEL_INVOICE, &cancel).unwrap();

    let mut stream = subscribe(&bob, 1, 1);
    let backlog: Vec<_> = (0..5).map(|_| event(&next(&mut stream))).collect();
    assert_eq!(
        backlog,
        [
            // Adds after 1, as they are now: 2 and 3 are settled (3 with settle index 1, not
            // above the client's, still comes as SETTLED), 4 is open, 5 (cancelled) is left out.
            (2, 3, SETTLED),
            (3, 1, SETTLED),
            (4, 0, OPEN),
            // Settles after 1: invoice 1, and invoice 2 again.
            (1, 2, SETTLED),
            (2, 3, SETTLED),
        ]
    );
    // Live: each event once, in order, nothing replayed between them.
    let sixth = bob.add_invoice("6", 0, 0);
    succeeded(&alice.pay(&invoices[3].payment_request, 4, 0));
    let seventh = bob.add_invoice("7", 0, 0);
    assert_eq!(event(&next(&mut stream)), (6, 0, OPEN));
    assert_eq!(event(&next(&mut stream)), (4, 4, SETTLED));
    let live = next(&mut stream);
    assert_eq!(event(&live), (7, 0, OPEN));
    assert_eq!(live.r_hash, seventh.r_hash);
    assert_ne!(sixth.r_hash, seventh.r_hash);

    // An index of 0 replays nothing for that index.
    let mut settles_only = subscribe(&bob, 0, 2);
    assert_eq!(event(&next(&mut settles_only)), (2, 3, SETTLED));
    assert_eq!(event(&next(&mut settles_only)), (4, 4, SETTLED));
    let mut adds_only = subscribe(&bob, 5, 0);
    assert_eq!(event(&next(&mut adds_only)), (6, 0, OPEN));
    assert_eq!(event(&next(&mut adds_only)), (7, 0, OPEN));
    let mut live_only = subscribe(&bob, 0, 0);
    let eighth = bob.add_invoice("8", 0, 0);
    for stream in [&mut settles_only, &mut adds_only, &mut live_only] {
        assert_eq!(next(stream).r_hash, eighth.r_hash);
    }
}

fn keysend_request(dest: [u8; 33], amt_sat: i64, preimage: [u8; 32]) -> router::SendPaymentRequest {
    let mut request = router::SendPaymentRequest::new();
    request.dest = dest.to_vec();
    request.amt = amt_sat;
    request.payment_hash = sha256::Hash::hash(&preimage).to_byte_array().to_vec();
    request.fee_limit_sat = 10;
    request.timeout_seconds = 30;
    request
        .dest_custom_records
        .insert(KEYSEND_RECORD, preimage.to_vec());
    request
        .dest_custom_records
        .insert(696_969, b"ilp account".to_vec());
    request
}

/// Point 2. LND `invoices/invoiceregistry.go` `NotifyExitHopHtlc` runs `processKeySend` only
/// with `cfg.AcceptKeySend` (`--accept-keysend`, off by default): without it the HTLC is an
/// unknown payment, FAILED with INCORRECT_PAYMENT_DETAILS. `server.go` sets
/// `NoKeysend: !cfg.AcceptKeySend`, so GetInfo's feature 55 comes and goes with it
/// (`feature/manager.go`). `processKeySend` inserts an invoice with the HTLC's amount, the
/// preimage, a blank payment address, tlv-onion required and `FinalCltvRejectDelta` (19);
/// `invoicesrpc.CreateRPCInvoice` shows it with `is_keysend` and every HTLC custom record.
#[test]
fn p2_keysend_is_refused_unless_the_node_accepts_it() {
    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .node("carol")
        .fully_connected(1_000_000)
        .accept_keysend("carol")
        .start()
        .unwrap();
    let env = env();
    let bob_node = net.node("bob").unwrap();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, bob_node);
    let carol = Lnd::connect(&env, net.node("carol").unwrap());
    assert!(!bob.get_info().features.contains_key(&55));
    let keysend = &carol.get_info().features[&55];
    assert_eq!(
        (keysend.name.as_str(), keysend.is_required, keysend.is_known),
        ("keysend", false, true)
    );
    let total = net.total_balance_msat();

    let refused = alice
        .send(&keysend_request(bob_node.pubkey(), 5_000, [7; 32]))
        .unwrap();
    let last = refused.last().unwrap();
    failed_with(last, Reason::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS);
    assert_eq!(last.payment_preimage, ZERO_PREIMAGE);
    assert_eq!(
        bob.lookup(&sha256::Hash::hash(&[7; 32]).to_byte_array())
            .unwrap_err()
            .code(),
        RpcStatusCode::NOT_FOUND
    );
    conserved(&net, total);

    bob_node.set_accept_keysend(true);
    assert!(bob.get_info().features.contains_key(&55));
    for (payee, node, preimage) in [
        (&bob, bob_node, [8u8; 32]),
        (&carol, net.node("carol").unwrap(), [9; 32]),
    ] {
        let paid = alice
            .send(&keysend_request(node.pubkey(), 5_000, preimage))
            .unwrap();
        let last = paid.last().unwrap();
        succeeded(last);
        assert_eq!(last.payment_preimage, hex::encode(preimage));
        let invoice = payee
            .lookup(&sha256::Hash::hash(&preimage).to_byte_array())
            .unwrap();
        assert!(invoice.is_keysend);
        assert_eq!(invoice.state.enum_value(), Ok(SETTLED));
        assert!(invoice.payment_request.is_empty());
        assert_eq!(invoice.payment_addr, vec![0; 32]);
        assert_eq!(invoice.r_preimage, preimage.to_vec());
        assert_eq!(invoice.value_msat, 5_000_000);
        assert_eq!(invoice.amt_paid_msat, 5_000_000);
        assert_eq!(invoice.cltv_expiry, 19);
        assert_eq!(invoice.expiry, 0);
        assert_eq!(invoice.features.keys().copied().collect::<Vec<_>>(), [8]);
        let records = &invoice.htlcs[0].custom_records;
        assert_eq!(records[&KEYSEND_RECORD], preimage.to_vec());
        assert_eq!(records[&696_969], b"ilp account");
    }
    // Switched off again: refused again.
    bob_node.set_accept_keysend(false);
    assert!(!bob_node.accepts_keysend());
    let again = alice
        .send(&keysend_request(bob_node.pubkey(), 5_000, [10; 32]))
        .unwrap();
    failed_with(
        again.last().unwrap(),
        Reason::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS,
    );
}

/// Point 3. LND `rpcperms/interceptor.go` `checkMacaroon` → `macaroons/service.go`
/// `ValidateMacaroon` (`RawMacaroonFromContext`: "expected 1 macaroon, got %d"; Go's hex
/// errors; the bakery's "verification failed: signature mismatch after caveat verification").
/// They are plain Go errors, so gRPC's status code is UNKNOWN, on unary calls and streams alike.
#[test]
fn p3_macaroon_failures_are_unknown_with_lnds_texts() {
    let net = two_nodes();
    let env = env();
    let alice = net.node("alice").unwrap();
    let bob = net.node("bob").unwrap();
    let request = lightning::GetInfoRequest::new();
    let refused = |macaroon: String| {
        Lnd::connect_with(&env, alice, macaroon)
            .call(&methods::GET_INFO, &request)
            .unwrap_err()
    };
    for (macaroon, text) in [
        (String::new(), "expected 1 macaroon, got 0"),
        (
            bob.macaroon_hex(),
            "verification failed: signature mismatch after caveat verification",
        ),
        (
            "not hex".to_string(),
            "encoding/hex: invalid byte: U+006E 'n'",
        ),
        ("abc".to_string(), "encoding/hex: odd length hex string"),
    ] {
        let status = refused(macaroon);
        assert_eq!(
            status.code(),
            RpcStatusCode::UNKNOWN,
            "{}",
            status.message()
        );
        assert_eq!(status.message(), text);
    }

    // Two macaroons.
    let lnd = Lnd::connect(&env, alice);
    let mut metadata = MetadataBuilder::new();
    metadata.add_str("macaroon", &alice.macaroon_hex()).unwrap();
    metadata.add_str("macaroon", &alice.macaroon_hex()).unwrap();
    let options = grpcio::CallOption::default()
        .headers(metadata.build())
        .timeout(DEADLINE);
    let status = status(
        lnd.client
            .unary_call(&methods::GET_INFO, &request, options)
            .unwrap_err(),
    );
    assert_eq!(
        (status.code(), status.message()),
        (RpcStatusCode::UNKNOWN, "expected 1 macaroon, got 2")
    );

    // Streams are guarded the same way.
    let intruder = Lnd::connect_with(&env, alice, bob.macaroon_hex());
    let mut stream = intruder.stream(
        &methods::SUBSCRIBE_INVOICES,
        &lightning::InvoiceSubscription::new(),
    );
    let error = sim_support::status(stream.next().unwrap().unwrap_err());
    assert_eq!(error.code(), RpcStatusCode::UNKNOWN);
    assert_eq!(
        error.message(),
        "verification failed: signature mismatch after caveat verification"
    );
    let refused = intruder.send(&pay_request("lnbcrt1", 1, 0)).unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNKNOWN);

    // Hex is read in either case (LND's docs use `xxd -ps -u`).
    let upper = Lnd::connect_with(&env, alice, alice.macaroon_hex().to_uppercase()).get_info();
    assert_eq!(upper.identity_pubkey, alice.pubkey_hex());
}

/// Point 4. LND `lnrpc/routerrpc/router_backend.go` `MarshallPayment`: `payment_preimage` is
/// the hex of a zero preimage until an HTLC settles. `lnrpc/invoicesrpc/utils.go`
/// `CreateRPCInvoice`: `AmtPaid: int64(invoice.AmtPaid)`, in millisatoshi.
/// `payments/db/payment_status.go` `initializable`: a payment created with no HTLC out yet is
/// "payment already exists". `router_backend.go` `extractIntentFromSendRequest`: "self-payments
/// not allowed" unless `allow_self_payment`.
#[test]
fn p4_payment_outcome_fields_as_lnd_reports_them() {
    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .node("carol")
        .fully_connected(1_000_000)
        .start()
        .unwrap();
    let env = env();
    let alice_node = net.node("alice").unwrap();
    let alice = Lnd::connect(&env, alice_node);
    let bob = Lnd::connect(&env, net.node("bob").unwrap());

    // Zero preimage while in flight and on failure; the real one on success.
    let paid = bob.add_invoice("", 0, 0);
    let updates = alice
        .send(&pay_request(&paid.payment_request, 10, 0))
        .unwrap();
    let (end, progress) = updates.split_last().unwrap();
    assert!(progress.iter().all(|u| u.payment_preimage == ZERO_PREIMAGE));
    succeeded(end);
    assert_ne!(end.payment_preimage, ZERO_PREIMAGE);
    let invoice = bob.lookup(&paid.r_hash).unwrap();
    assert_eq!(
        (
            invoice.amt_paid,
            invoice.amt_paid_sat,
            invoice.amt_paid_msat
        ),
        (10_000, 10, 10_000),
        "amt_paid is in millisatoshi"
    );
    let cancelled = bob.add_invoice("", 0, 0);
    let mut cancel = invoices::CancelInvoiceMsg::new();
    cancel.payment_hash = cancelled.r_hash.clone();
    bob.call(&methods::CANCEL_INVOICE, &cancel).unwrap();
    let failed = alice.pay(&cancelled.payment_request, 10, 0);
    failed_with(&failed, Reason::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS);
    assert_eq!(failed.payment_preimage, ZERO_PREIMAGE);
    let tracked = alice.track(&cancelled.r_hash).unwrap();
    assert_eq!(tracked.last().unwrap().payment_preimage, ZERO_PREIMAGE);

    // Created but not yet sent (the node's latency is longer than the payment's timeout, so
    // no HTLC goes out): "payment already exists".
    alice_node.set_latency(Duration::from_secs(600));
    let waiting = bob.add_invoice("", 0, 0);
    let mut first = alice.stream(
        &methods::SEND_PAYMENT_V2,
        &pay_request(&waiting.payment_request, 10, 0),
    );
    let created = first.next().unwrap().unwrap();
    assert_eq!(created.status.enum_value(), Ok(PaymentStatus::IN_FLIGHT));
    assert!(created.htlcs.is_empty());
    let again = alice
        .send(&pay_request(&waiting.payment_request, 10, 0))
        .unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (RpcStatusCode::ALREADY_EXISTS, "payment already exists")
    );
    drop(first);
    alice_node.set_latency(Duration::ZERO);

    // Paying oneself: refused unless allowed; allowed, it goes round bob and carol.
    let own = alice.add_invoice("", 0, 0);
    let refused = alice
        .send(&pay_request(&own.payment_request, 20, 0))
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (RpcStatusCode::UNKNOWN, "self-payments not allowed")
    );
    let mut request = pay_request(&own.payment_request, 20, 10_000);
    request.allow_self_payment = true;
    let before = alice_node.local_balance_msat();
    let updates = alice.send(&request).unwrap();
    let end = updates.last().unwrap();
    succeeded(end);
    // Out to bob, on to carol, back to alice over the other channel.
    let hops = &end.htlcs[0].route.as_ref().unwrap().hops;
    assert_eq!(hops.len(), 3);
    assert_eq!(hops[2].pub_key, alice_node.pubkey_hex());
    assert_eq!(end.fee_msat, 2_000);
    assert_eq!(
        alice_node.local_balance_msat(),
        before - end.fee_msat as u64
    );
    assert_eq!(
        alice.lookup(&own.r_hash).unwrap().state.enum_value(),
        Ok(SETTLED)
    );
}

/// Point 5. LND `lnwallet/channel.go` `availableCommitmentBalance` and `CalcFeeBuffer`: no side
/// may spend its reserve (1% of the capacity, `funding` defaults); the opener also keeps the
/// fee of the commitment with one more HTLC at twice the fee rate. `routing/pathfind.go`
/// `findPath`: a total outgoing bandwidth below the amount is INSUFFICIENT_BALANCE.
/// `rpcserver.go` `ChannelBalance`: the commitments' balances, and HTLCs coming in as
/// `unsettled_local_balance`, going out as `unsettled_remote_balance`.
#[test]
fn p5_reserve_and_commitment_fee_are_not_spendable() {
    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .channel_with_balance(
            "alice",
            "bob",
            1_000_000,
            1_000_000,
            ChannelPolicy::default(),
        )
        .start()
        .unwrap();
    let env = env();
    let alice_node = net.node("alice").unwrap();
    let alice = Lnd::connect(&env, alice_node);
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    let balance = alice.channel_balance();
    // 1 000 000 sat less the commitment fee (2 810 sat at 2 500 sat/kw) and anchors (660 sat).
    assert_eq!(balance.local_balance.sat, 996_530);
    assert_eq!(balance.remote_balance.sat, 0);
    let channel = &alice
        .call(
            &methods::LIST_CHANNELS,
            &lightning::ListChannelsRequest::new(),
        )
        .unwrap()
        .channels[0];
    assert_eq!((channel.commit_fee, channel.fee_per_kw), (2_810, 2_500));
    assert_eq!(channel.local_chan_reserve_sat, 10_000);
    assert!(channel.initiator);

    // Spendable: 996 530 + 2 810 (fee paid now) - 10 000 (reserve) - 6 480 (fee buffer).
    assert_eq!(alice_node.spendable_msat(), 982_860_000);
    let invoice = bob.add_invoice("", 0, 0);
    failed_with(
        &alice.pay(&invoice.payment_request, 982_861, 0),
        Reason::FAILURE_REASON_INSUFFICIENT_BALANCE,
    );
    succeeded(&alice.pay(&invoice.payment_request, 982_860, 0));
    assert_eq!(alice.channel_balance().local_balance.sat, 13_670);
    // Bob did not open the channel: only his reserve is kept back.
    let back = alice.add_invoice("", 0, 0);
    failed_with(
        &bob.pay(&back.payment_request, 972_861, 0),
        Reason::FAILURE_REASON_INSUFFICIENT_BALANCE,
    );
    let invoice = alice.add_invoice("", 0, 0);
    succeeded(&bob.pay(&invoice.payment_request, 500_000, 0));

    // An HTLC in flight: out of both commitments' balances, counted as unsettled by direction.
    alice_node.hold_payments(true);
    let held = bob.add_invoice("", 0, 0);
    let mut stream = alice.stream(
        &methods::SEND_PAYMENT_V2,
        &pay_request(&held.payment_request, 1_000, 0),
    );
    alice_node.wait_for_held_payments(1, DEADLINE).unwrap();
    let (payer, payee) = (alice.channel_balance(), bob.channel_balance());
    assert_eq!(payer.unsettled_remote_balance.sat, 1_000);
    assert_eq!(payer.unsettled_local_balance.sat, 0);
    assert_eq!(payee.unsettled_local_balance.sat, 1_000);
    assert_eq!(payer.local_balance.sat, 513_670 - 1_000);
    assert_eq!(payee.local_balance.sat, 482_860);
    let channel = &bob
        .call(
            &methods::LIST_CHANNELS,
            &lightning::ListChannelsRequest::new(),
        )
        .unwrap()
        .channels[0];
    assert_eq!(channel.unsettled_balance, 1_000);
    alice_node.release_held_payments(Release::Forward);
    let updates: Vec<_> = stream.by_ref().collect::<Result<_, _>>().unwrap();
    succeeded(updates.last().unwrap());
    assert_eq!(alice.channel_balance().unsettled_remote_balance.sat, 0);
    assert_eq!(bob.channel_balance().local_balance.sat, 483_860);
}

/// Point 6. LND `rpcserver.go` `AddInvoice` (`lnrpc.UnmarshallAmt`: "amount cannot be
/// negative") and `lnrpc/invoicesrpc/addinvoice.go` `AddInvoice`: an expiry of 0 or less is the
/// 24 h default, over a year is refused (Go prints the float: "3.1536001e+07"); a final CLTV
/// delta below `routing.MinCLTVDelta` is refused (`routing/router.go`: 24 on 0.21, 18 up to
/// 0.20); the invoice carries `feature.SetInvoice` (`feature/default_sets.go`): 8, 14, 17, 25.
#[test]
fn p6_add_invoice_is_checked_as_lnd_checks_it() {
    let net = two_nodes();
    let env = env();
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    let add = |build: &dyn Fn(&mut lightning::Invoice)| {
        let mut request = lightning::Invoice::new();
        build(&mut request);
        bob.call(&methods::ADD_INVOICE, &request)
    };
    let refused = |build: &dyn Fn(&mut lightning::Invoice)| {
        let status = add(build).unwrap_err();
        assert_eq!(status.code(), RpcStatusCode::UNKNOWN);
        status.message().to_string()
    };
    for expiry in [0, -1, -3600] {
        let added = add(&|r| r.expiry = expiry).unwrap();
        assert_eq!(bob.lookup(&added.r_hash).unwrap().expiry, 86_400);
        let parsed: lightning_invoice::Bolt11Invoice = added.payment_request.parse().unwrap();
        assert_eq!(parsed.expiry_time(), Duration::from_secs(86_400));
    }
    assert_eq!(
        refused(&|r| r.expiry = 365 * 24 * 3600 + 1),
        "expiry of 3.1536001e+07 seconds greater than max expiry of 3.1536e+07 seconds"
    );
    assert_eq!(refused(&|r| r.value = -1), "amount cannot be negative");
    assert_eq!(refused(&|r| r.value_msat = -1), "amount cannot be negative");
    assert_eq!(
        refused(&|r| r.cltv_expiry = 23),
        "CLTV delta of 23 must be greater than minimum of 24"
    );
    let added = add(&|r| r.cltv_expiry = 24).unwrap();
    let invoice = bob.lookup(&added.r_hash).unwrap();
    assert_eq!(invoice.cltv_expiry, 24);
    let bits: BTreeSet<u32> = invoice.features.keys().copied().collect();
    assert_eq!(bits, BTreeSet::from([8, 14, 17, 25]));
    assert!(invoice.features[&14].is_required && !invoice.features[&25].is_required);
    let mut decode = lightning::PayReqString::new();
    decode.pay_req = added.payment_request.clone();
    let decoded = bob.call(&methods::DECODE_PAY_REQ, &decode).unwrap();
    assert_eq!(
        decoded.features.keys().copied().collect::<BTreeSet<_>>(),
        bits
    );
    assert_eq!(decoded.cltv_expiry, 24);

    // LND 0.20: the smallest final CLTV delta is 18.
    let old = SimNetwork::builder()
        .node("old")
        .lnd_version("0.20")
        .start()
        .unwrap();
    let old = Lnd::connect(&env, old.node("old").unwrap());
    let mut request = lightning::Invoice::new();
    request.cltv_expiry = 18;
    old.call(&methods::ADD_INVOICE, &request).unwrap();
    request.cltv_expiry = 17;
    assert_eq!(
        old.call(&methods::ADD_INVOICE, &request)
            .unwrap_err()
            .message(),
        "CLTV delta of 17 must be greater than minimum of 18"
    );
}

/// Sends `requests` on one SendPayment stream, closes the sending side, and returns every
/// response until the node closes the stream.
fn send_payment_stream(
    lnd: &Lnd,
    requests: Vec<lightning::SendRequest>,
) -> Vec<lightning::SendResponse> {
    let (mut sender, receiver) = lnd
        .client
        .duplex_streaming(&methods::SEND_PAYMENT, lnd.options())
        .unwrap();
    futures::executor::block_on(async {
        for request in requests {
            sender.send((request, WriteFlags::default())).await.unwrap();
        }
        sender.close().await.unwrap();
    });
    futures::executor::block_on(receiver.map(|r| r.unwrap()).collect())
}

fn send_request(payment_request: &str, amt_sat: i64) -> lightning::SendRequest {
    let mut request = lightning::SendRequest::new();
    request.payment_request = payment_request.to_string();
    request.amt = amt_sat;
    request
}

/// Point 7. LND 0.20 `rpcserver.go` `SendPayment` → `sendPayment`: one bidirectional stream, a
/// `SendResponse` per request (hash and preimage and route, or `payment_error` with the
/// failure reason's text, `payments/db/payment.go` `FailureReason.String`), a refused request
/// answered on the stream which stays open (`extractPaymentIntent` errors), the stream closed
/// once the client is done and every payment answered. `SendPaymentSync`: the same for one.
/// LND 0.21 removed both (release notes 0.21.0): grpc-go answers UNIMPLEMENTED.
#[test]
fn p7_send_payment_bidirectional_on_lnd_0_20_only() {
    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .channel("alice", "bob", 1_000_000, ChannelPolicy::default())
        .lnd_version("0.20")
        .start()
        .unwrap();
    let env = env();
    let alice = Lnd::connect(&env, net.node("alice").unwrap());
    let bob = Lnd::connect(&env, net.node("bob").unwrap());
    assert_eq!(alice.get_info().version, "0.20.0-beta commit=sim");
    assert_eq!(net.lnd_version(), "0.20.0-beta commit=sim");
    let good = bob.add_invoice("good", 0, 0);
    let cancelled = bob.add_invoice("cancelled", 0, 0);
    let mut cancel = invoices::CancelInvoiceMsg::new();
    cancel.payment_hash = cancelled.r_hash.clone();
    bob.call(&methods::CANCEL_INVOICE, &cancel).unwrap();
    let responses = send_payment_stream(
        &alice,
        vec![
            send_request(&good.payment_request, 1_234),
            send_request(&cancelled.payment_request, 10),
            send_request("lnbcrt1garbage", 10),
            send_request(&good.payment_request, 1_234),
        ],
    );
    assert_eq!(responses.len(), 4, "{responses:?}");
    let by_hash = |hash: &[u8]| -> Vec<&lightning::SendResponse> {
        responses
            .iter()
            .filter(|r| r.payment_hash == hash)
            .collect()
    };
    let paid = by_hash(&good.r_hash);
    // The good invoice paid once; the second request for it refused (already paid or, if it
    // came while the first was in flight, in transition).
    let success: Vec<_> = paid.iter().filter(|r| r.payment_error.is_empty()).collect();
    assert_eq!(success.len(), 1, "{paid:?}");
    assert_eq!(
        sha256::Hash::hash(&success[0].payment_preimage)
            .to_byte_array()
            .to_vec(),
        good.r_hash
    );
    assert_eq!(success[0].payment_route.hops.len(), 1);
    let repeat: Vec<_> = paid
        .iter()
        .filter(|r| !r.payment_error.is_empty())
        .collect();
    assert!(
        [
            "invoice is already paid",
            "payment is in transition",
            "payment already exists"
        ]
        .contains(&repeat[0].payment_error.as_str()),
        "{repeat:?}"
    );
    let failed = by_hash(&cancelled.r_hash);
    assert_eq!(failed[0].payment_error, "incorrect_payment_details");
    assert!(failed[0].payment_preimage.is_empty());
    let garbage = by_hash(&[0; 32]);
    assert!(
        garbage[0]
            .payment_error
            .starts_with("invalid payment request"),
        "{garbage:?}"
    );
    assert_eq!(bob.lookup(&good.r_hash).unwrap().amt_paid_sat, 1_234);

    // SendPaymentSync: a payment's failure is an answer; a malformed request is an error.
    let other = bob.add_invoice("sync", 0, 0);
    let answer = alice
        .call(
            &methods::SEND_PAYMENT_SYNC,
            &send_request(&other.payment_request, 7),
        )
        .unwrap();
    assert!(answer.payment_error.is_empty(), "{answer:?}");
    assert_eq!(answer.payment_hash, other.r_hash);
    let answer = alice
        .call(
            &methods::SEND_PAYMENT_SYNC,
            &send_request(&other.payment_request, 7),
        )
        .unwrap();
    assert_eq!(answer.payment_error, "invoice is already paid");
    let refused = alice
        .call(
            &methods::SEND_PAYMENT_SYNC,
            &send_request(&other.payment_request, 0),
        )
        .unwrap_err();
    assert_eq!(refused.code(), RpcStatusCode::UNKNOWN);

    // LND 0.21, the default: gone.
    let new = two_nodes();
    assert!(new.lnd_version().starts_with("0.21"));
    let alice = Lnd::connect(&env, new.node("alice").unwrap());
    let (mut sender, mut receiver) = alice
        .client
        .duplex_streaming(&methods::SEND_PAYMENT, alice.options())
        .unwrap();
    let _ = futures::executor::block_on(
        sender.send((send_request("lnbcrt1", 1), WriteFlags::default())),
    );
    let error = futures::executor::block_on(receiver.next())
        .unwrap()
        .unwrap_err();
    assert_eq!(
        sim_support::status(error).code(),
        RpcStatusCode::UNIMPLEMENTED
    );
    let error = alice
        .call(&methods::SEND_PAYMENT_SYNC, &send_request("lnbcrt1", 1))
        .unwrap_err();
    assert_eq!(error.code(), RpcStatusCode::UNIMPLEMENTED);
}
