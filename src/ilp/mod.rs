//! ILPv4 packets (RFC 27), ILP addresses (RFC 15), error codes, canonical OER (RFC 30) and
//! IL-DCP (RFC 31). A pure codec: no I/O.
//!
//! ```
//! use ilp_plugin_lightning::ilp::{Packet, PrepareBuilder, Timestamp};
//!
//! let condition = [7u8; 32];
//! let prepare = PrepareBuilder {
//!     amount: 107,
//!     expires_at: Timestamp::parse_ilp(b"20171223012140549").unwrap(),
//!     execution_condition: &condition,
//!     destination: "example.alice",
//!     data: b"hello",
//! }
//! .build()
//! .unwrap();
//! let bytes = prepare.to_bytes();
//! match Packet::parse(&bytes).unwrap() {
//!     Packet::Prepare(parsed) => {
//!         assert_eq!(parsed.amount(), 107);
//!         assert_eq!(parsed.destination(), "example.alice");
//!         assert_eq!(parsed.expires_at().to_iso8601(), "2017-12-23T01:21:40.549Z");
//!     }
//!     other => panic!("not a prepare: {other:?}"),
//! }
//! // Bad input gets a typed error that says what is wrong and where.
//! let err = Packet::parse(&bytes[..50]).unwrap_err();
//! assert_eq!(err.offset, 1);
//! ```

pub mod address;
pub mod error;
pub mod error_code;
pub mod ildcp;
pub mod oer;
pub mod packet;
pub mod time;

pub use address::{Address, AddressError};
pub use error::{BuildError, ParseError, ParseErrorKind};
pub use error_code::{ErrorClass, ErrorCode};
pub use packet::{
    condition_of, fulfills, Fulfill, FulfillBuilder, MaxPacketAmountDetails, Packet, PacketType,
    Prepare, PrepareBuilder, Reject, RejectBuilder,
};
pub use time::{Timestamp, TimestampError};
