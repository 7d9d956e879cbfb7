//! The read side of a connection: the socket and its [`FrameReader`], turned into BTP events
//! (a reply with its requestId, a request, the end), with pings answered, the peer's close
//! answered, and the keepalive kept on the way.
//!
//! One [`Reader`] exists per connection and only the thread holding it reads the socket; it
//! moves between threads (see [`super::turns`]), which is why the keepalive state lives here.
//!
//! # Keepalive
//! The socket carries a read timeout (`SO_RCVTIMEO`) of `ping_interval`: a read that waits that
//! long without a byte means the peer has been silent, and a ping goes out; then the timeout is
//! `pong_timeout`, and a second silent read drops the peer. Any frame proves the peer alive. The
//! timeout is set again only when it must change (a ping went out or was answered, or a
//! caller's own deadline is nearer), so a busy connection spends neither a system call nor a
//! clock reading per frame on it, and an idle one wakes once per `ping_interval`.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::config::CloseReason;
use super::wire::{
    Frame, FrameReader, Payload, WireError, CLOSE_AWAY, CLOSE_NORMAL, OP_PING, OP_PONG,
};
use super::Connection;

/// BTP packet type bytes the transport needs to route frames (RFC 23; the codec owns the rest).
const TYPE_RESPONSE: u8 = 1;
const TYPE_ERROR: u8 = 2;

/// How long a reader waits, at most.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Until {
    /// As long as it takes (a connection's own thread).
    Forever,
    /// Until a caller's request times out.
    Deadline(Instant),
    /// Not at all: only frames already read from the socket.
    Buffered,
}

/// What the reader read.
#[derive(Debug)]
pub(crate) enum Event {
    /// A Response or Error: a reply to the request `request_id`.
    Reply { request_id: u32, frame: Payload },
    /// Any other BTP frame of at least 5 bytes (a Message, a Transfer, or garbage for the
    /// request handler to answer).
    Request(Payload),
    /// [`Until::Deadline`] passed.
    TimedOut,
    /// [`Until::Buffered`]: nothing more is buffered.
    Drained,
    /// The connection is over.
    Ended(CloseReason),
}

/// One frame read during the server's auth phase.
pub(crate) enum FirstFrame {
    Binary(Vec<u8>),
    TimedOut,
    Closed(CloseReason),
}

/// See the module docs.
pub(crate) struct Reader {
    socket: Arc<TcpStream>,
    frames: FrameReader,
    ping_interval: Duration,
    pong_timeout: Duration,
    /// The read timeout the socket carries now, if known.
    armed: Option<Duration>,
    /// A ping went out and nothing has come since.
    ping_out: bool,
    /// Replies read since the peer last sent a request (saturating).
    replies_since_request: u32,
    /// Never sent on: dropped with the reader, which tells `closed_signal` the connection ended.
    _done: Sender<()>,
}

/// Replies in a row after which the peer counts as one that only answers.
const ANSWERING_PEER_AFTER: u32 = 16;

impl Reader {
    /// The reader of `socket`; a server (`!client`) expects masked frames. `done` is dropped
    /// with it.
    pub(crate) fn new(
        socket: Arc<TcpStream>,
        client: bool,
        max_frame_size: usize,
        ping_interval: Duration,
        pong_timeout: Duration,
        done: Sender<()>,
    ) -> Self {
        Reader {
            socket,
            frames: FrameReader::new(!client, max_frame_size),
            ping_interval,
            pong_timeout,
            armed: None,
            ping_out: false,
            replies_since_request: ANSWERING_PEER_AFTER,
            _done: done,
        }
    }

    /// The bytes of a frame the last event pointed to.
    pub(crate) fn payload(&self, payload: &Payload) -> &[u8] {
        self.frames.payload(payload)
    }

    /// Whether the peer has sent requests lately (rather than only answering ours).
    pub(crate) fn peer_sends_requests(&self) -> bool {
        self.replies_since_request < ANSWERING_PEER_AFTER
    }

    /// Reads the next BTP frame of `conn`, waiting as `until` says.
    pub(crate) fn next_event(&mut self, conn: &Connection, until: Until) -> Event {
        loop {
            if matches!(until, Until::Buffered) && !self.frames.has_buffered_frame() {
                return Event::Drained;
            }
            let frame = match self.frames.next() {
                Ok(Some(frame)) => frame,
                Ok(None) => match self.read_more(conn, until) {
                    Ok(()) => continue,
                    Err(event) => return event,
                },
                Err(e) => return Event::Ended(self.refuse(conn, e)),
            };
            // Anything from the peer proves it alive.
            self.ping_out = false;
            match frame {
                Frame::Binary(payload) => {
                    let bytes = self.frames.payload(&payload);
                    if bytes.len() < 5 {
                        log::debug!(
                            "BTP {}: {}-byte frame has no requestId, dropped",
                            conn.peer(),
                            bytes.len()
                        );
                        continue;
                    }
                    let request_id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                    if matches!(bytes[0], TYPE_RESPONSE | TYPE_ERROR) {
                        self.replies_since_request = self.replies_since_request.saturating_add(1);
                        return Event::Reply {
                            request_id,
                            frame: payload,
                        };
                    }
                    self.replies_since_request = 0;
                    return Event::Request(payload);
                }
                Frame::Text => {
                    log::debug!("BTP {}: text frame ignored (BTP is binary)", conn.peer());
                }
                Frame::Ping(payload) => {
                    // Once our close frame went out, pongs have nowhere to go: read on to the end.
                    let _ = conn
                        .inner
                        .writer
                        .send_control(OP_PONG, self.frames.payload(&payload));
                }
                Frame::Pong => {}
                Frame::Close(code) => return Event::Ended(self.peer_closed(conn, code)),
            }
        }
    }

    /// Reads more bytes, after arming the timeout `until` needs; `Err` with the event that
    /// ends the wait.
    fn read_more(&mut self, conn: &Connection, until: Until) -> Result<(), Event> {
        let keepalive = if self.ping_out {
            self.pong_timeout
        } else {
            self.ping_interval
        };
        let (timeout, for_keepalive) = match until {
            Until::Deadline(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Event::TimedOut);
                }
                if left < keepalive {
                    (left, false)
                } else {
                    (keepalive, true)
                }
            }
            _ => (keepalive, true),
        };
        // Re-armed only when it changes, and for a caller's deadline only when the armed wait
        // would run past it.
        let rearm = match self.armed {
            None => true,
            Some(armed) if for_keepalive => armed != timeout,
            Some(armed) => armed > timeout,
        };
        if rearm {
            let timeout = timeout.max(Duration::from_millis(1));
            if let Err(e) = self.socket.set_read_timeout(Some(timeout)) {
                return Err(Event::Ended(CloseReason::Io(e.to_string())));
            }
            self.armed = Some(timeout);
        }
        match self.frames.fill(&*self.socket) {
            Ok(0) => Err(Event::Ended(self.end_of_stream(conn))),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => {
                if !for_keepalive {
                    // The caller's deadline, or near it: the next pass tells.
                    return Ok(());
                }
                if self.ping_out {
                    conn.inner.writer.close(CLOSE_AWAY, "ping timeout");
                    return Err(Event::Ended(CloseReason::PongTimeout));
                }
                if let Err(e) = conn.inner.writer.send_control(OP_PING, &[]) {
                    return Err(Event::Ended(conn.close_reason().unwrap_or(e)));
                }
                self.ping_out = true;
                Ok(())
            }
            Err(e) => Err(Event::Ended(self.read_failed(conn, e))),
        }
    }

    /// Reads until a binary frame arrives (text, ping and pong frames are skipped) or
    /// `deadline` passes; each read waits no longer than what is left, so a peer trickling
    /// bytes cannot hold the thread past it. For the server's auth phase.
    pub(crate) fn first_binary(&mut self, conn: &Connection, deadline: Instant) -> FirstFrame {
        let frame = loop {
            match self.frames.next() {
                Ok(Some(Frame::Binary(payload))) => {
                    break FirstFrame::Binary(self.frames.payload(&payload).to_vec())
                }
                Ok(Some(Frame::Close(code))) => {
                    break FirstFrame::Closed(self.peer_closed(conn, code))
                }
                Ok(Some(Frame::Ping(payload))) => {
                    let _ = conn
                        .inner
                        .writer
                        .send_control(OP_PONG, self.frames.payload(&payload));
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break FirstFrame::TimedOut;
                    }
                    if let Err(e) = self.socket.set_read_timeout(Some(left)) {
                        break FirstFrame::Closed(CloseReason::Io(e.to_string()));
                    }
                    match self.frames.fill(&*self.socket) {
                        Ok(0) => break FirstFrame::Closed(self.end_of_stream(conn)),
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(e) => break FirstFrame::Closed(self.read_failed(conn, e)),
                    }
                }
                Err(e) => break FirstFrame::Closed(self.refuse(conn, e)),
            }
        };
        // The keepalive arms its own timeout from now on.
        self.armed = None;
        frame
    }

    /// The peer sent a close frame: answer it (RFC 6455 §5.5.1), unless ours went out first.
    fn peer_closed(&self, conn: &Connection, code: Option<u16>) -> CloseReason {
        let ours = conn.inner.writer.is_closed();
        if !ours {
            conn.inner.writer.close(code.unwrap_or(CLOSE_NORMAL), "");
        }
        // Our own close frame went out first when the writer is closed: `close()` may not
        // have recorded its reason yet.
        if ours || conn.close_reason().is_some() {
            CloseReason::Local
        } else {
            CloseReason::PeerClosed
        }
    }

    /// The stream ended without a close frame (or after ours).
    fn end_of_stream(&self, conn: &Connection) -> CloseReason {
        if conn.closed_by_us() {
            CloseReason::Local
        } else {
            CloseReason::PeerClosed
        }
    }

    fn read_failed(&self, conn: &Connection, e: io::Error) -> CloseReason {
        if conn.closed_by_us() {
            return CloseReason::Local;
        }
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe => CloseReason::PeerClosed,
            _ => CloseReason::Io(e.to_string()),
        }
    }

    /// The peer broke the WebSocket protocol: a close frame saying how, and why it ended.
    fn refuse(&self, conn: &Connection, e: WireError) -> CloseReason {
        let reason = match &e {
            WireError::TooLarge { size, max } => CloseReason::FrameTooLarge {
                size: usize::try_from(*size).unwrap_or(usize::MAX),
                max: *max,
            },
            WireError::InvalidText => {
                CloseReason::Protocol("a text message that is not UTF-8".into())
            }
            WireError::Protocol(why) => CloseReason::Protocol((*why).into()),
        };
        let text = match &e {
            WireError::TooLarge { .. } => "message too big",
            WireError::InvalidText => "invalid UTF-8",
            WireError::Protocol(_) => "protocol error",
        };
        conn.inner.writer.close(e.close_code(), text);
        reason
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::super::testing::raw;
    use super::super::wire::{
        apply_mask, write_header, CLOSE_PROTOCOL, OP_BINARY, OP_CLOSE, OP_TEXT,
    };
    use super::super::ConnectionConfig;
    use super::*;

    /// A frame as a client sends it (masked).
    fn from_client(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = Vec::new();
        write_header(&mut out, opcode, payload.len(), Some(mask));
        let at = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[at..], mask);
        out
    }

    /// The next frame the peer reads from us (unmasked, as a server sends): opcode, payload.
    fn read_from_server(peer: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        peer.read_exact(&mut head).unwrap();
        assert_eq!(head[1] & 0x80, 0, "a server does not mask");
        let mut payload = vec![0; usize::from(head[1] & 0x7F)];
        peer.read_exact(&mut payload).unwrap();
        (head[0] & 0x0F, payload)
    }

    fn btp(type_byte: u8, id: u32, rest: &[u8]) -> Vec<u8> {
        let mut frame = vec![type_byte];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(rest);
        frame
    }

    #[test]
    fn replies_and_requests_are_told_apart_and_the_rest_skipped() {
        let (conn, mut reader, mut peer) = raw(false, ConnectionConfig::default());
        let mut bytes = from_client(OP_BINARY, &[6, 0]); // too short for a requestId: dropped
        bytes.extend(from_client(OP_TEXT, b"ignored"));
        bytes.extend(from_client(OP_BINARY, &btp(1, 7, b"response")));
        bytes.extend(from_client(OP_BINARY, &btp(2, 8, b"error")));
        bytes.extend(from_client(OP_BINARY, &btp(6, 9, b"message")));
        peer.write_all(&bytes).unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            match reader.next_event(&conn, Until::Forever) {
                Event::Reply { request_id, frame } => {
                    seen.push(("reply", request_id, reader.payload(&frame).to_vec()))
                }
                Event::Request(frame) => seen.push(("request", 0, reader.payload(&frame).to_vec())),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            vec![
                ("reply", 7, btp(1, 7, b"response")),
                ("reply", 8, btp(2, 8, b"error")),
                ("request", 0, btp(6, 9, b"message")),
            ]
        );
        assert!(reader.peer_sends_requests());
    }

    #[test]
    fn a_ping_is_answered_with_its_payload() {
        let (conn, mut reader, mut peer) = raw(false, ConnectionConfig::default());
        let mut bytes = from_client(OP_PING, b"are you there");
        bytes.extend(from_client(OP_BINARY, &btp(6, 1, b"")));
        peer.write_all(&bytes).unwrap();
        assert!(matches!(
            reader.next_event(&conn, Until::Forever),
            Event::Request(_)
        ));
        assert_eq!(
            read_from_server(&mut peer),
            (OP_PONG, b"are you there".to_vec())
        );
    }

    #[test]
    fn a_close_is_answered_with_its_code_and_ends_the_connection() {
        let (conn, mut reader, mut peer) = raw(false, ConnectionConfig::default());
        peer.write_all(&from_client(OP_CLOSE, &1001u16.to_be_bytes()))
            .unwrap();
        assert!(matches!(
            reader.next_event(&conn, Until::Forever),
            Event::Ended(CloseReason::PeerClosed)
        ));
        assert_eq!(
            read_from_server(&mut peer),
            (OP_CLOSE, 1001u16.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn a_protocol_error_ends_the_connection_with_close_1002() {
        let (conn, mut reader, mut peer) = raw(false, ConnectionConfig::default());
        // Unmasked, from a client.
        peer.write_all(&[0x82, 0x01, 0x00]).unwrap();
        match reader.next_event(&conn, Until::Forever) {
            Event::Ended(CloseReason::Protocol(why)) => {
                assert_eq!(why, "an unmasked frame from the client")
            }
            other => panic!("{other:?}"),
        }
        let (opcode, payload) = read_from_server(&mut peer);
        assert_eq!(opcode, OP_CLOSE);
        assert_eq!(payload[..2], CLOSE_PROTOCOL.to_be_bytes());
    }

    #[test]
    fn a_silent_peer_is_pinged_then_dropped() {
        let config = ConnectionConfig {
            ping_interval: Duration::from_millis(50),
            pong_timeout: Duration::from_millis(100),
            ..ConnectionConfig::default()
        };
        let (conn, mut reader, mut peer) = raw(false, config);
        let started = Instant::now();
        assert!(matches!(
            reader.next_event(&conn, Until::Forever),
            Event::Ended(CloseReason::PongTimeout)
        ));
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(read_from_server(&mut peer), (OP_PING, Vec::new()));
        let (opcode, payload) = read_from_server(&mut peer);
        assert_eq!(
            (opcode, &payload[..2]),
            (OP_CLOSE, &CLOSE_AWAY.to_be_bytes()[..])
        );
    }

    #[test]
    fn a_pong_keeps_the_peer_and_pings_go_on() {
        let config = ConnectionConfig {
            ping_interval: Duration::from_millis(30),
            pong_timeout: Duration::from_millis(60),
            ..ConnectionConfig::default()
        };
        let (conn, mut reader, mut peer) = raw(false, config);
        let answering = std::thread::spawn(move || {
            // Answer three pings, then send a request.
            for _ in 0..3 {
                assert_eq!(read_from_server(&mut peer), (OP_PING, Vec::new()));
                peer.write_all(&from_client(OP_PONG, b"")).unwrap();
            }
            peer.write_all(&from_client(OP_BINARY, &btp(6, 5, b"")))
                .unwrap();
            peer
        });
        assert!(matches!(
            reader.next_event(&conn, Until::Forever),
            Event::Request(_)
        ));
        drop(answering.join().unwrap());
    }

    #[test]
    fn a_deadline_ends_the_wait_without_a_ping() {
        let (conn, mut reader, mut peer) = raw(false, ConnectionConfig::default());
        let started = Instant::now();
        assert!(matches!(
            reader.next_event(&conn, Until::Deadline(started + Duration::from_millis(50))),
            Event::TimedOut
        ));
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Nothing was written: the next thing the peer reads is the close frame.
        conn.begin_close();
        let (opcode, _) = read_from_server(&mut peer);
        assert_eq!(opcode, OP_CLOSE);
    }

    #[test]
    fn buffered_reads_only_what_is_already_there() {
        let (conn, mut reader, mut peer) = raw(false, ConnectionConfig::default());
        let mut bytes = from_client(OP_BINARY, &btp(1, 1, b""));
        bytes.extend(from_client(OP_BINARY, &btp(1, 2, b"")));
        peer.write_all(&bytes).unwrap();
        let mut ids = Vec::new();
        while ids.len() < 2 {
            match reader.next_event(&conn, Until::Forever) {
                Event::Reply { request_id, .. } => ids.push(request_id),
                other => panic!("{other:?}"),
            }
            // Both frames came in one read: the second is buffered once the first is out.
            if ids.len() == 1 && reader.frames.has_buffered_frame() {
                match reader.next_event(&conn, Until::Buffered) {
                    Event::Reply { request_id, .. } => ids.push(request_id),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(ids, vec![1, 2]);
        assert!(matches!(
            reader.next_event(&conn, Until::Buffered),
            Event::Drained
        ));
    }

    #[test]
    fn the_auth_phase_reads_one_binary_frame_within_its_deadline() {
        let (conn, mut reader, mut peer) = raw(false, ConnectionConfig::default());
        let mut bytes = from_client(OP_PING, b"");
        bytes.extend(from_client(OP_BINARY, b"auth"));
        peer.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        assert!(matches!(
            reader.first_binary(&conn, deadline),
            FirstFrame::Binary(b) if b == b"auth"
        ));
        assert!(matches!(
            reader.first_binary(&conn, Instant::now() + Duration::from_millis(50)),
            FirstFrame::TimedOut
        ));
    }
}
