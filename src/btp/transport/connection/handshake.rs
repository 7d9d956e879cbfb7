//! A TCP stream made ready for a BTP connection, and the stream tungstenite runs the WebSocket
//! handshake (the HTTP upgrade) on.
//!
//! After the handshake the connection reads frames itself ([`super::wire`]), so tungstenite must
//! not read a byte past the end of the upgrade's headers: a peer may send its first frames in
//! the same packet (a server its first ping, a hasty client its auth message), and bytes left
//! in tungstenite's buffer would be lost. [`HandshakeIo`] therefore peeks first and hands
//! tungstenite at most up to the blank line that ends the headers. (An upgrade request or a
//! 101 response has no body.)

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use super::config::ConnectionConfig;
use super::writer::FrameWriter;

/// The end of HTTP headers.
const HEADERS_END: &[u8; 4] = b"\r\n\r\n";

/// The stream tungstenite's handshake runs on: reads that stop at the end of the headers and
/// at the handshake's deadline, writes through the connection's [`FrameWriter`].
pub(crate) struct HandshakeIo {
    socket: Arc<TcpStream>,
    writer: Arc<FrameWriter>,
    /// No read may end after it: a peer trickling one byte at a time cannot hold a thread past
    /// it, as a per-read timeout alone would allow.
    deadline: Instant,
    /// How many bytes of [`HEADERS_END`] the bytes read so far end with.
    matched: usize,
}

impl Read for HandshakeIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.socket.set_read_timeout(Some(left))?;
        let peeked = self.socket.peek(buf)?;
        let mut take = peeked;
        for (i, &byte) in buf[..peeked].iter().enumerate() {
            self.matched = if byte == HEADERS_END[self.matched] {
                self.matched + 1
            } else if byte == HEADERS_END[0] {
                1
            } else {
                0
            };
            if self.matched == HEADERS_END.len() {
                self.matched = 0;
                take = i + 1;
                break;
            }
        }
        // Already in the socket's buffer: this read does not wait.
        (&*self.socket).read_exact(&mut buf[..take])?;
        Ok(take)
    }
}

impl Write for HandshakeIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write_raw(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TCP stream prepared for a BTP connection (`TCP_NODELAY`, write timeout) and the writer all
/// its frames will go through. [`Prepared::new`] also returns the [`HandshakeIo`] to run the
/// tungstenite handshake on; once it succeeds, the `Prepared` goes to
/// [`Connection::start`](super::Connection::start).
pub(crate) struct Prepared {
    pub(super) writer: Arc<FrameWriter>,
    pub(super) socket: Arc<TcpStream>,
    /// Which side this is: a client masks what it writes and reads unmasked frames.
    pub(super) client: bool,
}

impl Prepared {
    /// Prepares `stream` for the client side (`client`) or the server side.
    #[cfg(test)]
    pub(crate) fn new(
        stream: TcpStream,
        client: bool,
        config: &ConnectionConfig,
    ) -> io::Result<(HandshakeIo, Prepared)> {
        Prepared::shared(Arc::new(stream), client, config)
    }

    /// As [`Prepared::new`], for a socket its owner also holds (to cut it), without a second
    /// descriptor.
    pub(crate) fn shared(
        socket: Arc<TcpStream>,
        client: bool,
        config: &ConnectionConfig,
    ) -> io::Result<(HandshakeIo, Prepared)> {
        socket.set_nodelay(true)?;
        socket.set_write_timeout(Some(config.write_timeout))?;
        let writer = Arc::new(FrameWriter::new(socket.clone(), client));
        let io = HandshakeIo {
            socket: socket.clone(),
            writer: writer.clone(),
            deadline: super::deadline_after(config.handshake_timeout),
            matched: 0,
        };
        Ok((
            io,
            Prepared {
                writer,
                socket,
                client,
            },
        ))
    }

    /// Cuts the socket (e.g. to stop a handshake that is taking too long).
    pub(crate) fn shutdown(&self) {
        self.writer.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    /// Our side of a loopback pair run through `Prepared`, and the peer's plain stream.
    fn prepared_pair(handshake_timeout: Duration) -> (HandshakeIo, Prepared, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let config = ConnectionConfig {
            handshake_timeout,
            ..ConnectionConfig::default()
        };
        let (io, prepared) = Prepared::new(ours, false, &config).unwrap();
        (io, prepared, peer)
    }

    #[test]
    fn reads_stop_at_the_end_of_the_headers() {
        let (mut io, prepared, mut peer) = prepared_pair(Duration::from_secs(20));
        // Headers, then the first bytes of a frame, all in one write.
        peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x82\x85")
            .unwrap();
        let mut headers = Vec::new();
        let mut buf = [0u8; 7];
        while !headers.ends_with(HEADERS_END) {
            let n = io.read(&mut buf).unwrap();
            assert!(n > 0);
            headers.extend_from_slice(&buf[..n]);
        }
        assert_eq!(headers, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // What follows is still in the socket, for the frame reader.
        let mut rest = [0u8; 2];
        (&*prepared.socket).read_exact(&mut rest).unwrap();
        assert_eq!(rest, [0x82, 0x85]);
    }

    #[test]
    fn a_terminator_split_across_reads_is_found() {
        let (mut io, _prepared, mut peer) = prepared_pair(Duration::from_secs(20));
        peer.write_all(b"A\r\n\r").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).unwrap(), 4);
        peer.write_all(b"\nNEXT").unwrap();
        assert_eq!(io.read(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'\n');
    }

    #[test]
    fn no_read_ends_after_the_deadline() {
        let (mut io, _prepared, _peer) = prepared_pair(Duration::from_millis(100));
        let started = Instant::now();
        let err = io.read(&mut [0u8; 8]).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(90));
        // Once past it, reads fail at once.
        assert_eq!(
            io.read(&mut [0u8; 8]).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[test]
    fn prepared_sockets_have_nodelay_and_a_write_timeout() {
        let (_io, prepared, _peer) = prepared_pair(Duration::from_secs(1));
        assert!(prepared.socket.nodelay().unwrap());
        assert_eq!(
            prepared.socket.write_timeout().unwrap(),
            Some(ConnectionConfig::default().write_timeout)
        );
    }
}
