//! Connect and disconnect events are never lost, however many pile up unread: settlement sends
//! invoices on every connect and stops on every disconnect.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use ilp_plugin_lightning::btp::{
    auth_message, AccountLimits, BtpClient, BtpServer, ClientConfig, ClientEvent, OwnedEntry,
    Packet, Reply, ServerConfig, ServerEvent,
};
use tungstenite::Message as WsMessage;

/// Long enough for a loaded 2-core machine; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(60);

fn echo_server() -> BtpServer {
    let handler = |_: &str, _: &Packet<'_>| Reply::Response(vec![OwnedEntry::ilp(b"ok".to_vec())]);
    // Thousands of new accounts within seconds: no rate limit on them here.
    let config = ServerConfig {
        accounts: AccountLimits {
            max_new_per_minute: None,
            ..AccountLimits::default()
        },
        ..ServerConfig::default()
    };
    BtpServer::bind("127.0.0.1:0", config, Arc::new(handler)).expect("bind")
}

/// The next event, or a panic naming what was awaited.
fn next<T>(events: &Receiver<T>, deadline: Instant, awaited: &str) -> T {
    events
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_else(|_| panic!("{awaited} did not come"))
}

/// A raw WebSocket client authenticates as `account`, then closes.
fn connect_and_leave(addr: SocketAddr, account: &str) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
    ws.send(WsMessage::Binary(auth_message(1, account, "t")))
        .unwrap();
    loop {
        match ws.read().expect("auth reply") {
            WsMessage::Binary(reply) => {
                assert!(matches!(Packet::parse(&reply), Ok(Packet::Response(_))));
                break;
            }
            _ => continue,
        }
    }
    ws.close(None).unwrap();
    // Until the server's close reply: the server has seen the close by then.
    while ws.read().is_ok() {}
}

#[test]
fn a_server_delivers_every_event_of_a_flood_left_unread() {
    // Well over the 4096 events a bounded queue used to hold before it dropped them.
    const ACCOUNTS: usize = 2500;
    let server = echo_server();
    let events = server.events();
    for i in 0..ACCOUNTS {
        connect_and_leave(server.local_addr(), &format!("acct{i}"));
    }
    let deadline = Instant::now() + DEADLINE;
    let mut connected = vec![false; ACCOUNTS];
    let mut disconnected = vec![false; ACCOUNTS];
    let mut seen = 0;
    while seen < 2 * ACCOUNTS {
        match next(&events, deadline, "the next server event") {
            ServerEvent::Connected { account } => {
                let i: usize = account.strip_prefix("acct").unwrap().parse().unwrap();
                assert!(!connected[i], "{account} connected twice");
                connected[i] = true;
            }
            ServerEvent::Disconnected { account, .. } => {
                let i: usize = account.strip_prefix("acct").unwrap().parse().unwrap();
                assert!(connected[i], "{account} disconnected before it connected");
                assert!(!disconnected[i], "{account} disconnected twice");
                disconnected[i] = true;
            }
        }
        seen += 1;
    }
    assert!(connected.iter().all(|&c| c) && disconnected.iter().all(|&d| d));
    assert!(events.try_recv().is_err(), "no event beyond one of each");
    server.shutdown();
}

#[test]
fn a_client_delivers_every_event_of_a_flood_left_unread() {
    // Well over the 1024 events a bounded queue used to hold before it dropped them.
    const RECONNECTS: usize = 700;
    let server = echo_server();
    let server_events = server.events();
    let client = BtpClient::connect(
        &format!("btp+ws://alice:t@{}", server.local_addr()),
        ClientConfig {
            connect_timeout: DEADLINE,
            reconnect_delays: vec![Duration::ZERO],
            // One handler thread: the flood starts and joins thousands of threads.
            handler_threads: 1,
            ..ClientConfig::default()
        },
        Arc::new(|_: &Packet<'_>| Reply::Response(Vec::new())),
    )
    .expect("connect");
    let client_events = client.events();
    let deadline = Instant::now() + DEADLINE;
    let alice_connected =
        |e: &ServerEvent| matches!(e, ServerEvent::Connected { account } if account == "alice");
    while !alice_connected(&next(&server_events, deadline, "alice's first connection")) {}
    for _ in 0..RECONNECTS {
        server.disconnect_account("alice");
        // The client reconnects by itself; nobody reads its events meanwhile.
        while !alice_connected(&next(&server_events, deadline, "alice's reconnection")) {}
    }
    // Connected, then Disconnected and Connected again for each reconnect, in that order.
    for round in 0..=RECONNECTS {
        if round > 0 {
            assert!(matches!(
                next(&client_events, deadline, "a Disconnected event"),
                ClientEvent::Disconnected(_)
            ));
        }
        assert_eq!(
            next(&client_events, deadline, "a Connected event"),
            ClientEvent::Connected,
            "round {round}"
        );
    }
    // Nothing beyond those; once the client is told to stop, its queue ends.
    client.disconnect();
    assert_eq!(client_events.try_recv(), Err(TryRecvError::Disconnected));
    server.shutdown();
}
