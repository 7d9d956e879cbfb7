//! A connection's second reading thread (`btp-turn-*`) is started once requests flow and is
//! joined by disconnect and shutdown, also while it runs a handler. Alone in its own test
//! binary so that no other test's threads come and go while it counts.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::bounded;
use ilp_plugin_lightning::btp::{
    BtpClient, BtpServer, ClientConfig, ClientEvent, OwnedEntry, Packet, ProtocolDataEntry, Reply,
    ServerConfig,
};

fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_string())
        .collect();
    names.sort();
    names
}

/// A joined thread can linger in /proc for a moment after `join` returns (the kernel reaps it
/// just after it wakes the joiner), so the listing is read again until `done` holds or a
/// generous deadline passes; the last listing is returned.
fn settled<T>(read: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = read();
        if done(&now) || std::time::Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn turn_threads_start_with_traffic_and_are_joined() {
    assert!(!thread_names().iter().any(|n| n.starts_with("btp-")));
    // The server's handler for "hold" waits until the test lets it go, so that shutdown starts
    // while a handler runs on one of the connection's reading threads.
    let (entered_tx, entered_rx) = bounded::<()>(1);
    let (release_tx, release_rx) = bounded::<()>(1);
    let handler = move |_: &str, request: &Packet<'_>| {
        let data = request.protocol_data().ilp().unwrap_or(b"").to_vec();
        if data == b"hold" {
            let _ = entered_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
        }
        Reply::Response(vec![OwnedEntry::ilp(data)])
    };
    let server =
        BtpServer::bind("127.0.0.1:0", ServerConfig::default(), Arc::new(handler)).unwrap();
    let client = Arc::new(
        BtpClient::connect(
            &format!("btp+ws://carol:t@{}", server.local_addr()),
            ClientConfig {
                connect_timeout: Duration::from_secs(20),
                ..ClientConfig::default()
            },
            Arc::new(|r: &Packet<'_>| {
                Reply::Response(vec![OwnedEntry::ilp(
                    r.protocol_data().ilp().unwrap_or(b"").to_vec(),
                )])
            }),
        )
        .unwrap(),
    );
    for i in 0..20u32 {
        let data = i.to_be_bytes();
        let entries = [ProtocolDataEntry::octets("ilp", &data)];
        let reply = client.request(&entries, None, None).unwrap();
        assert_eq!(reply.ilp(), Some(&data[..]));
        let reply = server.request("carol", &entries, None, None).unwrap();
        assert_eq!(reply.ilp(), Some(&data[..]));
    }
    // A new thread has its creator's name until it runs: wait for it to take its own.
    let turns = |names: &Vec<String>| names.iter().filter(|n| n.starts_with("btp-turn")).count();
    let during = settled(thread_names, |names| turns(names) >= 2);
    assert!(
        turns(&during) >= 2,
        "a second reading thread on each side: {during:?}"
    );

    let holder = {
        let client = client.clone();
        std::thread::spawn(move || {
            let entries = [ProtocolDataEntry::octets("ilp", b"hold")];
            client.request(&entries, None, Some(Duration::from_secs(20)))
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the held handler runs");
    // Shutdown waits for the running handler: let it finish once shutdown has begun, which
    // the client sees when the server's close frame ends its connection.
    let client_events = client.events();
    let releaser = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match client_events.recv_timeout(left) {
                Ok(ClientEvent::Disconnected(_)) => break,
                Ok(_) => continue,
                Err(_) => panic!("the server's shutdown never closed the client's connection"),
            }
        }
        release_tx.send(()).unwrap();
    });
    server.shutdown();
    releaser.join().unwrap();
    // The held request failed or was answered; either way it returned.
    let _ = holder.join().unwrap();
    client.disconnect();
    drop(client);

    let after = settled(thread_names, |t| !t.iter().any(|n| n.starts_with("btp-")));
    assert!(
        !after.iter().any(|n| n.starts_with("btp-")),
        "threads left behind: {after:?}"
    );
}
