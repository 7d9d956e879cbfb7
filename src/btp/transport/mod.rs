//! BTP over WebSockets: one [`Connection`] per peer (its threads, requests and replies), the
//! [`BtpClient`] and [`BtpServer`] roles built on it, the handler pool, and what the server
//! needs to authenticate accounts. Blocking and thread-based; it uses the [codec](super::codec)
//! and nothing above it.

pub mod admission;
pub mod auth;
pub mod client;
pub mod connection;
pub mod pool;
pub mod request;
pub mod server;
pub mod uri;

pub use admission::{AccountLimits, MayExpire, MIN_TOKEN_LEN};
pub use client::{BtpClient, ClientConfig, ClientError, ClientEvent};
pub use connection::{CloseReason, Connection, ConnectionConfig, Submitted, TransportError};
pub use request::{
    send_request, send_request_into, submit_request, ErrorReply, OwnedEntry, PendingResponse,
    Reply, RequestError, RequestHandler, ResponseFrame,
};
pub use server::{AccountHandler, BtpServer, ServerConfig, ServerError, ServerEvent};
pub use uri::{BtpUri, UriError};
