//! `disconnect()` joins every thread the plugin and its transport started (this file holds one
//! test, so no other test's threads run in the process while it counts).

use std::sync::Arc;

use ilp_plugin_lightning::ilp::{
    condition_of, Address, Fulfill, FulfillBuilder, PrepareBuilder, Timestamp,
};
use ilp_plugin_lightning::plugin::{route_between_clients, LightningPlugin};

/// Names of this process's threads that the transport or the plugin started.
fn our_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let comm = task.unwrap().path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            let name = name.trim().to_owned();
            if name.starts_with("btp-") || name.starts_with("plugin-") {
                names.push(name);
            }
        }
    }
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
    b.register_data_handler(move |_| {
        Ok(FulfillBuilder {
            fulfillment: &fulfillment,
            data: b"",
        }
        .build()
        .unwrap()
        .to_bytes())
    })
    .unwrap();
    a.connect().unwrap();
    b.connect().unwrap();
    let prepare = PrepareBuilder {
        amount: 1,
        expires_at: Timestamp::now().add_millis(5_000),
        execution_condition: &condition_of(&fulfillment),
        destination: "test.hub.b.x",
        data: b"",
    }
    .build()
    .unwrap()
    .to_bytes();
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
    assert_eq!(settled(our_threads, |t| t.is_empty()), Vec::<String>::new());
    // Dropping after disconnect is harmless; so is a second disconnect.
    hub.disconnect();
    drop(a);
}
