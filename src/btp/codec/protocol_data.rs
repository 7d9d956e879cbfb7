//! BTP protocol data (RFC 23): the list of named sub-protocol payloads every BTP packet ends with.
//!
//! ```text
//! count var-uint | count × ( protocolName var IA5 | contentType u8 | data var )
//! ```
//!
//! A parsed [`ProtocolData`] keeps the encoded entries and walks them on demand, so parsing
//! allocates nothing (unless a packet carries more than [`SMALL_ENTRY_COUNT`] entries, where the
//! duplicate-name check switches to a hash set) and re-serializing it is a copy.

use std::collections::HashSet;
use std::fmt;

use super::error::{BuildError, ParseError, ParseErrorKind};
use crate::ilp::oer::{self, Reader};

/// Above this many entries, the duplicate-name check uses a hash set instead of comparing every
/// pair: a hostile packet with thousands of entries must not cost quadratic time.
pub const SMALL_ENTRY_COUNT: usize = 16;

/// The name reserved for ILP packets (content type octet-stream).
pub const ILP: &str = "ilp";

/// How a protocol data entry's bytes are to be read.
#[derive(Debug, Clone, Copy, Eq)]
pub enum ContentType {
    /// 0: `application/octet-stream`.
    OctetStream,
    /// 1: `text/plain; charset=utf-8`.
    TextPlainUtf8,
    /// 2: `application/json` (UTF-8).
    ApplicationJson,
    /// Any other byte, kept as it came so that the packet re-serializes unchanged.
    Unknown(u8),
}

impl ContentType {
    /// The content type of a wire byte.
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            0 => ContentType::OctetStream,
            1 => ContentType::TextPlainUtf8,
            2 => ContentType::ApplicationJson,
            other => ContentType::Unknown(other),
        }
    }

    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            ContentType::OctetStream => 0,
            ContentType::TextPlainUtf8 => 1,
            ContentType::ApplicationJson => 2,
            ContentType::Unknown(byte) => byte,
        }
    }

    /// The MIME type, `None` for unknown bytes.
    pub fn mime_type(self) -> Option<&'static str> {
        match ContentType::from_byte(self.to_byte()) {
            ContentType::OctetStream => Some("application/octet-stream"),
            ContentType::TextPlainUtf8 => Some("text/plain; charset=utf-8"),
            ContentType::ApplicationJson => Some("application/json"),
            ContentType::Unknown(_) => None,
        }
    }

    /// True for the content types whose data must be UTF-8 (text and JSON).
    pub fn is_text(self) -> bool {
        matches!(self.to_byte(), 1 | 2)
    }
}

/// Compares wire bytes, so that `Unknown(1)` equals `TextPlainUtf8`.
impl PartialEq for ContentType {
    fn eq(&self, other: &Self) -> bool {
        self.to_byte() == other.to_byte()
    }
}

/// One protocol data entry, borrowing its name and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolDataEntry<'a> {
    /// The sub-protocol, IA5 text: `ilp`, `auth`, `auth_token`, `paymentRequest`...
    pub name: &'a str,
    /// How `data` is to be read.
    pub content_type: ContentType,
    /// The payload.
    pub data: &'a [u8],
}

impl<'a> ProtocolDataEntry<'a> {
    /// An `application/octet-stream` entry.
    pub fn octets(name: &'a str, data: &'a [u8]) -> Self {
        ProtocolDataEntry {
            name,
            content_type: ContentType::OctetStream,
            data,
        }
    }

    /// A `text/plain; charset=utf-8` entry.
    pub fn text(name: &'a str, text: &'a str) -> Self {
        ProtocolDataEntry {
            name,
            content_type: ContentType::TextPlainUtf8,
            data: text.as_bytes(),
        }
    }

    /// An `application/json` entry (the JSON text is not checked beyond UTF-8).
    pub fn json(name: &'a str, json: &'a str) -> Self {
        ProtocolDataEntry {
            name,
            content_type: ContentType::ApplicationJson,
            data: json.as_bytes(),
        }
    }

    /// The data as text, whatever the content type, when it is UTF-8 (the JS plugins read
    /// `auth_token` with `toString()` whatever its content type says).
    pub fn data_as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.data).ok()
    }

    fn encoded_len(&self) -> usize {
        oer::var_octets_size(self.name.len()) + 1 + oer::var_octets_size(self.data.len())
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        oer::write_var_octets(out, self.name.as_bytes());
        out.push(self.content_type.to_byte());
        oer::write_var_octets(out, self.data);
    }
}

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// Entries as they came off the wire, already validated.
    Encoded { count: usize, entries: &'a [u8] },
    /// Entries given by a caller, already validated.
    Entries(&'a [ProtocolDataEntry<'a>]),
}

/// The protocol data of a BTP packet: valid by construction (IA5 names, no name twice, text
/// and JSON entries in UTF-8), whether parsed or built.
#[derive(Clone, Copy)]
pub struct ProtocolData<'a> {
    repr: Repr<'a>,
}

fn is_ia5(bytes: &[u8]) -> bool {
    bytes.is_ascii()
}

/// Reads one entry. Offsets in errors are those of `reader`.
fn read_entry<'a>(reader: &mut Reader<'a>) -> Result<ProtocolDataEntry<'a>, ParseError> {
    let name_offset = reader.offset();
    let name_bytes = reader.read_var_octets()?;
    if !is_ia5(name_bytes) {
        return Err(ParseError::new(
            name_offset,
            ParseErrorKind::NotIa5 {
                field: "protocolName",
            },
        ));
    }
    // IA5 is ASCII, hence UTF-8; map rather than unwrap all the same.
    let name = std::str::from_utf8(name_bytes).map_err(|_| {
        ParseError::new(
            name_offset,
            ParseErrorKind::NotIa5 {
                field: "protocolName",
            },
        )
    })?;
    let content_type = ContentType::from_byte(reader.read_u8()?);
    let data_offset = reader.offset();
    let data = reader.read_var_octets()?;
    if content_type.is_text() && std::str::from_utf8(data).is_err() {
        return Err(ParseError::new(
            data_offset,
            ParseErrorKind::InvalidUtf8 {
                field: "protocol data",
            },
        ));
    }
    Ok(ProtocolDataEntry {
        name,
        content_type,
        data,
    })
}

/// Remembers the names seen so far: a fixed array for the usual handful, a hash set beyond.
struct SeenNames<'a> {
    small: [&'a str; SMALL_ENTRY_COUNT],
    len: usize,
    large: Option<HashSet<&'a str>>,
}

impl<'a> SeenNames<'a> {
    fn new() -> Self {
        SeenNames {
            small: [""; SMALL_ENTRY_COUNT],
            len: 0,
            large: None,
        }
    }

    /// Records `name`; false when it was already there.
    fn insert(&mut self, name: &'a str) -> bool {
        if let Some(large) = &mut self.large {
            return large.insert(name);
        }
        if self.small[..self.len].contains(&name) {
            return false;
        }
        if self.len < SMALL_ENTRY_COUNT {
            self.small[self.len] = name;
            self.len += 1;
        } else {
            let mut large: HashSet<&'a str> = self.small.iter().copied().collect();
            large.insert(name);
            self.large = Some(large);
        }
        true
    }
}

impl<'a> ProtocolData<'a> {
    /// No entries.
    pub const EMPTY: ProtocolData<'static> = ProtocolData {
        repr: Repr::Entries(&[]),
    };

    /// Checks `entries` (IA5 names, UTF-8 for text and JSON, no name twice) and wraps them.
    pub fn new(entries: &'a [ProtocolDataEntry<'a>]) -> Result<Self, BuildError> {
        let mut seen = SeenNames::new();
        for (index, entry) in entries.iter().enumerate() {
            if !is_ia5(entry.name.as_bytes()) {
                return Err(BuildError::ProtocolNameNotIa5 { index });
            }
            if entry.content_type.is_text() && std::str::from_utf8(entry.data).is_err() {
                return Err(BuildError::InvalidUtf8 { index });
            }
            if !seen.insert(entry.name) {
                return Err(BuildError::DuplicateProtocolName { index });
            }
        }
        Ok(ProtocolData {
            repr: Repr::Entries(entries),
        })
    }

    /// Wraps entries the caller knows to be valid (fixed ASCII names, distinct, `&str` texts).
    pub(crate) fn trusted(entries: &'a [ProtocolDataEntry<'a>]) -> Self {
        debug_assert!(ProtocolData::new(entries).is_ok());
        ProtocolData {
            repr: Repr::Entries(entries),
        }
    }

    /// Reads the count and the entries, leaving `reader` after the last one.
    pub(crate) fn read(reader: &mut Reader<'a>) -> Result<Self, ParseError> {
        // The count is only ever compared with, never used to size anything: a count larger
        // than the input fails at the first missing entry.
        let count = reader.read_var_uint()?;
        let start = reader.offset();
        let rest = reader.rest();
        let mut seen = SeenNames::new();
        let mut read = 0usize;
        while (read as u64) < count {
            let entry_offset = reader.offset();
            let entry = read_entry(reader)?;
            if !seen.insert(entry.name) {
                return Err(ParseError::new(
                    entry_offset,
                    ParseErrorKind::DuplicateProtocolName,
                ));
            }
            read += 1;
        }
        Ok(ProtocolData {
            repr: Repr::Encoded {
                count: read,
                entries: &rest[..reader.offset() - start],
            },
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Encoded { count, .. } => count,
            Repr::Entries(entries) => entries.len(),
        }
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in order.
    pub fn iter(&self) -> Entries<'a> {
        match self.repr {
            Repr::Encoded { count, entries } => Entries {
                inner: EntriesInner::Encoded {
                    left: count,
                    reader: Reader::new(entries),
                },
            },
            Repr::Entries(entries) => Entries {
                inner: EntriesInner::Slice(entries.iter()),
            },
        }
    }

    /// The first entry: the primary sub-protocol, which decides what the packet asks for.
    pub fn primary(&self) -> Option<ProtocolDataEntry<'a>> {
        self.iter().next()
    }

    /// The entry called `name` (names are unique).
    pub fn get(&self, name: &str) -> Option<ProtocolDataEntry<'a>> {
        self.iter().find(|entry| entry.name == name)
    }

    /// The data of the `ilp` entry: an ILP packet.
    pub fn ilp(&self) -> Option<&'a [u8]> {
        self.get(ILP).map(|entry| entry.data)
    }

    /// Bytes the protocol data takes on the wire, count included.
    pub fn encoded_len(&self) -> usize {
        let entries = match self.repr {
            Repr::Encoded { entries, .. } => entries.len(),
            Repr::Entries(entries) => entries.iter().map(ProtocolDataEntry::encoded_len).sum(),
        };
        oer::var_uint_size(self.len() as u64) + entries
    }

    /// Appends the encoding (count, then entries).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        oer::write_var_uint(out, self.len() as u64);
        match self.repr {
            Repr::Encoded { entries, .. } => out.extend_from_slice(entries),
            Repr::Entries(entries) => entries.iter().for_each(|entry| entry.write_to(out)),
        }
    }
}

impl Default for ProtocolData<'_> {
    fn default() -> Self {
        ProtocolData::EMPTY
    }
}

/// Equal when the entries are, however each side was made.
impl PartialEq for ProtocolData<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for ProtocolData<'_> {}

impl fmt::Debug for ProtocolData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for ProtocolData<'a> {
    type Item = ProtocolDataEntry<'a>;
    type IntoIter = Entries<'a>;
    fn into_iter(self) -> Entries<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &ProtocolData<'a> {
    type Item = ProtocolDataEntry<'a>;
    type IntoIter = Entries<'a>;
    fn into_iter(self) -> Entries<'a> {
        self.iter()
    }
}

/// Iterator over the entries of a [`ProtocolData`].
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    inner: EntriesInner<'a>,
}

#[derive(Debug, Clone)]
enum EntriesInner<'a> {
    Encoded { left: usize, reader: Reader<'a> },
    Slice(std::slice::Iter<'a, ProtocolDataEntry<'a>>),
}

impl<'a> Iterator for Entries<'a> {
    type Item = ProtocolDataEntry<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            EntriesInner::Encoded { left, reader } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // Validated when parsed; should it ever fail, the iteration just ends.
                read_entry(reader).ok()
            }
            EntriesInner::Slice(entries) => entries.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.inner {
            EntriesInner::Encoded { left, .. } => (0, Some(*left)),
            EntriesInner::Slice(entries) => entries.size_hint(),
        }
    }
}
