//! Several `ilp-lightning server` processes sharing one Redis and one (simulated) LND node:
//! Prepares forwarded between processes, a process SIGKILLed with Prepares pending and a
//! payment in flight (another finishes both), an account moving to another process, Redis
//! SIGKILLed and restarted mid-traffic — and after each step the books add up: what the clients
//! prefunded less what was settled is what the hub's books hold, nothing created or lost.
#![cfg(all(feature = "redis", feature = "sim"))]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use ilp_plugin_lightning::lnd::sim::{Release, SimNode};
use ilp_plugin_lightning::plugin::{HandlerError, LightningPlugin, PEER_ACCOUNT};
use ilp_plugin_lightning::settlement::store::AccountBook;
use ilp_plugin_lightning::settlement::{RedisStore, Store};

use common::hub::{HubProcess, SimFiles};
use common::lightning::{is_fulfill, node_client, reject_code, sim_paid, with_events, Events};
use common::redis_server::RedisServer;

/// How long any one condition may take to come true.
const WAIT: Duration = Duration::from_secs(60);

/// Waits (bounded) until `done` holds, looking again every few milliseconds: the books are
/// changed by other processes, whose events do not reach this one.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect(
    port: u16,
    name: &str,
    token: &str,
    node: &SimNode,
) -> Result<(LightningPlugin, Events), String> {
    let builder = LightningPlugin::client(&format!("btp+ws://{name}:{token}@127.0.0.1:{port}"))
        .connect_timeout(Duration::from_secs(10))
        .lightning(node_client(node));
    let (builder, events) = with_events(builder);
    let client = builder.build().map_err(|e| e.to_string())?;
    client.connect().map_err(|e| e.to_string())?;
    Ok((client, events))
}

/// A Prepare of `amount` sat for `to`, fulfilled by its data (`fulfil_by_data`).
fn packet(to: &str, nonce: u32, amount: u64, expires_in_ms: i64) -> Vec<u8> {
    let mut fulfillment = [0u8; 32];
    fulfillment[..4].copy_from_slice(&nonce.to_be_bytes());
    common::ilp::prepare(
        &fulfillment,
        &format!("test.hub.{to}"),
        amount,
        expires_in_ms,
        &fulfillment,
    )
}

/// A receiver that fulfils by data, except Prepares whose data starts with 0xFF: it reports
/// those on the returned channel and holds them until `release` says, then rejects them.
fn gated_receiver(client: &LightningPlugin) -> (Receiver<()>, crossbeam_channel::Sender<()>) {
    let (arrived_tx, arrived) = bounded(16);
    let (release, released) = bounded::<()>(16);
    client
        .register_data_handler(move |bytes| {
            let prepare = ilp_plugin_lightning::ilp::Prepare::parse(bytes)
                .map_err(|e| HandlerError::Final(e.to_string()))?;
            let data: [u8; 32] = prepare
                .data()
                .try_into()
                .map_err(|_| HandlerError::Final("data is not a fulfillment".into()))?;
            if data[0] == 0xFF {
                let _ = arrived_tx.send(());
                let _ = released.recv_timeout(WAIT);
                return Err(HandlerError::Final("held, then refused".into()));
            }
            Ok(common::ilp::fulfill(&data, b""))
        })
        .expect("data handler");
    (arrived, release)
}

fn registered_at(redis: &RedisServer, account: &str) -> String {
    redis.command(&["GET", &format!("ilp:{{acct:{account}}}:at")])
}

fn book(books: &RedisStore, account: &str) -> AccountBook {
    books.account(account).expect("books readable")
}

/// The books add up: each client's prefund less what it was charged is what it has left
/// (`-receivable`), with nothing left held; what the hub owes each receiver is what it was
/// credited, split into owed, paying and paid — paid being what its node really received.
fn assert_books_add_up(
    books: &RedisStore,
    sender: &str,
    prefund_msat: i128,
    charged_msat: i128,
    receivers: &[(&str, i128)],
) {
    let s = book(books, sender);
    assert_eq!(s.received_msat, prefund_msat as u128, "{sender}'s prefund");
    assert_eq!(s.reserved_msat, 0, "{sender} still has Prepares held");
    assert_eq!(
        -s.receivable_msat,
        prefund_msat - charged_msat,
        "{sender}: prefunded {prefund_msat} msat, charged {charged_msat}"
    );
    for (receiver, credited) in receivers {
        let r = book(books, receiver);
        assert_eq!(
            r.payable_msat + r.paying_msat as i128 + r.paid_msat as i128,
            *credited,
            "{receiver}: owed + paying + paid"
        );
    }
}

/// alice on hub A pays bob on hub B; then A is SIGKILLed with one of alice's Prepares pending
/// (held by bob) and a payment to carol in flight (held by the node): hub B voids the first
/// after it expired, takes the payment over once A's lease ran out and finishes it by tracking
/// it — paid once — and alice reconnects to B with her balance.
#[test]
fn two_hub_processes_forward_and_one_finishes_what_the_other_left_when_killed() {
    let redis = RedisServer::start("scaleout");
    let url = redis.url();
    let lnd = SimFiles::start(&["hub", "alice", "bob", "carol"]);
    let hub_args = ["--lnddir", &lnd.lnddir("hub"), "--store", &url];
    let hub_a = HubProcess::start(&hub_args);
    let hub_b = HubProcess::start(&hub_args);
    let node = |name: &str| lnd.network.node(name).unwrap();
    let books = RedisStore::open(&url).unwrap();

    let (bob, bob_events) = connect(hub_b.port, "bob", "bob-secret", node("bob")).unwrap();
    let (bob_arrived, bob_release) = gated_receiver(&bob);
    let (carol, _carol_events) =
        connect(hub_a.port, "carol", "carol-secret", node("carol")).unwrap();
    let _ = gated_receiver(&carol);
    let (alice, _alice_events) =
        connect(hub_a.port, "alice", "alice-secret", node("alice")).unwrap();
    alice.send_money(1_000).expect("alice prefunds");
    wait_until("alice's prefund credited", || {
        book(&books, "alice").received_msat == 1_000_000
    });
    wait_until("bob registered at a hub process", || {
        !registered_at(&redis, "bob").is_empty()
    });
    assert_ne!(registered_at(&redis, "bob"), registered_at(&redis, "alice"));

    // alice (on A) pays bob (on B): forwarded between the processes; B pays bob.
    for nonce in 1..=5 {
        let reply = alice.send_data(&packet("bob", nonce, 10, 30_000)).unwrap();
        assert!(is_fulfill(&reply), "{nonce}: {:?}", reject_code(&reply));
    }
    bob_events.wait_for_money(PEER_ACCOUNT, 50);
    wait_until("B's payments to bob booked", || {
        book(&books, "bob").paid_msat == 50_000
    });
    assert_books_add_up(&books, "alice", 1_000_000, 50_000, &[("bob", 50_000)]);
    // Both hubs follow the node's invoices: the prefund is credited once.
    assert_eq!(book(&books, "alice").receipts, 1);

    // A payment in flight at A: alice pays carol (on A); A pays carol, held by the node.
    let hub_node = node("hub");
    hub_node.hold_payments(true);
    let reply = alice.send_data(&packet("carol", 100, 20, 30_000)).unwrap();
    assert!(is_fulfill(&reply), "{:?}", reject_code(&reply));
    wait_until("A's payment to carol in flight", || {
        books.open_payments().unwrap().len() == 1 && hub_node.held_payments().len() == 1
    });
    // A Prepare pending: alice to bob, held by bob (through B), expiring in 5 s.
    let mut pending = packet("bob", 200, 30, 5_000);
    // The data (the fulfillment) starts with 0xFF: bob's handler holds it.
    let data_at = pending.len() - 32;
    pending[data_at] = 0xFF;
    let pending_send = {
        let alice = Arc::new(alice);
        let sender = alice.clone();
        let thread = std::thread::Builder::new()
            .name("alice-pending".into())
            .spawn(move || sender.send_data(&pending))
            .unwrap();
        bob_arrived
            .recv_timeout(WAIT)
            .expect("bob holds the Prepare");
        assert_eq!(book(&books, "alice").reserved_msat, 30_000);
        (alice, thread)
    };

    // SIGKILL hub A.
    drop(hub_a);
    let (alice, thread) = pending_send;
    // The Prepare's sender got no Fulfill (its connection went with A).
    if let Ok(reply) = thread.join().unwrap() {
        assert!(!is_fulfill(&reply));
    }
    let Ok(alice) = Arc::try_unwrap(alice) else {
        panic!("alice's plugin still shared");
    };
    drop(alice);
    drop(carol);
    // bob refuses it now: hub A is gone, and B's sweeper voids alice's hold past its expiry.
    bob_release.send(()).unwrap();
    wait_until("alice's pending Prepare voided by hub B", || {
        book(&books, "alice").reserved_msat == 0
    });
    // B takes A's payment over once A's lease lapsed, and finishes it by tracking it.
    hub_node.hold_payments(false);
    assert_eq!(hub_node.release_held_payments(Release::Forward), 1);
    wait_until("the payment to carol booked", || {
        books.open_payments().unwrap().is_empty()
    });
    let carol_book = book(&books, "carol");
    assert_eq!((carol_book.paying_msat, carol_book.paid_msat), (0, 20_000));
    // Paid once: the node made one payment to carol.
    let (count, amount, _) = sim_paid(hub_node, "carol");
    assert_eq!((count, amount), (1, 20_000));

    // alice reconnects to hub B with her token and her balance, and pays bob there.
    assert!(connect(hub_b.port, "alice", "not-hers", node("alice")).is_err());
    let (alice, _events) = connect(hub_b.port, "alice", "alice-secret", node("alice")).unwrap();
    let reply = alice.send_data(&packet("bob", 300, 10, 30_000)).unwrap();
    assert!(is_fulfill(&reply), "{:?}", reject_code(&reply));
    bob_events.wait_for_money(PEER_ACCOUNT, 10);
    wait_until("B's payment to bob booked", || {
        book(&books, "bob").paid_msat == 60_000
    });
    assert_books_add_up(
        &books,
        "alice",
        1_000_000,
        80_000,
        &[("bob", 60_000), ("carol", 20_000)],
    );
    // What the node paid bob is what the books say (in as many payments as it took).
    let (_, amount, _) = sim_paid(hub_node, "bob");
    assert_eq!(amount, 60_000);
    drop((alice, bob, hub_b));
    let _ = std::fs::remove_dir_all(redis.dir());
}

/// Traffic from alice on hub A to bob on hub B while Redis is SIGKILLed and restarted on its
/// append-only file: Prepares during the outage are refused, the hubs reconnect by themselves,
/// and every Fulfill alice got is charged to her once and paid to bob once.
#[test]
fn hubs_reconnect_when_redis_restarts_and_nothing_is_lost_or_counted_twice() {
    let mut redis = RedisServer::start("scaleout-restart");
    let url = redis.url();
    let lnd = SimFiles::start(&["hub", "alice", "bob"]);
    let hub_args = ["--lnddir", &lnd.lnddir("hub"), "--store", &url];
    let hub_a = HubProcess::start(&hub_args);
    let hub_b = HubProcess::start(&hub_args);
    let node = |name: &str| lnd.network.node(name).unwrap();
    let (bob, bob_events) = connect(hub_b.port, "bob", "bob-secret", node("bob")).unwrap();
    let _ = gated_receiver(&bob);
    let (alice, _alice_events) =
        connect(hub_a.port, "alice", "alice-secret", node("alice")).unwrap();
    alice.send_money(1_000).expect("alice prefunds");
    {
        let books = RedisStore::open(&url).unwrap();
        wait_until("alice's prefund credited", || {
            book(&books, "alice").received_msat == 1_000_000
        });
    }
    wait_until("bob registered", || {
        !registered_at(&redis, "bob").is_empty()
    });

    let mut fulfilled = 0u64;
    let mut send = |nonce: u32| -> bool {
        let reply = alice
            .send_data(&packet("bob", nonce, 5, 10_000))
            .expect("alice's hub answers");
        let ok = is_fulfill(&reply);
        if ok {
            fulfilled += 1;
        }
        ok
    };
    for nonce in 0..15 {
        assert!(send(nonce), "{nonce} before the restart");
    }
    redis.restart();
    // The hubs reconnect: within the bound, Prepares go through again.
    let mut nonce = 1_000;
    wait_until("a Fulfill after Redis restarted", || {
        nonce += 1;
        send(nonce)
    });
    for nonce in 2_000..2_015 {
        assert!(send(nonce), "{nonce} after the restart");
    }
    let books = RedisStore::open(&url).unwrap();
    let total = i128::from(fulfilled) * 5_000;
    bob_events.wait_for_money(PEER_ACCOUNT, fulfilled * 5);
    wait_until("every payment to bob booked, nothing held", || {
        let bob = book(&books, "bob");
        bob.paid_msat as i128 == total && book(&books, "alice").reserved_msat == 0
    });
    assert_books_add_up(&books, "alice", 1_000_000, total, &[("bob", total)]);
    let (_, amount, _) = sim_paid(node("hub"), "bob");
    assert_eq!(
        amount as i128, total,
        "the node paid bob what the books say"
    );
    drop((alice, bob, hub_a, hub_b));
    let _ = std::fs::remove_dir_all(redis.dir());
}
