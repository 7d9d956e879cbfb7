//! `submit_data`: one thread keeps many Prepares in flight, in both roles, and each gets its own
//! answer, checked and booked as `send_data` would.

mod common;

use std::sync::Arc;

use ilp_plugin_lightning::ilp::{Address, ErrorCode, Fulfill, Prepare, Reject};
use ilp_plugin_lightning::plugin::{route_between_clients, HandlerError, LightningPlugin};

const FULFILLMENT: [u8; 32] = [9; 32];

fn prepare(destination: &str, amount: u64, expires_in_ms: i64, data: &[u8]) -> Vec<u8> {
    common::ilp::prepare(&FULFILLMENT, destination, amount, expires_in_ms, data)
}

/// A hub with clients `a` and `b`; `b` fulfils Prepares whose data is even, with that data,
/// and rejects the odd ones.
fn hub_with_a_and_b() -> (Arc<LightningPlugin>, LightningPlugin, LightningPlugin) {
    let hub = Arc::new(
        LightningPlugin::server(
            "127.0.0.1:0".parse().unwrap(),
            Address::new("test.hub").unwrap(),
        )
        .credit_limit(None)
        .build()
        .unwrap(),
    );
    route_between_clients(&hub).unwrap();
    hub.connect().unwrap();
    let port = hub.local_addr().unwrap().port();
    let a = LightningPlugin::client(&format!("btp+ws://a:secret-a@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let b = LightningPlugin::client(&format!("btp+ws://b:secret-b@127.0.0.1:{port}"))
        .build()
        .unwrap();
    b.register_data_handler(|packet| {
        let data = Prepare::parse(packet).unwrap().data().to_vec();
        if data.last().is_some_and(|d| d % 2 == 1) {
            Err(HandlerError::Final(format!("odd {data:?}")))
        } else {
            Ok(common::ilp::fulfill(&FULFILLMENT, &data))
        }
    })
    .unwrap();
    a.connect().unwrap();
    b.connect().unwrap();
    (hub, a, b)
}

#[test]
fn a_client_keeps_many_prepares_in_flight_and_each_gets_its_own_answer() {
    let (hub, a, b) = hub_with_a_and_b();
    let in_flight: Vec<_> = (0..64u16)
        .map(|i| {
            a.submit_data(&prepare("test.hub.b.x", 3, 30_000, &i.to_be_bytes()))
                .unwrap()
        })
        .collect();
    // Collected last first: each answer waits for its own Prepare, whatever the order.
    for (i, packet) in in_flight.into_iter().enumerate().rev() {
        let reply = packet.wait().unwrap();
        if i % 2 == 0 {
            let fulfill = Fulfill::parse(&reply).unwrap_or_else(|e| panic!("{i}: {e}"));
            assert_eq!(fulfill.data(), (i as u16).to_be_bytes());
        } else {
            assert_eq!(
                Reject::parse(&reply).unwrap().code(),
                ErrorCode::F00_BAD_REQUEST
            );
        }
    }
    // The hub booked the 32 fulfilled packets once each, both ways.
    let balances = hub.balances().unwrap();
    assert_eq!(balances.balance("a").receivable, 32 * 3);
    assert_eq!(balances.balance("b").payable, 32 * 3);
    a.disconnect();
    b.disconnect();
    hub.disconnect();
}

#[test]
fn the_hub_submits_to_its_clients_and_answers_what_cannot_go_at_once() {
    let (hub, a, b) = hub_with_a_and_b();
    let mut in_flight = Vec::new();
    for i in 0..40u16 {
        in_flight.push(
            hub.submit_data(&prepare("test.hub.b.y", 2, 30_000, &i.to_be_bytes()))
                .unwrap(),
        );
    }
    // Nobody is connected as c, and this one expired before it was sent: both answered here.
    let unroutable = hub
        .submit_data(&prepare("test.hub.c.z", 2, 30_000, b""))
        .unwrap();
    let expired = hub
        .submit_data(&prepare("test.hub.b.y", 2, -1, b""))
        .unwrap();
    assert_eq!(
        Reject::parse(&unroutable.wait().unwrap()).unwrap().code(),
        ErrorCode::F02_UNREACHABLE
    );
    assert_eq!(
        Reject::parse(&expired.wait().unwrap()).unwrap().code(),
        ErrorCode::R00_TRANSFER_TIMED_OUT
    );
    let mut fulfilled = 0;
    for (i, packet) in in_flight.into_iter().enumerate() {
        let reply = packet.wait().unwrap();
        match Fulfill::parse(&reply) {
            Ok(f) => {
                assert_eq!(f.data(), (i as u16).to_be_bytes());
                fulfilled += 1;
            }
            Err(_) => assert_eq!(i % 2, 1, "only odd Prepares are rejected"),
        }
    }
    assert_eq!(fulfilled, 20);
    assert_eq!(hub.balances().unwrap().balance("b").payable, 20 * 2);
    a.disconnect();
    b.disconnect();
    hub.disconnect();
}

#[test]
fn a_prepare_that_expires_in_flight_gets_r00_and_books_nothing() {
    let (hub, a, b) = hub_with_a_and_b();
    // c answers only once it is let go, after the Prepare expired.
    let (release, held) = crossbeam_channel::bounded::<()>(0);
    let (entered, entering) = crossbeam_channel::unbounded::<()>();
    let c = LightningPlugin::client(&format!(
        "btp+ws://c:secret-c@{}",
        hub.local_addr().unwrap()
    ))
    .build()
    .unwrap();
    c.register_data_handler(move |_| {
        let _ = entered.send(());
        let _ = held.recv();
        Ok(common::ilp::fulfill(&FULFILLMENT, b"late"))
    })
    .unwrap();
    c.connect().unwrap();
    let late = hub
        .submit_data(&prepare("test.hub.c.w", 5, 300, b""))
        .unwrap();
    let on_time = hub
        .submit_data(&prepare("test.hub.b.v", 5, 30_000, &[2]))
        .unwrap();
    entering.recv().unwrap();
    assert_eq!(
        Reject::parse(&late.wait().unwrap()).unwrap().code(),
        ErrorCode::R00_TRANSFER_TIMED_OUT
    );
    assert!(Fulfill::parse(&on_time.wait().unwrap()).is_ok());
    drop(release);
    let balances = hub.balances().unwrap();
    assert_eq!(balances.balance("c").payable, 0);
    assert_eq!(balances.balance("b").payable, 5);
    c.disconnect();
    a.disconnect();
    b.disconnect();
    hub.disconnect();
}
