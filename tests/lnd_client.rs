//! `lnd::grpc::GrpcLightning` against the simulated network, over real gRPC with TLS and
//! macaroons on loopback: every operation of the `Lightning` trait, every error kind the
//! simulator can produce, and what each says about a payment's outcome. Every wait is for an
//! event (a payment held by the node, a stream's next item), never for time.
#![cfg(feature = "sim")]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use ilp_plugin_lightning::lnd::grpc::GrpcLightning;
use ilp_plugin_lightning::lnd::sim::{
    ChannelPolicy, FailureReason as SimFailure, Release, SimNetwork, SimNode,
};
use ilp_plugin_lightning::lnd::{
    FailureReason, Invoice, InvoiceCursor, InvoiceState, InvoiceSubscription, Keysend, Lightning,
    LndError, Network, PaymentCertainty, PaymentHash, PaymentLimits, PaymentStatus, PublicKey,
    SubscriptionCanceller, KEYSEND_RECORD_TYPE,
};

const POLICY: ChannelPolicy = ChannelPolicy {
    base_fee_msat: 1000,
    fee_ppm: 1,
};
/// Generous: machines are shared and slow; nothing here asserts on timing.
const WAIT: Duration = Duration::from_secs(30);

fn limits() -> PaymentLimits {
    PaymentLimits {
        fee_limit_msat: 100_000,
        timeout: Duration::from_secs(30),
    }
}

/// alice — bob — carol, 1 000 000 sat channels split half and half; carol accepts keysend.
fn line() -> SimNetwork {
    SimNetwork::builder()
        .node("alice")
        .node("bob")
        .node("carol")
        .channel("alice", "bob", 1_000_000, POLICY)
        .channel("bob", "carol", 1_000_000, POLICY)
        .accept_keysend("carol")
        .start()
        .expect("simulated network starts")
}

fn connect(node: &SimNode) -> GrpcLightning {
    GrpcLightning::builder()
        .host("127.0.0.1")
        .port(node.port())
        .tls_cert(node.tls_cert_pem())
        .macaroon(node.macaroon())
        .call_timeout(Duration::from_secs(10))
        .max_reconnect_backoff(Duration::from_millis(500))
        .connect()
        .unwrap_or_else(|e| panic!("connect to {}: {e}", node.name()))
}

fn succeeded(status: &PaymentStatus) -> (ilp_plugin_lightning::lnd::Preimage, u64, u64) {
    match status {
        PaymentStatus::Succeeded {
            preimage,
            fee_msat,
            amount_msat,
        } => (*preimage, *fee_msat, *amount_msat),
        other => panic!("payment did not succeed: {other:?}"),
    }
}

/// After a node came back: waits for the client's channel to reconnect (an event of the
/// channel, not a timer), then makes the call.
fn when_reconnected<T>(
    client: &GrpcLightning,
    f: impl FnOnce() -> Result<T, LndError>,
) -> Result<T, LndError> {
    assert!(
        client.wait_for_connection(WAIT),
        "no connection to {} within {WAIT:?}",
        client.target()
    );
    f()
}

/// Reads a subscription on its own thread so that every wait in a test has a deadline.
struct Collector {
    events: Receiver<Result<Invoice, LndError>>,
    finished: Receiver<InvoiceCursor>,
    canceller: SubscriptionCanceller,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn new(subscription: InvoiceSubscription) -> Collector {
        let (tx, events) = crossbeam_channel::unbounded();
        let (done, finished) = crossbeam_channel::bounded(1);
        let canceller = subscription.canceller();
        let thread = std::thread::Builder::new()
            .name("test-invoice-stream".into())
            .spawn(move || {
                let mut subscription = subscription;
                for event in &mut subscription {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
                let _ = done.send(subscription.cursor());
            })
            .unwrap();
        Collector {
            events,
            finished,
            canceller,
            thread: Some(thread),
        }
    }

    fn next(&self) -> Result<Invoice, LndError> {
        match self.events.recv_timeout(WAIT) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => panic!("no invoice event within {WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the subscription ended silently"),
        }
    }

    /// Skips events until one for `hash` in `state`.
    fn wait_for(&self, hash: &PaymentHash, state: InvoiceState) -> Invoice {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let event = self.next().expect("stream event");
            if event.payment_hash == *hash && event.state == state {
                return event;
            }
        }
        panic!("no {state:?} event for {hash}");
    }

    /// Cancels (if still running) and returns the cursor the subscription ended at.
    fn finish(mut self) -> InvoiceCursor {
        self.canceller.cancel();
        let cursor = self
            .finished
            .recv_timeout(WAIT)
            .expect("the subscription thread stops after cancel");
        self.thread.take().unwrap().join().unwrap();
        cursor
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.canceller.cancel();
        if let Some(thread) = self.thread.take() {
            if self.finished.recv_timeout(WAIT).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

/// Generic over the node, as settlement code is; `Arc<dyn Lightning>` is a `Lightning` too.
fn node_info_of<L: Lightning>(node: &L) -> ilp_plugin_lightning::lnd::NodeInfo {
    node.node_info().unwrap()
}

#[test]
fn identity_invoice_payment_lookup_and_track() {
    let net = line();
    let alice = connect(net.node("alice").unwrap());
    let carol = connect(net.node("carol").unwrap());
    let sim_alice = net.node("alice").unwrap();
    let sim_carol = net.node("carol").unwrap();

    // Settlement code holds the node as a shared trait object.
    let shared: Arc<dyn Lightning> = Arc::new(connect(sim_alice));
    let info = node_info_of(&shared);
    assert_eq!(info.pubkey.to_hex(), sim_alice.pubkey_hex());
    assert_eq!(info.pubkey, PublicKey(sim_alice.pubkey()));
    assert_eq!(info.network, Network::Regtest);
    assert_eq!(info.alias, "alice");
    assert!(!info.version.is_empty());

    let added = carol
        .add_invoice(Duration::from_secs(3600), Some("coffee"))
        .unwrap();
    assert!(added.payment_request.starts_with("lnbcrt"));
    let open = carol.lookup_invoice(&added.payment_hash).unwrap();
    assert_eq!(open.state, InvoiceState::Open);
    assert_eq!(open.memo, "coffee");
    assert_eq!(open.value_msat, 0);
    assert_eq!(open.add_index, added.add_index);
    assert_eq!(open.payment_request, added.payment_request);
    assert_eq!(open.expiry, Duration::from_secs(3600));
    assert!(!open.is_keysend);

    let total_before = net.total_balance_msat();
    let alice_before = sim_alice.local_balance_msat();
    let carol_before = sim_carol.local_balance_msat();
    let amount = 50_000;
    let outcome = alice
        .pay_invoice(&added.payment_request, amount, limits())
        .unwrap();
    assert_eq!(outcome.payment_hash, added.payment_hash);
    let (preimage, fee, paid) = succeeded(&outcome.status);
    assert_eq!(preimage.payment_hash(), added.payment_hash);
    assert_eq!(paid, amount);
    assert_eq!(fee, POLICY.fee_msat(amount), "bob's forwarding fee");
    assert_eq!(sim_alice.local_balance_msat(), alice_before - amount - fee);
    assert_eq!(sim_carol.local_balance_msat(), carol_before + amount);
    assert_eq!(net.total_balance_msat(), total_before);
    assert_eq!(
        alice.channel_balance().unwrap().local_msat,
        sim_alice.local_balance_msat()
    );

    let settled = carol.lookup_invoice(&added.payment_hash).unwrap();
    assert_eq!(settled.state, InvoiceState::Settled);
    assert_eq!(settled.amount_paid_msat, amount);
    assert!(settled.settle_index > 0);
    assert_eq!(settled.preimage, Some(preimage));

    // LND's ALREADY_EXISTS also covers payments still in flight: the outcome is learnt by
    // tracking, not from the error.
    let again = alice
        .pay_invoice(&added.payment_request, amount, limits())
        .unwrap_err();
    assert_eq!(again, LndError::AlreadyPaid);
    assert_eq!(again.payment_certainty(), PaymentCertainty::Unknown);

    for wait in [Duration::ZERO, Duration::from_secs(5)] {
        let tracked = alice.track_payment(&added.payment_hash, wait).unwrap();
        assert_eq!(tracked.status, outcome.status);
    }

    let unknown = PaymentHash([0xab; 32]);
    assert!(matches!(
        carol.lookup_invoice(&unknown),
        Err(LndError::NotFound(_))
    ));
    let untracked = alice.track_payment(&unknown, Duration::ZERO).unwrap_err();
    assert!(matches!(untracked, LndError::NotFound(_)), "{untracked}");
    assert_eq!(untracked.payment_certainty(), PaymentCertainty::NotPaid);
}

#[test]
fn cancel_delete_and_expired_invoices() {
    let net = line();
    let alice = connect(net.node("alice").unwrap());
    let bob = connect(net.node("bob").unwrap());

    let added = bob.add_invoice(Duration::from_secs(600), None).unwrap();
    bob.cancel_invoice(&added.payment_hash).unwrap();
    // Cancelling twice is fine, as on LND.
    bob.cancel_invoice(&added.payment_hash).unwrap();
    let canceled = bob.lookup_invoice(&added.payment_hash).unwrap();
    assert_eq!(canceled.state, InvoiceState::Canceled);

    let outcome = alice
        .pay_invoice(&added.payment_request, 1_000, limits())
        .unwrap();
    assert_eq!(
        outcome.status,
        PaymentStatus::Failed(FailureReason::IncorrectPaymentDetails)
    );

    bob.delete_canceled_invoice(&added.payment_hash).unwrap();
    assert!(matches!(
        bob.lookup_invoice(&added.payment_hash),
        Err(LndError::NotFound(_))
    ));

    // A settled invoice can be neither cancelled nor deleted.
    let paid = bob.add_invoice(Duration::from_secs(600), None).unwrap();
    succeeded(
        &alice
            .pay_invoice(&paid.payment_request, 2_000, limits())
            .unwrap()
            .status,
    );
    let err = bob.cancel_invoice(&paid.payment_hash).unwrap_err();
    assert!(
        matches!(err, LndError::Refused(ref m) if m.contains("invoice already settled")),
        "{err}"
    );
    let err = bob.delete_canceled_invoice(&paid.payment_hash).unwrap_err();
    assert!(
        matches!(err, LndError::Refused(ref m) if m.contains("invoice not canceled")),
        "{err}"
    );

    // Expired before it is paid: the node refuses it. Only the node's word says so, which is
    // not proof; tracking is, and it finds no payment.
    let short = bob.add_invoice(Duration::from_secs(60), None).unwrap();
    net.advance_clock(Duration::from_secs(120));
    let err = alice
        .pay_invoice(&short.payment_request, 1_000, limits())
        .unwrap_err();
    assert!(matches!(err, LndError::InvoiceExpired(_)), "{err}");
    assert_eq!(err.payment_certainty(), PaymentCertainty::Unknown);
    let never = alice
        .track_payment(&short.payment_hash, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(never, LndError::NotFound(_)), "{never}");
    assert_eq!(never.payment_certainty(), PaymentCertainty::NotPaid);
}

#[test]
fn payment_failures_are_typed_and_final() {
    let net = line();
    let sim_alice = net.node("alice").unwrap();
    let alice = connect(sim_alice);
    let carol = connect(net.node("carol").unwrap());
    let total = net.total_balance_msat();
    let alice_balance = sim_alice.local_balance_msat();

    // The only route has a forwarding fee; a zero fee limit cannot pay it.
    let inv = carol.add_invoice(Duration::from_secs(600), None).unwrap();
    let no_fee = PaymentLimits {
        fee_limit_msat: 0,
        ..limits()
    };
    let outcome = alice
        .pay_invoice(&inv.payment_request, 10_000, no_fee)
        .unwrap();
    assert_eq!(
        outcome.status,
        PaymentStatus::Failed(FailureReason::NoRoute)
    );
    let err = LndError::from(FailureReason::NoRoute);
    assert_eq!(err.payment_certainty(), PaymentCertainty::NotPaid);

    // More than alice can spend: her balance less her reserve and fee buffer.
    let spendable = sim_alice.spendable_msat();
    assert!(spendable < alice_balance);
    let inv = carol.add_invoice(Duration::from_secs(600), None).unwrap();
    let outcome = alice
        .pay_invoice(&inv.payment_request, spendable + 1, limits())
        .unwrap();
    assert_eq!(
        outcome.status,
        PaymentStatus::Failed(FailureReason::InsufficientBalance)
    );

    // Forced failures arrive with LND's reasons.
    for (forced, expected) in [
        (SimFailure::Timeout, FailureReason::Timeout),
        (SimFailure::Error, FailureReason::Error),
        (
            SimFailure::InsufficientBalance,
            FailureReason::InsufficientBalance,
        ),
    ] {
        sim_alice.fail_next_payments(1, forced);
        let inv = carol.add_invoice(Duration::from_secs(600), None).unwrap();
        let outcome = alice
            .pay_invoice(&inv.payment_request, 10_000, limits())
            .unwrap();
        assert_eq!(outcome.status, PaymentStatus::Failed(expected));
        let tracked = alice
            .track_payment(&inv.payment_hash, Duration::ZERO)
            .unwrap();
        assert_eq!(tracked.status, PaymentStatus::Failed(expected));
        // A failed payment may be retried, and now succeeds.
        succeeded(
            &alice
                .pay_invoice(&inv.payment_request, 10_000, limits())
                .unwrap()
                .status,
        );
    }
    assert_eq!(net.total_balance_msat(), total, "failures move no money");

    // Refused here, before anything is sent: not paid.
    let inv = carol.add_invoice(Duration::from_secs(600), None).unwrap();
    let err = alice
        .pay_invoice(&inv.payment_request, 0, limits())
        .unwrap_err();
    assert!(matches!(err, LndError::InvalidRequest(_)), "{err}");
    assert_eq!(err.payment_certainty(), PaymentCertainty::NotPaid);
    let err = alice
        .pay_invoice("lnbcrt1garbage", 1_000, limits())
        .unwrap_err();
    assert!(matches!(err, LndError::InvalidRequest(_)), "{err}");
    assert_eq!(err.payment_certainty(), PaymentCertainty::NotPaid, "{err}");
    assert!(matches!(
        alice.track_payment(&inv.payment_hash, Duration::ZERO),
        Err(LndError::NotFound(_))
    ));
}

#[test]
fn keysend_delivers_custom_records() {
    let net = line();
    let alice = connect(net.node("alice").unwrap());
    let carol = connect(net.node("carol").unwrap());
    let carol_key = carol.node_info().unwrap().pubkey;
    let stream = Collector::new(carol.subscribe_invoices(InvoiceCursor::default()).unwrap());
    // SubscribeInvoices without indexes only carries what happens after it is registered;
    // an invoice round trip through the stream proves that it is.
    let marker = carol.add_invoice(Duration::from_secs(600), None).unwrap();
    stream.wait_for(&marker.payment_hash, InvoiceState::Open);

    let mut records = BTreeMap::new();
    records.insert(70_000, b"ilp-account-42".to_vec());
    let keysend = Keysend::new(carol_key, 7_000, records).unwrap();
    let outcome = alice.keysend(&keysend, limits()).unwrap();
    assert_eq!(outcome.payment_hash, keysend.payment_hash());
    let (preimage, fee, amount) = succeeded(&outcome.status);
    assert_eq!(&preimage, keysend.preimage());
    assert_eq!(fee, POLICY.fee_msat(7_000));
    assert_eq!(amount, 7_000);

    let event = stream.wait_for(&keysend.payment_hash(), InvoiceState::Settled);
    assert!(event.is_keysend);
    assert!(event.payment_request.is_empty());
    assert_eq!(event.amount_paid_msat, 7_000);
    let records = event.custom_records();
    assert_eq!(records[&70_000], b"ilp-account-42".to_vec());
    assert_eq!(records[&KEYSEND_RECORD_TYPE], keysend.preimage().0.to_vec());

    let looked_up = carol.lookup_invoice(&keysend.payment_hash()).unwrap();
    assert!(looked_up.is_keysend);
    assert_eq!(looked_up.state, InvoiceState::Settled);
    assert_eq!(looked_up.custom_records(), records);
    stream.finish();

    // Bob runs without --accept-keysend: a final failure, nothing moved.
    let bob = net.node("bob").unwrap();
    let before = bob.local_balance_msat();
    let refused = Keysend::new(PublicKey(bob.pubkey()), 7_000, BTreeMap::new()).unwrap();
    let outcome = alice.keysend(&refused, limits()).unwrap();
    assert_eq!(
        outcome.status,
        PaymentStatus::Failed(FailureReason::IncorrectPaymentDetails)
    );
    assert_eq!(bob.local_balance_msat(), before);
}

/// Pays one invoice of `payee` so that its settle index is above zero: LND replays nothing for
/// an index of 0, so a cursor can only resume settles once it has seen one.
fn warm_up(payer: &GrpcLightning, payee: &GrpcLightning) -> InvoiceCursor {
    let warm = payee.add_invoice(Duration::from_secs(600), None).unwrap();
    succeeded(
        &payer
            .pay_invoice(&warm.payment_request, 1_000, limits())
            .unwrap()
            .status,
    );
    let settled = payee.lookup_invoice(&warm.payment_hash).unwrap();
    assert!(settled.settle_index > 0);
    InvoiceCursor {
        add_index: settled.add_index,
        settle_index: settled.settle_index,
    }
}

#[test]
fn subscription_replays_streams_in_order_and_cancels_from_another_thread() {
    let net = line();
    let alice = connect(net.node("alice").unwrap());
    let bob = connect(net.node("bob").unwrap());
    let start = warm_up(&alice, &bob);
    let first = bob.add_invoice(Duration::from_secs(600), None).unwrap();
    let second = bob.add_invoice(Duration::from_secs(600), None).unwrap();
    succeeded(
        &alice
            .pay_invoice(&first.payment_request, 3_000, limits())
            .unwrap()
            .status,
    );

    // Resume after the first add and after the warm-up's settle: the adds after the first
    // (still open), then the settles after the warm-up, then live.
    let from = InvoiceCursor {
        add_index: first.add_index,
        settle_index: start.settle_index,
    };
    let stream = Collector::new(bob.subscribe_invoices(from).unwrap());
    let replayed_add = stream.next().unwrap();
    assert_eq!(replayed_add.payment_hash, second.payment_hash);
    assert_eq!(replayed_add.state, InvoiceState::Open);
    let replayed_settle = stream.next().unwrap();
    assert_eq!(replayed_settle.payment_hash, first.payment_hash);
    assert_eq!(replayed_settle.state, InvoiceState::Settled);
    assert_eq!(replayed_settle.amount_paid_msat, 3_000);

    let third = bob.add_invoice(Duration::from_secs(600), None).unwrap();
    let live_add = stream.next().unwrap();
    assert_eq!(live_add.payment_hash, third.payment_hash);
    assert_eq!(live_add.state, InvoiceState::Open);
    succeeded(
        &alice
            .pay_invoice(&third.payment_request, 4_000, limits())
            .unwrap()
            .status,
    );
    let live_settle = stream.next().unwrap();
    assert_eq!(live_settle.payment_hash, third.payment_hash);
    assert_eq!(live_settle.state, InvoiceState::Settled);
    assert_eq!(live_settle.amount_paid_msat, 4_000);

    // The reader thread is blocked in next(); cancelling from here ends it without an error.
    let cursor = stream.finish();
    assert_eq!(
        cursor,
        InvoiceCursor {
            add_index: third.add_index,
            settle_index: live_settle.settle_index
        }
    );
}

#[test]
fn stream_breaks_when_node_stops_and_resumes_from_cursor() {
    let net = line();
    let sim_bob = net.node("bob").unwrap();
    let alice = connect(net.node("alice").unwrap());
    let bob = connect(sim_bob);
    let start = warm_up(&alice, &bob);
    let first = bob.add_invoice(Duration::from_secs(600), None).unwrap();
    let stream = Collector::new(bob.subscribe_invoices(start).unwrap());
    // The first invoice was added after `start`: replayed.
    assert_eq!(stream.next().unwrap().payment_hash, first.payment_hash);
    let second = bob.add_invoice(Duration::from_secs(600), None).unwrap();
    assert_eq!(stream.next().unwrap().payment_hash, second.payment_hash);

    sim_bob.set_offline(true).unwrap();
    let err = stream.next().unwrap_err();
    assert!(
        matches!(err, LndError::Unreachable(_) | LndError::StreamEnded(_)),
        "{err}"
    );
    assert!(err.is_transient());
    let cursor = stream.finish();
    assert_eq!(
        cursor,
        InvoiceCursor {
            add_index: second.add_index,
            settle_index: start.settle_index
        }
    );
    assert!(matches!(bob.node_info(), Err(LndError::Unreachable(_))));

    // The node's channels stay up while its API is down: it is paid meanwhile.
    for invoice in [&first, &second] {
        succeeded(
            &alice
                .pay_invoice(&invoice.payment_request, 5_000, limits())
                .unwrap()
                .status,
        );
    }

    sim_bob.set_offline(false).unwrap();
    // The same client reconnects by itself.
    let info = when_reconnected(&bob, || bob.node_info()).unwrap();
    assert_eq!(info.alias, "bob");
    let resumed = Collector::new(bob.subscribe_invoices(cursor).unwrap());
    let mut settled = vec![];
    for _ in 0..2 {
        let event = resumed.next().expect("replayed settle");
        assert_eq!(event.state, InvoiceState::Settled);
        assert_eq!(event.amount_paid_msat, 5_000);
        settled.push(event.payment_hash);
    }
    assert_eq!(settled, vec![first.payment_hash, second.payment_hash]);
    resumed.finish();
}

#[test]
fn connection_errors_are_typed() {
    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .channel("alice", "bob", 100_000, POLICY)
        .start()
        .unwrap();
    let sim_alice = net.node("alice").unwrap();
    let sim_bob = net.node("bob").unwrap();

    // Bob's certificate does not vouch for alice's server.
    let err = GrpcLightning::builder()
        .port(sim_alice.port())
        .tls_cert(sim_bob.tls_cert_pem())
        .macaroon(sim_alice.macaroon())
        .connect()
        .unwrap_err();
    assert!(matches!(err, LndError::Tls(_)), "{err}");

    // Bob's macaroon is not alice's; it must not appear in the error.
    let err = GrpcLightning::builder()
        .port(sim_alice.port())
        .tls_cert(sim_alice.tls_cert_pem())
        .macaroon(sim_bob.macaroon())
        .connect()
        .unwrap_err();
    assert!(matches!(err, LndError::Unauthenticated(_)), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&sim_bob.macaroon_hex()));
    assert!(!shown.contains(&sim_alice.macaroon_hex()));

    // Nothing listening.
    let free_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = GrpcLightning::builder()
        .port(free_port)
        .tls_cert(sim_alice.tls_cert_pem())
        .macaroon(sim_alice.macaroon())
        .connect()
        .unwrap_err();
    assert!(matches!(err, LndError::Unreachable(_)), "{err}");

    // Files and base64, as LND writes them and as the JavaScript plugin takes them.
    let dir = std::env::temp_dir().join(format!("lnd-client-files-{}", std::process::id()));
    sim_alice.write_files(&dir).unwrap();
    let from_files = GrpcLightning::builder()
        .host("localhost")
        .port(sim_alice.port())
        .tls_cert_path(dir.join("tls.cert"))
        .macaroon_path(dir.join("admin.macaroon"))
        .connect()
        .unwrap();
    assert_eq!(from_files.node_info().unwrap().alias, "alice");
    std::fs::remove_dir_all(&dir).unwrap();
    let from_hex = GrpcLightning::builder()
        .port(sim_alice.port())
        .tls_cert(sim_alice.tls_cert_pem().as_bytes())
        .macaroon_hex(sim_alice.macaroon_hex())
        .connect()
        .unwrap();
    assert!(!format!("{from_hex:?}").contains(&sim_alice.macaroon_hex()));

    // A slow node: our deadline passes long before its answer; the outcome is unknown.
    let alice = Arc::new(connect(sim_alice));
    let slow = GrpcLightning::builder()
        .port(sim_alice.port())
        .tls_cert(sim_alice.tls_cert_pem())
        .macaroon(sim_alice.macaroon())
        .call_timeout(Duration::from_secs(1))
        .connect()
        .unwrap();
    sim_alice.set_latency(Duration::from_secs(3600));
    let err = slow.node_info().unwrap_err();
    sim_alice.set_latency(Duration::ZERO);
    assert!(matches!(err, LndError::Timeout(_)), "{err}");
    assert_eq!(err.payment_certainty(), PaymentCertainty::Unknown);

    // A node whose wallet is locked (LND after a restart): not ready, a transient error; a
    // payment refused so is still of unknown outcome, by the rule that words never decide it.
    sim_alice.set_wallet_locked(true);
    let err = alice.node_info().unwrap_err();
    assert!(matches!(err, LndError::NotReady(_)), "{err}");
    assert!(err.is_transient());
    let bob = connect(sim_bob);
    let invoice = bob.add_invoice(Duration::from_secs(600), None).unwrap();
    let err = alice
        .pay_invoice(&invoice.payment_request, 1_000, limits())
        .unwrap_err();
    assert!(matches!(err, LndError::NotReady(_)), "{err}");
    assert_eq!(err.payment_certainty(), PaymentCertainty::Unknown);
    sim_alice.set_wallet_locked(false);
    assert!(matches!(
        alice.track_payment(&invoice.payment_hash, Duration::ZERO),
        Err(LndError::NotFound(_))
    ));

    // A node that goes away and comes back.
    sim_alice.set_offline(true).unwrap();
    let err = alice.node_info().unwrap_err();
    assert!(matches!(err, LndError::Unreachable(_)), "{err}");
    assert_eq!(err.payment_certainty(), PaymentCertainty::Unknown);
    sim_alice.set_offline(false).unwrap();
    assert_eq!(
        when_reconnected(&alice, || alice.node_info())
            .unwrap()
            .alias,
        "alice"
    );
}

#[test]
fn concurrent_payments_keep_every_channel_consistent() {
    let net = line();
    let alice = connect(net.node("alice").unwrap());
    let bob_sim = net.node("bob").unwrap();
    let carol = connect(net.node("carol").unwrap());
    let capacities: Vec<u64> = net
        .channel_balances()
        .iter()
        .map(|c| c.balance_a_msat + c.balance_b_msat)
        .collect();
    let total = net.total_balance_msat();
    let before: Vec<u64> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| net.node(n).unwrap().local_balance_msat())
        .collect();

    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 5;
    let results: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (alice, carol) = (&alice, &carol);
                std::thread::Builder::new()
                    .name(format!("payer-{t}"))
                    .spawn_scoped(scope, move || {
                        let mut paid = vec![];
                        for i in 0..PER_THREAD {
                            let amount = 10_000 + 1_000 * (t * PER_THREAD + i);
                            let inv = carol.add_invoice(Duration::from_secs(600), None).unwrap();
                            let outcome = alice
                                .pay_invoice(&inv.payment_request, amount, limits())
                                .unwrap();
                            let (_, fee, got) = succeeded(&outcome.status);
                            assert_eq!(got, amount);
                            paid.push((amount, fee));
                        }
                        paid
                    })
                    .unwrap()
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(results.len() as u64, THREADS * PER_THREAD);
    let amounts: u64 = results.iter().map(|(a, _)| a).sum();
    let fees: u64 = results.iter().map(|(_, f)| f).sum();
    for (amount, fee) in &results {
        assert_eq!(*fee, POLICY.fee_msat(*amount));
    }
    let after: Vec<u64> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| net.node(n).unwrap().local_balance_msat())
        .collect();
    assert_eq!(
        before[0] - after[0],
        amounts + fees,
        "alice paid amounts and fees"
    );
    assert_eq!(after[1] - before[1], fees, "bob earned exactly the fees");
    assert_eq!(after[2] - before[2], amounts, "carol received the amounts");
    assert_eq!(net.total_balance_msat(), total);
    let capacities_after: Vec<u64> = net
        .channel_balances()
        .iter()
        .map(|c| c.balance_a_msat + c.balance_b_msat)
        .collect();
    assert_eq!(
        capacities_after, capacities,
        "no channel gained or lost money"
    );
    assert_eq!(bob_sim.local_balance_msat(), after[1]);
    assert_eq!(alice.channel_balance().unwrap().local_msat, after[0]);
}

#[test]
fn in_flight_payments_are_tracked_and_not_paid_twice() {
    let net = line();
    let sim_alice = net.node("alice").unwrap();
    let alice = connect(sim_alice);
    let carol = connect(net.node("carol").unwrap());
    let inv = carol.add_invoice(Duration::from_secs(600), None).unwrap();
    // Alice's node holds the payment in flight until the test lets it go.
    sim_alice.hold_payments(true);
    std::thread::scope(|scope| {
        let first = std::thread::Builder::new()
            .name("first-payer".into())
            .spawn_scoped(scope, || {
                alice.pay_invoice(&inv.payment_request, 9_000, limits())
            })
            .unwrap();
        let held = sim_alice.wait_for_held_payments(1, WAIT).unwrap();
        assert_eq!(PaymentHash(held[0]), inv.payment_hash);
        let again = alice
            .pay_invoice(&inv.payment_request, 9_000, limits())
            .unwrap_err();
        assert_eq!(again, LndError::PaymentInTransition);
        assert_eq!(again.payment_certainty(), PaymentCertainty::Unknown);
        // The current state, and a wait shorter than the hold: in flight, not an error.
        for wait in [Duration::ZERO, Duration::from_millis(300)] {
            let now = alice.track_payment(&inv.payment_hash, wait).unwrap();
            assert_eq!(now.status, PaymentStatus::InFlight);
        }
        // The HTLC is out: ChannelBalance shows it going from us, and coming to bob.
        let balance = alice.channel_balance().unwrap();
        assert_eq!(
            balance.unsettled_remote_msat,
            9_000 + POLICY.fee_msat(9_000)
        );
        assert_eq!(balance.unsettled_local_msat, 0);
        sim_alice.release_held_payments(Release::Forward);
        let outcome = first.join().unwrap().unwrap();
        succeeded(&outcome.status);
    });
    let tracked = alice.track_payment(&inv.payment_hash, WAIT).unwrap();
    succeeded(&tracked.status);
    assert_eq!(alice.channel_balance().unwrap().unsettled_remote_msat, 0);
}

/// A server with GetInfo only, as an LND before 0.20 (no DeleteCanceledInvoice) built without
/// the invoicesrpc sub-server (no CancelInvoice) looks to a client.
#[test]
fn calls_an_old_node_lacks_are_unsupported() {
    use grpcio::{EnvBuilder, ServerBuilder, ServerCredentialsBuilder, ServiceBuilder};
    use ilp_plugin_lightning::lnd::methods;
    use ilp_plugin_lightning::lnd::proto::lightning;

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let env = Arc::new(EnvBuilder::new().name_prefix("old-lnd").cq_count(1).build());
    let service = ServiceBuilder::new()
        .add_unary_handler(&methods::GET_INFO, |ctx, _request, sink| {
            let mut info = lightning::GetInfoResponse::new();
            info.identity_pubkey =
                "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619".into();
            info.version = "0.19.1-beta commit=v0.19.1-beta".into();
            let mut chain = lightning::Chain::new();
            chain.network = "regtest".into();
            info.chains.push(chain);
            ctx.spawn(async move {
                let _ = sink.success(info).await;
            });
        })
        .build();
    let mut server = ServerBuilder::new(env)
        .register_service(service)
        .build()
        .unwrap();
    let credentials = ServerCredentialsBuilder::new()
        .add_cert(cert.pem().into_bytes(), key.serialize_pem().into_bytes())
        .build();
    let port = server
        .add_listening_port("127.0.0.1:0", credentials)
        .unwrap();
    server.start();

    let old = GrpcLightning::builder()
        .port(port)
        .tls_cert(cert.pem())
        .macaroon_hex("0201")
        .connect()
        .unwrap();
    assert!(old.node_info().unwrap().version.starts_with("0.19"));
    let hash = PaymentHash([5; 32]);
    let err = old.delete_canceled_invoice(&hash).unwrap_err();
    assert!(
        matches!(err, LndError::Unsupported(ref m) if m.contains("0.20")),
        "{err}"
    );
    let err = old.cancel_invoice(&hash).unwrap_err();
    assert!(matches!(err, LndError::Unsupported(_)), "{err}");
    let _ = futures::executor::block_on(server.shutdown());
}

/// known-failures.md §5: an error while a payment is in flight does not prove it failed; the
/// payment is learnt from TrackPaymentV2 once the node is back.
#[test]
fn payment_interrupted_by_node_stop_is_resolved_by_tracking() {
    let net = line();
    let sim_alice = net.node("alice").unwrap();
    let alice = connect(sim_alice);
    let carol = connect(net.node("carol").unwrap());
    let inv = carol.add_invoice(Duration::from_secs(600), None).unwrap();
    sim_alice.hold_payments(true);
    std::thread::scope(|scope| {
        let payer = std::thread::Builder::new()
            .name("interrupted-payer".into())
            .spawn_scoped(scope, || {
                alice.pay_invoice(&inv.payment_request, 6_000, limits())
            })
            .unwrap();
        sim_alice.wait_for_held_payments(1, WAIT).unwrap();
        sim_alice.set_offline(true).unwrap();
        let error = payer.join().unwrap().unwrap_err();
        assert_eq!(
            error.payment_certainty(),
            PaymentCertainty::Unknown,
            "{error}"
        );
    });
    // The node itself went on: the HTLC reaches carol while its API is down.
    sim_alice.release_held_payments(Release::Forward);
    sim_alice.set_offline(false).unwrap();
    let tracked =
        when_reconnected(&alice, || alice.track_payment(&inv.payment_hash, WAIT)).unwrap();
    let (preimage, _, amount) = succeeded(&tracked.status);
    assert_eq!(preimage.payment_hash(), inv.payment_hash);
    assert_eq!(amount, 6_000);
    assert_eq!(
        carol.lookup_invoice(&inv.payment_hash).unwrap().state,
        InvoiceState::Settled
    );
}

/// Issue 10 point 4: a pay call whose stream breaks after the node dispatched the payment
/// returns an error of unknown outcome, the node completes the payment, and track_payment
/// reports it — also when the payment is still in flight at the break.
#[test]
fn a_payment_whose_stream_breaks_is_unknown_until_tracked() {
    let net = line();
    let sim_alice = net.node("alice").unwrap();
    let alice = connect(sim_alice);
    let carol = connect(net.node("carol").unwrap());

    sim_alice.break_next_payment_streams(1);
    let inv = carol.add_invoice(Duration::from_secs(600), None).unwrap();
    let error = alice
        .pay_invoice(&inv.payment_request, 4_000, limits())
        .unwrap_err();
    assert!(matches!(error, LndError::Unreachable(_)), "{error}");
    assert_eq!(error.payment_certainty(), PaymentCertainty::Unknown);
    let tracked = alice.track_payment(&inv.payment_hash, WAIT).unwrap();
    let (preimage, _, amount) = succeeded(&tracked.status);
    assert_eq!(preimage.payment_hash(), inv.payment_hash);
    assert_eq!(amount, 4_000);
    assert_eq!(
        carol
            .lookup_invoice(&inv.payment_hash)
            .unwrap()
            .amount_paid_msat,
        4_000
    );

    // Broken while the payment is still in flight: tracking shows it in flight, then final.
    sim_alice.hold_payments(true);
    sim_alice.break_next_payment_streams(1);
    let keysend = Keysend::new(
        PublicKey(net.node("carol").unwrap().pubkey()),
        5_000,
        BTreeMap::new(),
    )
    .unwrap();
    let error = alice.keysend(&keysend, limits()).unwrap_err();
    assert_eq!(
        error.payment_certainty(),
        PaymentCertainty::Unknown,
        "{error}"
    );
    sim_alice.wait_for_held_payments(1, WAIT).unwrap();
    let now = alice
        .track_payment(&keysend.payment_hash(), Duration::ZERO)
        .unwrap();
    assert_eq!(now.status, PaymentStatus::InFlight);
    // A tracking stream that breaks is unknown too; the next one works.
    sim_alice.break_next_track_streams(1);
    let error = alice
        .track_payment(&keysend.payment_hash(), Duration::ZERO)
        .unwrap_err();
    assert_eq!(
        error.payment_certainty(),
        PaymentCertainty::Unknown,
        "{error}"
    );
    sim_alice.release_held_payments(Release::Fail(SimFailure::Timeout));
    let tracked = alice.track_payment(&keysend.payment_hash(), WAIT).unwrap();
    assert_eq!(
        tracked.status,
        PaymentStatus::Failed(FailureReason::Timeout)
    );
}

/// Issue 10 point 4: the node's refusals arrive as UNKNOWN with a text; whatever the text, the
/// caller learns that nothing was paid from TrackPaymentV2's NOT_FOUND, not from the words.
#[test]
fn node_refusals_are_unknown_until_tracking_finds_no_payment() {
    let net = line();
    let alice = connect(net.node("alice").unwrap());
    let own = alice.add_invoice(Duration::from_secs(600), None).unwrap();
    let error = alice
        .pay_invoice(&own.payment_request, 1_000, limits())
        .unwrap_err();
    assert!(
        matches!(error, LndError::Refused(ref m) if m.contains("self-payments not allowed")),
        "{error}"
    );
    assert_eq!(error.payment_certainty(), PaymentCertainty::Unknown);
    let never = alice
        .track_payment(&own.payment_hash, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(never, LndError::NotFound(_)), "{never}");
    assert_eq!(never.payment_certainty(), PaymentCertainty::NotPaid);
}

/// LND `invoices/invoiceregistry.go` `deliverBacklogEvents`: from (3, 1), the adds after 3 in
/// their current state (4 settled with index 4, 5 settled with index 2, 6 open), then the
/// settles after 1 (5, 2, 4). A stream broken anywhere in it and resumed from its cursor must
/// still deliver every settle at least once; counting once per payment hash, each is credited
/// once.
#[test]
fn the_cursor_resumes_lnds_replay_without_losing_a_settle() {
    let net = line();
    let sim_bob = net.node("bob").unwrap();
    let alice = connect(net.node("alice").unwrap());
    let bob = connect(sim_bob);
    let invoices: Vec<_> = (0..6)
        .map(|_| bob.add_invoice(Duration::from_secs(600), None).unwrap())
        .collect();
    // Settle indexes: 1 for invoice 1, 2 for 5, 3 for 2, 4 for 4.
    for n in [1, 5, 2, 4] {
        succeeded(
            &alice
                .pay_invoice(&invoices[n - 1].payment_request, 1_000 * n as u64, limits())
                .unwrap()
                .status,
        );
    }
    let start = InvoiceCursor {
        add_index: 3,
        settle_index: 1,
    };
    let expected: std::collections::BTreeSet<PaymentHash> = [2, 4, 5]
        .iter()
        .map(|n| invoices[n - 1].payment_hash)
        .collect();
    for break_after in 1..=6 {
        sim_bob.break_next_invoice_stream_after(break_after);
        let broken = Collector::new(bob.subscribe_invoices(start).unwrap());
        let mut events = Vec::new();
        let error = loop {
            match broken.next() {
                Ok(invoice) => events.push(invoice),
                Err(error) => break error,
            }
        };
        assert!(
            events.len() <= break_after,
            "{break_after}: {}",
            events.len()
        );
        assert!(error.is_transient(), "{error}");
        let cursor = broken.finish();
        let resumed = Collector::new(bob.subscribe_invoices(cursor).unwrap());
        // A live invoice marks the end of the resumed backlog.
        let marker = bob.add_invoice(Duration::from_secs(600), None).unwrap();
        loop {
            let invoice = resumed.next().unwrap();
            if invoice.payment_hash == marker.payment_hash {
                break;
            }
            events.push(invoice);
        }
        resumed.finish();
        let settled: Vec<PaymentHash> = events
            .iter()
            .filter(|invoice| invoice.state == InvoiceState::Settled)
            .map(|invoice| invoice.payment_hash)
            .collect();
        let credited: std::collections::BTreeSet<PaymentHash> = settled.iter().copied().collect();
        assert_eq!(
            credited, expected,
            "broken after {break_after} events at {cursor:?}"
        );
        assert!(
            settled.len() > credited.len(),
            "LND's replay repeats settles"
        );
    }
}

#[test]
fn simulated_lnd_0_19_has_no_delete_canceled_invoice() {
    let net = SimNetwork::builder()
        .node("old")
        .lnd_version("0.19.1-beta commit=v0.19.1-beta")
        .start()
        .unwrap();
    let old = connect(net.node("old").unwrap());
    assert!(old.node_info().unwrap().version.starts_with("0.19"));
    let added = old.add_invoice(Duration::from_secs(600), None).unwrap();
    old.cancel_invoice(&added.payment_hash).unwrap();
    let err = old
        .delete_canceled_invoice(&added.payment_hash)
        .unwrap_err();
    assert!(
        matches!(err, LndError::Unsupported(ref m) if m.contains("0.20")),
        "{err}"
    );
    // The invoice is still there, cancelled.
    assert_eq!(
        old.lookup_invoice(&added.payment_hash).unwrap().state,
        InvoiceState::Canceled
    );
}
