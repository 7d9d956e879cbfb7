//! Disconnecting joins every thread the BTP client and server started. Alone in its own test
//! binary so that no other test's threads come and go while it counts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ilp_plugin_lightning::btp::{
    BtpClient, BtpServer, ClientConfig, OwnedEntry, Packet, ProtocolDataEntry, Reply, ServerConfig,
};

#[test]
fn disconnect_and_shutdown_join_every_thread() {
    let before = common::threads::names();
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
    let during = common::threads::names();
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

    let after = common::threads::settled(common::threads::names, |now| now == before);
    assert_eq!(before, after, "threads left behind");
}
