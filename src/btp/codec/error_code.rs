//! BTP error codes and the names the JS implementation pairs them with (RFC 23 §Error codes,
//! `ilp-plugin-btp`'s `namesToCodes`).

use std::fmt;

/// A three-character IA5 BTP error code, such as `F00`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode([u8; 3]);

macro_rules! btp_error_codes {
    ($($constant:ident = $code:literal, $name:literal;)*) => {
        impl ErrorCode {
            $(
                #[doc = concat!("`", stringify!($constant), "`: `", $name, "`.")]
                pub const $constant: ErrorCode = ErrorCode(*$code);
            )*

            /// The codes of RFC 23 with their JS error names, in table order.
            pub const TABLE: &'static [(ErrorCode, &'static str)] = &[
                $((ErrorCode(*$code), $name),)*
            ];
        }
    };
}

btp_error_codes! {
    T00_UNREACHABLE = b"T00", "UnreachableError";
    F00_NOT_ACCEPTED = b"F00", "NotAcceptedError";
    F01_INVALID_FIELDS = b"F01", "InvalidFieldsError";
    F03_TRANSFER_NOT_FOUND = b"F03", "TransferNotFoundError";
    F04_INVALID_FULFILLMENT = b"F04", "InvalidFulfillmentError";
    F05_DUPLICATE_ID = b"F05", "DuplicateIdError";
    F06_ALREADY_ROLLED_BACK = b"F06", "AlreadyRolledBackError";
    F07_ALREADY_FULFILLED = b"F07", "AlreadyFulfilledError";
    F08_INSUFFICIENT_BALANCE = b"F08", "InsufficientBalanceError";
}

impl ErrorCode {
    /// An error code from its three bytes, which must be IA5 (below 0x80).
    pub fn new(code: [u8; 3]) -> Option<Self> {
        code.iter().all(u8::is_ascii).then_some(ErrorCode(code))
    }

    /// The code the JS plugin sends for an error called `name`: `F00` for names outside the
    /// table, as `ilp-plugin-btp` does.
    pub fn for_name(name: &str) -> ErrorCode {
        Self::TABLE
            .iter()
            .find(|(_, n)| *n == name)
            .map_or(ErrorCode::F00_NOT_ACCEPTED, |(code, _)| *code)
    }

    /// The JS error name of this code, `None` for codes outside the table.
    pub fn name(&self) -> Option<&'static str> {
        Self::TABLE
            .iter()
            .find(|(code, _)| code == self)
            .map(|(_, name)| *name)
    }

    /// The three bytes.
    pub fn as_bytes(&self) -> &[u8; 3] {
        &self.0
    }

    /// The code as text (IA5 is ASCII, so this never fails).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_pair_up() {
        assert_eq!(ErrorCode::TABLE.len(), 9);
        for (code, name) in ErrorCode::TABLE {
            assert_eq!(ErrorCode::for_name(name), *code);
            assert_eq!(code.name(), Some(*name));
        }
        assert_eq!(
            ErrorCode::for_name("TypeError"),
            ErrorCode::F00_NOT_ACCEPTED
        );
        assert_eq!(ErrorCode::new(*b"L13").unwrap().name(), None);
        assert_eq!(ErrorCode::new([b'F', 0x80, b'0']), None);
        assert_eq!(ErrorCode::T00_UNREACHABLE.to_string(), "T00");
    }
}
