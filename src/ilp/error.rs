//! Errors of the ILP codec.

use std::fmt;

use super::address::AddressError;
use super::oer::{OerError, OerErrorKind};
use super::packet::PacketType;
use super::time::TimestampError;

/// What is wrong with an ILP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// A malformed OER field (length prefix, truncation...).
    Oer(OerErrorKind),
    /// The type byte is not 12 (Prepare), 13 (Fulfill) or 14 (Reject).
    UnknownPacketType(u8),
    /// A valid packet of another type than the one asked for.
    UnexpectedPacketType {
        /// The type the caller asked for.
        expected: PacketType,
        /// The type found.
        found: PacketType,
    },
    /// The Prepare's `expiresAt` is not a valid 17-digit timestamp.
    InvalidTimestamp(TimestampError),
    /// An address field is not a valid ILP address.
    InvalidAddress {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        error: AddressError,
    },
    /// A text field is not valid UTF-8.
    InvalidUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// The Reject's code is not three IA5 characters.
    InvalidErrorCode,
    /// A field is longer than the ASN.1 definition allows.
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most it may have.
        max: usize,
    },
    /// Bytes left over after the packet, or after the last field inside its envelope.
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// An ILP packet that did not parse: what is wrong, and at which byte offset of the input.
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
                "unknown packet type {t} (expected 12 Prepare, 13 Fulfill or 14 Reject)"
            ),
            ParseErrorKind::UnexpectedPacketType { expected, found } => {
                write!(f, "expected a {expected:?}, found a {found:?}")
            }
            ParseErrorKind::InvalidTimestamp(e) => write!(f, "invalid expiresAt: {e}"),
            ParseErrorKind::InvalidAddress { field, error } => {
                write!(f, "invalid {field}: {error}")
            }
            ParseErrorKind::InvalidUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            ParseErrorKind::InvalidErrorCode => f.write_str("error code is not IA5 text"),
            ParseErrorKind::TooLong { field, len, max } => {
                write!(f, "{field} is {len} bytes long (at most {max})")
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
            "invalid ILP packet: {} at offset {}",
            self.kind, self.offset
        )
    }
}

impl std::error::Error for ParseError {}

/// Why a packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    /// An address field is not a valid ILP address.
    InvalidAddress {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        error: AddressError,
    },
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
        match self {
            BuildError::InvalidAddress { field, error } => {
                write!(f, "cannot build ILP packet: invalid {field}: {error}")
            }
            BuildError::TooLong { field, len, max } => write!(
                f,
                "cannot build ILP packet: {field} is {len} bytes long (at most {max})"
            ),
        }
    }
}

impl std::error::Error for BuildError {}
