//! The BTP transport over real WebSockets on loopback: auth, token binding, requests both ways,
//! timeouts, dying peers, reconnects, malformed frames, caps and keepalive.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use ilp_plugin_lightning::btp::auth::FileTokenStore;
use ilp_plugin_lightning::btp::{auth::AllowList, AccountLimits};
use ilp_plugin_lightning::btp::{
    auth_message, BtpClient, BtpServer, ClientConfig, ClientError, ClientEvent, CloseReason,
    ConnectionConfig, ErrorCode, ErrorReply, Message, OwnedEntry, Packet, ProtocolData,
    ProtocolDataEntry, Reply, RequestError, RequestHandler, Response, ServerConfig, ServerEvent,
    TransportError,
};
use tungstenite::error::ProtocolError;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message as WsMessage, WebSocket};

/// Long enough for a loaded 2-core machine; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(20);

fn echo_server_handler() -> Arc<dyn ilp_plugin_lightning::btp::AccountHandler> {
    Arc::new(|account: &str, request: &Packet<'_>| {
        let mut data = account.as_bytes().to_vec();
        data.push(b':');
        data.extend_from_slice(request.protocol_data().ilp().unwrap_or(b"none"));
        Reply::Response(vec![OwnedEntry::ilp(data)])
    })
}

fn client_echo_handler() -> Arc<dyn RequestHandler> {
    Arc::new(|request: &Packet<'_>| {
        let mut data = b"client:".to_vec();
        data.extend_from_slice(request.protocol_data().ilp().unwrap_or(b"none"));
        Reply::Response(vec![OwnedEntry::ilp(data)])
    })
}

fn start_server(config: ServerConfig) -> BtpServer {
    BtpServer::bind("127.0.0.1:0", config, echo_server_handler()).expect("bind")
}

fn quick_client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: DEADLINE,
        reconnect_delays: vec![Duration::from_millis(0), Duration::from_millis(50)],
        ..ClientConfig::default()
    }
}

/// A client that answers every request by echoing it, with the quick test settings.
fn echo_client(addr: SocketAddr, user: &str, token: &str) -> Result<BtpClient, ClientError> {
    BtpClient::connect(
        &uri(addr, user, token),
        quick_client_config(),
        client_echo_handler(),
    )
}

fn uri(addr: SocketAddr, user: &str, token: &str) -> String {
    format!("btp+ws://{user}:{token}@{addr}")
}

fn ilp(data: &[u8]) -> [ProtocolDataEntry<'_>; 1] {
    [ProtocolDataEntry::octets("ilp", data)]
}

/// Waits for the first event matching `want`, skipping others.
fn wait_event<T: std::fmt::Debug>(events: &Receiver<T>, want: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if want(&e) => return e,
            Ok(_) => continue,
            Err(_) => panic!("expected event did not come within {DEADLINE:?}"),
        }
    }
}

/// A raw tungstenite client, for speaking to the server in ways our client never would.
fn raw_client(addr: SocketAddr) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
    ws
}

/// Next binary frame; pings and pongs skipped. `None` when the connection ends.
fn raw_read(ws: &mut WebSocket<TcpStream>) -> Option<Vec<u8>> {
    loop {
        match ws.read() {
            Ok(WsMessage::Binary(b)) => return Some(b),
            Ok(WsMessage::Close(_)) => return None,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("raw client read timed out")
            }
            Err(_) => return None,
        }
    }
}

fn raw_auth(ws: &mut WebSocket<TcpStream>, user: &str, token: &str) -> Vec<u8> {
    ws.send(WsMessage::Binary(auth_message(9, user, token)))
        .unwrap();
    raw_read(ws).expect("auth reply")
}

fn expect_error(frame: &[u8]) -> (u32, ErrorCode, String) {
    match Packet::parse(frame).expect("reply parses") {
        Packet::Error(e) => (
            e.request_id(),
            e.code(),
            String::from_utf8_lossy(e.data()).into_owned(),
        ),
        other => panic!("expected a BTP Error, got {other:?}"),
    }
}

#[test]
fn auth_success_and_requests_both_ways() {
    let server = start_server(ServerConfig::default());
    let events = server.events();
    let client = echo_client(server.local_addr(), "alice", "secret").expect("connect");
    assert!(client.is_connected());
    assert_eq!(
        wait_event(&events, |_| true),
        ServerEvent::Connected {
            account: "alice".into()
        }
    );
    assert_eq!(server.accounts(), vec!["alice".to_string()]);

    let reply = client.request(&ilp(b"ping"), None, None).unwrap();
    assert_eq!(reply.ilp(), Some(&b"alice:ping"[..]));
    // A Transfer gets to the handler with its amount.
    let reply = client.request(&ilp(b"money"), Some(5), None).unwrap();
    assert_eq!(reply.ilp(), Some(&b"alice:money"[..]));

    let reply = server.request("alice", &ilp(b"hello"), None, None).unwrap();
    assert_eq!(reply.ilp(), Some(&b"client:hello"[..]));
    assert!(matches!(
        server.request("bob", &ilp(b"x"), None, None),
        Err(RequestError::NotConnected(_))
    ));

    // Many concurrent requests from several threads are each matched to their own reply.
    thread::scope(|s| {
        for t in 0..4 {
            let client = &client;
            s.spawn(move || {
                for i in 0..50 {
                    let body = format!("{t}-{i}");
                    let reply = client.request(&ilp(body.as_bytes()), None, None).unwrap();
                    assert_eq!(reply.ilp().unwrap(), format!("alice:{body}").as_bytes());
                }
            });
        }
    });

    client.disconnect();
    assert!(!client.is_connected());
    assert!(matches!(
        wait_event(&events, |_| true),
        ServerEvent::Disconnected { account, .. } if account == "alice"
    ));
    server.shutdown();
}

#[test]
fn account_without_username_is_token_hash() {
    // "secret" is shorter than 16 bytes: refused by default (the account name, its hash, is
    // public), let in when the server allows short tokens.
    let strict = start_server(ServerConfig::default());
    let err = BtpClient::connect(
        &format!("btp+ws://:secret@{}", strict.local_addr()),
        quick_client_config(),
        client_echo_handler(),
    )
    .unwrap_err();
    match err {
        ClientError::AuthRefused(e) => {
            assert_eq!(e.code, ErrorCode::F00_NOT_ACCEPTED);
            let why = String::from_utf8_lossy(&e.data);
            assert!(why.contains("at least 16 bytes"), "{why}");
        }
        other => panic!("expected AuthRefused, got {other:?}"),
    }
    strict.shutdown();
    let server = start_server(ServerConfig {
        accounts: AccountLimits {
            allow_short_tokens: true,
            ..AccountLimits::default()
        },
        ..ServerConfig::default()
    });
    let client = BtpClient::connect(
        &format!("btp+ws://:secret@{}", server.local_addr()),
        quick_client_config(),
        client_echo_handler(),
    )
    .unwrap();
    let reply = client.request(&ilp(b"x"), None, None).unwrap();
    assert_eq!(
        reply.ilp(),
        Some(&b"K7gNU3sdo-OL0wNhqoVWhr3g6s1xYv72ol_pe_Unols:x"[..])
    );
    // A username that cannot be an address segment is refused.
    let err = BtpClient::connect(
        &format!("btp+ws://a.b:secret@{}", server.local_addr()),
        quick_client_config(),
        client_echo_handler(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ClientError::AuthRefused(ref e) if e.code == ErrorCode::F00_NOT_ACCEPTED)
    );
}

#[test]
fn wrong_token_refused_and_binding_survives_reconnects_and_restarts() {
    let dir = std::env::temp_dir().join(format!("btp-transport-tokens-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || ServerConfig {
        token_store: Arc::new(FileTokenStore::open(&dir).unwrap()),
        ..ServerConfig::default()
    };
    let server = start_server(config());
    let addr = server.local_addr();
    let first = echo_client(addr, "alice", "right").unwrap();
    first.disconnect();

    // Reconnecting with the bound token works; another token is refused, without retrying.
    let again = echo_client(addr, "alice", "right").unwrap();
    again.disconnect();
    let err = echo_client(addr, "alice", "wrong").unwrap_err();
    match err {
        ClientError::AuthRefused(e) => {
            assert_eq!(e.code, ErrorCode::F00_NOT_ACCEPTED);
            assert!(String::from_utf8_lossy(&e.data).contains("incorrect token for account"));
        }
        other => panic!("expected AuthRefused, got {other:?}"),
    }

    // The raw view: the refusal is an F00 answering the auth request id, then a close.
    let mut ws = raw_client(addr);
    let (id, code, data) = expect_error(&raw_auth(&mut ws, "alice", "wrong"));
    assert_eq!((id, code), (9, ErrorCode::F00_NOT_ACCEPTED));
    assert!(data.contains("incorrect token"));
    assert_eq!(raw_read(&mut ws), None);

    // The binding is on disk: a restarted server still refuses the other token.
    server.shutdown();
    let server = BtpServer::bind(addr, config(), echo_server_handler()).unwrap();
    let err = echo_client(addr, "alice", "wrong").unwrap_err();
    assert!(matches!(err, ClientError::AuthRefused(_)));
    echo_client(addr, "alice", "right").unwrap().disconnect();
    server.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn auth_timeout_and_non_auth_first_message() {
    let server = start_server(ServerConfig {
        auth_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    // Silent client: F00 (request id 0, there was no request) then close.
    let mut ws = raw_client(server.local_addr());
    let (id, code, data) = expect_error(&raw_read(&mut ws).expect("error frame"));
    assert_eq!((id, code), (0, ErrorCode::F00_NOT_ACCEPTED));
    assert!(data.contains("timed out"), "{data}");
    assert_eq!(raw_read(&mut ws), None);

    // A first Message that is not auth: F00 answering it, then close.
    let mut ws = raw_client(server.local_addr());
    let entries = ilp(b"x");
    let message = Packet::Message(Message::new(77, ProtocolData::new(&entries).unwrap()));
    ws.send(WsMessage::Binary(message.to_bytes())).unwrap();
    let (id, code, _) = expect_error(&raw_read(&mut ws).expect("error frame"));
    assert_eq!((id, code), (77, ErrorCode::F00_NOT_ACCEPTED));
    assert_eq!(raw_read(&mut ws), None);
    assert!(server.accounts().is_empty());
    server.shutdown();
}

#[test]
fn request_timeout_leaves_nothing_behind() {
    // A fake server that answers the request that timed out only after the client gave up,
    // then the next request: on the wire the late reply comes first.
    let (received_tx, received_rx) = bounded::<u32>(1);
    let (gave_up_tx, gave_up_rx) = bounded::<()>(0);
    let (addr, fake) = fake_server(move |mut ws| {
        let hang = raw_read(&mut ws).expect("the request that times out");
        let hang_id = Packet::parse(&hang).unwrap().request_id();
        received_tx.send(hang_id).unwrap();
        gave_up_rx
            .recv_timeout(DEADLINE)
            .expect("the client gave up");
        let entries = ilp(b"late");
        let late = Response::new(hang_id, ProtocolData::new(&entries).unwrap());
        ws.send(WsMessage::Binary(Packet::Response(late).to_bytes()))
            .unwrap();
        let next = raw_read(&mut ws).expect("the next request");
        let entries = ilp(b"fine");
        let fine = Response::new(
            Packet::parse(&next).unwrap().request_id(),
            ProtocolData::new(&entries).unwrap(),
        );
        ws.send(WsMessage::Binary(Packet::Response(fine).to_bytes()))
            .unwrap();
        // Until the client leaves.
        while raw_read(&mut ws).is_some() {}
    });
    let client = echo_client(addr, "alice", "t").unwrap();
    let conn = client.connection().unwrap();
    let err = client
        .request(&ilp(b"hang"), None, Some(Duration::from_millis(200)))
        .unwrap_err();
    let hang_id = received_rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(
        err,
        RequestError::Transport(TransportError::Timeout {
            request_id: hang_id,
            after: Duration::from_millis(200)
        })
    );
    assert_eq!(
        conn.pending_requests(),
        0,
        "the timed-out request is still registered"
    );
    gave_up_tx.send(()).unwrap();
    // The late reply finds nobody waiting and is dropped; the next request gets its own reply.
    let reply = client.request(&ilp(b"next"), None, None).unwrap();
    assert_eq!(reply.ilp(), Some(&b"fine"[..]));
    assert_eq!(conn.pending_requests(), 0);
    client.disconnect();
    fake.join().unwrap();
}

/// A fake BTP server: accepts one client, answers its auth, then runs `then` on the socket.
fn fake_server(
    then: impl FnOnce(WebSocket<TcpStream>) + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = common::threads::spawn("fake-btp-server", move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let auth = raw_read(&mut ws).unwrap();
        let id = Packet::parse(&auth).unwrap().request_id();
        let ok = Packet::Response(Response::new(id, ProtocolData::EMPTY)).to_bytes();
        ws.send(WsMessage::Binary(ok)).unwrap();
        then(ws);
    });
    (addr, handle)
}

#[test]
fn peer_vanishing_mid_request_fails_the_request_promptly() {
    let (got_request_tx, got_request_rx) = bounded::<()>(1);
    let (addr, fake) = fake_server(move |mut ws| {
        raw_read(&mut ws).expect("the request");
        got_request_tx.send(()).unwrap();
        // Vanish: no reply, no close frame, just the socket gone.
        let _ = ws.get_mut().shutdown(std::net::Shutdown::Both);
    });
    let client = BtpClient::connect(
        &uri(addr, "alice", "t"),
        ClientConfig {
            // Nothing listens any more: keep reconnect attempts sparse.
            reconnect_delays: vec![Duration::from_millis(200)],
            ..quick_client_config()
        },
        client_echo_handler(),
    )
    .unwrap();
    let events = client.events();
    assert_eq!(wait_event(&events, |_| true), ClientEvent::Connected);
    let (result_tx, result_rx) = bounded(1);
    thread::scope(|s| {
        let client = &client;
        s.spawn(move || {
            // A timeout far beyond DEADLINE: only the connection's death can end this quickly.
            let r = client.request(&ilp(b"x"), None, Some(Duration::from_secs(600)));
            result_tx.send(r).unwrap();
        });
        got_request_rx.recv_timeout(DEADLINE).unwrap();
        let result = result_rx
            .recv_timeout(DEADLINE)
            .expect("request still hanging");
        assert!(
            matches!(
                result,
                Err(RequestError::Transport(TransportError::Closed(_)))
            ),
            "{result:?}"
        );
    });
    assert!(matches!(
        wait_event(&events, |_| true),
        ClientEvent::Disconnected(_)
    ));
    fake.join().unwrap();
    client.disconnect();
}

#[test]
fn client_reconnects_after_server_restart_on_same_port() {
    let server = start_server(ServerConfig::default());
    let addr = server.local_addr();
    let client = echo_client(addr, "alice", "t").unwrap();
    let events = client.events();
    assert_eq!(wait_event(&events, |_| true), ClientEvent::Connected);
    server.shutdown();
    assert!(matches!(
        wait_event(&events, |_| true),
        ClientEvent::Disconnected(_)
    ));
    assert!(matches!(
        client.request(&ilp(b"x"), None, None),
        Err(RequestError::NotConnected(_) | RequestError::Transport(_))
    ));
    let server = BtpServer::bind(addr, ServerConfig::default(), echo_server_handler()).unwrap();
    let server_events = server.events();
    wait_event(&events, |e| *e == ClientEvent::Connected);
    // Re-authenticated: the new server knows the account.
    wait_event(
        &server_events,
        |e| matches!(e, ServerEvent::Connected { account } if account == "alice"),
    );
    let reply = client.request(&ilp(b"back"), None, None).unwrap();
    assert_eq!(reply.ilp(), Some(&b"alice:back"[..]));
    client.disconnect();
    server.shutdown();
}

#[test]
fn malformed_frames_get_an_error_and_the_connection_survives() {
    let server = start_server(ServerConfig::default());
    let mut ws = raw_client(server.local_addr());
    match Packet::parse(&raw_auth(&mut ws, "alice", "t")).unwrap() {
        Packet::Response(r) => assert_eq!(r.request_id(), 9),
        other => panic!("auth refused: {other:?}"),
    }
    // A Message whose length prefix promises more than there is.
    ws.send(WsMessage::Binary(vec![6, 0, 0, 0, 42, 0x7f, 1, 2]))
        .unwrap();
    let (id, code, _) = expect_error(&raw_read(&mut ws).expect("error frame"));
    assert_eq!((id, code), (42, ErrorCode::F01_INVALID_FIELDS));
    // An unknown packet type.
    ws.send(WsMessage::Binary(vec![9, 0, 0, 0, 43, 0])).unwrap();
    let (id, code, _) = expect_error(&raw_read(&mut ws).expect("error frame"));
    assert_eq!((id, code), (43, ErrorCode::F01_INVALID_FIELDS));
    // A response to nothing and a runt frame get no answer; a text frame is ignored.
    ws.send(WsMessage::Binary(
        Packet::Response(Response::new(5, ProtocolData::EMPTY)).to_bytes(),
    ))
    .unwrap();
    ws.send(WsMessage::Binary(vec![6, 0])).unwrap();
    ws.send(WsMessage::Text("hello".into())).unwrap();
    // The connection still works: the next reply is the one to this request.
    let entries = ilp(b"still here");
    let message = Packet::Message(Message::new(44, ProtocolData::new(&entries).unwrap()));
    ws.send(WsMessage::Binary(message.to_bytes())).unwrap();
    match Packet::parse(&raw_read(&mut ws).unwrap()).unwrap() {
        Packet::Response(r) => {
            assert_eq!(r.request_id(), 44);
            assert_eq!(r.protocol_data().ilp(), Some(&b"alice:still here"[..]));
        }
        other => panic!("expected the response, got {other:?}"),
    }
    server.shutdown();
}

#[test]
fn frame_size_cap() {
    let small = ConnectionConfig {
        max_frame_size: 1024,
        ..ConnectionConfig::default()
    };
    let server = start_server(ServerConfig {
        connection: small.clone(),
        ..ServerConfig::default()
    });
    let events = server.events();
    let mut ws = raw_client(server.local_addr());
    raw_auth(&mut ws, "alice", "t");
    wait_event(&events, |e| matches!(e, ServerEvent::Connected { .. }));
    let _ = ws.send(WsMessage::Binary(vec![6; 4000]));
    // The server drops the connection (close 1009) rather than reading a huge frame.
    assert_eq!(raw_read(&mut ws), None);
    match wait_event(&events, |_| true) {
        ServerEvent::Disconnected { reason, .. } => {
            assert!(
                matches!(reason, CloseReason::FrameTooLarge { max: 1024, .. }),
                "{reason:?}"
            )
        }
        other => panic!("{other:?}"),
    }

    // Our own side refuses to send a frame over the cap, and the connection stays up.
    let client = BtpClient::connect(
        &uri(server.local_addr(), "bob", "t"),
        ClientConfig {
            connection: small,
            ..quick_client_config()
        },
        client_echo_handler(),
    )
    .unwrap();
    let big = vec![0u8; 2000];
    assert!(matches!(
        client.request(&ilp(&big), None, None),
        Err(RequestError::Transport(TransportError::FrameTooLarge {
            max: 1024,
            ..
        }))
    ));
    assert_eq!(
        client.request(&ilp(b"small"), None, None).unwrap().ilp(),
        Some(&b"bob:small"[..])
    );
    client.disconnect();
    server.shutdown();
}

#[test]
fn connection_cap_refuses_extra_sockets() {
    let server = start_server(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    });
    let addr = server.local_addr();
    let a = echo_client(addr, "a", "t").unwrap();
    let b = echo_client(addr, "b", "t").unwrap();
    // The third socket is closed before its WebSocket handshake completes: the handshake
    // fails because the stream ended or was reset, not for any other reason (a timeout of our
    // own would be `WouldBlock`).
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    match tungstenite::client(format!("ws://{addr}/"), stream) {
        Err(HandshakeError::Failure(tungstenite::Error::Protocol(
            ProtocolError::HandshakeIncomplete,
        ))) => {}
        Err(HandshakeError::Failure(tungstenite::Error::Io(e))) if is_cut(&e) => {}
        other => panic!("expected the server to cut the socket, got {other:?}"),
    }
    assert!(a.is_connected() && b.is_connected());
    // Once one leaves, its slot is freed for another (the client's own retries wait for it).
    a.disconnect();
    let c = echo_client(addr, "c", "t").unwrap();
    assert_eq!(
        c.request(&ilp(b"x"), None, None).unwrap().ilp(),
        Some(&b"c:x"[..])
    );
    c.disconnect();
    b.disconnect();
    server.shutdown();
}

#[test]
fn new_connection_replaces_old_one_for_same_account() {
    let server = start_server(ServerConfig::default());
    let events = server.events();
    let mut old = raw_client(server.local_addr());
    raw_auth(&mut old, "alice", "t");
    wait_event(&events, |e| matches!(e, ServerEvent::Connected { .. }));
    let client = echo_client(server.local_addr(), "alice", "t").unwrap();
    wait_event(&events, |e| matches!(e, ServerEvent::Connected { .. }));
    // The old socket is closed; the account stays connected through the new one.
    assert_eq!(raw_read(&mut old), None);
    assert_eq!(server.accounts(), vec!["alice".to_string()]);
    let reply = server.request("alice", &ilp(b"hi"), None, None).unwrap();
    assert_eq!(reply.ilp(), Some(&b"client:hi"[..]));
    client.disconnect();
    server.shutdown();
}

#[test]
fn silent_peer_is_dropped_after_pong_deadline() {
    let server = start_server(ServerConfig {
        connection: ConnectionConfig {
            ping_interval: Duration::from_millis(100),
            pong_timeout: Duration::from_millis(300),
            ..ConnectionConfig::default()
        },
        ..ServerConfig::default()
    });
    let events = server.events();
    // A raw peer that authenticates, then never reads again: its pongs never go out.
    let mut ws = raw_client(server.local_addr());
    raw_auth(&mut ws, "mute", "t");
    wait_event(&events, |e| matches!(e, ServerEvent::Connected { .. }));
    match wait_event(&events, |_| true) {
        ServerEvent::Disconnected { account, reason } => {
            assert_eq!(account, "mute");
            assert_eq!(reason, CloseReason::PongTimeout);
        }
        other => panic!("{other:?}"),
    }
    // A peer that does answer pings stays connected across many intervals: a raw client that
    // reads (tungstenite answers each ping on its next read) sees six pings come, six times
    // the interval and twice the pong deadline, and never a close.
    let mut talker = raw_client(server.local_addr());
    raw_auth(&mut talker, "talker", "t");
    wait_event(
        &events,
        |e| matches!(e, ServerEvent::Connected { account } if account == "talker"),
    );
    let mut pings = 0;
    while pings < 6 {
        match talker.read() {
            Ok(WsMessage::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("the server dropped a peer that answers its pings: {e}"),
        }
    }
    assert!(server.is_connected("talker"));
    assert!(events.try_recv().is_err(), "an event for the talker");
    server.shutdown();
}

#[test]
fn client_drops_a_silent_server_and_reconnects() {
    // A server that answers auth, then stops reading (so never pongs); the second connection
    // is answered by a server that behaves.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (release_tx, release_rx) = bounded::<()>(0);
    let fake = common::threads::spawn("silent-server", move || {
        let (stream, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let auth = raw_read(&mut ws).unwrap();
        let id = Packet::parse(&auth).unwrap().request_id();
        ws.send(WsMessage::Binary(
            Packet::Response(Response::new(id, ProtocolData::EMPTY)).to_bytes(),
        ))
        .unwrap();
        // Hold the socket open without reading until the test is done with it.
        let _ = release_rx.recv_timeout(DEADLINE);
        drop(ws);
        listener
    });
    let client = BtpClient::connect(
        &uri(addr, "alice", "t"),
        ClientConfig {
            connection: ConnectionConfig {
                ping_interval: Duration::from_millis(100),
                pong_timeout: Duration::from_millis(300),
                ..ConnectionConfig::default()
            },
            reconnect_delays: vec![Duration::from_millis(50)],
            ..quick_client_config()
        },
        client_echo_handler(),
    )
    .unwrap();
    let events = client.events();
    assert_eq!(wait_event(&events, |_| true), ClientEvent::Connected);
    assert_eq!(
        wait_event(&events, |_| true),
        ClientEvent::Disconnected(CloseReason::PongTimeout)
    );
    drop(release_tx);
    let listener = fake.join().unwrap();
    // Serve the reconnect properly on the same listening socket.
    let server_side = common::threads::spawn("server-side", move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let auth = raw_read(&mut ws).unwrap();
        let id = Packet::parse(&auth).unwrap().request_id();
        ws.send(WsMessage::Binary(
            Packet::Response(Response::new(id, ProtocolData::EMPTY)).to_bytes(),
        ))
        .unwrap();
        // Keep answering pings until the client closes.
        while raw_read(&mut ws).is_some() {}
    });
    wait_event(&events, |e| *e == ClientEvent::Connected);
    client.disconnect();
    server_side.join().unwrap();
}

#[test]
fn handler_errors_become_btp_errors() {
    let handler = |_: &str, _: &Packet<'_>| Reply::Error(ErrorReply::unreachable("no route"));
    let server =
        BtpServer::bind("127.0.0.1:0", ServerConfig::default(), Arc::new(handler)).unwrap();
    let client = echo_client(server.local_addr(), "alice", "t").unwrap();
    match client.request(&ilp(b"x"), None, None) {
        Err(RequestError::Rejected(e)) => {
            assert_eq!(e.code, ErrorCode::T00_UNREACHABLE);
            assert_eq!(e.name, "UnreachableError");
            assert_eq!(e.data, b"no route");
        }
        other => panic!("{other:?}"),
    }
    client.disconnect();
    server.shutdown();
}

#[test]
fn wss_is_refused_with_a_clear_error() {
    let err = BtpClient::connect(
        "btp+wss://alice:t@127.0.0.1:1",
        quick_client_config(),
        client_echo_handler(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("btp+wss not supported"), "{err}");
}

#[test]
fn slow_handshake_is_cut_at_the_deadline() {
    use std::io::{Read, Write};
    let server = start_server(ServerConfig {
        connection: ConnectionConfig {
            handshake_timeout: Duration::from_millis(300),
            ..ConnectionConfig::default()
        },
        ..ServerConfig::default()
    });
    let addr = server.local_addr();
    // A peer that sends nothing is cut at the deadline: the stream ends or is reset, long
    // before the 20 s read timeout of our own.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match silent.read(&mut buf) {
        Ok(0) => {}
        Err(e) if is_cut(&e) => {}
        other => panic!("expected the server to cut the silent peer, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "cut before the deadline"
    );

    // A peer that trickles its upgrade request a byte at a time (each byte well within any
    // per-read timeout) is cut too, long before it finishes.
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let (cut_tx, cut_rx) = bounded::<Vec<u8>>(1);
    let watcher = {
        let mut slow = slow.try_clone().unwrap();
        common::threads::spawn("trickle-watcher", move || {
            let mut received = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                match slow.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(e) if is_cut(&e) => break,
                    Err(e) => panic!("the trickling peer was never cut: {e}"),
                }
            }
            cut_tx.send(received).unwrap();
        })
    };
    let mut sent = 0;
    let mut received = None;
    for byte in request.as_bytes() {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        sent += 1;
        // The peer's pace, the behaviour under test: a byte every 50 ms would take 8 s for the
        // whole request. The cut ends the wait at once.
        if let Ok(bytes) = cut_rx.recv_timeout(Duration::from_millis(50)) {
            received = Some(bytes);
            break;
        }
    }
    let received = match received {
        Some(bytes) => bytes,
        None => cut_rx
            .recv_timeout(DEADLINE)
            .expect("the trickling peer was never cut"),
    };
    watcher.join().unwrap();
    assert!(
        sent < request.len(),
        "the whole request went through before the cut"
    );
    assert!(
        !String::from_utf8_lossy(&received).contains("101"),
        "a trickled handshake was completed"
    );
    server.shutdown();
}

/// Whether a read or handshake error means the other side cut the connection.
fn is_cut(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe
    )
}

#[test]
fn saturated_pool_never_deadlocks_on_callbacks_to_the_same_peer() {
    // One handler thread, one queue slot; each request makes the server ask the same client
    // something back before it answers, and the client holds those callbacks until the test
    // opens a gate. While the gate is shut, every handler the server can run is stuck waiting
    // for a callback's response: a reader that simply blocked on the full pool would leave
    // those responses unread, a deadlock until the (long) request timeout. The server must go
    // on reading and refuse what it cannot run with T00 "busy".
    let server_cell: Arc<std::sync::OnceLock<Arc<BtpServer>>> = Arc::default();
    let cell = server_cell.clone();
    let handler = move |account: &str, _: &Packet<'_>| {
        let server = cell.get().expect("server set");
        match server.request(
            account,
            &ilp(b"callback"),
            None,
            Some(Duration::from_secs(600)),
        ) {
            Ok(reply) => Reply::Response(vec![OwnedEntry::ilp(reply.ilp().unwrap().to_vec())]),
            Err(e) => Reply::Error(ErrorReply::unreachable(e.to_string())),
        }
    };
    let server = Arc::new(
        BtpServer::bind(
            "127.0.0.1:0",
            ServerConfig {
                handler_threads: 1,
                handler_queue: 1,
                ..ServerConfig::default()
            },
            Arc::new(handler),
        )
        .unwrap(),
    );
    server_cell.set(server.clone()).unwrap();
    let (gate_tx, gate_rx) = bounded::<()>(0);
    let client_handler = move |request: &Packet<'_>| {
        let data = request.protocol_data().ilp().unwrap_or(b"none").to_vec();
        if data == b"callback" {
            // Shut until the test drops the sender.
            let _ = gate_rx.recv_timeout(DEADLINE);
        }
        Reply::Response(vec![OwnedEntry::ilp([&b"client:"[..], &data].concat())])
    };
    let client = BtpClient::connect(
        &uri(server.local_addr(), "alice", "t"),
        quick_client_config(),
        Arc::new(client_handler),
    )
    .unwrap();
    let is_busy = |result: &Result<_, RequestError>| {
        matches!(result, Err(RequestError::Rejected(e))
            if e.code == ErrorCode::T00_UNREACHABLE && e.data == b"busy: request handlers saturated")
    };
    let (results_tx, results_rx) = bounded(16);
    thread::scope(|s| {
        for _ in 0..8 {
            let client = &client;
            let results_tx = results_tx.clone();
            s.spawn(move || {
                let r = client.request(&ilp(b"go"), None, Some(Duration::from_secs(600)));
                results_tx.send(r).unwrap();
            });
        }
        // With the gate shut nothing can be fulfilled: the first answers are refusals.
        let first = results_rx
            .recv_timeout(DEADLINE)
            .expect("no refusal while every handler was stuck: the server stopped reading");
        assert!(is_busy(&first), "{first:?}");
        let mut busy = 1;
        let mut fulfilled = 0;
        drop(gate_tx);
        for _ in 1..8 {
            let result = results_rx.recv_timeout(DEADLINE).expect("a request hung");
            match result {
                Ok(reply) => {
                    assert_eq!(reply.ilp(), Some(&b"client:callback"[..]));
                    fulfilled += 1;
                }
                other => {
                    assert!(is_busy(&other), "{other:?}");
                    busy += 1;
                }
            }
        }
        // The stuck handlers all finished once the gate opened.
        assert!(fulfilled >= 1, "{busy} refused, none fulfilled");
        assert_eq!(busy + fulfilled, 8);
    });
    // Alone, a request is run, not refused.
    let reply = client.request(&ilp(b"go"), None, None).unwrap();
    assert_eq!(reply.ilp(), Some(&b"client:callback"[..]));
    client.disconnect();
    server.shutdown();
}

#[test]
fn pending_cap_and_no_write_after_close() {
    let (release_tx, release_rx) = bounded::<()>(0);
    let handler = move |_: &str, _: &Packet<'_>| {
        let _ = release_rx.recv_timeout(DEADLINE);
        Reply::Response(Vec::new())
    };
    let server =
        BtpServer::bind("127.0.0.1:0", ServerConfig::default(), Arc::new(handler)).unwrap();
    let client = BtpClient::connect(
        &uri(server.local_addr(), "alice", "t"),
        ClientConfig {
            connection: ConnectionConfig {
                max_pending_requests: 1,
                ..ConnectionConfig::default()
            },
            ..quick_client_config()
        },
        client_echo_handler(),
    )
    .unwrap();
    let events = client.events();
    let conn = client.connection().unwrap();
    thread::scope(|s| {
        let (registered_tx, registered_rx) = bounded(1);
        let conn = &conn;
        let waiter = s.spawn(move || {
            // The encoder runs once the request is registered, just before it is written.
            conn.request_frame(
                |id| {
                    registered_tx.send(()).unwrap();
                    let entries = ilp(b"slow");
                    Packet::Message(Message::new(id, ProtocolData::new(&entries).unwrap()))
                        .to_bytes()
                },
                None,
            )
        });
        registered_rx.recv_timeout(DEADLINE).unwrap();
        assert!(matches!(
            client.request(&ilp(b"second"), None, None),
            Err(RequestError::Transport(TransportError::TooManyPending {
                max: 1
            }))
        ));
        drop(release_tx);
        assert!(waiter.join().unwrap().is_ok());
    });
    assert_eq!(wait_event(&events, |_| true), ClientEvent::Connected);
    client.disconnect();
    // The old connection refuses writes with a typed error; nothing touches the socket.
    assert!(!conn.is_open());
    assert!(matches!(
        conn.send_frame(vec![6, 0, 0, 0, 1, 1, 0]),
        Err(TransportError::Closed(CloseReason::Local))
    ));
    server.shutdown();
}

#[test]
fn disconnect_cuts_a_hanging_reconnect_attempt_short() {
    // The first connection is answered; the reconnect's auth never is.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (hanging_tx, hanging_rx) = bounded::<()>(1);
    let fake = common::threads::spawn("hanging-server", move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let auth = raw_read(&mut ws).unwrap();
        let id = Packet::parse(&auth).unwrap().request_id();
        ws.send(WsMessage::Binary(
            Packet::Response(Response::new(id, ProtocolData::EMPTY)).to_bytes(),
        ))
        .unwrap();
        let _ = ws.get_mut().shutdown(std::net::Shutdown::Both);
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        raw_read(&mut ws).expect("second auth");
        hanging_tx.send(()).unwrap();
        // Never answer; wait for the client to go away.
        while raw_read(&mut ws).is_some() {}
    });
    let long = Duration::from_secs(600);
    let client = BtpClient::connect(
        &uri(addr, "alice", "t"),
        ClientConfig {
            connect_timeout: long,
            connection: ConnectionConfig {
                request_timeout: long,
                ..ConnectionConfig::default()
            },
            ..quick_client_config()
        },
        client_echo_handler(),
    )
    .unwrap();
    hanging_rx
        .recv_timeout(DEADLINE)
        .expect("client never retried");
    let (done_tx, done_rx) = bounded(1);
    thread::scope(|s| {
        s.spawn(|| {
            client.disconnect();
            done_tx.send(()).unwrap();
        });
        done_rx
            .recv_timeout(DEADLINE)
            .expect("disconnect waited for the hanging auth");
    });
    fake.join().unwrap();
}

#[test]
fn random_frames_never_break_the_connection() {
    let server = start_server(ServerConfig::default());
    let mut ws = raw_client(server.local_addr());
    raw_auth(&mut ws, "alice", "t");
    // xorshift: reproducible garbage, biased towards plausible type bytes and short lengths.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..500 {
        let len = (next() % 40) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(t) = frame.first_mut() {
            *t = [1, 2, 6, 7, 3, 0xff][(next() % 6) as usize];
        }
        ws.send(WsMessage::Binary(frame)).unwrap();
    }
    let entries = ilp(b"after the noise");
    let message = Packet::Message(Message::new(0xABCD, ProtocolData::new(&entries).unwrap()));
    ws.send(WsMessage::Binary(message.to_bytes())).unwrap();
    loop {
        let frame = raw_read(&mut ws).expect("connection survives");
        if let Ok(Packet::Response(r)) = Packet::parse(&frame) {
            if r.request_id() == 0xABCD {
                assert_eq!(r.protocol_data().ilp(), Some(&b"alice:after the noise"[..]));
                break;
            }
        }
    }
    server.shutdown();
}

/// The refusal's text, from a client whose auth the server refused.
fn refusal(result: Result<BtpClient, ClientError>) -> String {
    match result {
        Err(ClientError::AuthRefused(e)) => {
            assert_eq!(e.code, ErrorCode::F00_NOT_ACCEPTED);
            String::from_utf8_lossy(&e.data).into_owned()
        }
        Err(other) => panic!("expected AuthRefused, got {other:?}"),
        Ok(_) => panic!("expected AuthRefused, got a connection"),
    }
}

#[test]
fn account_cap_refuses_new_accounts_with_a_btp_error_and_closes() {
    let server = start_server(ServerConfig {
        accounts: AccountLimits {
            max_accounts: 2,
            ..AccountLimits::default()
        },
        ..ServerConfig::default()
    });
    let addr = server.local_addr();
    echo_client(addr, "a", "t").unwrap().disconnect();
    let b = echo_client(addr, "b", "t").unwrap();
    assert_eq!(server.bound_accounts(), 2);
    let why = refusal(echo_client(addr, "c", "t"));
    assert!(why.contains("limit of 2 accounts"), "{why}");
    // The raw view: an Error answering the auth, then the close.
    let mut ws = raw_client(addr);
    let (id, code, data) = expect_error(&raw_auth(&mut ws, "d", "t"));
    assert_eq!((id, code), (9, ErrorCode::F00_NOT_ACCEPTED));
    assert!(data.contains("limit of 2 accounts"), "{data}");
    assert_eq!(raw_read(&mut ws), None);
    // Accounts already bound still get in, connected or not.
    echo_client(addr, "a", "t").unwrap().disconnect();
    assert_eq!(server.bound_accounts(), 2);
    b.disconnect();
    server.shutdown();
}

#[test]
fn new_account_rate_is_capped() {
    let server = start_server(ServerConfig {
        accounts: AccountLimits {
            max_new_per_minute: Some(2),
            ..AccountLimits::default()
        },
        ..ServerConfig::default()
    });
    let addr = server.local_addr();
    echo_client(addr, "a", "t").unwrap().disconnect();
    echo_client(addr, "b", "t").unwrap().disconnect();
    let why = refusal(echo_client(addr, "c", "t"));
    assert!(why.contains("at most 2 a minute"), "{why}");
    // Known accounts are not new ones.
    echo_client(addr, "a", "t").unwrap().disconnect();
    assert_eq!(server.bound_accounts(), 2);
    server.shutdown();
}

#[test]
fn allow_list_lets_in_only_its_accounts_and_binds_nothing() {
    let anonymous_token = "a-token-long-enough-for-its-hash";
    let list = format!(
        "# test list\nalice {}\n{}\n",
        hex::encode(ilp_plugin_lightning::btp::auth::hash_token(b"alice-token")),
        hex::encode(ilp_plugin_lightning::btp::auth::hash_token(
            anonymous_token.as_bytes()
        )),
    );
    let store = Arc::new(ilp_plugin_lightning::btp::auth::MemoryTokenStore::new());
    let server = start_server(ServerConfig {
        token_store: store.clone(),
        accounts: AccountLimits {
            allow_list: Some(Arc::new(AllowList::parse(&list).unwrap())),
            ..AccountLimits::default()
        },
        ..ServerConfig::default()
    });
    let addr = server.local_addr();
    let alice = echo_client(addr, "alice", "alice-token").unwrap();
    assert_eq!(
        alice.request(&ilp(b"x"), None, None).unwrap().ilp(),
        Some(&b"alice:x"[..])
    );
    alice.disconnect();
    let anonymous = BtpClient::connect(
        &format!("btp+ws://:{anonymous_token}@{addr}"),
        quick_client_config(),
        client_echo_handler(),
    )
    .unwrap();
    anonymous.disconnect();
    assert!(refusal(echo_client(addr, "alice", "other")).contains("not on this server's list"));
    assert!(
        refusal(echo_client(addr, "mallory", "alice-token")).contains("not on this server's list")
    );
    use ilp_plugin_lightning::btp::auth::TokenStore;
    assert_eq!(store.bound_accounts().unwrap(), Some(vec![]));
    server.shutdown();
}

#[test]
fn unauthenticated_sockets_are_capped_per_address() {
    let server = start_server(ServerConfig {
        max_unauthenticated_per_address: 2,
        ..ServerConfig::default()
    });
    let addr = server.local_addr();
    // Two strangers that never authenticate (their WebSocket handshake done, no auth sent).
    let first = raw_client(addr);
    let second = raw_client(addr);
    // A third from the same address is cut before its handshake completes.
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    match tungstenite::client(format!("ws://{addr}/"), stream) {
        Err(HandshakeError::Failure(tungstenite::Error::Protocol(
            ProtocolError::HandshakeIncomplete,
        ))) => {}
        Err(HandshakeError::Failure(tungstenite::Error::Io(e))) if is_cut(&e) => {}
        other => panic!("expected the server to cut the socket, got {other:?}"),
    }
    // An authenticated client no longer counts: once the strangers leave, clients get in
    // (the client's own retries wait for the server to see them go), and stay in.
    drop(first);
    drop(second);
    let a = echo_client(addr, "a", "t").unwrap();
    let b = echo_client(addr, "b", "t").unwrap();
    let c = echo_client(addr, "c", "t").unwrap();
    for client in [&a, &b, &c] {
        assert!(client.is_connected());
    }
    for client in [a, b, c] {
        client.disconnect();
    }
    server.shutdown();
}

#[test]
fn the_embedded_store_lists_and_forgets_bindings_across_restarts() {
    use ilp_plugin_lightning::btp::auth::{hash_token, TokenCheck, TokenStore};
    use ilp_plugin_lightning::settlement::EmbeddedStore;
    let dir = std::env::temp_dir().join(format!("btp-embedded-unbind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (hash_token(b"a"), hash_token(b"b"));
    {
        let store = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(store.check_or_bind("alice", &a).unwrap(), TokenCheck::Bound);
        assert_eq!(store.check_or_bind("bob", &a).unwrap(), TokenCheck::Bound);
        store.unbind("alice").unwrap();
        // Unbinding what is not bound is harmless.
        store.unbind("nobody").unwrap();
    }
    let store = EmbeddedStore::open(&dir).unwrap();
    assert_eq!(
        store.bound_accounts().unwrap(),
        Some(vec!["bob".to_string()])
    );
    assert_eq!(store.check_or_bind("alice", &b).unwrap(), TokenCheck::Bound);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_timeout_too_long_for_the_clock_is_no_panic() {
    let server = start_server(ServerConfig::default());
    let client = echo_client(server.local_addr(), "alice", "t").unwrap();
    // Duration::MAX: a caller's "no limit". Instant + Duration::MAX used to panic.
    let reply = client
        .request(&ilp(b"x"), None, Some(Duration::MAX))
        .unwrap();
    assert_eq!(reply.ilp(), Some(&b"alice:x"[..]));
    let reply = server
        .request("alice", &ilp(b"y"), None, Some(Duration::MAX))
        .unwrap();
    assert_eq!(reply.ilp(), Some(&b"client:y"[..]));
    client.disconnect();
    server.shutdown();
}
