//! BTP requests over a [`Connection`]: sending a Message or Transfer and reading its answer,
//! and answering incoming ones through a [`RequestHandler`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::connection::{Connection, FrameHandler, Submitted, TransportError};
use crate::btp::codec::{
    BuildError, ContentType, ErrorCode, ErrorPacket, ErrorPacketBuilder, Message, Packet,
    ParseError, ProtocolData, ProtocolDataEntry, Response, Transfer,
};
use crate::ilp::Timestamp;

/// One protocol data entry that owns its data, for building replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    /// The sub-protocol name (IA5).
    pub name: Cow<'static, str>,
    /// How `data` is to be read.
    pub content_type: ContentType,
    /// The payload.
    pub data: Vec<u8>,
}

impl OwnedEntry {
    /// An `application/octet-stream` entry.
    pub fn octets(name: impl Into<Cow<'static, str>>, data: Vec<u8>) -> Self {
        OwnedEntry {
            name: name.into(),
            content_type: ContentType::OctetStream,
            data,
        }
    }

    /// A `text/plain; charset=utf-8` entry.
    pub fn text(name: impl Into<Cow<'static, str>>, text: impl Into<String>) -> Self {
        OwnedEntry {
            name: name.into(),
            content_type: ContentType::TextPlainUtf8,
            data: text.into().into_bytes(),
        }
    }

    /// The `ilp` entry carrying an ILP packet.
    pub fn ilp(packet: Vec<u8>) -> Self {
        Self::octets(crate::btp::codec::ILP, packet)
    }

    /// A borrowed view, for the codec.
    pub fn as_entry(&self) -> ProtocolDataEntry<'_> {
        ProtocolDataEntry {
            name: &self.name,
            content_type: self.content_type,
            data: &self.data,
        }
    }
}

/// A BTP Error to send or that was received: code, name and data (the time is set on sending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The code, e.g. `F00`.
    pub code: ErrorCode,
    /// The JS error name, e.g. `NotAcceptedError`.
    pub name: String,
    /// Details (the JS plugins send text or `{"message": ...}` JSON), at most 8192 bytes.
    pub data: Vec<u8>,
}

impl ErrorReply {
    /// An error with the code's JS name (`NotAcceptedError` for unknown codes) and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            name: code.name().unwrap_or("NotAcceptedError").to_string(),
            data: message.into().into_bytes(),
        }
    }

    /// `F00 NotAcceptedError`.
    pub fn not_accepted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::F00_NOT_ACCEPTED, message)
    }

    /// `F01 InvalidFieldsError`.
    pub fn invalid_fields(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::F01_INVALID_FIELDS, message)
    }

    /// `T00 UnreachableError`.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::T00_UNREACHABLE, message)
    }

    fn from_packet(p: &ErrorPacket<'_>) -> Self {
        ErrorReply {
            code: p.code(),
            name: p.name().to_string(),
            data: p.data().to_vec(),
        }
    }

    /// The encoded BTP Error answering `request_id`. Names that are not IA5 and data over
    /// the 8192-byte limit are replaced or cut rather than failing: an answer must go out.
    pub fn to_frame(&self, request_id: u32) -> Vec<u8> {
        let name = if self.name.is_ascii() {
            self.name.as_str()
        } else {
            "NotAcceptedError"
        };
        let data = &self.data[..self.data.len().min(crate::btp::codec::MAX_ERROR_DATA_LEN)];
        let built = ErrorPacketBuilder {
            request_id,
            code: self.code,
            name,
            triggered_at: Timestamp::now(),
            data,
            protocol_data: ProtocolData::EMPTY,
        }
        .build();
        match built {
            Ok(p) => Packet::Error(p).to_bytes(),
            Err(_) => ErrorReply::not_accepted("").to_frame(request_id),
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.code,
            self.name,
            String::from_utf8_lossy(&self.data)
        )
    }
}

/// What a handler answers to an incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A Response carrying these entries (often just [`OwnedEntry::ilp`]).
    Response(Vec<OwnedEntry>),
    /// A BTP Error.
    Error(ErrorReply),
}

/// Replies with at most this many entries are encoded without a buffer of their own.
const INLINE_ENTRIES: usize = 8;

impl Reply {
    /// The encoded reply to request `request_id`.
    pub fn to_frame(&self, request_id: u32) -> Vec<u8> {
        match self {
            Reply::Response(entries) => {
                let borrowed: Vec<ProtocolDataEntry<'_>> =
                    entries.iter().map(OwnedEntry::as_entry).collect();
                match ProtocolData::new(&borrowed) {
                    Ok(pd) => Packet::Response(Response::new(request_id, pd)).to_bytes(),
                    Err(e) => {
                        log::error!("BTP handler built a bad response ({e}); sending an Error");
                        ErrorReply::not_accepted(format!("bad response: {e}")).to_frame(request_id)
                    }
                }
            }
            Reply::Error(e) => e.to_frame(request_id),
        }
    }

    /// Sends the reply to request `request_id` on `conn`, a Response encoded in place in its
    /// write queue. One over the frame size cap goes out as `T00` instead.
    pub(crate) fn send(&self, conn: &Connection, request_id: u32) -> Result<(), TransportError> {
        let entries = match self {
            Reply::Response(entries) => entries,
            Reply::Error(e) => return send_error(conn, e, request_id),
        };
        if entries.len() > INLINE_ENTRIES {
            let borrowed: Vec<ProtocolDataEntry<'_>> =
                entries.iter().map(OwnedEntry::as_entry).collect();
            return send_response(conn, request_id, &borrowed);
        }
        let mut inline = [ProtocolDataEntry::octets("", &[]); INLINE_ENTRIES];
        for (slot, entry) in inline.iter_mut().zip(entries) {
            *slot = entry.as_entry();
        }
        send_response(conn, request_id, &inline[..entries.len()])
    }
}

fn send_response(
    conn: &Connection,
    request_id: u32,
    entries: &[ProtocolDataEntry<'_>],
) -> Result<(), TransportError> {
    match ProtocolData::new(entries) {
        Ok(protocol_data) => {
            let response = Response::new(request_id, protocol_data);
            let len = response.encoded_len();
            if len > conn.config().max_frame_size {
                let too_big = ErrorReply::unreachable("reply exceeds the frame size cap");
                return send_error(conn, &too_big, request_id);
            }
            conn.send_with(len, |out| response.write_to(out))
        }
        Err(e) => {
            log::error!("BTP handler built a bad response ({e}); sending an Error");
            let bad = ErrorReply::not_accepted(format!("bad response: {e}"));
            send_error(conn, &bad, request_id)
        }
    }
}

fn send_error(
    conn: &Connection,
    error: &ErrorReply,
    request_id: u32,
) -> Result<(), TransportError> {
    let mut frame = error.to_frame(request_id);
    if frame.len() > conn.config().max_frame_size {
        frame = ErrorReply::unreachable("reply exceeds the frame size cap").to_frame(request_id);
    }
    conn.send_frame(frame)
}

/// A Response received for one of our requests (its bytes, already checked to parse).
#[derive(Clone, PartialEq, Eq)]
pub struct ResponseFrame {
    bytes: Vec<u8>,
}

impl ResponseFrame {
    /// The parsed Response.
    pub fn response(&self) -> Response<'_> {
        // Checked in `interpret_reply`; parsing is deterministic.
        Response::parse(&self.bytes).expect("response frame was validated when received")
    }

    /// Its protocol data.
    pub fn protocol_data(&self) -> ProtocolData<'_> {
        self.response().protocol_data()
    }

    /// The `ilp` entry, if any.
    pub fn ilp(&self) -> Option<&[u8]> {
        self.response().protocol_data().ilp()
    }

    /// The raw frame.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for ResponseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResponseFrame")
            .field(&self.response())
            .finish()
    }
}

/// Why a request got no Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The connection failed, was closed, or the request timed out.
    Transport(TransportError),
    /// The peer answered with a BTP Error.
    Rejected(ErrorReply),
    /// The peer's answer did not parse.
    MalformedReply(ParseError),
    /// The protocol data given cannot be encoded.
    Build(BuildError),
    /// There is no connection to send on (client reconnecting, account not connected).
    NotConnected(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Transport(e) => e.fmt(f),
            RequestError::Rejected(e) => write!(f, "peer answered with BTP Error {e}"),
            RequestError::MalformedReply(e) => write!(f, "peer's reply does not parse: {e}"),
            RequestError::Build(e) => write!(f, "cannot encode request: {e}"),
            RequestError::NotConnected(who) => write!(f, "not connected to {who}"),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<TransportError> for RequestError {
    fn from(e: TransportError) -> Self {
        RequestError::Transport(e)
    }
}

/// Reads a reply frame the connection matched to our request.
pub(crate) fn interpret_reply(frame: Vec<u8>) -> Result<ResponseFrame, RequestError> {
    check_reply(&frame)?;
    Ok(ResponseFrame { bytes: frame })
}

/// `Ok` when `frame` is a Response; the error it stands for otherwise.
fn check_reply(frame: &[u8]) -> Result<(), RequestError> {
    match Packet::parse(frame) {
        Ok(Packet::Response(_)) => Ok(()),
        Ok(Packet::Error(e)) => Err(RequestError::Rejected(ErrorReply::from_packet(&e))),
        // The connection only matches frames whose type byte is Response or Error.
        Ok(other) => Err(RequestError::Transport(TransportError::Closed(
            super::connection::CloseReason::Protocol(format!(
                "{:?} where a reply was due",
                other.packet_type()
            )),
        ))),
        Err(e) => Err(RequestError::MalformedReply(e)),
    }
}

/// Sends a Message (or a Transfer of `amount`, when given) with `entries` and waits for its
/// Response. `timeout` defaults to the connection's `request_timeout`.
pub fn send_request(
    conn: &Connection,
    entries: &[ProtocolDataEntry<'_>],
    amount: Option<u64>,
    timeout: Option<Duration>,
) -> Result<ResponseFrame, RequestError> {
    let mut reply = Vec::new();
    send_request_into(conn, entries, amount, timeout, &mut reply)?;
    Ok(ResponseFrame { bytes: reply })
}

/// Like [`send_request`], without allocating: the request is encoded in place in the
/// connection's write queue and the Response frame is left in `reply`, whose capacity is
/// reused (read it with [`Response::parse`]).
pub fn send_request_into(
    conn: &Connection,
    entries: &[ProtocolDataEntry<'_>],
    amount: Option<u64>,
    timeout: Option<Duration>,
    reply: &mut Vec<u8>,
) -> Result<(), RequestError> {
    let protocol_data = ProtocolData::new(entries).map_err(RequestError::Build)?;
    let packet = |id| match amount {
        None => Packet::Message(Message::new(id, protocol_data)),
        Some(amount) => Packet::Transfer(Transfer::new(id, amount, protocol_data)),
    };
    let len = packet(0).encoded_len();
    conn.request_with(len, |id, out| packet(id).write_to(out), reply, timeout)?;
    check_reply(reply)
}

/// Sends a Message (or a Transfer of `amount`) with `entries` without waiting for its Response:
/// several can be in flight from one thread (see [`Connection::submit_with`]); collect each
/// with [`PendingResponse::wait`]. The request is queued, not yet written: it leaves with the
/// next write on the connection, [`PendingResponse::flush`], or at the latest its `wait`.
pub fn submit_request(
    conn: &Connection,
    entries: &[ProtocolDataEntry<'_>],
    amount: Option<u64>,
    timeout: Option<Duration>,
) -> Result<PendingResponse, RequestError> {
    let protocol_data = ProtocolData::new(entries).map_err(RequestError::Build)?;
    let packet = |id| match amount {
        None => Packet::Message(Message::new(id, protocol_data)),
        Some(amount) => Packet::Transfer(Transfer::new(id, amount, protocol_data)),
    };
    let len = packet(0).encoded_len();
    let submitted = conn.submit_with(len, |id, out| packet(id).write_to(out), timeout)?;
    Ok(PendingResponse(submitted))
}

/// A request sent by [`submit_request`], its Response still to come.
#[derive(Debug)]
#[must_use = "a submitted request's Response is only read by waiting for it"]
pub struct PendingResponse(Submitted);

impl PendingResponse {
    /// The requestId the request went out with.
    pub fn request_id(&self) -> u32 {
        self.0.request_id()
    }

    /// Whether [`PendingResponse::wait`] would return at once (see [`Submitted::is_ready`]).
    pub fn is_ready(&self) -> bool {
        self.0.is_ready()
    }

    /// Writes the request now if it is still queued (see [`submit_request`]).
    pub fn flush(&self) -> Result<(), RequestError> {
        Ok(self.0.flush()?)
    }

    /// Waits for the Response (a BTP Error becomes [`RequestError::Rejected`]).
    pub fn wait(self) -> Result<ResponseFrame, RequestError> {
        let mut reply = Vec::new();
        self.0.wait_into(&mut reply)?;
        check_reply(&reply)?;
        Ok(ResponseFrame { bytes: reply })
    }
}

/// Answers incoming Messages and Transfers. Runs on one of the connection's threads or a handler
/// pool thread, never on the only thread reading; it may block (and may send requests of its
/// own, on this connection or others).
pub trait RequestHandler: Send + Sync + 'static {
    /// The reply to `request`, a [`Packet::Message`] or [`Packet::Transfer`].
    fn handle(&self, request: &Packet<'_>) -> Reply;
}

impl<F> RequestHandler for F
where
    F: Fn(&Packet<'_>) -> Reply + Send + Sync + 'static,
{
    fn handle(&self, request: &Packet<'_>) -> Reply {
        self(request)
    }
}

/// A handler that refuses everything with `F00 "no request handler registered"`, as the JS
/// plugin does.
pub fn no_handler() -> Arc<dyn RequestHandler> {
    Arc::new(|_: &Packet<'_>| {
        Reply::Error(ErrorReply::not_accepted("no request handler registered"))
    })
}

/// Turns a typed handler into the connection's raw frame handler: parses the request, calls the
/// handler, writes the reply (in place in the connection's write queue). A request that does
/// not parse but whose requestId can be read gets `F01 InvalidFieldsError` and the connection
/// stays open (see the module docs of [`connection`](super::connection)).
pub(crate) fn frame_handler(handler: Arc<dyn RequestHandler>) -> FrameHandler {
    Arc::new(move |conn: &Connection, frame: &[u8]| {
        let request_id = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        let reply = match Packet::parse(frame) {
            Ok(p @ (Packet::Message(_) | Packet::Transfer(_))) => handler.handle(&p),
            Ok(other) => {
                log::debug!(
                    "BTP {}: unexpected {:?} ignored",
                    conn.peer(),
                    other.packet_type()
                );
                return;
            }
            Err(e) => {
                log::debug!("BTP {}: unreadable request {request_id}: {e}", conn.peer());
                Reply::Error(ErrorReply::invalid_fields(format!(
                    "unreadable BTP packet: {e}"
                )))
            }
        };
        if let Err(e) = reply.send(conn, request_id) {
            log::debug!("BTP {}: reply to {request_id} not sent: {e}", conn.peer());
        }
    })
}
