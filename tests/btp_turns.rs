//! The threads reading a connection take turns and run handlers themselves (see the docs of
//! `btp::connection`): handlers that call back the same peer must not deadlock, concurrent
//! requests in both directions must each get their own answer.

use std::sync::{Arc, OnceLock, Weak};
use std::thread;
use std::time::Duration;

use ilp_plugin_lightning::btp::{
    BtpClient, BtpServer, ClientConfig, OwnedEntry, Packet, ProtocolDataEntry, Reply,
    RequestHandler, ServerConfig,
};

/// Long enough for a loaded 2-core machine; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(20);

fn client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: DEADLINE,
        ..ClientConfig::default()
    }
}

fn ilp_of(request: &Packet<'_>) -> Vec<u8> {
    request.protocol_data().ilp().unwrap_or(b"none").to_vec()
}

fn ask(entries_data: &[u8]) -> [ProtocolDataEntry<'_>; 1] {
    [ProtocolDataEntry::octets("ilp", entries_data)]
}

/// The server registers an account just after it answers the auth message: wait for it
/// before sending the account requests.
fn wait_account(server: &BtpServer, account: &str) {
    let events = server.events();
    let deadline = std::time::Instant::now() + DEADLINE;
    while !server.is_connected(account) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "{account} never registered");
        let _ = events.recv_timeout(left.min(Duration::from_millis(100)));
    }
}

/// Server handler: asks the same client back before answering, so it waits for a response on
/// the very connection its request came in on. The client's handler, for requests marked
/// `deep`, asks the server once more from inside its own handler.
#[test]
fn handlers_that_call_back_the_same_peer_do_not_deadlock() {
    let server_slot: Arc<OnceLock<Weak<BtpServer>>> = Arc::new(OnceLock::new());
    let server_handler = {
        let slot = server_slot.clone();
        move |account: &str, request: &Packet<'_>| {
            let data = ilp_of(request);
            if data.starts_with(b"inner-") {
                let mut out = b"server-inner:".to_vec();
                out.extend_from_slice(&data);
                return Reply::Response(vec![OwnedEntry::ilp(out)]);
            }
            let server = slot.get().and_then(Weak::upgrade).expect("server is up");
            let mut back = b"back-".to_vec();
            back.extend_from_slice(&data);
            let answer = server
                .request(account, &ask(&back), None, Some(DEADLINE))
                .expect("the client answers the call-back");
            let mut out = b"server:".to_vec();
            out.extend_from_slice(answer.ilp().unwrap());
            Reply::Response(vec![OwnedEntry::ilp(out)])
        }
    };
    let server = Arc::new(
        BtpServer::bind(
            "127.0.0.1:0",
            ServerConfig {
                handler_threads: 2,
                ..ServerConfig::default()
            },
            Arc::new(server_handler),
        )
        .unwrap(),
    );
    server_slot.set(Arc::downgrade(&server)).unwrap();

    let client_slot: Arc<OnceLock<Weak<BtpClient>>> = Arc::new(OnceLock::new());
    let client_handler: Arc<dyn RequestHandler> = {
        let slot = client_slot.clone();
        Arc::new(move |request: &Packet<'_>| {
            let data = ilp_of(request);
            let mut out = b"client:".to_vec();
            if data.ends_with(b"-deep") {
                let client = slot.get().and_then(Weak::upgrade).expect("client is up");
                let mut inner = b"inner-".to_vec();
                inner.extend_from_slice(&data);
                let answer = client
                    .request(&ask(&inner), None, Some(DEADLINE))
                    .expect("the server answers the nested request");
                out.extend_from_slice(answer.ilp().unwrap());
            } else {
                out.extend_from_slice(&data);
            }
            Reply::Response(vec![OwnedEntry::ilp(out)])
        })
    };
    let client = Arc::new(
        BtpClient::connect(
            &format!("btp+ws://alice:t@{}", server.local_addr()),
            client_config(),
            client_handler,
        )
        .unwrap(),
    );
    client_slot.set(Arc::downgrade(&client)).unwrap();
    wait_account(&server, "alice");

    // Sequential requests: after the first two the connection's second thread exists and
    // handlers run on the reading threads.
    for i in 0..200 {
        let data = if i % 3 == 0 {
            format!("p{i}-deep")
        } else {
            format!("p{i}")
        };
        let reply = client
            .request(&ask(data.as_bytes()), None, Some(DEADLINE))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let expected = if i % 3 == 0 {
            format!("server:client:server-inner:inner-back-{data}")
        } else {
            format!("server:client:back-{data}")
        };
        assert_eq!(
            String::from_utf8_lossy(reply.ilp().unwrap()),
            expected,
            "request {i}"
        );
    }
    // And the same from several threads at once.
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    let data = format!("t{t}-{i}");
                    let reply = client
                        .request(&ask(data.as_bytes()), None, Some(DEADLINE))
                        .unwrap_or_else(|e| panic!("thread {t} request {i}: {e}"));
                    assert_eq!(
                        String::from_utf8_lossy(reply.ilp().unwrap()),
                        format!("server:client:back-{data}")
                    );
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    client.disconnect();
    server.shutdown();
}

#[test]
fn concurrent_requests_both_ways_each_get_their_own_answer() {
    let server = Arc::new(
        BtpServer::bind(
            "127.0.0.1:0",
            ServerConfig::default(),
            Arc::new(|account: &str, request: &Packet<'_>| {
                let mut out = format!("{account}:").into_bytes();
                out.extend_from_slice(&ilp_of(request));
                Reply::Response(vec![OwnedEntry::ilp(out)])
            }),
        )
        .unwrap(),
    );
    let client = Arc::new(
        BtpClient::connect(
            &format!("btp+ws://bob:t@{}", server.local_addr()),
            client_config(),
            Arc::new(|request: &Packet<'_>| {
                let mut out = b"client:".to_vec();
                out.extend_from_slice(&ilp_of(request));
                Reply::Response(vec![OwnedEntry::ilp(out)])
            }),
        )
        .unwrap(),
    );
    wait_account(&server, "bob");
    let mut workers = Vec::new();
    for t in 0..16 {
        let client = client.clone();
        workers.push(thread::spawn(move || {
            for i in 0..150 {
                let data = format!("c{t}-{i}");
                let reply = client
                    .request(&ask(data.as_bytes()), None, Some(DEADLINE))
                    .unwrap_or_else(|e| panic!("client thread {t} request {i}: {e}"));
                assert_eq!(
                    String::from_utf8_lossy(reply.ilp().unwrap()),
                    format!("bob:{data}")
                );
            }
        }));
    }
    for t in 0..4 {
        let server = server.clone();
        workers.push(thread::spawn(move || {
            for i in 0..150 {
                let data = format!("s{t}-{i}");
                let reply = server
                    .request("bob", &ask(data.as_bytes()), None, Some(DEADLINE))
                    .unwrap_or_else(|e| panic!("server thread {t} request {i}: {e}"));
                assert_eq!(
                    String::from_utf8_lossy(reply.ilp().unwrap()),
                    format!("client:{data}")
                );
            }
        }));
    }
    for w in workers {
        w.join().unwrap();
    }
    client.disconnect();
    server.shutdown();
}

/// A handler still running on the threads of a connection that ended does not hold up the
/// reconnect; disconnect then waits for it.
#[test]
fn reconnect_does_not_wait_for_a_handler_of_the_old_connection() {
    use crossbeam_channel::bounded;
    use ilp_plugin_lightning::btp::ClientEvent;

    let server = Arc::new(
        BtpServer::bind(
            "127.0.0.1:0",
            ServerConfig::default(),
            Arc::new(|_: &str, r: &Packet<'_>| Reply::Response(vec![OwnedEntry::ilp(ilp_of(r))])),
        )
        .unwrap(),
    );
    let (entered_tx, entered_rx) = bounded::<()>(1);
    let (release_tx, release_rx) = bounded::<()>(1);
    let client = BtpClient::connect(
        &format!("btp+ws://dave:t@{}", server.local_addr()),
        ClientConfig {
            reconnect_delays: vec![Duration::ZERO],
            ..client_config()
        },
        Arc::new(move |r: &Packet<'_>| {
            let data = ilp_of(r);
            if data == b"hold" {
                let _ = entered_tx.send(());
                let _ = release_rx.recv_timeout(DEADLINE);
            }
            Reply::Response(vec![OwnedEntry::ilp(data)])
        }),
    )
    .unwrap();
    let events = client.events();
    wait_account(&server, "dave");
    for i in 0..5u8 {
        let reply = server.request("dave", &ask(&[i]), None, None).unwrap();
        assert_eq!(reply.ilp(), Some(&[i][..]));
    }
    let held = {
        let server = server.clone();
        thread::spawn(move || server.request("dave", &ask(b"hold"), None, Some(DEADLINE)))
    };
    entered_rx.recv_timeout(DEADLINE).expect("the handler runs");
    server.disconnect_account("dave");
    // Reconnected while the old connection's handler is still held.
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut disconnected = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(ClientEvent::Disconnected(_)) => disconnected = true,
            Ok(ClientEvent::Connected) if disconnected => break,
            Ok(_) => {}
            Err(_) => panic!("no reconnect while a handler of the old connection runs"),
        }
    }
    let reply = client.request(&ask(b"after"), None, None).unwrap();
    assert_eq!(reply.ilp(), Some(&b"after"[..]));
    assert!(held.join().unwrap().is_err(), "its connection was closed");
    release_tx.send(()).unwrap();
    client.disconnect();
    server.shutdown();
}

/// A handler (likely running on the connection's own reading thread, once requests flow) that
/// disconnects its own client, or shuts its own server down, returns: nothing waits for the
/// thread that is waiting for it.
#[test]
fn handlers_may_stop_their_own_client_or_server() {
    use crossbeam_channel::bounded;

    // The client side: after warm-up requests, "stop" makes the client's handler disconnect it.
    let server = Arc::new(
        BtpServer::bind(
            "127.0.0.1:0",
            ServerConfig::default(),
            Arc::new(|_: &str, r: &Packet<'_>| Reply::Response(vec![OwnedEntry::ilp(ilp_of(r))])),
        )
        .unwrap(),
    );
    let client_slot: Arc<OnceLock<Weak<BtpClient>>> = Arc::new(OnceLock::new());
    let (stopped_tx, stopped_rx) = bounded::<()>(1);
    let client = {
        let slot = client_slot.clone();
        Arc::new(
            BtpClient::connect(
                &format!("btp+ws://erin:t@{}", server.local_addr()),
                client_config(),
                Arc::new(move |r: &Packet<'_>| {
                    let data = ilp_of(r);
                    if data == b"stop" {
                        if let Some(client) = slot.get().and_then(Weak::upgrade) {
                            client.disconnect();
                        }
                        let _ = stopped_tx.send(());
                    }
                    Reply::Response(vec![OwnedEntry::ilp(data)])
                }),
            )
            .unwrap(),
        )
    };
    client_slot.set(Arc::downgrade(&client)).unwrap();
    wait_account(&server, "erin");
    for i in 0..5u8 {
        server.request("erin", &ask(&[i]), None, None).unwrap();
    }
    let stop = {
        let server = server.clone();
        thread::spawn(move || server.request("erin", &ask(b"stop"), None, Some(DEADLINE)))
    };
    stopped_rx
        .recv_timeout(DEADLINE)
        .expect("disconnect() from the client's own handler returns");
    assert!(stop.join().unwrap().is_err(), "the client went away");
    assert!(!client.is_connected());
    drop(client);
    server.shutdown();

    // The server side: "stop" makes the server's handler shut its own server down.
    let server_slot: Arc<OnceLock<Weak<BtpServer>>> = Arc::new(OnceLock::new());
    let (shut_tx, shut_rx) = bounded::<()>(1);
    let server = {
        let slot = server_slot.clone();
        Arc::new(
            BtpServer::bind(
                "127.0.0.1:0",
                ServerConfig::default(),
                Arc::new(move |_: &str, r: &Packet<'_>| {
                    let data = ilp_of(r);
                    if data == b"stop" {
                        if let Some(server) = slot.get().and_then(Weak::upgrade) {
                            server.shutdown();
                        }
                        let _ = shut_tx.send(());
                    }
                    Reply::Response(vec![OwnedEntry::ilp(data)])
                }),
            )
            .unwrap(),
        )
    };
    server_slot.set(Arc::downgrade(&server)).unwrap();
    let client = BtpClient::connect(
        &format!("btp+ws://frank:t@{}", server.local_addr()),
        client_config(),
        Arc::new(|r: &Packet<'_>| Reply::Response(vec![OwnedEntry::ilp(ilp_of(r))])),
    )
    .unwrap();
    for i in 0..5u8 {
        client.request(&ask(&[i]), None, None).unwrap();
    }
    let stop = thread::spawn(move || {
        let reply = client.request(&ask(b"stop"), None, Some(DEADLINE));
        client.disconnect();
        reply
    });
    shut_rx
        .recv_timeout(DEADLINE)
        .expect("shutdown() from the server's own handler returns");
    assert!(stop.join().unwrap().is_err(), "the server went away");
    drop(server);
}
