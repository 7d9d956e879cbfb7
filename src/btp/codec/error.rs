//! Errors of the BTP packet codec.

use std::fmt;

use super::packet::PacketType;
use crate::ilp::oer::{OerError, OerErrorKind};
use crate::ilp::TimestampError;

/// What is wrong with a BTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// A malformed OER field (length prefix, var-uint, truncation...).
    Oer(OerErrorKind),
    /// The type byte is not 1 (Response), 2 (Error), 6 (Message) or 7 (Transfer).
    UnknownPacketType(u8),
    /// A valid packet of another type than the one asked for.
    UnexpectedPacketType {
        /// The type the caller asked for.
        expected: PacketType,
        /// The type found.
        found: PacketType,
    },
    /// The Error's code is not three IA5 (7-bit) characters.
    InvalidErrorCode,
    /// A field that must be IA5 (7-bit) text has a byte of 0x80 or above.
    NotIa5 {
        /// Which field.
        field: &'static str,
    },
    /// A protocol data entry of content type text or JSON is not valid UTF-8.
    InvalidUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// The Error's `triggeredAt` is not a GeneralizedTime `YYYYMMDDHHmmSS[.f{1,3}]Z`.
    InvalidTimestamp(TimestampError),
    /// Two protocol data entries have the same name (RFC 23 makes that an error); the offset is
    /// the second one's.
    DuplicateProtocolName,
    /// Bytes left over after the packet, or after the protocol data inside its envelope.
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// A BTP packet that did not parse: what is wrong, and at which byte offset of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// Offset from the start of the input of the field that failed.
    pub offset: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(offset: usize, kind: ParseErrorKind) -> Self {
        ParseError { offset, kind }
    }
}

impl From<OerError> for ParseError {
    fn from(e: OerError) -> Self {
        ParseError::new(e.offset, ParseErrorKind::Oer(e.kind))
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::Oer(kind) => kind.fmt(f),
            ParseErrorKind::UnknownPacketType(t) => write!(
                f,
                "unknown packet type {t} (expected 1 Response, 2 Error, 6 Message or 7 Transfer)"
            ),
            ParseErrorKind::UnexpectedPacketType { expected, found } => {
                write!(f, "expected a {expected:?}, found a {found:?}")
            }
            ParseErrorKind::InvalidErrorCode => f.write_str("error code is not IA5 text"),
            ParseErrorKind::NotIa5 { field } => write!(f, "{field} is not IA5 (7-bit) text"),
            ParseErrorKind::InvalidUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            ParseErrorKind::InvalidTimestamp(e) => write!(f, "invalid triggeredAt: {e}"),
            ParseErrorKind::DuplicateProtocolName => {
                f.write_str("protocol name already used by an earlier entry")
            }
            ParseErrorKind::TrailingBytes { count } => {
                write!(f, "{count} unexpected trailing bytes")
            }
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid BTP packet: {} at offset {}",
            self.kind, self.offset
        )
    }
}

impl std::error::Error for ParseError {}

/// Why a BTP packet or its protocol data could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    /// The protocol name of the entry at this index is not IA5 (7-bit) text.
    ProtocolNameNotIa5 {
        /// Index of the entry.
        index: usize,
    },
    /// The entry at this index is text or JSON but its data is not UTF-8.
    InvalidUtf8 {
        /// Index of the entry.
        index: usize,
    },
    /// The entry at this index has the same name as an earlier one.
    DuplicateProtocolName {
        /// Index of the later entry.
        index: usize,
    },
    /// The Error's name is not IA5 (7-bit) text.
    ErrorNameNotIa5,
    /// A field is longer than the ASN.1 definition allows.
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most it may have.
        max: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot build BTP packet: ")?;
        match self {
            BuildError::ProtocolNameNotIa5 { index } => {
                write!(f, "protocol name of entry {index} is not IA5 (7-bit) text")
            }
            BuildError::InvalidUtf8 { index } => {
                write!(f, "entry {index} is text or JSON but not valid UTF-8")
            }
            BuildError::DuplicateProtocolName { index } => {
                write!(f, "entry {index} repeats the name of an earlier entry")
            }
            BuildError::ErrorNameNotIa5 => f.write_str("error name is not IA5 (7-bit) text"),
            BuildError::TooLong { field, len, max } => {
                write!(f, "{field} is {len} bytes long (at most {max})")
            }
        }
    }
}

impl std::error::Error for BuildError {}
