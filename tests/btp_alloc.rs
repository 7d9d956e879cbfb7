//! The BTP transport allocates nothing per round trip: a counting allocator watches thousands
//! of requests between a client and a server on loopback, one at a time and four at a time.
//! Alone in its binary so that no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ilp_plugin_lightning::btp::{
    send_request_into, BtpClient, BtpServer, ClientConfig, OwnedEntry, Packet, ProtocolDataEntry,
    Reply, Response, ServerConfig,
};

/// Counts every allocation and reallocation in the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Round trips measured per phase.
const ROUND_TRIPS: u64 = 4000;
/// What the handler allocates per request: its reply is a clone of a prepared one, the list of
/// entries and the entry's bytes.
const HANDLER_ALLOCATIONS: u64 = 2;
/// One-time growth that may land inside a measured phase rather than in the warm-up: a
/// buffer's first use on a thread that had not needed it yet, a queue growing to a new peak.
const ONE_TIME: u64 = 16;

#[test]
fn round_trips_allocate_nothing_in_the_transport() {
    // The counter sees what it should. The test harness's own thread may allocate at any
    // moment (seen under `taskset -c 0`), so each probe counts the fewest of a few tries.
    let fewest = |what: &dyn Fn()| {
        (0..10)
            .map(|_| {
                let before = allocations();
                what();
                allocations() - before
            })
            .min()
            .unwrap()
    };
    let probed = fewest(&|| drop(std::hint::black_box(Vec::<u8>::with_capacity(10))));
    assert_eq!(probed, 1);

    let prepared = Reply::Response(vec![OwnedEntry::ilp(b"fulfilled".to_vec())]);
    let cloned = fewest(&|| drop(std::hint::black_box(prepared.clone())));
    assert_eq!(cloned, HANDLER_ALLOCATIONS);

    let handler = move |_: &str, _: &Packet<'_>| prepared.clone();
    let server =
        BtpServer::bind("127.0.0.1:0", ServerConfig::default(), Arc::new(handler)).expect("bind");
    let client = BtpClient::connect(
        &format!("btp+ws://alice:secret@{}", server.local_addr()),
        ClientConfig {
            connect_timeout: Duration::from_secs(20),
            ..ClientConfig::default()
        },
        Arc::new(|_: &Packet<'_>| Reply::Response(Vec::new())),
    )
    .expect("connect");
    let conn = client.connection().expect("connected");
    let entries = [ProtocolDataEntry::octets("ilp", b"a prepare")];
    let round_trip = |reply: &mut Vec<u8>| {
        send_request_into(&conn, &entries, None, None, reply).expect("answered");
        let response = Response::parse(reply).expect("a Response");
        assert_eq!(response.protocol_data().ilp(), Some(&b"fulfilled"[..]));
    };

    // One caller at a time.
    let mut reply = Vec::new();
    for _ in 0..500 {
        round_trip(&mut reply);
    }
    let before = allocations();
    for _ in 0..ROUND_TRIPS {
        round_trip(&mut reply);
    }
    let sequential = allocations() - before;

    // Four callers at once (each with its own reply buffer): replies read by one caller are
    // handed to the others, requests go to the server's pool when its threads are busy. The
    // same four threads warm up, then are counted, so that starting a thread is not.
    let start = std::sync::Barrier::new(5);
    let go = std::sync::Barrier::new(5);
    let end = std::sync::Barrier::new(5);
    let four_at_once = std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut reply = Vec::new();
                for _ in 0..500 {
                    round_trip(&mut reply);
                }
                start.wait();
                go.wait();
                for _ in 0..ROUND_TRIPS / 4 {
                    round_trip(&mut reply);
                }
                end.wait();
            });
        }
        // Between `start` and `go` every caller is parked: nothing of theirs is counted early.
        start.wait();
        let before = allocations();
        go.wait();
        end.wait();
        allocations() - before
    });

    client.disconnect();
    server.shutdown();
    let expected = ROUND_TRIPS * HANDLER_ALLOCATIONS;
    eprintln!(
        "allocations beyond the handler's over {ROUND_TRIPS} round trips: {} one at a time, {} four at a time",
        sequential as i64 - expected as i64,
        four_at_once as i64 - expected as i64
    );
    assert!(
        sequential <= expected + ONE_TIME,
        "one at a time: {sequential} allocations for {ROUND_TRIPS} round trips whose handler made {expected}"
    );
    assert!(
        four_at_once <= expected + ONE_TIME,
        "four at a time: {four_at_once} allocations for {ROUND_TRIPS} round trips whose handler made {expected}"
    );
}
