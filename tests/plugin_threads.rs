//! `disconnect()` joins every thread the plugin and its transport started (this file holds one
//! test, so no other test's threads run in the process while it counts).

mod common;

use std::sync::Arc;

use ilp_plugin_lightning::ilp::{Address, Fulfill};
use ilp_plugin_lightning::plugin::{route_between_clients, LightningPlugin};

/// Names of this process's threads that the transport or the plugin started.
fn our_threads() -> Vec<String> {
    common::threads::named(&["btp-", "plugin-"])
}

#[test]
fn disconnect_joins_every_thread() {
    assert_eq!(our_threads(), Vec::<String>::new());
    let hub = Arc::new(
        LightningPlugin::server(
            "127.0.0.1:0".parse().unwrap(),
            Address::new("test.hub").unwrap(),
        )
        .credit_limit(Some(100))
        .build()
        .unwrap(),
    );
    route_between_clients(&hub).unwrap();
    hub.connect().unwrap();
    let port = hub.local_addr().unwrap().port();
    let fulfillment = [3u8; 32];
    let a = LightningPlugin::client(&format!("btp+ws://a:x@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let b = LightningPlugin::client(&format!("btp+ws://b:y@127.0.0.1:{port}"))
        .build()
        .unwrap();
    b.register_data_handler(move |_| Ok(common::ilp::fulfill(&fulfillment, b"")))
        .unwrap();
    a.connect().unwrap();
    b.connect().unwrap();
    let prepare = common::ilp::prepare(&fulfillment, "test.hub.b.x", 1, 5_000, b"");
    assert!(Fulfill::parse(&a.send_data(&prepare).unwrap()).is_ok());
    let running = our_threads();
    assert!(
        running.iter().any(|n| n.starts_with("btp-accept")),
        "{running:?}"
    );
    assert!(
        running.iter().any(|n| n.starts_with("plugin-")),
        "{running:?}"
    );

    a.disconnect();
    b.disconnect();
    hub.disconnect();
    assert_eq!(
        common::threads::settled(our_threads, <[String]>::is_empty),
        Vec::<String>::new()
    );
    // Dropping after disconnect is harmless; so is a second disconnect.
    hub.disconnect();
    drop(a);
}
