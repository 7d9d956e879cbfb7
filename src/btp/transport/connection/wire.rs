//! WebSocket frames (RFC 6455 §5) once the handshake is done: read from one buffer that is
//! reused from frame to frame, and written with the client's masking.
//!
//! tungstenite runs the HTTP upgrade; after it, a connection reads its frames here rather than
//! through tungstenite's `WebSocket::read`, which hands out every message as a fresh `Vec` and
//! reads in 4 KiB chunks copied into a second buffer. [`FrameReader`] reads straight into its
//! buffer, as much as the socket has and at least room for the whole frame it is decoding (one
//! system call takes a whole frame, or many of them), unmasks in place and lends the payload
//! out. No extension is negotiated, so any reserved bit is a protocol error.

use std::io::{self, Read};
use std::ops::Range;

/// Frame opcodes (RFC 6455 §5.2).
pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Close codes this side sends (RFC 6455 §7.4.1).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_AWAY: u16 = 1001;
pub(crate) const CLOSE_PROTOCOL: u16 = 1002;
pub(crate) const CLOSE_INVALID_DATA: u16 = 1007;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// Control frames carry at most this much (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// What the read buffer starts with, and goes back to once a bigger frame has been read.
const BUFFER_START: usize = 4096;
/// Above this, a buffer grown for a big message is given back once that message is read.
const BUFFER_KEEP: usize = 64 * 1024;

/// Why the peer's bytes are not an acceptable WebSocket stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// A frame, or a message put together from fragments, bigger than the cap.
    TooLarge {
        /// Its size (as announced, for a single frame).
        size: u64,
        /// The cap.
        max: usize,
    },
    /// A text message that is not UTF-8.
    InvalidText,
    /// Anything else RFC 6455 forbids.
    Protocol(&'static str),
}

impl WireError {
    /// The close code to answer it with.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            WireError::TooLarge { .. } => CLOSE_TOO_BIG,
            WireError::InvalidText => CLOSE_INVALID_DATA,
            WireError::Protocol(_) => CLOSE_PROTOCOL,
        }
    }
}

/// One frame or whole message, as [`FrameReader::next`] returns it: where its payload lies
/// (see [`FrameReader::payload`]) and what it is. Valid until the reader reads again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole binary message.
    Binary(Payload),
    /// A whole text message (BTP does not use them; already checked to be UTF-8).
    Text,
    /// A ping and the payload its pong must carry.
    Ping(Payload),
    /// A pong.
    Pong,
    /// A close frame, with its status code when it has one.
    Close(Option<u16>),
}

/// Where a payload lies: in the read buffer, or in the buffer a fragmented message was put
/// together in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    Buffer(Range<usize>),
    Assembled,
}

/// Decodes the frames one connection reads; see the module docs.
pub(crate) struct FrameReader {
    /// Bytes read from the socket; `start..end` are not decoded yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How many bytes from `start` the frame being decoded needs, once its header is known.
    wanted: usize,
    /// The opcode of a fragmented message being put together in `assembled`.
    fragmented: Option<u8>,
    assembled: Vec<u8>,
    /// A server reads masked frames, a client unmasked ones (RFC 6455 §5.1).
    expect_masked: bool,
    max_size: usize,
}

/// What decoding one frame header found.
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Header bytes, mask included.
    header_len: usize,
    payload_len: usize,
}

impl FrameReader {
    /// A reader for the side that `expect_masked` says (a server expects masked frames), with
    /// messages capped at `max_size` bytes. `leftover` is what the handshake read past its end.
    pub(crate) fn new(expect_masked: bool, max_size: usize) -> Self {
        FrameReader {
            buf: vec![0; BUFFER_START],
            start: 0,
            end: 0,
            wanted: 0,
            fragmented: None,
            assembled: Vec::new(),
            expect_masked,
            max_size,
        }
    }

    /// The payload of `frame`'s `payload`.
    pub(crate) fn payload(&self, payload: &Payload) -> &[u8] {
        match payload {
            Payload::Buffer(range) => &self.buf[range.clone()],
            Payload::Assembled => &self.assembled,
        }
    }

    /// Whether a whole frame is already buffered (the next [`FrameReader::next`] needs no read).
    pub(crate) fn has_buffered_frame(&self) -> bool {
        match self.header() {
            Ok(Some(h)) => self.end - self.start >= h.header_len + h.payload_len,
            // An error is decoded (and reported) without reading either.
            Err(_) => true,
            Ok(None) => false,
        }
    }

    /// Decodes the next frame or message from what is buffered; `None` when more bytes must be
    /// read first ([`FrameReader::fill`]). Fragments of a message are put together; control
    /// frames between them come out as they arrive.
    pub(crate) fn next(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            let Some(h) = self.header()? else {
                return Ok(None);
            };
            let total = h.header_len + h.payload_len;
            if self.end - self.start < total {
                self.wanted = total;
                return Ok(None);
            }
            let payload = self.start + h.header_len..self.start + total;
            if let Some(mask) = h.mask {
                apply_mask(&mut self.buf[payload.clone()], mask);
            }
            self.start += total;
            self.wanted = 0;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            match h.opcode {
                OP_BINARY | OP_TEXT if self.fragmented.is_some() => {
                    return Err(WireError::Protocol("a new message inside a fragmented one"))
                }
                OP_BINARY if h.fin => return Ok(Some(Frame::Binary(Payload::Buffer(payload)))),
                OP_TEXT if h.fin => {
                    return match std::str::from_utf8(&self.buf[payload]) {
                        Ok(_) => Ok(Some(Frame::Text)),
                        Err(_) => Err(WireError::InvalidText),
                    }
                }
                OP_BINARY | OP_TEXT => {
                    self.fragmented = Some(h.opcode);
                    self.assembled.clear();
                    self.assembled.extend_from_slice(&self.buf[payload]);
                }
                OP_CONTINUATION => {
                    let Some(opcode) = self.fragmented else {
                        return Err(WireError::Protocol("a continuation frame with no message"));
                    };
                    self.assembled.extend_from_slice(&self.buf[payload]);
                    if h.fin {
                        self.fragmented = None;
                        if opcode == OP_BINARY {
                            return Ok(Some(Frame::Binary(Payload::Assembled)));
                        }
                        return match std::str::from_utf8(&self.assembled) {
                            Ok(_) => Ok(Some(Frame::Text)),
                            Err(_) => Err(WireError::InvalidText),
                        };
                    }
                }
                OP_PING => return Ok(Some(Frame::Ping(Payload::Buffer(payload)))),
                OP_PONG => return Ok(Some(Frame::Pong)),
                OP_CLOSE => {
                    let body = &self.buf[payload];
                    return match body.len() {
                        0 => Ok(Some(Frame::Close(None))),
                        1 => Err(WireError::Protocol("a close frame with a 1-byte payload")),
                        _ if std::str::from_utf8(&body[2..]).is_err() => {
                            Err(WireError::InvalidText)
                        }
                        _ => Ok(Some(Frame::Close(Some(u16::from_be_bytes([
                            body[0], body[1],
                        ]))))),
                    };
                }
                _ => return Err(WireError::Protocol("a reserved opcode")),
            }
        }
    }

    /// Reads from `stream` into the buffer: whatever the socket has, with room for at least the
    /// whole frame being decoded. `Ok(0)` is the end of the stream.
    pub(crate) fn fill(&mut self, mut stream: impl Read) -> io::Result<usize> {
        let buffered = self.end - self.start;
        let needed = self.wanted.max(buffered + 1);
        if self.start == self.end && self.buf.len() > BUFFER_KEEP && needed <= BUFFER_START {
            self.buf = vec![0; BUFFER_START];
            self.start = 0;
            self.end = 0;
        }
        if self.assembled.capacity() > BUFFER_KEEP && self.fragmented.is_none() {
            self.assembled = Vec::new();
        }
        if self.buf.len() - self.start < needed {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = buffered;
            if self.buf.len() < needed {
                self.buf.resize(needed, 0);
            }
        }
        let n = stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// The header at `start`, checked, or `None` when it is not all buffered yet.
    fn header(&self) -> Result<Option<Header>, WireError> {
        let bytes = &self.buf[self.start..self.end];
        if bytes.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (bytes[0], bytes[1]);
        if b0 & 0x70 != 0 {
            return Err(WireError::Protocol(
                "reserved bits set (no extension was agreed)",
            ));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let masked = b1 & 0x80 != 0;
        if masked != self.expect_masked {
            return Err(WireError::Protocol(if masked {
                "a masked frame from the server"
            } else {
                "an unmasked frame from the client"
            }));
        }
        let (len_bytes, announced) = match b1 & 0x7F {
            126 => {
                let Some(b) = bytes.get(2..4) else {
                    return Ok(None);
                };
                (2, u64::from(u16::from_be_bytes([b[0], b[1]])))
            }
            127 => {
                let Some(b) = bytes.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (8, u64::from_be_bytes(be))
            }
            n => (0, u64::from(n)),
        };
        if opcode >= OP_CLOSE {
            if !fin {
                return Err(WireError::Protocol("a fragmented control frame"));
            }
            if announced > MAX_CONTROL_PAYLOAD as u64 {
                return Err(WireError::Protocol("a control frame over 125 bytes"));
            }
        }
        // Checked before anything is buffered for it: the length field cannot make us allocate.
        let so_far = if opcode == OP_CONTINUATION {
            self.assembled.len() as u64
        } else {
            0
        };
        if so_far.saturating_add(announced) > self.max_size as u64 {
            return Err(WireError::TooLarge {
                size: so_far.saturating_add(announced),
                max: self.max_size,
            });
        }
        let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
        let mask = if masked {
            let Some(b) = bytes.get(header_len - 4..header_len) else {
                return Ok(None);
            };
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len,
            payload_len: announced as usize,
        }))
    }
}

/// XORs `bytes` with the 4-byte `mask`, repeated (RFC 6455 §5.3); its own inverse.
pub(crate) fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Appends the header of a final frame with `opcode` and a payload of `len` bytes (masked with
/// `mask` when given: the payload must then be masked too, see [`apply_mask`]).
pub(crate) fn write_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// How many bytes [`write_header`] writes for a payload of `len` bytes.
pub(crate) fn header_len(len: usize, masked: bool) -> usize {
    let length = if len < 126 {
        0
    } else if len <= usize::from(u16::MAX) {
        2
    } else {
        8
    };
    2 + length + if masked { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A whole frame as a peer would send it.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, opcode, payload.len(), mask);
        if !fin {
            out[0] &= 0x7F;
        }
        let at = out.len();
        out.extend_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut out[at..], mask);
        }
        out
    }

    /// Hands out its bytes `step` at a time, as a slow socket would.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Every frame decodable from `bytes` read `step` bytes at a time, as (kind, payload).
    fn decode_all(
        reader: &mut FrameReader,
        bytes: &[u8],
        step: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, WireError> {
        let mut input = Trickle { bytes, step };
        let mut out = Vec::new();
        loop {
            match reader.next()? {
                Some(frame) => {
                    let (kind, payload) = match &frame {
                        Frame::Binary(p) => ("binary", reader.payload(p).to_vec()),
                        Frame::Text => ("text", Vec::new()),
                        Frame::Ping(p) => ("ping", reader.payload(p).to_vec()),
                        Frame::Pong => ("pong", Vec::new()),
                        Frame::Close(code) => {
                            ("close", code.map_or(vec![], |c| c.to_be_bytes().to_vec()))
                        }
                    };
                    out.push((kind.to_string(), payload));
                }
                None => {
                    if reader.fill(&mut input).unwrap() == 0 {
                        return Ok(out);
                    }
                }
            }
        }
    }

    #[test]
    fn length_forms_round_trip_masked_and_not() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for mask in [None, Some(MASK)] {
                let bytes = frame(true, OP_BINARY, &payload, mask);
                assert_eq!(bytes.len(), header_len(len, mask.is_some()) + len);
                let mut reader = FrameReader::new(mask.is_some(), 1 << 20);
                let frames = decode_all(&mut reader, &bytes, 1 << 20).unwrap();
                assert_eq!(
                    frames,
                    vec![("binary".to_string(), payload.clone())],
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn frames_read_a_byte_at_a_time_or_many_at_once() {
        let mut bytes = frame(true, OP_BINARY, b"first", Some(MASK));
        bytes.extend(frame(true, OP_PING, b"are you there", Some(MASK)));
        bytes.extend(frame(true, OP_BINARY, &[9; 300], Some(MASK)));
        bytes.extend(frame(true, OP_PONG, b"", Some(MASK)));
        bytes.extend(frame(true, OP_TEXT, "héllo".as_bytes(), Some(MASK)));
        bytes.extend(frame(true, OP_CLOSE, &1000u16.to_be_bytes(), Some(MASK)));
        let expected = vec![
            ("binary".to_string(), b"first".to_vec()),
            ("ping".to_string(), b"are you there".to_vec()),
            ("binary".to_string(), vec![9; 300]),
            ("pong".to_string(), vec![]),
            ("text".to_string(), vec![]),
            ("close".to_string(), 1000u16.to_be_bytes().to_vec()),
        ];
        for step in [1, 2, 3, 7, 64, 4096, 1 << 20] {
            let mut reader = FrameReader::new(true, 1 << 20);
            assert_eq!(
                decode_all(&mut reader, &bytes, step).unwrap(),
                expected,
                "step {step}"
            );
        }
    }

    #[test]
    fn fragments_are_put_together_around_control_frames() {
        let mut bytes = frame(false, OP_BINARY, b"one ", None);
        bytes.extend(frame(true, OP_PING, b"p", None));
        bytes.extend(frame(false, OP_CONTINUATION, b"two ", None));
        bytes.extend(frame(true, OP_CONTINUATION, b"three", None));
        bytes.extend(frame(true, OP_BINARY, b"after", None));
        let mut reader = FrameReader::new(false, 1 << 20);
        assert_eq!(
            decode_all(&mut reader, &bytes, 5).unwrap(),
            vec![
                ("ping".to_string(), b"p".to_vec()),
                ("binary".to_string(), b"one two three".to_vec()),
                ("binary".to_string(), b"after".to_vec()),
            ]
        );
    }

    #[test]
    fn protocol_violations_are_typed_errors() {
        let cases: Vec<(Vec<u8>, bool, WireError)> = vec![
            (
                {
                    let mut f = frame(true, OP_BINARY, b"x", Some(MASK));
                    f[0] |= 0x40;
                    f
                },
                true,
                WireError::Protocol("reserved bits set (no extension was agreed)"),
            ),
            (
                frame(true, 0x3, b"x", Some(MASK)),
                true,
                WireError::Protocol("a reserved opcode"),
            ),
            (
                frame(true, OP_BINARY, b"x", None),
                true,
                WireError::Protocol("an unmasked frame from the client"),
            ),
            (
                frame(true, OP_BINARY, b"x", Some(MASK)),
                false,
                WireError::Protocol("a masked frame from the server"),
            ),
            (
                frame(true, OP_PING, &[0; 126], None),
                false,
                WireError::Protocol("a control frame over 125 bytes"),
            ),
            (
                frame(false, OP_PING, b"x", None),
                false,
                WireError::Protocol("a fragmented control frame"),
            ),
            (
                frame(true, OP_CONTINUATION, b"x", None),
                false,
                WireError::Protocol("a continuation frame with no message"),
            ),
            (
                [
                    frame(false, OP_BINARY, b"x", None),
                    frame(true, OP_BINARY, b"y", None),
                ]
                .concat(),
                false,
                WireError::Protocol("a new message inside a fragmented one"),
            ),
            (
                frame(true, OP_CLOSE, &[3], None),
                false,
                WireError::Protocol("a close frame with a 1-byte payload"),
            ),
            (
                frame(true, OP_TEXT, &[0xff, 0xfe], None),
                false,
                WireError::InvalidText,
            ),
        ];
        for (bytes, server_side, want) in cases {
            let mut reader = FrameReader::new(server_side, 1 << 20);
            assert_eq!(
                decode_all(&mut reader, &bytes, 1),
                Err(want.clone()),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn a_length_over_the_cap_is_refused_before_anything_is_buffered() {
        // Only the header of a frame announcing 2^62 bytes: refused at once, nothing allocated.
        let mut header = Vec::new();
        write_header(&mut header, OP_BINARY, 1 << 62, None);
        let mut reader = FrameReader::new(false, 1024);
        assert_eq!(
            decode_all(&mut reader, &header, 1),
            Err(WireError::TooLarge {
                size: 1 << 62,
                max: 1024
            })
        );
        assert_eq!(reader.buf.len(), BUFFER_START);
        // Fragments that add up past the cap are refused too.
        let mut bytes = frame(false, OP_BINARY, &[1; 600], None);
        bytes.extend(frame(true, OP_CONTINUATION, &[2; 600], None));
        let mut reader = FrameReader::new(false, 1024);
        assert_eq!(
            decode_all(&mut reader, &bytes, 4096),
            Err(WireError::TooLarge {
                size: 1200,
                max: 1024
            })
        );
    }

    #[test]
    fn one_read_takes_a_whole_big_frame_and_the_buffer_shrinks_after_it() {
        let big = frame(true, OP_BINARY, &[5; 100_000], None);
        let mut reader = FrameReader::new(false, 1 << 20);
        let mut input = &big[..];
        assert_eq!(reader.next(), Ok(None));
        // The first read takes what fits; once the header is known, the next takes the rest.
        let first = reader.fill(&mut input).unwrap();
        assert_eq!(first, BUFFER_START);
        assert_eq!(reader.next(), Ok(None));
        assert_eq!(reader.fill(&mut input).unwrap(), big.len() - first);
        match reader.next().unwrap() {
            Some(Frame::Binary(p)) => assert_eq!(reader.payload(&p), &[5; 100_000][..]),
            other => panic!("{other:?}"),
        }
        let small = frame(true, OP_BINARY, b"small", None);
        reader.fill(&small[..]).unwrap();
        assert_eq!(reader.buf.len(), BUFFER_START);
    }

    #[test]
    fn steady_decoding_keeps_its_buffer() {
        let mut bytes = Vec::new();
        for i in 0..1000u32 {
            bytes.extend(frame(
                true,
                OP_BINARY,
                &i.to_be_bytes().repeat(20),
                Some(MASK),
            ));
        }
        let mut reader = FrameReader::new(true, 1 << 20);
        let (ptr, len) = (reader.buf.as_ptr(), reader.buf.len());
        let frames = decode_all(&mut reader, &bytes, 1000).unwrap();
        assert_eq!(frames.len(), 1000);
        assert_eq!(frames[999].1, 999u32.to_be_bytes().repeat(20));
        assert_eq!((reader.buf.as_ptr(), reader.buf.len()), (ptr, len));
    }

    #[test]
    fn has_buffered_frame_tells_whether_next_needs_a_read() {
        let bytes = [
            frame(true, OP_BINARY, b"a", None),
            frame(true, OP_BINARY, b"bc", None),
        ]
        .concat();
        let mut reader = FrameReader::new(false, 1024);
        assert!(!reader.has_buffered_frame());
        reader.fill(&bytes[..bytes.len() - 1]).unwrap();
        assert!(reader.has_buffered_frame());
        assert!(matches!(reader.next(), Ok(Some(Frame::Binary(_)))));
        assert!(!reader.has_buffered_frame());
    }

    #[test]
    fn masking_is_its_own_inverse_at_every_length_and_offset() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut bytes = original.clone();
            apply_mask(&mut bytes, MASK);
            for (i, (masked, plain)) in bytes.iter().zip(&original).enumerate() {
                assert_eq!(masked ^ MASK[i % 4], *plain);
            }
            apply_mask(&mut bytes, MASK);
            assert_eq!(bytes, original);
        }
    }
}
