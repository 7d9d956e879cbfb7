//! ILP error codes (RFC 27 §Error Codes).

use std::fmt;

/// What a Reject's code tells the sender to do next, from its first letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// `F`: final; do not retry unchanged.
    Final,
    /// `T`: temporary; retry later.
    Temporary,
    /// `R`: relative; retry with a larger amount or a longer expiry.
    Relative,
    /// Any other first letter.
    Unknown,
}

/// A three-character IA5 ILP error code, such as `F02`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode([u8; 3]);

/// Why three bytes are not an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidErrorCode(pub [u8; 3]);

impl fmt::Display for InvalidErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error code {} is not IA5 text", hex::encode(self.0))
    }
}

impl std::error::Error for InvalidErrorCode {}

macro_rules! error_codes {
    ($($name:ident = $code:literal, $text:literal;)*) => {
        impl ErrorCode {
            $(
                #[doc = concat!("`", stringify!($name), "`: ", $text, ".")]
                pub const $name: ErrorCode = ErrorCode(*$code);
            )*

            /// The RFC 27 name of this code, `None` for codes outside the table.
            pub fn name(&self) -> Option<&'static str> {
                match &self.0 {
                    $($code => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    F00_BAD_REQUEST = b"F00", "Bad Request";
    F01_INVALID_PACKET = b"F01", "Invalid Packet";
    F02_UNREACHABLE = b"F02", "Unreachable";
    F03_INVALID_AMOUNT = b"F03", "Invalid Amount";
    F04_INSUFFICIENT_DESTINATION_AMOUNT = b"F04", "Insufficient Destination Amount";
    F05_WRONG_CONDITION = b"F05", "Wrong Condition";
    F06_UNEXPECTED_PAYMENT = b"F06", "Unexpected Payment";
    F07_CANNOT_RECEIVE = b"F07", "Cannot Receive";
    F08_AMOUNT_TOO_LARGE = b"F08", "Amount Too Large";
    F99_APPLICATION_ERROR = b"F99", "Application Error";
    T00_INTERNAL_ERROR = b"T00", "Internal Error";
    T01_PEER_UNREACHABLE = b"T01", "Peer Unreachable";
    T02_PEER_BUSY = b"T02", "Peer Busy";
    T03_CONNECTOR_BUSY = b"T03", "Connector Busy";
    T04_INSUFFICIENT_LIQUIDITY = b"T04", "Insufficient Liquidity";
    T05_RATE_LIMITED = b"T05", "Rate Limited";
    T99_APPLICATION_ERROR = b"T99", "Application Error";
    R00_TRANSFER_TIMED_OUT = b"R00", "Transfer Timed Out";
    R01_INSUFFICIENT_SOURCE_AMOUNT = b"R01", "Insufficient Source Amount";
    R02_INSUFFICIENT_TIMEOUT = b"R02", "Insufficient Timeout";
    R99_APPLICATION_ERROR = b"R99", "Application Error";
}

impl ErrorCode {
    /// An error code from its three bytes, which must be IA5 (7-bit) text.
    pub fn new(code: [u8; 3]) -> Result<Self, InvalidErrorCode> {
        if code.iter().all(|b| b.is_ascii() && !b.is_ascii_control()) {
            Ok(ErrorCode(code))
        } else {
            Err(InvalidErrorCode(code))
        }
    }

    /// The three bytes.
    pub fn as_bytes(&self) -> &[u8; 3] {
        &self.0
    }

    /// The code as text (it is always ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Final, temporary or relative.
    pub fn class(&self) -> ErrorClass {
        match self.0[0] {
            b'F' => ErrorClass::Final,
            b'T' => ErrorClass::Temporary,
            b'R' => ErrorClass::Relative,
            _ => ErrorClass::Unknown,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.as_str()),
            None => write!(f, "{}", self.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_classes() {
        assert_eq!(ErrorCode::F08_AMOUNT_TOO_LARGE.as_str(), "F08");
        assert_eq!(
            ErrorCode::F08_AMOUNT_TOO_LARGE.name(),
            Some("Amount Too Large")
        );
        assert_eq!(
            ErrorCode::T04_INSUFFICIENT_LIQUIDITY.class(),
            ErrorClass::Temporary
        );
        assert_eq!(
            ErrorCode::R00_TRANSFER_TIMED_OUT.class(),
            ErrorClass::Relative
        );
        assert_eq!(ErrorCode::F99_APPLICATION_ERROR.class(), ErrorClass::Final);
        let custom = ErrorCode::new(*b"L13").unwrap();
        assert_eq!((custom.name(), custom.class()), (None, ErrorClass::Unknown));
        assert_eq!(
            ErrorCode::new([b'F', 0xff, b'0']),
            Err(InvalidErrorCode([b'F', 0xff, b'0']))
        );
    }
}
