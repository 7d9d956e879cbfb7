//! The Redis store (cargo feature `redis`) against a redis-server of the test's own: the same
//! rules as the memory and embedded stores, credits once however many processes see a payment,
//! books unchanged across a SIGKILL of Redis, and a hub settling with its books in Redis.
#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;

use common::redis_server::RedisServer;
use ilp_plugin_lightning::btp::auth::{TokenCheck, TokenStore};
use ilp_plugin_lightning::lnd::{InvoiceCursor, PaymentHash};
use ilp_plugin_lightning::settlement::book::{
    BookError, Credit, Hold, HoldId, IssuedInvoice, IssuedState, PaymentIntent, PaymentResult,
    PaymentRoute,
};
use ilp_plugin_lightning::settlement::{EmbeddedStore, MemoryStore, RedisStore, Store, StoreError};

fn hash(byte: u8) -> PaymentHash {
    PaymentHash([byte; 32])
}

fn intent(account: &str, byte: u8, amount_msat: u64, expires_at: u64) -> PaymentIntent {
    PaymentIntent {
        account: account.into(),
        payment_hash: hash(byte),
        amount_msat,
        fee_limit_msat: 10,
        route: PaymentRoute::Invoice {
            payment_request: format!("lnbcrt{byte}"),
            expires_at,
        },
        created_at_ms: u64::from(byte),
        explicit: false,
    }
}

fn invoice(account: &str, byte: u8, add_index: u64) -> IssuedInvoice {
    IssuedInvoice {
        payment_hash: hash(byte),
        account: account.into(),
        payment_request: format!("lnbcrt-in{byte}"),
        add_index,
        expires_at: 4_000_000_000,
        state: IssuedState::Open,
    }
}

/// One scenario through every method of [`Store`]; each store must give the same answers.
/// Returns a digest of the books for comparison across stores.
fn exercise(store: &dyn Store) -> String {
    // Reservations against a limit; a Fulfill posts, a Reject voids.
    // Each Prepare is booked under its own hold; every step may be repeated harmlessly.
    let (first, second) = (Hold::new(u64::MAX), Hold::new(u64::MAX));
    store
        .reserve("alice", 4000, Some(10_000), &first)
        .unwrap()
        .unwrap();
    store
        .reserve("alice", 2000, Some(10_000), &second)
        .unwrap()
        .unwrap();
    store
        .reserve("alice", 2000, Some(10_000), &second)
        .unwrap()
        .unwrap();
    let over = store
        .reserve("alice", 5000, Some(10_000), &Hold::new(u64::MAX))
        .unwrap();
    assert_eq!(over.unwrap_err().would_owe_msat, 11_000);
    assert_eq!(store.account("alice").unwrap().reserved_msat, 6000);
    store.post("alice", 4000, &first.id).unwrap();
    store.post("alice", 4000, &first.id).unwrap();
    store.void("alice", 2000, &second.id).unwrap();
    store.void("alice", 2000, &second.id).unwrap();
    // Voiding a posted hold changes nothing; posting a voided one is refused.
    store.void("alice", 4000, &first.id).unwrap();
    assert!(matches!(
        store.post("alice", 2000, &second.id),
        Err(StoreError::Refused(BookError::NotReserved { .. }))
    ));
    assert!(matches!(
        store.void("alice", 1, &HoldId([7; 16])),
        Err(StoreError::Refused(BookError::NotReserved { .. }))
    ));
    assert!(matches!(
        store.post("alice", 1, &HoldId([7; 16])),
        Err(StoreError::Refused(BookError::NotReserved { .. }))
    ));
    let alice = store.account("alice").unwrap();
    assert_eq!((alice.receivable_msat, alice.reserved_msat), (4000, 0));
    // Posted debt counts against the limit.
    let third = Hold::new(u64::MAX);
    assert!(store
        .reserve("alice", 6001, Some(10_000), &third)
        .unwrap()
        .is_err());
    store
        .reserve("alice", 6000, Some(10_000), &third)
        .unwrap()
        .unwrap();
    store.void("alice", 6000, &third.id).unwrap();
    // A hold long expired is voided by the sweeper (a process that died left it).
    let stale = Hold::new(1_000);
    store.reserve("carol", 700, None, &stale).unwrap().unwrap();
    assert_eq!(store.account("carol").unwrap().reserved_msat, 700);
    assert_eq!(
        store.sweep_holds(2_000).unwrap(),
        0,
        "swept before its margin"
    );
    assert_eq!(store.sweep_holds(60_000).unwrap(), 1);
    assert_eq!(store.sweep_holds(60_000).unwrap(), 0);
    assert_eq!(store.account("carol").unwrap().reserved_msat, 0);
    assert!(
        store.post("carol", 700, &stale.id).is_err(),
        "posted after voided"
    );

    // What we owe, and paying it: one payment in flight per account, a hash used once.
    assert_eq!(store.owe("bob", 9000).unwrap().payable_msat, 9000);
    store
        .begin_payment(&intent("bob", 1, 7000, 4_000_000_000))
        .unwrap()
        .unwrap();
    let busy = store
        .begin_payment(&intent("bob", 2, 1000, 4_000_000_000))
        .unwrap()
        .unwrap_err();
    assert_eq!(busy.in_flight, hash(1));
    assert!(matches!(
        store.begin_payment(&intent("carol", 1, 1, 4_000_000_000)),
        Err(StoreError::Refused(BookError::DuplicatePayment(_)))
    ));
    let bob = store.account("bob").unwrap();
    assert_eq!((bob.payable_msat, bob.paying_msat), (2000, 7000));
    assert_eq!(
        store.open_payments().unwrap(),
        vec![intent("bob", 1, 7000, 4_000_000_000)]
    );
    let finished = store
        .finish_payment(&hash(1), PaymentResult::Succeeded { fee_msat: 12 })
        .unwrap();
    assert_eq!(finished, Some(intent("bob", 1, 7000, 4_000_000_000)));
    // A repeated outcome changes nothing; the paid invoice is never begun again.
    assert_eq!(
        store
            .finish_payment(&hash(1), PaymentResult::Failed)
            .unwrap(),
        None
    );
    assert!(matches!(
        store.begin_payment(&intent("bob", 1, 7000, 4_000_000_000)),
        Err(StoreError::Refused(BookError::DuplicatePayment(_)))
    ));
    // A failed payment is owed again, and its invoice may be tried again.
    store
        .begin_payment(&intent("bob", 3, 2000, 4_000_000_000))
        .unwrap()
        .unwrap();
    store
        .finish_payment(&hash(3), PaymentResult::Failed)
        .unwrap()
        .unwrap();
    store
        .begin_payment(&intent("bob", 3, 2000, 4_000_000_000))
        .unwrap()
        .unwrap();
    assert!(store.open_payments().unwrap().len() == 1);
    let bob = store.account("bob").unwrap();
    assert_eq!(
        (
            bob.payable_msat,
            bob.paying_msat,
            bob.paid_msat,
            bob.fees_msat,
            bob.payments
        ),
        (0, 2000, 7000, 12, 1)
    );

    // Invoices we issue: credited once per hash, the cursor moving with the credit.
    store.issue_invoice(&invoice("alice", 10, 4)).unwrap();
    store.issue_invoice(&invoice("alice", 11, 5)).unwrap();
    store.issue_invoice(&invoice("dave", 12, 6)).unwrap();
    // Another invoice with a hash already used is refused.
    let mut clash = invoice("alice", 10, 4);
    clash.payment_request = "lnbcrt-other".into();
    assert!(matches!(
        store.issue_invoice(&clash),
        Err(StoreError::Refused(BookError::DuplicateInvoice(_)))
    ));
    let open: Vec<_> = store
        .open_invoices(Some("alice"))
        .unwrap()
        .into_iter()
        .map(|i| i.add_index)
        .collect();
    assert_eq!(open, [4, 5]);
    let cursor = InvoiceCursor {
        add_index: 4,
        settle_index: 2,
    };
    let first = store.credit_invoice(&hash(10), 9000, cursor).unwrap();
    assert!(
        matches!(first, Credit::Credited(ref r) if r.account == "alice" && r.amount_msat == 9000)
    );
    for _ in 0..3 {
        assert_eq!(
            store.credit_invoice(&hash(10), 9000, cursor).unwrap(),
            Credit::AlreadyCredited
        );
    }
    assert_eq!(
        store
            .credit_invoice(&hash(99), 1, InvoiceCursor::default())
            .unwrap(),
        Credit::NotOurs
    );
    assert_eq!(store.cursor().unwrap(), cursor);
    store
        .advance_cursor(InvoiceCursor {
            add_index: 3,
            settle_index: 7,
        })
        .unwrap();
    assert_eq!(
        store.cursor().unwrap(),
        InvoiceCursor {
            add_index: 4,
            settle_index: 7
        }
    );
    assert_eq!(store.pending_receipts().unwrap().len(), 1);
    store.receipt_delivered(&hash(10)).unwrap();
    assert!(store.pending_receipts().unwrap().is_empty());
    store.close_invoice(&hash(11)).unwrap();
    store.close_invoice(&hash(10)).unwrap();
    assert_eq!(
        store.invoice(&hash(10)).unwrap().unwrap().state,
        IssuedState::Paid
    );
    assert_eq!(
        store.invoice(&hash(11)).unwrap().unwrap().state,
        IssuedState::Closed
    );
    assert!(store.invoice(&hash(98)).unwrap().is_none());
    let open: Vec<_> = store
        .open_invoices(None)
        .unwrap()
        .into_iter()
        .map(|i| i.account)
        .collect();
    assert_eq!(open, ["dave"]);

    // Keysend: a token per account, made once; a keysend credited once per hash.
    let token = store.keysend_token("erin").unwrap();
    assert_eq!(store.keysend_token("erin").unwrap(), token);
    assert_ne!(store.keysend_token("frank").unwrap(), token);
    assert_eq!(
        store.keysend_account(&token).unwrap().as_deref(),
        Some("erin")
    );
    assert!(store.keysend_account(&[0; 32]).unwrap().is_none());
    let cursor = InvoiceCursor {
        add_index: 40,
        settle_index: 20,
    };
    for round in 0..2 {
        let credit = store
            .credit_keysend(&hash(40), "erin", 1500, 40, cursor)
            .unwrap();
        assert_eq!(
            matches!(credit, Credit::Credited(_)),
            round == 0,
            "{credit:?}"
        );
    }
    assert_eq!(
        store.invoice(&hash(40)).unwrap().unwrap().state,
        IssuedState::Paid
    );
    store.receipt_delivered(&hash(40)).unwrap();

    // Out of range: refused, nothing changes.
    let before = store.accounts().unwrap();
    assert!(matches!(
        store.owe("bob", u128::MAX),
        Err(StoreError::Refused(BookError::Overflow(_)))
    ));
    assert_eq!(store.accounts().unwrap(), before);
    format!("{:?}", store.accounts().unwrap())
}

#[test]
fn the_redis_store_follows_the_same_rules_as_the_others() {
    let redis = RedisServer::start("rules");
    let memory = exercise(&MemoryStore::new());
    let dir = std::env::temp_dir().join(format!("ilp-redis-rules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let embedded = exercise(&EmbeddedStore::open(&dir).unwrap());
    let shared = exercise(&RedisStore::open(&redis.url()).unwrap());
    assert_eq!(shared, memory);
    assert_eq!(embedded, memory);
    // A second process opening the same database sees the same books.
    let other = RedisStore::open(&redis.url()).unwrap();
    assert_eq!(format!("{:?}", other.accounts().unwrap()), memory);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(redis.dir());
}

#[test]
fn token_bindings_are_shared_by_every_process() {
    let redis = RedisServer::start("tokens");
    let a = RedisStore::open(&redis.url()).unwrap();
    let b = RedisStore::open(&redis.url()).unwrap();
    assert_eq!(
        a.check_or_bind("alice", &[1; 32]).unwrap(),
        TokenCheck::Bound
    );
    assert_eq!(
        b.check_or_bind("alice", &[1; 32]).unwrap(),
        TokenCheck::Matches
    );
    assert_eq!(
        b.check_or_bind("alice", &[2; 32]).unwrap(),
        TokenCheck::Mismatch
    );
    let _ = std::fs::remove_dir_all(redis.dir());
}

/// One payment in flight per account across processes, worked on by the holder of its lease:
/// another process cannot take it while the holder renews it, takes it once the holder stopped
/// renewing (it died), and the lease ends with the payment.
#[test]
fn a_payment_in_flight_is_leased_to_one_process_and_taken_over_when_it_lapses() {
    use std::time::{Duration, Instant};
    let redis = RedisServer::start("lease");
    let ttl = Duration::from_millis(400);
    let a = RedisStore::open(&redis.url()).unwrap().with_lease_ttl(ttl);
    let b = RedisStore::open(&redis.url()).unwrap().with_lease_ttl(ttl);
    assert_ne!(a.owner(), b.owner());
    assert_eq!(b.upkeep_every(), Some(ttl / 3));
    a.owe("alice", 5_000).unwrap();
    a.begin_payment(&intent("alice", 7, 5_000, 4_000_000_000))
        .unwrap()
        .unwrap();
    // A holds it: B may not, however often it asks; A renews it.
    assert!(!b.claim_payment("alice").unwrap());
    assert!(a.claim_payment("alice").unwrap());
    assert!(!b.claim_payment("alice").unwrap());
    // Another account's lease is free.
    assert!(b.claim_payment("bob").unwrap());
    // A stops renewing (it died): B gets the lease once it ran out, never before.
    let stopped = Instant::now();
    while !b.claim_payment("alice").unwrap() {
        assert!(stopped.elapsed() < Duration::from_secs(10), "never lapsed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stopped.elapsed() >= ttl - Duration::from_millis(100));
    assert!(
        !a.claim_payment("alice").unwrap(),
        "A came back and took it from B"
    );
    // B finishes it (the payment's state is shared); the lease ends with it.
    let booked = b
        .finish_payment(&hash(7), PaymentResult::Succeeded { fee_msat: 1 })
        .unwrap();
    assert_eq!(booked.map(|i| i.amount_msat), Some(5_000));
    assert_eq!(
        a.finish_payment(&hash(7), PaymentResult::Failed).unwrap(),
        None
    );
    assert!(a.claim_payment("alice").unwrap());
    let book = a.account("alice").unwrap();
    assert_eq!(
        (book.payable_msat, book.paying_msat, book.paid_msat),
        (0, 0, 5_000)
    );
    let _ = std::fs::remove_dir_all(redis.dir());
}

#[test]
fn a_payment_seen_by_many_processes_many_times_is_credited_once() {
    let redis = RedisServer::start("credit-once");
    let url = redis.url();
    let setup = RedisStore::open(&url).unwrap();
    for byte in 0..20u8 {
        setup
            .issue_invoice(&invoice("alice", byte, u64::from(byte) + 1))
            .unwrap();
    }
    // Four "processes" (stores with their own connections) each see every settle event twice,
    // all at once, as hubs sharing one node do.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            common::threads::spawn(&format!("credit-{t}"), move || {
                let store = RedisStore::open(&url).unwrap();
                let mut credited = 0;
                for _ in 0..2 {
                    for byte in 0..20u8 {
                        let cursor = InvoiceCursor {
                            add_index: u64::from(byte) + 1,
                            settle_index: u64::from(byte) + 1,
                        };
                        if let Credit::Credited(_) =
                            store.credit_invoice(&hash(byte), 1000, cursor).unwrap()
                        {
                            credited += 1;
                        }
                    }
                }
                credited
            })
        })
        .collect();
    let credited: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(credited, 20);
    let alice = setup.account("alice").unwrap();
    assert_eq!(
        (alice.receivable_msat, alice.received_msat, alice.receipts),
        (-20_000, 20_000, 20)
    );
    assert_eq!(setup.pending_receipts().unwrap().len(), 20);
    assert_eq!(
        setup.cursor().unwrap(),
        InvoiceCursor {
            add_index: 20,
            settle_index: 20
        }
    );
    let _ = std::fs::remove_dir_all(redis.dir());
}

#[test]
fn books_survive_a_sigkill_of_redis_and_the_store_reconnects() {
    let mut redis = RedisServer::start("restart");
    let store = RedisStore::open(&redis.url()).unwrap();
    let before = exercise(&store);
    let payments = store.open_payments().unwrap();
    // Every change above was acknowledged, hence fsynced: SIGKILL loses none of it.
    redis.restart();
    // The pooled connection died with the server: a read is retried on a new one.
    let after = store.accounts().expect("reconnects");
    assert_eq!(format!("{after:?}"), before);
    assert_eq!(store.open_payments().unwrap(), payments);
    // The reopened books keep refusing what they refused: the credited invoice stays credited.
    assert_eq!(
        store
            .credit_invoice(&hash(10), 9000, InvoiceCursor::default())
            .unwrap(),
        Credit::AlreadyCredited
    );
    // A repeat of the very same intent (its reply lost) is harmless: answered as done, counted once.
    let carol = intent("carol", 40, 500, 4_000_000_000);
    store.owe("carol", 500).unwrap();
    for _ in 0..2 {
        store.begin_payment(&carol).unwrap().unwrap();
    }
    let book = store.account("carol").unwrap();
    assert_eq!((book.payable_msat, book.paying_msat), (0, 500));
    // So is the very same invoice recorded again.
    store.issue_invoice(&invoice("alice", 10, 4)).unwrap();
    assert_eq!(
        store.invoice(&hash(10)).unwrap().unwrap().state,
        IssuedState::Paid
    );
    let _ = std::fs::remove_dir_all(redis.dir());
}

/// Commands Redis ran so far (`INFO commandstats`; those inside scripts count too, the INFO
/// calls do not), and how many of them ran a script.
fn commands_run(redis: &RedisServer) -> (u64, u64) {
    let stats = redis.command(&["INFO", "commandstats"]);
    let calls = |line: &str| -> Option<u64> {
        let calls = line.split("calls=").nth(1)?;
        calls.split(',').next()?.parse().ok()
    };
    let mut all = 0;
    let mut scripts = 0;
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
        if line.starts_with("cmdstat_info:") {
            continue;
        }
        let n = calls(line).unwrap_or(0);
        all += n;
        if line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:") {
            scripts += n;
        }
    }
    (all, scripts)
}

#[cfg(feature = "sim")]
#[test]
fn a_hub_settles_with_its_books_and_tokens_in_redis() {
    use common::lightning::{client, fulfil_by_data, hub, is_fulfill, network, reject_code};
    use ilp_plugin_lightning::plugin::PEER_ACCOUNT;

    let redis = RedisServer::start("hub");
    let books = Arc::new(RedisStore::open(&redis.url()).unwrap());
    let sim = network(&["hub", "alice", "bob"]);
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| {
        b.store(books.clone()).token_store(books.clone())
    });
    let (alice, _alice_events) = client(&hub, "alice", sim.node("alice").unwrap(), |b| b);
    let (bob, bob_events) = client(&hub, "bob", sim.node("bob").unwrap(), |b| b);
    fulfil_by_data(&bob);
    let packet = |nonce: u8| {
        let fulfillment = [nonce; 32];
        common::ilp::prepare(&fulfillment, "test.hub.bob", 10, 30_000, &fulfillment)
    };
    // Credit limit 0: refused until alice prefunds.
    let refused = alice.send_data(&packet(0)).unwrap();
    assert_eq!(reject_code(&refused).as_deref(), Some("T04"));
    alice.send_money(1_000).expect("alice prefunds");
    hub_events.wait_for_money("alice", 1_000);
    let commands_before = commands_run(&redis);
    for nonce in 1..=10u8 {
        let reply = alice.send_data(&packet(nonce)).unwrap();
        assert!(is_fulfill(&reply), "{nonce}: {:?}", reject_code(&reply));
    }
    bob_events.wait_for_money(PEER_ACCOUNT, 100);
    hub_events.wait_for_payments("bob", 100_000);
    // Each packet: reserve (HGET), post and owe (a script each), and the hub's payment to bob
    // after every Fulfill (begin, finish, reads); the figure the README quotes.
    let (commands_after, scripts_after) = commands_run(&redis);
    let per_packet = (commands_after - commands_before.0) as f64 / 10.0;
    let scripts_per_packet = (scripts_after - commands_before.1) as f64 / 10.0;
    eprintln!(
        "redis per packet, paying after every Fulfill: {per_packet:.1} commands (those inside \
         scripts included), {scripts_per_packet:.1} scripts"
    );
    assert!(scripts_per_packet >= 2.0, "{scripts_per_packet}");
    // What the hub booked is in Redis, for any process to read.
    let reader = RedisStore::open(&redis.url()).unwrap();
    let alice_book = reader.account("alice").unwrap();
    assert_eq!(
        (alice_book.receivable_msat, alice_book.received_msat),
        (-900_000, 1_000_000)
    );
    let bob_book = reader.account("bob").unwrap();
    assert_eq!(
        (
            bob_book.payable_msat,
            bob_book.paying_msat,
            bob_book.paid_msat
        ),
        (0, 0, 100_000)
    );
    assert!(reader.open_payments().unwrap().is_empty());
    assert!(reader.cursor().unwrap().settle_index >= 1);
    // Alice's token is bound in Redis: another token for her is refused by any process.
    assert_eq!(
        reader
            .check_or_bind(
                "alice",
                &ilp_plugin_lightning::btp::auth::hash_token(b"other")
            )
            .unwrap(),
        TokenCheck::Mismatch
    );
    drop((alice, bob, hub));
    let _ = std::fs::remove_dir_all(redis.dir());
}

/// Two `ilp-lightning server` processes on one simulated LND node and one Redis: alice prefunds
/// through hub A; A is SIGKILLed; alice reconnects to hub B with her token and her balance.
#[cfg(feature = "sim")]
#[test]
fn an_account_moves_to_another_hub_process_with_its_balance_and_token() {
    use common::hub::{HubProcess, SimFiles};
    use common::lightning::{node_client, reject_code, with_events};
    use ilp_plugin_lightning::plugin::LightningPlugin;
    use std::time::{Duration, Instant};

    let redis = RedisServer::start("two-hubs");
    let url = redis.url();
    let lnd = SimFiles::start(&["hub", "alice"]);
    let hub_args = ["--lnddir", &lnd.lnddir("hub"), "--store", &url];
    let hub_a = HubProcess::start(&hub_args);
    let hub_b = HubProcess::start(&hub_args);
    assert_eq!(hub_a.first_line["store"], url.as_str());
    let alice_node = lnd.network.node("alice").unwrap();
    let connect = |port: u16, token: &str| {
        let builder = LightningPlugin::client(&format!("btp+ws://alice:{token}@127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(10))
            .lightning(node_client(alice_node));
        let (builder, events) = with_events(builder);
        let client = builder.build().expect("client builds");
        client.connect().map(|()| (client, events))
    };
    let packet = |nonce: u8| {
        let fulfillment = [nonce; 32];
        common::ilp::prepare(&fulfillment, "test.hub.nobody", 10, 30_000, &fulfillment)
    };

    let (alice, _events) = connect(hub_a.port, "alice-secret").expect("alice joins hub A");
    // Credit limit 0: refused before she prefunds.
    let refused = alice.send_data(&packet(1)).unwrap();
    assert_eq!(reject_code(&refused).as_deref(), Some("T04"));
    alice
        .send_money(1_000)
        .expect("alice prefunds over Lightning");
    // The credit is booked in another process: no event reaches this one, so the shared books
    // are read until they show it (bounded: 60 s).
    let books = RedisStore::open(&url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while books.account("alice").unwrap().received_msat < 1_000_000 {
        assert!(Instant::now() < deadline, "the prefund was never credited");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(alice);
    // SIGKILL hub A.
    drop(hub_a);

    // Hub B knows alice's token: another one is refused, hers accepted.
    assert!(connect(hub_b.port, "not-alices").is_err());
    let (alice, _events) = connect(hub_b.port, "alice-secret").expect("alice joins hub B");
    // Hub B sees her prefund: the Prepare passes the credit check (no T04) and is then
    // rejected only because nobody is there to receive it.
    let reply = alice.send_data(&packet(2)).unwrap();
    let code = reject_code(&reply).expect("a Reject");
    assert_ne!(code, "T04", "hub B does not see alice's prefund");
    let book = books.account("alice").unwrap();
    assert_eq!(
        (book.receivable_msat, book.received_msat, book.reserved_msat),
        (-1_000_000, 1_000_000, 0)
    );
    // Credited once, though both hubs saw the payment settle.
    assert_eq!(book.receipts, 1);
    drop((alice, hub_b));
    let _ = std::fs::remove_dir_all(redis.dir());
}

/// A seeded random run of every change of money, spread over two Redis stores (two processes'
/// worth of connections and reservations) and mirrored on a [`MemoryStore`]: after every step the
/// shared books are the model's, answers included.
#[test]
fn a_random_run_over_two_processes_keeps_the_books_of_one() {
    let redis = RedisServer::start("random");
    let stores = [
        RedisStore::open(&redis.url()).unwrap(),
        RedisStore::open(&redis.url()).unwrap(),
    ];
    let model = MemoryStore::new();
    let accounts = ["alice", "bob", "carol"];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |below: u64| {
        // xorshift64: reproducible without a dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut held: Vec<(usize, &str, u128, Hold)> = Vec::new();
    // Steps run, per kind: the run must have exercised each.
    let mut done = [0u32; 7];
    let mut open_payments: Vec<PaymentHash> = Vec::new();
    let mut invoices: Vec<(PaymentHash, u64)> = Vec::new();
    let mut next_hash: u32 = 0;
    let mut fresh_hash = || {
        next_hash += 1;
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&next_hash.to_be_bytes());
        (PaymentHash(bytes), u64::from(next_hash))
    };
    for step in 0..400 {
        let s = next(2) as usize;
        let store = &stores[s];
        let account = accounts[next(3) as usize];
        let amount = u128::from(next(5000) + 1);
        let op = next(7);
        match op {
            0 => {
                // Holds are shared: the limit counts every process's Prepares.
                let limit = Some(u128::from(next(20_000)));
                let hold = Hold::new(u64::MAX);
                let got = store.reserve(account, amount, limit, &hold).unwrap();
                assert_eq!(
                    got,
                    model.reserve(account, amount, limit, &hold).unwrap(),
                    "{step}"
                );
                if got.is_ok() {
                    // Retried after a lost reply, by either process: no change.
                    assert_eq!(
                        stores[1 - s]
                            .reserve(account, amount, limit, &hold)
                            .unwrap(),
                        Ok(())
                    );
                    held.push((s, account, amount, hold));
                }
            }
            1 if !held.is_empty() => {
                let (s, account, amount, hold) = held.swap_remove(next(held.len() as u64) as usize);
                if next(2) == 0 {
                    stores[s].post(account, amount, &hold.id).unwrap();
                    model.post(account, amount, &hold.id).unwrap();
                    // The other process posts it too (it forwarded the Prepare): a no-op.
                    stores[1 - s].post(account, amount, &hold.id).unwrap();
                } else {
                    stores[s].void(account, amount, &hold.id).unwrap();
                    model.void(account, amount, &hold.id).unwrap();
                    stores[1 - s].void(account, amount, &hold.id).unwrap();
                }
            }
            2 => {
                store.owe(account, amount).unwrap();
                model.owe(account, amount).unwrap();
            }
            3 => {
                let (hash, number) = fresh_hash();
                let mut paying = intent(account, 0, amount as u64, 4_000_000_000);
                paying.payment_hash = hash;
                paying.created_at_ms = number;
                let got = store.begin_payment(&paying).unwrap();
                assert_eq!(got, model.begin_payment(&paying).unwrap(), "{step}");
                if got.is_ok() {
                    open_payments.push(hash);
                }
            }
            4 if !open_payments.is_empty() => {
                let hash = open_payments.swap_remove(next(open_payments.len() as u64) as usize);
                let result = if next(2) == 0 {
                    PaymentResult::Failed
                } else {
                    PaymentResult::Succeeded { fee_msat: next(10) }
                };
                let got = store.finish_payment(&hash, result).unwrap();
                assert_eq!(got, model.finish_payment(&hash, result).unwrap(), "{step}");
                // The other process books it again: a no-op.
                assert_eq!(stores[1 - s].finish_payment(&hash, result).unwrap(), None);
            }
            5 => {
                let (hash, add_index) = fresh_hash();
                let mut issued = invoice(account, 0, add_index);
                issued.payment_hash = hash;
                store.issue_invoice(&issued).unwrap();
                model.issue_invoice(&issued).unwrap();
                invoices.push((hash, amount as u64));
            }
            _ if !invoices.is_empty() => {
                // Both processes see the settle, each possibly twice.
                let (hash, paid) = invoices[next(invoices.len() as u64) as usize];
                let cursor = InvoiceCursor {
                    add_index: next(1000),
                    settle_index: next(1000),
                };
                let expected = model.credit_invoice(&hash, paid, cursor).unwrap();
                let got = store.credit_invoice(&hash, paid, cursor).unwrap();
                assert_eq!(got, expected, "{step}");
                assert_eq!(
                    stores[1 - s].credit_invoice(&hash, paid, cursor).unwrap(),
                    Credit::AlreadyCredited
                );
                assert_eq!(stores[1 - s].cursor().unwrap(), model.cursor().unwrap());
            }
            _ => continue,
        }
        done[op as usize] += 1;
        // Every account as the model has it, holds included, whichever process reads it.
        for name in accounts {
            let shared = stores[(step % 2) as usize].account(name).unwrap();
            assert_eq!(
                shared,
                model.account(name).unwrap(),
                "{name} after step {step}"
            );
        }
        assert_eq!(
            stores[1].open_payments().unwrap(),
            model.open_payments().unwrap()
        );
    }
    assert!(done.iter().all(|n| *n >= 20), "{done:?}");
    let credited = model.pending_receipts().unwrap().len();
    assert!(credited >= 10, "{credited}");
    let _ = std::fs::remove_dir_all(redis.dir());
}
