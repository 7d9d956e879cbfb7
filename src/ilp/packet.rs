//! ILPv4 Prepare, Fulfill and Reject (RFC 27), as borrowed views over their encoding.
//!
//! ```text
//! type (u8: 12, 13, 14) | length determinant | contents
//! Prepare: amount u64 | expiresAt 17 digits | executionCondition [32] | destination var | data var
//! Fulfill: fulfillment [32] | data var
//! Reject:  code [3] | triggeredBy var | message var | data var
//! ```
//!
//! Parsing copies nothing: every field borrows from the input. A parsed packet and a built one are
//! the same type, and both are valid by construction. Packets are canonical OER: non-minimal
//! lengths and bytes left over (after the packet, or after the last field inside its envelope) are
//! errors, each reported with its offset.

use bitcoin::hashes::{sha256, Hash};

use super::address::{validate_address, AddressError};
use super::error::{BuildError, ParseError, ParseErrorKind};
use super::error_code::ErrorCode;
use super::oer::{self, Reader};
use super::time::Timestamp;

/// Most bytes a packet's `data` may hold (RFC 27: `OCTET STRING (SIZE (0..32767))`).
pub const MAX_DATA_LEN: usize = 32767;
/// Most bytes a Reject's `message` may hold (RFC 27: `UTF8String (SIZE (0..8191))`).
pub const MAX_MESSAGE_LEN: usize = 8191;

/// The type byte of an ILP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// 12
    Prepare = 12,
    /// 13
    Fulfill = 13,
    /// 14
    Reject = 14,
}

impl TryFrom<u8> for PacketType {
    type Error = u8;
    fn try_from(byte: u8) -> Result<Self, u8> {
        match byte {
            12 => Ok(PacketType::Prepare),
            13 => Ok(PacketType::Fulfill),
            14 => Ok(PacketType::Reject),
            other => Err(other),
        }
    }
}

/// SHA-256 of `fulfillment`: the condition it fulfils.
pub fn condition_of(fulfillment: &[u8; 32]) -> [u8; 32] {
    sha256::Hash::hash(fulfillment).to_byte_array()
}

/// True when `fulfillment` hashes to `condition`.
pub fn fulfills(fulfillment: &[u8; 32], condition: &[u8; 32]) -> bool {
    condition_of(fulfillment) == *condition
}

/// Reads the type byte and the envelope; returns the type and a reader over the contents.
fn open_envelope(bytes: &[u8]) -> Result<(PacketType, Reader<'_>), ParseError> {
    let mut reader = Reader::new(bytes);
    let type_byte = reader.read_u8()?;
    let packet_type = PacketType::try_from(type_byte)
        .map_err(|t| ParseError::new(0, ParseErrorKind::UnknownPacketType(t)))?;
    let contents = reader.read_nested()?;
    if !reader.is_empty() {
        return Err(ParseError::new(
            reader.offset(),
            ParseErrorKind::TrailingBytes {
                count: reader.remaining(),
            },
        ));
    }
    Ok((packet_type, contents))
}

fn expect_type(found: PacketType, expected: PacketType) -> Result<(), ParseError> {
    if found == expected {
        Ok(())
    } else {
        Err(ParseError::new(
            0,
            ParseErrorKind::UnexpectedPacketType { expected, found },
        ))
    }
}

fn finish(contents: &Reader<'_>) -> Result<(), ParseError> {
    if contents.is_empty() {
        Ok(())
    } else {
        Err(ParseError::new(
            contents.offset(),
            ParseErrorKind::TrailingBytes {
                count: contents.remaining(),
            },
        ))
    }
}

fn read_data<'a>(reader: &mut Reader<'a>) -> Result<&'a [u8], ParseError> {
    let offset = reader.offset();
    let data = reader.read_var_octets()?;
    if data.len() > MAX_DATA_LEN {
        return Err(ParseError::new(
            offset,
            ParseErrorKind::TooLong {
                field: "data",
                len: data.len(),
                max: MAX_DATA_LEN,
            },
        ));
    }
    Ok(data)
}

fn read_address<'a>(
    reader: &mut Reader<'a>,
    field: &'static str,
    allow_empty: bool,
) -> Result<&'a str, ParseError> {
    let offset = reader.offset();
    let bytes = reader.read_var_octets()?;
    if allow_empty && bytes.is_empty() {
        return Ok("");
    }
    let invalid = |error: AddressError| {
        ParseError::new(offset, ParseErrorKind::InvalidAddress { field, error })
    };
    validate_address(bytes).map_err(invalid)?;
    // validate_address admits ASCII only, so this cannot fail; map it anyway rather than unwrap.
    std::str::from_utf8(bytes)
        .map_err(|_| ParseError::new(offset, ParseErrorKind::InvalidUtf8 { field }))
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), BuildError> {
    if len > max {
        Err(BuildError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

fn check_address(field: &'static str, address: &str) -> Result<(), BuildError> {
    validate_address(address.as_bytes())
        .map_err(|error| BuildError::InvalidAddress { field, error })
}

fn write_envelope(out: &mut Vec<u8>, packet_type: PacketType, contents_len: usize) {
    out.reserve(1 + oer::length_prefix_size(contents_len) + contents_len);
    out.push(packet_type as u8);
    oer::write_length(out, contents_len);
}

/// An ILP Prepare: a conditional transfer of `amount` to `destination`, expiring at `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepare<'a> {
    amount: u64,
    expires_at: Timestamp,
    execution_condition: &'a [u8; 32],
    destination: &'a str,
    data: &'a [u8],
}

/// The fields of a Prepare to build; [`PrepareBuilder::build`] validates them.
#[derive(Debug, Clone, Copy)]
pub struct PrepareBuilder<'a> {
    /// Amount in the units of the link.
    pub amount: u64,
    /// When the sender gives up.
    pub expires_at: Timestamp,
    /// SHA-256 of the fulfillment that claims the transfer.
    pub execution_condition: &'a [u8; 32],
    /// The ILP address the packet is for.
    pub destination: &'a str,
    /// End-to-end data, at most 32767 bytes.
    pub data: &'a [u8],
}

impl<'a> PrepareBuilder<'a> {
    /// Checks the destination and the data length, and returns the Prepare.
    pub fn build(self) -> Result<Prepare<'a>, BuildError> {
        check_address("destination", self.destination)?;
        check_len("data", self.data.len(), MAX_DATA_LEN)?;
        Ok(Prepare {
            amount: self.amount,
            expires_at: self.expires_at,
            execution_condition: self.execution_condition,
            destination: self.destination,
            data: self.data,
        })
    }
}

impl<'a> Prepare<'a> {
    /// Parses a Prepare; any other packet type is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, contents) = open_envelope(bytes)?;
        expect_type(packet_type, PacketType::Prepare)?;
        Self::parse_contents(contents)
    }

    fn parse_contents(mut contents: Reader<'a>) -> Result<Self, ParseError> {
        let amount = contents.read_u64()?;
        let expiry_offset = contents.offset();
        let expires_at = Timestamp::parse_ilp(contents.read_bytes(17)?)
            .map_err(|e| ParseError::new(expiry_offset, ParseErrorKind::InvalidTimestamp(e)))?;
        let execution_condition = contents.read_array::<32>()?;
        let destination = read_address(&mut contents, "destination", false)?;
        let data = read_data(&mut contents)?;
        finish(&contents)?;
        Ok(Prepare {
            amount,
            expires_at,
            execution_condition,
            destination,
            data,
        })
    }

    /// Amount in the units of the link.
    #[inline]
    pub fn amount(&self) -> u64 {
        self.amount
    }
    /// When the sender gives up on this packet.
    #[inline]
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
    /// SHA-256 of the fulfillment that claims the transfer.
    #[inline]
    pub fn execution_condition(&self) -> &'a [u8; 32] {
        self.execution_condition
    }
    /// The ILP address the packet is for (validated).
    #[inline]
    pub fn destination(&self) -> &'a str {
        self.destination
    }
    /// End-to-end data.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    fn contents_len(&self) -> usize {
        8 + 17
            + 32
            + oer::var_octets_size(self.destination.len())
            + oer::var_octets_size(self.data.len())
    }

    /// Bytes this packet takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let contents = self.contents_len();
        1 + oer::length_prefix_size(contents) + contents
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_envelope(out, PacketType::Prepare, self.contents_len());
        out.extend_from_slice(&self.amount.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_ilp());
        out.extend_from_slice(self.execution_condition);
        oer::write_var_octets(out, self.destination.as_bytes());
        oer::write_var_octets(out, self.data);
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }
}

/// An ILP Fulfill: the preimage of a Prepare's condition, claiming its transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fulfill<'a> {
    fulfillment: &'a [u8; 32],
    data: &'a [u8],
}

/// The fields of a Fulfill to build.
#[derive(Debug, Clone, Copy)]
pub struct FulfillBuilder<'a> {
    /// The preimage of the Prepare's execution condition.
    pub fulfillment: &'a [u8; 32],
    /// End-to-end data, at most 32767 bytes.
    pub data: &'a [u8],
}

impl<'a> FulfillBuilder<'a> {
    /// Checks the data length and returns the Fulfill.
    pub fn build(self) -> Result<Fulfill<'a>, BuildError> {
        check_len("data", self.data.len(), MAX_DATA_LEN)?;
        Ok(Fulfill {
            fulfillment: self.fulfillment,
            data: self.data,
        })
    }
}

impl<'a> Fulfill<'a> {
    /// Parses a Fulfill; any other packet type is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, contents) = open_envelope(bytes)?;
        expect_type(packet_type, PacketType::Fulfill)?;
        Self::parse_contents(contents)
    }

    fn parse_contents(mut contents: Reader<'a>) -> Result<Self, ParseError> {
        let fulfillment = contents.read_array::<32>()?;
        let data = read_data(&mut contents)?;
        finish(&contents)?;
        Ok(Fulfill { fulfillment, data })
    }

    /// The preimage of the Prepare's execution condition.
    #[inline]
    pub fn fulfillment(&self) -> &'a [u8; 32] {
        self.fulfillment
    }
    /// End-to-end data.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    /// True when this fulfillment hashes to `condition`.
    pub fn fulfills(&self, condition: &[u8; 32]) -> bool {
        fulfills(self.fulfillment, condition)
    }

    fn contents_len(&self) -> usize {
        32 + oer::var_octets_size(self.data.len())
    }

    /// Bytes this packet takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let contents = self.contents_len();
        1 + oer::length_prefix_size(contents) + contents
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_envelope(out, PacketType::Fulfill, self.contents_len());
        out.extend_from_slice(self.fulfillment);
        oer::write_var_octets(out, self.data);
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }
}

/// An ILP Reject: why a Prepare was refused, and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject<'a> {
    code: ErrorCode,
    triggered_by: &'a str,
    message: &'a str,
    data: &'a [u8],
}

/// The fields of a Reject to build.
#[derive(Debug, Clone, Copy)]
pub struct RejectBuilder<'a> {
    /// The error code.
    pub code: ErrorCode,
    /// Address of the node that refused the packet; may be empty.
    pub triggered_by: &'a str,
    /// Why, for people; at most 8191 bytes.
    pub message: &'a str,
    /// Machine-readable details (for F08, [`MaxPacketAmountDetails`]); at most 32767 bytes.
    pub data: &'a [u8],
}

impl<'a> RejectBuilder<'a> {
    /// Checks `triggered_by` (empty or a valid address) and the lengths, and returns the Reject.
    pub fn build(self) -> Result<Reject<'a>, BuildError> {
        if !self.triggered_by.is_empty() {
            check_address("triggeredBy", self.triggered_by)?;
        }
        check_len("message", self.message.len(), MAX_MESSAGE_LEN)?;
        check_len("data", self.data.len(), MAX_DATA_LEN)?;
        Ok(Reject {
            code: self.code,
            triggered_by: self.triggered_by,
            message: self.message,
            data: self.data,
        })
    }
}

impl<'a> Reject<'a> {
    /// Parses a Reject; any other packet type is an error.
    ///
    /// An empty `triggeredBy` is accepted: interledger-rs writes one.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, contents) = open_envelope(bytes)?;
        expect_type(packet_type, PacketType::Reject)?;
        Self::parse_contents(contents)
    }

    fn parse_contents(mut contents: Reader<'a>) -> Result<Self, ParseError> {
        let code_offset = contents.offset();
        let code = ErrorCode::new(*contents.read_array::<3>()?)
            .map_err(|_| ParseError::new(code_offset, ParseErrorKind::InvalidErrorCode))?;
        let triggered_by = read_address(&mut contents, "triggeredBy", true)?;
        let message_offset = contents.offset();
        let message_bytes = contents.read_var_octets()?;
        if message_bytes.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::new(
                message_offset,
                ParseErrorKind::TooLong {
                    field: "message",
                    len: message_bytes.len(),
                    max: MAX_MESSAGE_LEN,
                },
            ));
        }
        let message = std::str::from_utf8(message_bytes).map_err(|_| {
            ParseError::new(
                message_offset,
                ParseErrorKind::InvalidUtf8 { field: "message" },
            )
        })?;
        let data = read_data(&mut contents)?;
        finish(&contents)?;
        Ok(Reject {
            code,
            triggered_by,
            message,
            data,
        })
    }

    /// The error code.
    #[inline]
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    /// Address of the node that refused the packet; may be empty.
    #[inline]
    pub fn triggered_by(&self) -> &'a str {
        self.triggered_by
    }
    /// Why, for people.
    #[inline]
    pub fn message(&self) -> &'a str {
        self.message
    }
    /// Machine-readable details.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    fn contents_len(&self) -> usize {
        3 + oer::var_octets_size(self.triggered_by.len())
            + oer::var_octets_size(self.message.len())
            + oer::var_octets_size(self.data.len())
    }

    /// Bytes this packet takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let contents = self.contents_len();
        1 + oer::length_prefix_size(contents) + contents
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_envelope(out, PacketType::Reject, self.contents_len());
        out.extend_from_slice(self.code.as_bytes());
        oer::write_var_octets(out, self.triggered_by.as_bytes());
        oer::write_var_octets(out, self.message.as_bytes());
        oer::write_var_octets(out, self.data);
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }
}

/// Any ILP packet, told apart by its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Type 12.
    Prepare(Prepare<'a>),
    /// Type 13.
    Fulfill(Fulfill<'a>),
    /// Type 14.
    Reject(Reject<'a>),
}

impl<'a> Packet<'a> {
    /// Parses a Prepare, Fulfill or Reject.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, contents) = open_envelope(bytes)?;
        Ok(match packet_type {
            PacketType::Prepare => Packet::Prepare(Prepare::parse_contents(contents)?),
            PacketType::Fulfill => Packet::Fulfill(Fulfill::parse_contents(contents)?),
            PacketType::Reject => Packet::Reject(Reject::parse_contents(contents)?),
        })
    }

    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Prepare(_) => PacketType::Prepare,
            Packet::Fulfill(_) => PacketType::Fulfill,
            Packet::Reject(_) => PacketType::Reject,
        }
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Prepare(p) => p.write_to(out),
            Packet::Fulfill(p) => p.write_to(out),
            Packet::Reject(p) => p.write_to(out),
        }
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Packet::Prepare(p) => p.to_bytes(),
            Packet::Fulfill(p) => p.to_bytes(),
            Packet::Reject(p) => p.to_bytes(),
        }
    }
}

impl<'a> From<Prepare<'a>> for Packet<'a> {
    fn from(p: Prepare<'a>) -> Self {
        Packet::Prepare(p)
    }
}
impl<'a> From<Fulfill<'a>> for Packet<'a> {
    fn from(p: Fulfill<'a>) -> Self {
        Packet::Fulfill(p)
    }
}
impl<'a> From<Reject<'a>> for Packet<'a> {
    fn from(p: Reject<'a>) -> Self {
        Packet::Reject(p)
    }
}

/// The data of an F08 Amount Too Large Reject: `receivedAmount u64 | maximumAmount u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPacketAmountDetails {
    /// The amount the rejecting node received.
    pub received: u64,
    /// The most it accepts in one packet.
    pub maximum: u64,
}

impl MaxPacketAmountDetails {
    /// The 16-byte encoding.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.received.to_be_bytes());
        out[8..].copy_from_slice(&self.maximum.to_be_bytes());
        out
    }

    /// Reads the details from a Reject's data (16 bytes; anything after them is ignored, as
    /// RFC 30 asks for extensibility).
    pub fn parse(data: &[u8]) -> Result<Self, ParseError> {
        let mut reader = Reader::new(data);
        Ok(MaxPacketAmountDetails {
            received: reader.read_u64()?,
            maximum: reader.read_u64()?,
        })
    }
}
