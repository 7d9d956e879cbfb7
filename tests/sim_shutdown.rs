//! Shutting a simulated network down stops and joins every thread it started. In a file of its
//! own: it counts the process's threads by name, which other tests running alongside would
//! disturb.
#![cfg(all(feature = "sim", target_os = "linux"))]

mod common;

use std::time::Duration;

use ilp_plugin_lightning::lnd::sim::SimNetwork;

/// The names of this process's threads that belong to the simulator.
fn sim_threads() -> Vec<String> {
    common::threads::named(&["lnd-sim"])
}

/// After shutdown, the simulator's threads as soon as they have gone. grpcio does not hand out
/// the join handles of its completion-queue threads, so the simulator waits for each to report
/// it is leaving; the OS may list a thread for a moment after that (see
/// `common::threads::settled`).
fn sim_threads_after_shutdown() -> Vec<String> {
    common::threads::settled(sim_threads, <[String]>::is_empty)
}

#[test]
fn shutdown_and_drop_leave_no_thread_behind() {
    assert!(sim_threads().is_empty());
    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .fully_connected(100_000)
        .start()
        .unwrap();
    let running = sim_threads();
    assert!(
        running.contains(&"lnd-sim-timer".to_string()),
        "{running:?}"
    );
    assert!(
        running.iter().any(|name| name.starts_with("lnd-sim-grpc")),
        "{running:?}"
    );
    // Offline and back, with a latency set: still nothing left over at the end.
    let bob = net.node("bob").unwrap();
    bob.set_latency(Duration::from_millis(10));
    bob.set_offline(true).unwrap();
    bob.set_offline(false).unwrap();
    net.shutdown();
    let timer = "lnd-sim-timer".to_string();
    let left = common::threads::settled(sim_threads, |now| !now.contains(&timer));
    assert!(!left.contains(&timer));
    assert_eq!(sim_threads_after_shutdown(), Vec::<String>::new());
    assert!(net.node("alice").unwrap().set_offline(false).is_err());
    net.shutdown();
    drop(net);

    let dropped = SimNetwork::builder().node("carol").start().unwrap();
    assert!(!sim_threads().is_empty());
    drop(dropped);
    assert_eq!(sim_threads_after_shutdown(), Vec::<String>::new());
}
