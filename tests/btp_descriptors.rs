//! What one server connection costs in file descriptors: one, its socket (alone in its test
//! binary, so that no other test opens or closes descriptors meanwhile).

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use ilp_plugin_lightning::btp::{
    auth_message, BtpServer, OwnedEntry, Packet, Reply, ServerConfig, ServerEvent,
};
use tungstenite::{Message as WsMessage, WebSocket};

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_server_connection_holds_one_descriptor() {
    let handler =
        Arc::new(|_: &str, _: &Packet<'_>| Reply::Response(vec![OwnedEntry::ilp(vec![])]));
    let server = BtpServer::bind("127.0.0.1:0", ServerConfig::default(), handler).unwrap();
    let addr = server.local_addr();
    let events = server.events();
    let before = open_descriptors();
    const CLIENTS: usize = 50;
    let mut clients: Vec<WebSocket<TcpStream>> = Vec::new();
    for i in 0..CLIENTS {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
        ws.send(WsMessage::Binary(auth_message(1, &format!("c{i}"), "t")))
            .unwrap();
        // The auth Response: the server's side is fully set up by then.
        loop {
            match ws.read().unwrap() {
                WsMessage::Binary(b) => {
                    assert!(matches!(Packet::parse(&b), Ok(Packet::Response(_))));
                    break;
                }
                _ => continue,
            }
        }
        clients.push(ws);
    }
    for _ in 0..CLIENTS {
        match events.recv_timeout(Duration::from_secs(20)) {
            Ok(ServerEvent::Connected { .. }) => {}
            other => panic!("expected a Connected event, got {other:?}"),
        }
    }
    assert_eq!(server.accounts().len(), CLIENTS);
    let added = open_descriptors() - before;
    // Each client's socket, and the server's end of it: nothing more (it used to dup each
    // server socket, 3 per connection in all).
    assert_eq!(
        added,
        2 * CLIENTS,
        "{added} descriptors for {CLIENTS} connections"
    );
    drop(clients);
    server.shutdown();
}
