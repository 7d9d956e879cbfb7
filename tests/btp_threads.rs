//! Disconnecting joins every thread the BTP client and server started. Alone in its own test
//! binary so that no other test's threads come and go while it counts.

use std::sync::Arc;
use std::time::Duration;

use ilp_plugin_lightning::btp::{
    BtpClient, BtpServer, ClientConfig, OwnedEntry, Packet, ProtocolDataEntry, Reply, ServerConfig,
};

/// Names of this process's threads (as the kernel keeps them: at most 15 bytes).
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
fn disconnect_and_shutdown_join_every_thread() {
    let before = thread_names();
    assert!(!before.iter().any(|n| n.starts_with("btp-")), "{before:?}");

    let handler = |account: &str, _: &Packet<'_>| {
        Reply::Response(vec![OwnedEntry::ilp(account.as_bytes().to_vec())])
    };
    let server =
        BtpServer::bind("127.0.0.1:0", ServerConfig::default(), Arc::new(handler)).unwrap();
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    let client_handler =
        Arc::new(|_: &Packet<'_>| Reply::Response(vec![OwnedEntry::ilp(b"c".to_vec())]));
    let clients: Vec<BtpClient> = (0..3)
        .map(|i| {
            BtpClient::connect(
                &format!("btp+ws://user{i}:t@{}", server.local_addr()),
                config.clone(),
                client_handler.clone(),
            )
            .unwrap()
        })
        .collect();
    let entries = [ProtocolDataEntry::octets("ilp", b"x")];
    for (i, client) in clients.iter().enumerate() {
        let reply = client.request(&entries, None, None).unwrap();
        assert_eq!(reply.ilp().unwrap(), format!("user{i}").as_bytes());
        let reply = server
            .request(&format!("user{i}"), &entries, None, None)
            .unwrap();
        assert_eq!(reply.ilp(), Some(&b"c"[..]));
    }
    let during = thread_names();
    assert!(
        during
            .iter()
            .filter(|n| n.starts_with("btp-reader"))
            .count()
            >= 3,
        "{during:?}"
    );
    assert!(
        during.iter().filter(|n| n.starts_with("btp-conn")).count() >= 3,
        "{during:?}"
    );

    let mut clients = clients.into_iter();
    clients.next().unwrap().disconnect();
    // Dropping a client disconnects it too.
    drop(clients.next());
    // The last one is still connected when the server shuts down.
    let last = clients.next().unwrap();
    server.shutdown();
    last.disconnect();

    let after = settled(thread_names, |after| *after == before);
    assert_eq!(before, after, "threads left behind");
}
