//! What the plugin needs from a Lightning node, over LND's gRPC API, and a simulated network
//! that serves that API.

/// LND's messages, generated from `proto/` (a subset of LND's own .proto files, with LND's names
/// and field numbers) by build.rs.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
}

pub mod methods;
#[cfg(feature = "sim")]
pub mod sim;
