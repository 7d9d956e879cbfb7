//! ILPv4 packets (RFC 27), ILP addresses (RFC 15), error codes, OER (RFC 30) and IL-DCP (RFC 31).
//! A pure codec: no I/O.

pub mod oer;
pub mod time;

pub use time::{Timestamp, TimestampError};
