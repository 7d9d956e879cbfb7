//! The BTP 2.0 packet codec (RFC 23), pure: no I/O, no threads. [`Packet`] and the four packet
//! types borrow from their input, builders validate, and bad input gets a [`ParseError`] naming
//! the problem and its byte offset.

pub mod error;
pub mod error_code;
pub mod packet;
pub mod protocol_data;

pub use error::{BuildError, ParseError, ParseErrorKind};
pub use error_code::ErrorCode;
pub use packet::{
    auth_entries, auth_message, ilp_message, ilp_response, AuthError, AuthRequest, ErrorPacket,
    ErrorPacketBuilder, Message, Packet, PacketType, Response, Transfer, AUTH, AUTH_TOKEN,
    AUTH_USERNAME, MAX_ERROR_DATA_LEN,
};
pub use protocol_data::{ContentType, ProtocolData, ProtocolDataEntry, ILP};
