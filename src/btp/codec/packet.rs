//! BTP 2.0 packets (RFC 23) as borrowed views over their encoding.
//!
//! ```text
//! type u8 (1, 2, 6, 7) | requestId u32 | length determinant | contents
//! Response (1), Message (6): protocolData
//! Transfer (7):              amount u64 | protocolData
//! Error (2):                 code [3] IA5 | name var IA5 | triggeredAt var GeneralizedTime
//!                            | data var | protocolData
//! ```
//!
//! Parsing copies nothing. Packets are canonical OER: non-minimal lengths, bytes after the
//! packet and bytes after the protocol data inside the envelope are errors, reported with their
//! offset. `triggeredAt` is read in any of its 15 to 19 character forms and always written in
//! the 19-character `YYYYMMDDHHmmSS.fffZ` form, the only one JS `btp-packet` reads.

use super::error::{BuildError, ParseError, ParseErrorKind};
use super::error_code::ErrorCode;
use super::protocol_data::{ProtocolData, ProtocolDataEntry, ILP};
use crate::ilp::oer::{self, Reader};
use crate::ilp::Timestamp;

/// Most bytes an Error's `data` may hold (RFC 23: `OCTET STRING (SIZE (0..8192))`).
pub const MAX_ERROR_DATA_LEN: usize = 8192;

/// Bytes of the 19-character `triggeredAt` we write.
const TRIGGERED_AT_LEN: usize = 19;

/// Primary entry of the auth message (content type octet-stream, empty).
pub const AUTH: &str = "auth";
/// Secondary auth entry: the account name (a JS convention, not in RFC 23), text.
pub const AUTH_USERNAME: &str = "auth_username";
/// Secondary auth entry: the shared secret, text; required, may be empty.
pub const AUTH_TOKEN: &str = "auth_token";

/// The type byte of a BTP 2.0 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// 1: the success answer to a Message or Transfer.
    Response = 1,
    /// 2: the failure answer to a Message or Transfer.
    Error = 2,
    /// 6: a request carrying sub-protocol data (ILP packets among them).
    Message = 6,
    /// 7: a request that moves value.
    Transfer = 7,
}

impl TryFrom<u8> for PacketType {
    type Error = u8;
    fn try_from(byte: u8) -> Result<Self, u8> {
        match byte {
            1 => Ok(PacketType::Response),
            2 => Ok(PacketType::Error),
            6 => Ok(PacketType::Message),
            7 => Ok(PacketType::Transfer),
            other => Err(other),
        }
    }
}

/// Reads the type byte, the requestId and the envelope; returns a reader over the contents.
fn open_envelope(bytes: &[u8]) -> Result<(PacketType, u32, Reader<'_>), ParseError> {
    let mut reader = Reader::new(bytes);
    let type_byte = reader.read_u8()?;
    let packet_type = PacketType::try_from(type_byte)
        .map_err(|t| ParseError::new(0, ParseErrorKind::UnknownPacketType(t)))?;
    let request_id = reader.read_u32()?;
    let contents = reader.read_nested()?;
    if !reader.is_empty() {
        return Err(ParseError::new(
            reader.offset(),
            ParseErrorKind::TrailingBytes {
                count: reader.remaining(),
            },
        ));
    }
    Ok((packet_type, request_id, contents))
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

/// Reads the protocol data that ends every packet and checks nothing follows it.
fn read_protocol_data<'a>(contents: &mut Reader<'a>) -> Result<ProtocolData<'a>, ParseError> {
    let protocol_data = ProtocolData::read(contents)?;
    if !contents.is_empty() {
        return Err(ParseError::new(
            contents.offset(),
            ParseErrorKind::TrailingBytes {
                count: contents.remaining(),
            },
        ));
    }
    Ok(protocol_data)
}

fn envelope_len(contents_len: usize) -> usize {
    1 + 4 + oer::length_prefix_size(contents_len) + contents_len
}

fn write_envelope(
    out: &mut Vec<u8>,
    packet_type: PacketType,
    request_id: u32,
    contents_len: usize,
) {
    out.reserve(envelope_len(contents_len));
    out.push(packet_type as u8);
    out.extend_from_slice(&request_id.to_be_bytes());
    oer::write_length(out, contents_len);
}

macro_rules! encoding_methods {
    () => {
        /// Bytes this packet takes on the wire.
        pub fn encoded_len(&self) -> usize {
            envelope_len(self.contents_len())
        }

        /// The encoding, in a buffer of exactly the right size.
        pub fn to_bytes(&self) -> Vec<u8> {
            let mut out = Vec::with_capacity(self.encoded_len());
            self.write_to(&mut out);
            out
        }
    };
}

/// A BTP Message: a request whose protocol data says what is asked (an ILP packet under `ilp`,
/// the auth handshake under `auth`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    request_id: u32,
    protocol_data: ProtocolData<'a>,
}

impl<'a> Message<'a> {
    /// A Message; `protocol_data` is valid by construction, so this cannot fail.
    pub fn new(request_id: u32, protocol_data: ProtocolData<'a>) -> Self {
        Message {
            request_id,
            protocol_data,
        }
    }

    /// Parses a Message; any other packet type is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, request_id, contents) = open_envelope(bytes)?;
        expect_type(packet_type, PacketType::Message)?;
        Self::parse_contents(request_id, contents)
    }

    fn parse_contents(request_id: u32, mut contents: Reader<'a>) -> Result<Self, ParseError> {
        Ok(Message {
            request_id,
            protocol_data: read_protocol_data(&mut contents)?,
        })
    }

    /// The id its answer will carry.
    #[inline]
    pub fn request_id(&self) -> u32 {
        self.request_id
    }
    /// The sub-protocol entries.
    #[inline]
    pub fn protocol_data(&self) -> ProtocolData<'a> {
        self.protocol_data
    }

    fn contents_len(&self) -> usize {
        self.protocol_data.encoded_len()
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_envelope(
            out,
            PacketType::Message,
            self.request_id,
            self.contents_len(),
        );
        self.protocol_data.write_to(out);
    }

    encoding_methods!();
}

/// A BTP Response: the success answer to the Message or Transfer with the same request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    request_id: u32,
    protocol_data: ProtocolData<'a>,
}

impl<'a> Response<'a> {
    /// A Response; `protocol_data` is valid by construction, so this cannot fail.
    pub fn new(request_id: u32, protocol_data: ProtocolData<'a>) -> Self {
        Response {
            request_id,
            protocol_data,
        }
    }

    /// Parses a Response; any other packet type is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, request_id, contents) = open_envelope(bytes)?;
        expect_type(packet_type, PacketType::Response)?;
        Self::parse_contents(request_id, contents)
    }

    fn parse_contents(request_id: u32, mut contents: Reader<'a>) -> Result<Self, ParseError> {
        Ok(Response {
            request_id,
            protocol_data: read_protocol_data(&mut contents)?,
        })
    }

    /// The id of the request this answers.
    #[inline]
    pub fn request_id(&self) -> u32 {
        self.request_id
    }
    /// The sub-protocol entries (the `ilp` reply, or none).
    #[inline]
    pub fn protocol_data(&self) -> ProtocolData<'a> {
        self.protocol_data
    }

    fn contents_len(&self) -> usize {
        self.protocol_data.encoded_len()
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_envelope(
            out,
            PacketType::Response,
            self.request_id,
            self.contents_len(),
        );
        self.protocol_data.write_to(out);
    }

    encoding_methods!();
}

/// A BTP Transfer: `amount` more than the previous settlement state, plus protocol data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer<'a> {
    request_id: u32,
    amount: u64,
    protocol_data: ProtocolData<'a>,
}

impl<'a> Transfer<'a> {
    /// A Transfer; `protocol_data` is valid by construction, so this cannot fail.
    pub fn new(request_id: u32, amount: u64, protocol_data: ProtocolData<'a>) -> Self {
        Transfer {
            request_id,
            amount,
            protocol_data,
        }
    }

    /// Parses a Transfer; any other packet type is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, request_id, contents) = open_envelope(bytes)?;
        expect_type(packet_type, PacketType::Transfer)?;
        Self::parse_contents(request_id, contents)
    }

    fn parse_contents(request_id: u32, mut contents: Reader<'a>) -> Result<Self, ParseError> {
        let amount = contents.read_u64()?;
        Ok(Transfer {
            request_id,
            amount,
            protocol_data: read_protocol_data(&mut contents)?,
        })
    }

    /// The id its answer will carry.
    #[inline]
    pub fn request_id(&self) -> u32 {
        self.request_id
    }
    /// The amount transferred, in the units of the link.
    #[inline]
    pub fn amount(&self) -> u64 {
        self.amount
    }
    /// The sub-protocol entries.
    #[inline]
    pub fn protocol_data(&self) -> ProtocolData<'a> {
        self.protocol_data
    }

    fn contents_len(&self) -> usize {
        8 + self.protocol_data.encoded_len()
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_envelope(
            out,
            PacketType::Transfer,
            self.request_id,
            self.contents_len(),
        );
        out.extend_from_slice(&self.amount.to_be_bytes());
        self.protocol_data.write_to(out);
    }

    encoding_methods!();
}

/// A BTP Error: the failure answer to the Message or Transfer with the same request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPacket<'a> {
    request_id: u32,
    code: ErrorCode,
    name: &'a str,
    triggered_at: Timestamp,
    data: &'a [u8],
    protocol_data: ProtocolData<'a>,
}

/// The fields of a BTP Error to build; [`ErrorPacketBuilder::build`] validates them.
#[derive(Debug, Clone, Copy)]
pub struct ErrorPacketBuilder<'a> {
    /// The id of the request this answers.
    pub request_id: u32,
    /// The error code, e.g. [`ErrorCode::F00_NOT_ACCEPTED`].
    pub code: ErrorCode,
    /// The error name, IA5 text, e.g. `NotAcceptedError` (see [`ErrorCode::name`]).
    pub name: &'a str,
    /// When the error happened.
    pub triggered_at: Timestamp,
    /// Details; the JS plugins put `{"message": ...}` JSON here. At most 8192 bytes.
    pub data: &'a [u8],
    /// Sub-protocol entries, usually none.
    pub protocol_data: ProtocolData<'a>,
}

impl<'a> ErrorPacketBuilder<'a> {
    /// Checks the name and the data length, and returns the Error.
    pub fn build(self) -> Result<ErrorPacket<'a>, BuildError> {
        if !self.name.is_ascii() {
            return Err(BuildError::ErrorNameNotIa5);
        }
        if self.data.len() > MAX_ERROR_DATA_LEN {
            return Err(BuildError::TooLong {
                field: "data",
                len: self.data.len(),
                max: MAX_ERROR_DATA_LEN,
            });
        }
        Ok(ErrorPacket {
            request_id: self.request_id,
            code: self.code,
            name: self.name,
            triggered_at: self.triggered_at,
            data: self.data,
            protocol_data: self.protocol_data,
        })
    }
}

impl<'a> ErrorPacket<'a> {
    /// Parses an Error; any other packet type is an error.
    ///
    /// `data` longer than 8192 bytes is accepted: neither JS nor interledger-rs checks it when
    /// writing, and refusing a peer's answer would only turn its error into a timeout.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, request_id, contents) = open_envelope(bytes)?;
        expect_type(packet_type, PacketType::Error)?;
        Self::parse_contents(request_id, contents)
    }

    fn parse_contents(request_id: u32, mut contents: Reader<'a>) -> Result<Self, ParseError> {
        let code_offset = contents.offset();
        let code = ErrorCode::new(*contents.read_array::<3>()?).ok_or(ParseError::new(
            code_offset,
            ParseErrorKind::InvalidErrorCode,
        ))?;
        let name_offset = contents.offset();
        let name = std::str::from_utf8(contents.read_var_octets()?)
            .ok()
            .filter(|name| name.is_ascii())
            .ok_or(ParseError::new(
                name_offset,
                ParseErrorKind::NotIa5 { field: "name" },
            ))?;
        let time_offset = contents.offset();
        let triggered_at = Timestamp::parse_generalized(contents.read_var_octets()?)
            .map_err(|e| ParseError::new(time_offset, ParseErrorKind::InvalidTimestamp(e)))?;
        let data = contents.read_var_octets()?;
        let protocol_data = read_protocol_data(&mut contents)?;
        Ok(ErrorPacket {
            request_id,
            code,
            name,
            triggered_at,
            data,
            protocol_data,
        })
    }

    /// The id of the request this answers.
    #[inline]
    pub fn request_id(&self) -> u32 {
        self.request_id
    }
    /// The error code.
    #[inline]
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    /// The error name, e.g. `NotAcceptedError`.
    #[inline]
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// When the error happened (millisecond precision).
    #[inline]
    pub fn triggered_at(&self) -> Timestamp {
        self.triggered_at
    }
    /// Details (JSON text from the JS plugins).
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    /// The sub-protocol entries.
    #[inline]
    pub fn protocol_data(&self) -> ProtocolData<'a> {
        self.protocol_data
    }

    fn contents_len(&self) -> usize {
        3 + oer::var_octets_size(self.name.len())
            + oer::var_octets_size(TRIGGERED_AT_LEN)
            + oer::var_octets_size(self.data.len())
            + self.protocol_data.encoded_len()
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_envelope(out, PacketType::Error, self.request_id, self.contents_len());
        out.extend_from_slice(self.code.as_bytes());
        oer::write_var_octets(out, self.name.as_bytes());
        oer::write_var_octets(out, &self.triggered_at.to_generalized());
        oer::write_var_octets(out, self.data);
        self.protocol_data.write_to(out);
    }

    encoding_methods!();
}

/// Any BTP 2.0 packet, told apart by its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Type 1.
    Response(Response<'a>),
    /// Type 2.
    Error(ErrorPacket<'a>),
    /// Type 6.
    Message(Message<'a>),
    /// Type 7.
    Transfer(Transfer<'a>),
}

impl<'a> Packet<'a> {
    /// Parses a Response, Error, Message or Transfer.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (packet_type, request_id, contents) = open_envelope(bytes)?;
        Ok(match packet_type {
            PacketType::Response => {
                Packet::Response(Response::parse_contents(request_id, contents)?)
            }
            PacketType::Error => Packet::Error(ErrorPacket::parse_contents(request_id, contents)?),
            PacketType::Message => Packet::Message(Message::parse_contents(request_id, contents)?),
            PacketType::Transfer => {
                Packet::Transfer(Transfer::parse_contents(request_id, contents)?)
            }
        })
    }

    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Response(_) => PacketType::Response,
            Packet::Error(_) => PacketType::Error,
            Packet::Message(_) => PacketType::Message,
            Packet::Transfer(_) => PacketType::Transfer,
        }
    }

    /// The request id (of the request, or of the request answered).
    pub fn request_id(&self) -> u32 {
        match self {
            Packet::Response(p) => p.request_id(),
            Packet::Error(p) => p.request_id(),
            Packet::Message(p) => p.request_id(),
            Packet::Transfer(p) => p.request_id(),
        }
    }

    /// The sub-protocol entries.
    pub fn protocol_data(&self) -> ProtocolData<'a> {
        match self {
            Packet::Response(p) => p.protocol_data(),
            Packet::Error(p) => p.protocol_data(),
            Packet::Message(p) => p.protocol_data(),
            Packet::Transfer(p) => p.protocol_data(),
        }
    }

    /// Bytes this packet takes on the wire.
    pub fn encoded_len(&self) -> usize {
        match self {
            Packet::Response(p) => p.encoded_len(),
            Packet::Error(p) => p.encoded_len(),
            Packet::Message(p) => p.encoded_len(),
            Packet::Transfer(p) => p.encoded_len(),
        }
    }

    /// Appends the encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Response(p) => p.write_to(out),
            Packet::Error(p) => p.write_to(out),
            Packet::Message(p) => p.write_to(out),
            Packet::Transfer(p) => p.write_to(out),
        }
    }

    /// The encoding, in a buffer of exactly the right size.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }
}

impl<'a> From<Response<'a>> for Packet<'a> {
    fn from(p: Response<'a>) -> Self {
        Packet::Response(p)
    }
}
impl<'a> From<ErrorPacket<'a>> for Packet<'a> {
    fn from(p: ErrorPacket<'a>) -> Self {
        Packet::Error(p)
    }
}
impl<'a> From<Message<'a>> for Packet<'a> {
    fn from(p: Message<'a>) -> Self {
        Packet::Message(p)
    }
}
impl<'a> From<Transfer<'a>> for Packet<'a> {
    fn from(p: Transfer<'a>) -> Self {
        Packet::Transfer(p)
    }
}

/// The serialized Message that carries an ILP packet (a Prepare) to the peer: one `ilp` entry.
pub fn ilp_message(request_id: u32, ilp_packet: &[u8]) -> Vec<u8> {
    let entries = [ProtocolDataEntry::octets(ILP, ilp_packet)];
    Message::new(request_id, ProtocolData::trusted(&entries)).to_bytes()
}

/// The serialized Response that answers request `request_id` with an ILP packet (a Fulfill or
/// Reject): one `ilp` entry.
pub fn ilp_response(request_id: u32, ilp_packet: &[u8]) -> Vec<u8> {
    let entries = [ProtocolDataEntry::octets(ILP, ilp_packet)];
    Response::new(request_id, ProtocolData::trusted(&entries)).to_bytes()
}

/// The protocol data of the auth message, in the order the JS client sends it: `auth`
/// (octet-stream, empty), `auth_username` (text), `auth_token` (text).
pub fn auth_entries<'a>(username: &'a str, token: &'a str) -> [ProtocolDataEntry<'a>; 3] {
    [
        ProtocolDataEntry::octets(AUTH, &[]),
        ProtocolDataEntry::text(AUTH_USERNAME, username),
        ProtocolDataEntry::text(AUTH_TOKEN, token),
    ]
}

/// The serialized auth Message a client sends first on every connection.
///
/// ```
/// use ilp_plugin_lightning::btp::{auth_message, AuthRequest, Message};
///
/// let bytes = auth_message(1, "alice", "secret");
/// let message = Message::parse(&bytes).unwrap();
/// let auth = AuthRequest::from_message(&message).unwrap();
/// assert_eq!((auth.username, auth.token), (Some("alice"), "secret"));
/// ```
pub fn auth_message(request_id: u32, username: &str, token: &str) -> Vec<u8> {
    let entries = auth_entries(username, token);
    Message::new(request_id, ProtocolData::trusted(&entries)).to_bytes()
}

/// The credentials of an auth Message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    /// `auth_username`, when present.
    pub username: Option<&'a str>,
    /// `auth_token` (may be empty, never absent).
    pub token: &'a str,
}

/// Why a Message is not a valid auth request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// The first entry is not `auth` (or there is none).
    NotAuth,
    /// There is no `auth_token` entry.
    MissingToken,
    /// An auth entry's data is not UTF-8 text.
    NotText {
        /// Which entry.
        name: &'static str,
    },
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::NotAuth => f.write_str("the first protocol data entry is not `auth`"),
            AuthError::MissingToken => f.write_str("no `auth_token` protocol data entry"),
            AuthError::NotText { name } => write!(f, "`{name}` is not UTF-8 text"),
        }
    }
}

impl std::error::Error for AuthError {}

impl<'a> AuthRequest<'a> {
    /// Reads the credentials: the primary entry must be `auth` and an `auth_token` must follow.
    /// Token and username are read as UTF-8 whatever their content type, as the JS servers do.
    pub fn from_message(message: &Message<'a>) -> Result<Self, AuthError> {
        let protocol_data = message.protocol_data();
        match protocol_data.primary() {
            Some(entry) if entry.name == AUTH => {}
            _ => return Err(AuthError::NotAuth),
        }
        let token = protocol_data
            .get(AUTH_TOKEN)
            .ok_or(AuthError::MissingToken)?
            .data_as_str()
            .ok_or(AuthError::NotText { name: AUTH_TOKEN })?;
        let username = match protocol_data.get(AUTH_USERNAME) {
            Some(entry) => Some(entry.data_as_str().ok_or(AuthError::NotText {
                name: AUTH_USERNAME,
            })?),
            None => None,
        };
        Ok(AuthRequest { username, token })
    }
}
