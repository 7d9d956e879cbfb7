//! The Bilateral Transfer Protocol (RFC 23), in two parts: [`codec`], its packets (pure, no
//! I/O: [`Packet`] and the four packet types borrow from their input, builders validate, and
//! bad input gets a [`ParseError`] naming the problem and its byte offset), and [`transport`],
//! BTP over blocking WebSockets ([`BtpClient`], [`BtpServer`], [`Connection`]). The items both
//! export are re-exported here.
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

pub mod codec;
pub mod transport;

// The surface the rest of the crate and its users build on, stable across the split into
// `codec` and `transport`.
pub use codec::{
    auth_entries, auth_message, ilp_message, ilp_response, AuthError, AuthRequest, BuildError,
    ContentType, ErrorCode, ErrorPacket, ErrorPacketBuilder, Message, Packet, PacketType,
    ParseError, ParseErrorKind, ProtocolData, ProtocolDataEntry, Response, Transfer, AUTH,
    AUTH_TOKEN, AUTH_USERNAME, ILP, MAX_ERROR_DATA_LEN,
};
pub use transport::server::AccountHandler;
pub use transport::{
    admission, auth, send_request, send_request_into, submit_request, AccountLimits, BtpClient,
    BtpServer, BtpUri, ClientConfig, ClientError, ClientEvent, CloseReason, Connection,
    ConnectionConfig, ErrorReply, MayExpire, OwnedEntry, PendingResponse, Reply, RequestError,
    RequestHandler, ResponseFrame, ServerConfig, ServerError, ServerEvent, Submitted,
    TransportError, UriError,
};
