//! ILP packets as the plugin tests send and answer them.

use ilp_plugin_lightning::ilp::{condition_of, FulfillBuilder, PrepareBuilder, Timestamp};

/// A Prepare that `fulfillment` fulfils, expiring `expires_in_ms` from now.
pub fn prepare(
    fulfillment: &[u8; 32],
    destination: &str,
    amount: u64,
    expires_in_ms: i64,
    data: &[u8],
) -> Vec<u8> {
    PrepareBuilder {
        amount,
        expires_at: Timestamp::now().add_millis(expires_in_ms),
        execution_condition: &condition_of(fulfillment),
        destination,
        data,
    }
    .build()
    .unwrap()
    .to_bytes()
}

/// A Fulfill with `fulfillment` and `data`.
pub fn fulfill(fulfillment: &[u8; 32], data: &[u8]) -> Vec<u8> {
    FulfillBuilder { fulfillment, data }
        .build()
        .unwrap()
        .to_bytes()
}
