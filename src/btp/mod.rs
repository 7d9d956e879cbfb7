//! The Bilateral Transfer Protocol (RFC 23): its packets and its WebSocket transport.
//!
//! The packet codec is pure (no I/O): [`Packet`] and the four packet types borrow from their
//! input, builders validate, and bad input gets a [`ParseError`] naming the problem and its
//! byte offset.
//!
//! ```
//! use ilp_plugin_lightning::btp::{Message, Packet, ProtocolData, ProtocolDataEntry};
//!
//! let prepare = [12u8, 0]; // any ILP packet bytes
//! let entries = [ProtocolDataEntry::octets("ilp", &prepare)];
//! let bytes = Message::new(7, ProtocolData::new(&entries).unwrap()).to_bytes();
//! match Packet::parse(&bytes).unwrap() {
//!     Packet::Message(message) => {
//!         assert_eq!(message.request_id(), 7);
//!         assert_eq!(message.protocol_data().ilp(), Some(&prepare[..]));
//!     }
//!     other => panic!("not a message: {other:?}"),
//! }
//! ```

pub mod error;
pub mod error_code;
pub mod packet;
pub mod protocol_data;

// The transport.
pub mod auth;
pub mod client;
pub mod connection;
pub mod pool;
pub mod request;
pub mod server;
pub mod uri;

pub use error::{BuildError, ParseError, ParseErrorKind};
pub use error_code::ErrorCode;
pub use packet::{
    auth_entries, auth_message, ilp_message, ilp_response, AuthError, AuthRequest, ErrorPacket,
    ErrorPacketBuilder, Message, Packet, PacketType, Response, Transfer, AUTH, AUTH_TOKEN,
    AUTH_USERNAME, MAX_ERROR_DATA_LEN,
};
pub use protocol_data::{ContentType, ProtocolData, ProtocolDataEntry, ILP};

pub use client::{BtpClient, ClientConfig, ClientError, ClientEvent};
pub use connection::{CloseReason, Connection, ConnectionConfig, TransportError};
pub use request::{
    send_request, ErrorReply, OwnedEntry, Reply, RequestError, RequestHandler, ResponseFrame,
};
pub use server::{AccountHandler, BtpServer, ServerConfig, ServerError, ServerEvent};
pub use uri::{BtpUri, UriError};
