//! The Bilateral Transfer Protocol (RFC 23): its packets and its WebSocket transport.

pub mod auth;
pub mod connection;
pub mod pool;
pub mod uri;

pub use connection::{CloseReason, Connection, ConnectionConfig, TransportError};
pub use uri::{BtpUri, UriError};
