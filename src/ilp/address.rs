//! ILP addresses (RFC 15).

use std::fmt;
use std::str::FromStr;

/// Longest ILP address, in bytes (RFC 15).
pub const MAX_ADDRESS_LEN: usize = 1023;

const SCHEMES: [&str; 10] = [
    "g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local",
];

/// Why a string is not an ILP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// The address is empty.
    Empty,
    /// The address is longer than 1023 bytes.
    TooLong(usize),
    /// The first segment is not one of the RFC 15 allocation schemes.
    UnknownScheme,
    /// The address has no segment after its scheme.
    MissingSegment,
    /// A segment is empty (two dots in a row, or a trailing dot) at this byte index.
    EmptySegment(usize),
    /// The byte at this index is not allowed (`A-Z a-z 0-9 _ ~ -` and `.` between segments).
    InvalidCharacter(usize),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Empty => f.write_str("address is empty"),
            AddressError::TooLong(n) => {
                write!(f, "address is {n} bytes long (at most {MAX_ADDRESS_LEN})")
            }
            AddressError::UnknownScheme => f.write_str(
                "address must start with g, private, example, peer, self, test, test1, test2, test3 or local",
            ),
            AddressError::MissingSegment => {
                f.write_str("address needs at least one segment after its scheme")
            }
            AddressError::EmptySegment(i) => write!(f, "empty address segment at index {i}"),
            AddressError::InvalidCharacter(i) => {
                write!(f, "character not allowed in an address at index {i}")
            }
        }
    }
}

impl std::error::Error for AddressError {}

#[inline]
fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'~' || b == b'-'
}

/// Checks `bytes` against the RFC 15 rules without allocating.
pub fn validate_address(bytes: &[u8]) -> Result<(), AddressError> {
    if bytes.is_empty() {
        return Err(AddressError::Empty);
    }
    if bytes.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong(bytes.len()));
    }
    let scheme_end = bytes.iter().position(|&b| b == b'.').unwrap_or(bytes.len());
    if !SCHEMES.iter().any(|s| s.as_bytes() == &bytes[..scheme_end]) {
        return Err(AddressError::UnknownScheme);
    }
    if scheme_end == bytes.len() {
        return Err(AddressError::MissingSegment);
    }
    let mut segment_start = scheme_end + 1;
    for (i, &b) in bytes.iter().enumerate().skip(segment_start) {
        if b == b'.' {
            if i == segment_start {
                return Err(AddressError::EmptySegment(i));
            }
            segment_start = i + 1;
        } else if !is_segment_byte(b) {
            return Err(AddressError::InvalidCharacter(i));
        }
    }
    if segment_start == bytes.len() {
        return Err(AddressError::EmptySegment(bytes.len()));
    }
    Ok(())
}

/// Checks that `segment` can stand as one address segment (`[A-Za-z0-9_~-]+`).
pub fn validate_segment(segment: &str) -> Result<(), AddressError> {
    if segment.is_empty() {
        return Err(AddressError::EmptySegment(0));
    }
    match segment.bytes().position(|b| !is_segment_byte(b)) {
        Some(i) => Err(AddressError::InvalidCharacter(i)),
        None => Ok(()),
    }
}

/// A validated ILP address, such as `g.us-fed.ach.acmebank.alice`.
///
/// ```
/// use ilp_plugin_lightning::ilp::Address;
/// let hub: Address = "test.hub".parse().unwrap();
/// let alice = hub.with_suffix("alice").unwrap();
/// assert_eq!(alice.as_str(), "test.hub.alice");
/// assert!(hub.is_prefix_of("test.hub.alice.wallet"));
/// assert!(!hub.is_prefix_of("test.hubby"));
/// assert!("test.hub.".parse::<Address>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(String);

impl Address {
    /// Validates and wraps `address`.
    pub fn new(address: &str) -> Result<Self, AddressError> {
        validate_address(address.as_bytes())?;
        Ok(Address(address.to_owned()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The allocation scheme: the first segment (`g`, `test`, `peer`...).
    pub fn scheme(&self) -> &str {
        self.segments().next().unwrap_or_default()
    }

    /// The segments, scheme first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// This address with `.suffix` appended, validated (the suffix may hold several segments).
    pub fn with_suffix(&self, suffix: &str) -> Result<Address, AddressError> {
        let mut joined = String::with_capacity(self.0.len() + 1 + suffix.len());
        joined.push_str(&self.0);
        joined.push('.');
        joined.push_str(suffix);
        validate_address(joined.as_bytes())?;
        Ok(Address(joined))
    }

    /// True when `destination` is this address or lies under it, on a segment boundary:
    /// `g.a` is a prefix of `g.a` and `g.a.b`, not of `g.ab`.
    pub fn is_prefix_of(&self, destination: &str) -> bool {
        match destination.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('.'),
            None => false,
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::new(s)
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate_address(s.as_bytes())?;
        Ok(Address(s))
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc15_addresses() {
        for ok in [
            "g.acme.bob",
            "test.a",
            "test1.a",
            "test3.a-b_c~d.E9",
            "peer.config",
            "private.x",
            "example.alice",
            "self.x",
            "local.x",
        ] {
            assert_eq!(validate_address(ok.as_bytes()), Ok(()), "{ok}");
        }
        let long = format!("g.{}", "a".repeat(MAX_ADDRESS_LEN - 2));
        assert_eq!(validate_address(long.as_bytes()), Ok(()));
    }

    #[test]
    fn rejects_each_rule() {
        use AddressError::*;
        let cases: [(&str, AddressError); 9] = [
            ("", Empty),
            ("g", MissingSegment),
            ("test4.a", UnknownScheme),
            ("G.a", UnknownScheme),
            ("g.", EmptySegment(2)),
            ("g..a", EmptySegment(2)),
            ("g.a.", EmptySegment(4)),
            ("g.a b", InvalidCharacter(3)),
            ("g.é", InvalidCharacter(2)),
        ];
        for (bad, err) in cases {
            assert_eq!(validate_address(bad.as_bytes()), Err(err), "{bad:?}");
        }
        let long = format!("g.{}", "a".repeat(MAX_ADDRESS_LEN - 1));
        assert_eq!(
            validate_address(long.as_bytes()),
            Err(TooLong(MAX_ADDRESS_LEN + 1))
        );
    }

    #[test]
    fn prefixes_respect_segments() {
        let a = Address::new("g.a").unwrap();
        assert!(a.is_prefix_of("g.a"));
        assert!(a.is_prefix_of("g.a.b"));
        assert!(!a.is_prefix_of("g.ab"));
        assert!(!a.is_prefix_of("g"));
        assert_eq!(a.scheme(), "g");
        assert_eq!(a.segments().collect::<Vec<_>>(), ["g", "a"]);
        assert_eq!(a.with_suffix("b.c").unwrap().as_str(), "g.a.b.c");
        assert_eq!(
            a.with_suffix("b.").unwrap_err(),
            AddressError::EmptySegment(6)
        );
        assert_eq!(validate_segment("al~ice_-1"), Ok(()));
        assert_eq!(
            validate_segment("a.b"),
            Err(AddressError::InvalidCharacter(1))
        );
    }
}
