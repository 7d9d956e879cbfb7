//! Canonical OER primitives (RFC 30): fixed-size big-endian integers, length determinants,
//! variable-length octet strings and variable-length unsigned integers.
//!
//! [`Reader`] borrows the input and keeps offsets absolute (relative to the start of the whole
//! packet), so every error can say where it happened. No length read from the input is ever used
//! to size an allocation: the reader hands out sub-slices only after checking that the bytes are
//! there.

use std::fmt;

/// What went wrong while reading OER data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OerErrorKind {
    /// The input ended early: `needed` bytes were required, only `available` were left.
    UnexpectedEof {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The length byte `0x80` (indefinite length) is not allowed in canonical OER.
    IndefiniteLength,
    /// A long-form length announced more than 8 length bytes.
    LengthOfLengthTooLarge(u8),
    /// A long-form length that fits the short form, or has leading zero bytes.
    NonMinimalLength,
    /// A length larger than the rest of the input (or than this platform can address).
    LengthPastEnd {
        /// The length the prefix announced.
        length: u64,
        /// Bytes left in the input after the prefix.
        available: usize,
    },
    /// A variable-length unsigned integer with no bytes.
    EmptyVarUint,
    /// A variable-length unsigned integer wider than 8 bytes.
    VarUintTooLarge(usize),
    /// A variable-length unsigned integer with a leading zero byte.
    NonMinimalVarUint,
}

/// An OER decoding error and the offset, from the start of the input, where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OerError {
    /// Offset of the offending byte from the start of the whole input.
    pub offset: usize,
    /// What went wrong.
    pub kind: OerErrorKind,
}

impl fmt::Display for OerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OerErrorKind::UnexpectedEof { needed, available } => write!(
                f,
                "unexpected end of input: needed {needed} bytes, {available} left"
            ),
            OerErrorKind::IndefiniteLength => {
                f.write_str("indefinite length (0x80) is not allowed")
            }
            OerErrorKind::LengthOfLengthTooLarge(n) => {
                write!(f, "length prefix announces {n} length bytes (at most 8)")
            }
            OerErrorKind::NonMinimalLength => f.write_str("length prefix is not minimally encoded"),
            OerErrorKind::LengthPastEnd { length, available } => write!(
                f,
                "length {length} runs past the end of the input ({available} bytes left)"
            ),
            OerErrorKind::EmptyVarUint => f.write_str("variable-length integer has no bytes"),
            OerErrorKind::VarUintTooLarge(n) => {
                write!(f, "variable-length integer is {n} bytes wide (at most 8)")
            }
            OerErrorKind::NonMinimalVarUint => {
                f.write_str("variable-length integer has a leading zero byte")
            }
        }
    }
}

impl fmt::Display for OerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.kind, self.offset)
    }
}

impl std::error::Error for OerError {}

/// A cursor over borrowed OER input. Offsets reported in errors are absolute.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over the whole of `buf`, starting at offset 0.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// Absolute offset of the next byte to be read.
    #[inline]
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes left before this reader's end.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// True when no bytes are left.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos == self.end
    }

    /// The unread bytes.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..self.end]
    }

    fn error(&self, offset: usize, kind: OerErrorKind) -> OerError {
        OerError { offset, kind }
    }

    /// Reads exactly `n` bytes.
    #[inline]
    pub fn read_bytes(&mut self, n: usize) -> Result<&'a [u8], OerError> {
        if n > self.remaining() {
            return Err(self.error(
                self.pos,
                OerErrorKind::UnexpectedEof {
                    needed: n,
                    available: self.remaining(),
                },
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// Reads a fixed-size array (a UInt256, a 3-byte code...).
    #[inline]
    pub fn read_array<const N: usize>(&mut self) -> Result<&'a [u8; N], OerError> {
        let bytes = self.read_bytes(N)?;
        Ok(bytes.try_into().expect("read_bytes returned N bytes"))
    }

    /// Reads a UInt8.
    #[inline]
    pub fn read_u8(&mut self) -> Result<u8, OerError> {
        Ok(self.read_array::<1>()?[0])
    }

    /// Reads a big-endian UInt32.
    #[inline]
    pub fn read_u32(&mut self) -> Result<u32, OerError> {
        Ok(u32::from_be_bytes(*self.read_array::<4>()?))
    }

    /// Reads a big-endian UInt64.
    #[inline]
    pub fn read_u64(&mut self) -> Result<u64, OerError> {
        Ok(u64::from_be_bytes(*self.read_array::<8>()?))
    }

    /// Reads a canonical length determinant. The length is not checked against the input.
    pub fn read_length_determinant(&mut self) -> Result<u64, OerError> {
        let start = self.pos;
        let first = self.read_u8()?;
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let n = first & 0x7f;
        if n == 0 {
            return Err(self.error(start, OerErrorKind::IndefiniteLength));
        }
        if n > 8 {
            return Err(self.error(start, OerErrorKind::LengthOfLengthTooLarge(n)));
        }
        let bytes = self.read_bytes(usize::from(n))?;
        if bytes[0] == 0 {
            return Err(self.error(start, OerErrorKind::NonMinimalLength));
        }
        let length = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if length < 0x80 {
            return Err(self.error(start, OerErrorKind::NonMinimalLength));
        }
        Ok(length)
    }

    /// Reads a length determinant and checks that that many bytes follow.
    pub fn read_length(&mut self) -> Result<usize, OerError> {
        let start = self.pos;
        let length = self.read_length_determinant()?;
        match usize::try_from(length) {
            Ok(len) if len <= self.remaining() => Ok(len),
            _ => Err(self.error(
                start,
                OerErrorKind::LengthPastEnd {
                    length,
                    available: self.remaining(),
                },
            )),
        }
    }

    /// Reads a variable-length octet string (length determinant + bytes), borrowing it.
    #[inline]
    pub fn read_var_octets(&mut self) -> Result<&'a [u8], OerError> {
        let len = self.read_length()?;
        self.read_bytes(len)
    }

    /// Reads a length determinant and returns a reader limited to the bytes it covers; `self`
    /// moves past them.
    pub fn read_nested(&mut self) -> Result<Reader<'a>, OerError> {
        let len = self.read_length()?;
        let nested = Reader {
            buf: self.buf,
            pos: self.pos,
            end: self.pos + len,
        };
        self.pos += len;
        Ok(nested)
    }

    /// Reads a variable-length unsigned integer (a length determinant, then that many
    /// big-endian bytes, minimally encoded, at most 8).
    pub fn read_var_uint(&mut self) -> Result<u64, OerError> {
        let start = self.pos;
        let len = self.read_length()?;
        if len == 0 {
            return Err(self.error(start, OerErrorKind::EmptyVarUint));
        }
        if len > 8 {
            return Err(self.error(start, OerErrorKind::VarUintTooLarge(len)));
        }
        let bytes = self.read_bytes(len)?;
        if len > 1 && bytes[0] == 0 {
            return Err(self.error(start, OerErrorKind::NonMinimalVarUint));
        }
        Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }
}

/// Number of bytes the length determinant for `len` takes.
#[inline]
pub const fn length_prefix_size(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + (usize::BITS as usize / 8) - (len.leading_zeros() as usize / 8)
    }
}

/// Number of bytes a variable-length octet string of `len` bytes takes on the wire.
#[inline]
pub const fn var_octets_size(len: usize) -> usize {
    length_prefix_size(len) + len
}

/// Number of bytes a variable-length unsigned integer takes on the wire.
#[inline]
pub const fn var_uint_size(value: u64) -> usize {
    1 + var_uint_width(value)
}

#[inline]
const fn var_uint_width(value: u64) -> usize {
    if value == 0 {
        1
    } else {
        8 - (value.leading_zeros() as usize / 8)
    }
}

/// Appends a canonical length determinant.
#[inline]
pub fn write_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let width = length_prefix_size(len) - 1;
        out.push(0x80 | width as u8);
        out.extend_from_slice(&len.to_be_bytes()[std::mem::size_of::<usize>() - width..]);
    }
}

/// Appends a variable-length octet string.
#[inline]
pub fn write_var_octets(out: &mut Vec<u8>, bytes: &[u8]) {
    write_length(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends a variable-length unsigned integer.
#[inline]
pub fn write_var_uint(out: &mut Vec<u8>, value: u64) {
    let width = var_uint_width(value);
    out.push(width as u8);
    out.extend_from_slice(&value.to_be_bytes()[8 - width..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length_of(bytes: &[u8]) -> Result<u64, OerError> {
        Reader::new(bytes).read_length_determinant()
    }

    #[test]
    fn rfc30_length_examples() {
        assert_eq!(length_of(&[0x07]), Ok(7));
        assert_eq!(length_of(&[0x81, 0x82]), Ok(130));
        assert_eq!(length_of(&[0x82, 0x12, 0x34]), Ok(4660));
        assert_eq!(length_of(&[0x83, 0xab, 0xcd, 0xef]), Ok(11259375));
        assert_eq!(
            length_of(&[0x88, 0xac, 0x01, 0x05, 0x5a, 0x1d, 0xeb, 0xac, 0x1e]),
            Ok(12394193534107495454)
        );
    }

    #[test]
    fn rejects_bad_lengths_with_offsets() {
        let err = |kind| Err(OerError { offset: 0, kind });
        assert_eq!(length_of(&[0x80]), err(OerErrorKind::IndefiniteLength));
        assert_eq!(
            length_of(&[0x81, 0x05]),
            err(OerErrorKind::NonMinimalLength)
        );
        assert_eq!(
            length_of(&[0x82, 0x00, 0x90]),
            err(OerErrorKind::NonMinimalLength)
        );
        assert_eq!(
            length_of(&[0x89]),
            err(OerErrorKind::LengthOfLengthTooLarge(9))
        );
        assert_eq!(
            length_of(&[0x82, 0x01]),
            Err(OerError {
                offset: 1,
                kind: OerErrorKind::UnexpectedEof {
                    needed: 2,
                    available: 1
                }
            })
        );
        assert_eq!(
            Reader::new(&[0x05, 1, 2]).read_var_octets(),
            Err(OerError {
                offset: 0,
                kind: OerErrorKind::LengthPastEnd {
                    length: 5,
                    available: 2
                }
            })
        );
    }

    #[test]
    fn writes_and_predicts_lengths() {
        for (len, expected) in [
            (0usize, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x81, 0x80]),
            (256, &[0x82, 0x01, 0x00]),
            (5678, &[0x82, 0x16, 0x2e]),
        ] {
            let mut out = Vec::new();
            write_length(&mut out, len);
            assert_eq!(out, expected, "length {len}");
            assert_eq!(length_prefix_size(len), expected.len());
        }
    }

    #[test]
    fn var_uint_vectors() {
        for (value, bytes) in [
            (0u64, &[0x01, 0x00][..]),
            (9, &[0x01, 0x09]),
            (0x0102, &[0x02, 0x01, 0x02]),
            (0x0102030405060708, &[0x08, 1, 2, 3, 4, 5, 6, 7, 8]),
        ] {
            let mut out = Vec::new();
            write_var_uint(&mut out, value);
            assert_eq!(out, bytes);
            assert_eq!(var_uint_size(value), bytes.len());
            assert_eq!(Reader::new(bytes).read_var_uint(), Ok(value));
        }
        let err = |kind| Err(OerError { offset: 0, kind });
        assert_eq!(
            Reader::new(&[0x00]).read_var_uint(),
            err(OerErrorKind::EmptyVarUint)
        );
        assert_eq!(
            Reader::new(&[0x02, 0x00, 0x05]).read_var_uint(),
            err(OerErrorKind::NonMinimalVarUint)
        );
        assert_eq!(
            Reader::new(&[0x09, 1, 1, 1, 1, 1, 1, 1, 1, 1]).read_var_uint(),
            err(OerErrorKind::VarUintTooLarge(9))
        );
    }
}
