//! IL-DCP, the Interledger Dynamic Configuration Protocol (RFC 31): how a child learns its ILP
//! address, asset code and scale from its parent.
//!
//! The request is a Prepare of 0 to `peer.config` with a fixed condition; the answer is a Fulfill
//! with 32 zero bytes whose data holds `clientAddress var | assetScale u8 | assetCode var`.

use std::fmt;

use super::address::{validate_address, Address, AddressError};
use super::error::ParseError;
use super::oer::{self, OerErrorKind, Reader};
use super::packet::{Fulfill, FulfillBuilder, Packet, Prepare, PrepareBuilder};
use super::time::Timestamp;

/// The destination of IL-DCP requests.
pub const PEER_CONFIG_DESTINATION: &str = "peer.config";
/// The fulfillment of peer protocols: 32 zero bytes.
pub const PEER_PROTOCOL_FULFILLMENT: [u8; 32] = [0; 32];
/// The condition of peer protocols: SHA-256 of 32 zero bytes.
pub const PEER_PROTOCOL_CONDITION: [u8; 32] = [
    0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77, 0x6c, 0x8f, 0xc1, 0x8b, 0x8e, 0x9f, 0x8e, 0x20,
    0x08, 0x97, 0x14, 0x85, 0x6e, 0xe2, 0x33, 0xb3, 0x90, 0x2a, 0x59, 0x1d, 0x0d, 0x5f, 0x29, 0x25,
];
/// How long a request stays valid, like the JS and Rust clients.
pub const REQUEST_LIFETIME_MS: i64 = 60_000;

/// Why an IL-DCP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IldcpError {
    /// The reply is not a valid ILP packet.
    Packet(ParseError),
    /// The parent answered with a Reject.
    Rejected {
        /// The Reject's code, e.g. `F02`.
        code: String,
        /// The Reject's message.
        message: String,
    },
    /// The reply was a Prepare.
    UnexpectedPrepare,
    /// The Fulfill's data is not an IL-DCP response: what is wrong, at which offset of the data.
    Malformed {
        /// Offset within the Fulfill's data.
        offset: usize,
        /// What is wrong.
        reason: MalformedResponse,
    },
}

/// What is wrong with the data of an IL-DCP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedResponse {
    /// A malformed OER field.
    Oer(OerErrorKind),
    /// The client address is not a valid ILP address.
    InvalidAddress(AddressError),
    /// The asset code is not UTF-8.
    InvalidAssetCode,
    /// Bytes left after the asset code.
    TrailingBytes(usize),
}

impl fmt::Display for IldcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IldcpError::Packet(e) => write!(f, "IL-DCP failed: {e}"),
            IldcpError::Rejected { code, message } => {
                write!(f, "IL-DCP failed: rejected with {code}: {message}")
            }
            IldcpError::UnexpectedPrepare => f.write_str("IL-DCP failed: the reply is a Prepare"),
            IldcpError::Malformed { offset, reason } => {
                let what = match reason {
                    MalformedResponse::Oer(kind) => kind.to_string(),
                    MalformedResponse::InvalidAddress(e) => format!("invalid client address: {e}"),
                    MalformedResponse::InvalidAssetCode => "asset code is not UTF-8".into(),
                    MalformedResponse::TrailingBytes(n) => format!("{n} unexpected trailing bytes"),
                };
                write!(
                    f,
                    "invalid IL-DCP response: {what} at offset {offset} of its data"
                )
            }
        }
    }
}

impl std::error::Error for IldcpError {}

/// The serialized IL-DCP request Prepare, expiring at `expires_at`.
pub fn request(expires_at: Timestamp) -> Vec<u8> {
    PrepareBuilder {
        amount: 0,
        expires_at,
        execution_condition: &PEER_PROTOCOL_CONDITION,
        destination: PEER_CONFIG_DESTINATION,
        data: &[],
    }
    .build()
    .map(|p| p.to_bytes())
    .unwrap_or_default()
}

/// True when `prepare` is an IL-DCP request (destination and condition; the expiry is the
/// caller's to check).
pub fn is_request(prepare: &Prepare<'_>) -> bool {
    prepare.destination() == PEER_CONFIG_DESTINATION
        && *prepare.execution_condition() == PEER_PROTOCOL_CONDITION
}

/// What a parent tells its child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IldcpResponse {
    /// The child's ILP address.
    pub client_address: Address,
    /// Decimal places of the asset: amounts are in units of 10^-scale.
    pub asset_scale: u8,
    /// The asset, e.g. `BTC`.
    pub asset_code: String,
}

impl IldcpResponse {
    /// Reads a response from a Fulfill's data.
    pub fn parse(data: &[u8]) -> Result<Self, IldcpError> {
        let malformed = |offset, reason| IldcpError::Malformed { offset, reason };
        let oer = |e: oer::OerError| malformed(e.offset, MalformedResponse::Oer(e.kind));
        let mut reader = Reader::new(data);
        let address_offset = reader.offset();
        let address_bytes = reader.read_var_octets().map_err(oer)?;
        validate_address(address_bytes)
            .map_err(|e| malformed(address_offset, MalformedResponse::InvalidAddress(e)))?;
        let client_address = std::str::from_utf8(address_bytes)
            .ok()
            .and_then(|s| Address::new(s).ok())
            .ok_or(malformed(
                address_offset,
                MalformedResponse::InvalidAddress(AddressError::Empty),
            ))?;
        let asset_scale = reader.read_u8().map_err(oer)?;
        let code_offset = reader.offset();
        let code_bytes = reader.read_var_octets().map_err(oer)?;
        let asset_code = std::str::from_utf8(code_bytes)
            .map_err(|_| malformed(code_offset, MalformedResponse::InvalidAssetCode))?
            .to_owned();
        if !reader.is_empty() {
            return Err(malformed(
                reader.offset(),
                MalformedResponse::TrailingBytes(reader.remaining()),
            ));
        }
        Ok(IldcpResponse {
            client_address,
            asset_scale,
            asset_code,
        })
    }

    /// Reads the reply to an IL-DCP request: a Fulfill carrying a response, or a Reject.
    pub fn from_reply(reply: &[u8]) -> Result<Self, IldcpError> {
        match Packet::parse(reply).map_err(IldcpError::Packet)? {
            Packet::Fulfill(fulfill) => Self::parse(fulfill.data()),
            Packet::Reject(reject) => Err(IldcpError::Rejected {
                code: reject.code().to_string(),
                message: reject.message().to_owned(),
            }),
            Packet::Prepare(_) => Err(IldcpError::UnexpectedPrepare),
        }
    }

    /// The Fulfill data encoding.
    pub fn to_data(&self) -> Vec<u8> {
        let address = self.client_address.as_str().as_bytes();
        let code = self.asset_code.as_bytes();
        let mut out = Vec::with_capacity(
            oer::var_octets_size(address.len()) + 1 + oer::var_octets_size(code.len()),
        );
        oer::write_var_octets(&mut out, address);
        out.push(self.asset_scale);
        oer::write_var_octets(&mut out, code);
        out
    }

    /// The serialized Fulfill that answers an IL-DCP request.
    pub fn to_fulfill_bytes(&self) -> Vec<u8> {
        let data = self.to_data();
        let fulfill: Result<Fulfill<'_>, _> = FulfillBuilder {
            fulfillment: &PEER_PROTOCOL_FULFILLMENT,
            data: &data,
        }
        .build();
        // A response is at most ~1.1 KB, far under the 32767-byte data limit.
        fulfill.map(|f| f.to_bytes()).unwrap_or_default()
    }
}
