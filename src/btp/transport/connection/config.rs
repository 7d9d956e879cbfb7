//! A connection's settings, and what it reports when it ends or a request fails.

use std::fmt;
use std::time::Duration;

use tungstenite::protocol::WebSocketConfig;

/// Tunables of one connection. The defaults follow the JS `ilp-plugin-btp`.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// How long a request waits for its Response or Error (JS: 35 s).
    pub request_timeout: Duration,
    /// How long the peer may stay silent before it is pinged (the JS client pings every 20 s).
    pub ping_interval: Duration,
    /// How long after a ping the peer may stay silent before it is dropped.
    pub pong_timeout: Duration,
    /// How long one frame write may block before the peer is declared dead.
    pub write_timeout: Duration,
    /// Largest WebSocket message or frame accepted or sent, in bytes.
    pub max_frame_size: usize,
    /// Most requests in flight at once on this connection.
    pub max_pending_requests: usize,
    /// How long `close()` waits for the peer's close reply before cutting the socket.
    pub close_timeout: Duration,
    /// How long the WebSocket (HTTP upgrade) handshake may take.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            request_timeout: Duration::from_secs(35),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
            max_frame_size: 1 << 20,
            max_pending_requests: 4096,
            close_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionConfig {
    pub(crate) fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig {
            max_message_size: Some(self.max_frame_size),
            max_frame_size: Some(self.max_frame_size),
            ..WebSocketConfig::default()
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed it.
    Local,
    /// The peer closed it (close frame or end of stream).
    PeerClosed,
    /// The peer did not answer a keepalive ping in time.
    PongTimeout,
    /// The peer sent a message bigger than `max_frame_size`.
    FrameTooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// A socket error (reset, write timeout...).
    Io(String),
    /// The peer broke the WebSocket protocol.
    Protocol(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by this side"),
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::PongTimeout => f.write_str("peer did not answer a keepalive ping"),
            CloseReason::FrameTooLarge { size, max } => {
                write!(f, "peer sent a {size}-byte message (at most {max})")
            }
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Protocol(e) => write!(f, "WebSocket protocol error: {e}"),
        }
    }
}

/// Why a request or a frame could not be sent or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The connection is closed (or closed while the request waited).
    Closed(CloseReason),
    /// No Response or Error arrived in time.
    Timeout {
        /// The request's id.
        request_id: u32,
        /// How long it waited.
        after: Duration,
    },
    /// The frame is bigger than `max_frame_size`; nothing was written.
    FrameTooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// `max_pending_requests` requests are already in flight.
    TooManyPending {
        /// The cap.
        max: usize,
    },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Closed(r) => write!(f, "BTP connection closed: {r}"),
            TransportError::Timeout { request_id, after } => write!(
                f,
                "BTP request {request_id} got no response within {} ms",
                after.as_millis()
            ),
            TransportError::FrameTooLarge { size, max } => {
                write!(f, "BTP frame of {size} bytes exceeds the {max}-byte cap")
            }
            TransportError::TooManyPending { max } => {
                write!(f, "{max} BTP requests already in flight on this connection")
            }
        }
    }
}

impl std::error::Error for TransportError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_js_plugin() {
        let config = ConnectionConfig::default();
        assert_eq!(config.request_timeout, Duration::from_secs(35));
        assert_eq!(config.ping_interval, Duration::from_secs(20));
        assert_eq!(config.max_frame_size, 1 << 20);
        let ws = config.websocket_config();
        assert_eq!(ws.max_frame_size, Some(1 << 20));
        assert_eq!(ws.max_message_size, Some(1 << 20));
    }

    #[test]
    fn errors_say_what_happened() {
        let timeout = TransportError::Timeout {
            request_id: 7,
            after: Duration::from_millis(200),
        };
        assert_eq!(
            timeout.to_string(),
            "BTP request 7 got no response within 200 ms"
        );
        let closed = TransportError::Closed(CloseReason::FrameTooLarge { size: 9, max: 8 });
        assert_eq!(
            closed.to_string(),
            "BTP connection closed: peer sent a 9-byte message (at most 8)"
        );
        assert_eq!(
            TransportError::TooManyPending { max: 3 }.to_string(),
            "3 BTP requests already in flight on this connection"
        );
    }
}
