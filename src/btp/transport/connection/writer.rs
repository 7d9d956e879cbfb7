//! The one place bytes are written to a connection's socket, whole frames at a time.
//!
//! Writers combine: a thread encodes its frame into the queue under a short lock; if no other
//! thread is writing, it becomes the writer and writes everything queued (its own frame and any
//! that other threads queue meanwhile) with one system call per batch, outside the lock. A
//! thread that finds a writer at work returns at once: its frame goes out in that writer's next
//! batch, in order. Under load many frames leave in one `sendto`, and no thread waits on
//! another's write unless 4 MB are queued behind a write that blocks (a peer that stopped
//! reading), which then holds the queue's growth. A failed write closes the connection: a
//! half-written frame cannot be taken back.
//!
//! A writer's duty to others is bounded: once it has written [`DRAIN_BUDGET`] bytes beyond its
//! own batch, the next thread that queues a frame does not return at once but waits for the
//! batch in progress and takes over, and the old writer goes back to what it was doing (often
//! reading). Without that, a reader that wrote one reply could spend all its time writing
//! frames other threads keep queueing, and nobody would read.
//!
//! Frames are encoded in place in the queue (header, payload, and for a client the mask applied
//! over the payload), so a frame costs no allocation of its own; the queue's buffers are kept
//! from batch to batch.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::config::CloseReason;
use super::wire::{apply_mask, header_len, write_header, OP_BINARY, OP_CLOSE};

/// Above this, a write buffer is given back after the write rather than kept.
const KEEP_BUFFER: usize = 64 * 1024;

/// While this much waits behind a blocked write, further writers wait too (instead of
/// queueing without bound behind a peer that stopped reading).
const QUEUE_CAP: usize = 4 << 20;

/// How much of other threads' frames a writer writes, after its own batch, before the next
/// thread to queue one takes over.
const DRAIN_BUDGET: usize = 256 * 1024;

/// Frames waiting to be written, and who writes them.
struct Outbox {
    /// Whole encoded frames not yet handed to the socket, in order.
    queued: Vec<u8>,
    /// The writing thread's buffer, kept between turns for its capacity.
    spare: Vec<u8>,
    /// A thread is writing; it writes everything queued before it lets go, unless a successor
    /// is waiting to take over.
    writing: bool,
    /// Bytes the writer has written for others (after its first batch).
    drained_for_others: usize,
    /// A thread waits to take over from a writer past its budget.
    successor: bool,
    /// xorshift64* state for client masking keys (RFC 6455 asks for unpredictable keys, not
    /// secret ones); seeded from the OS.
    mask_state: u64,
    /// Set once nothing more may be written, with the reason.
    closed: Option<CloseReason>,
}

impl Outbox {
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.mask_state = x;
        let out = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        [
            (out >> 56) as u8,
            (out >> 48) as u8,
            (out >> 40) as u8,
            (out >> 32) as u8,
        ]
    }

    /// Appends one whole frame: the header for `len` payload bytes, the payload `write` appends
    /// (it must append exactly `len` bytes), masked when `masked`.
    fn encode(&mut self, opcode: u8, len: usize, masked: bool, write: impl FnOnce(&mut Vec<u8>)) {
        let mask = masked.then(|| self.next_mask());
        let frame_start = self.queued.len();
        self.queued.reserve(header_len(len, masked) + len);
        write_header(&mut self.queued, opcode, len, mask);
        let payload_start = self.queued.len();
        write(&mut self.queued);
        let written = self.queued.len() - payload_start;
        if written != len {
            // A caller that misjudged its length: rewrite the header rather than send a
            // frame that desynchronises the stream.
            debug_assert_eq!(written, len, "frame payload length announced wrongly");
            let payload = self.queued.split_off(payload_start);
            self.queued.truncate(frame_start);
            write_header(&mut self.queued, opcode, payload.len(), mask);
            self.queued.extend_from_slice(&payload);
        }
        if let Some(mask) = mask {
            let payload_start = self.queued.len() - written;
            apply_mask(&mut self.queued[payload_start..], mask);
        }
    }
}

/// See the module docs.
pub(crate) struct FrameWriter {
    outbox: Mutex<Outbox>,
    /// Signalled after each batch, for threads waiting on a full queue.
    drained: Condvar,
    /// A client masks what it sends (RFC 6455 §5.3).
    masked: bool,
    /// Written only by the thread that set `writing`; shut down by anyone.
    socket: Arc<TcpStream>,
}

impl FrameWriter {
    /// A writer for `socket`; `masked` on the client side.
    pub(crate) fn new(socket: Arc<TcpStream>, masked: bool) -> Self {
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            seed = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64))
            .to_be_bytes();
        }
        FrameWriter {
            outbox: Mutex::new(Outbox {
                queued: Vec::new(),
                spare: Vec::new(),
                writing: false,
                drained_for_others: 0,
                successor: false,
                // xorshift must not start at zero.
                mask_state: u64::from_be_bytes(seed) | 1,
                closed: None,
            }),
            drained: Condvar::new(),
            masked,
            socket,
        }
    }

    /// Waits while a full queue sits behind a blocked write; the outbox, ready to queue on,
    /// or why the connection is closed.
    fn room(&self) -> Result<MutexGuard<'_, Outbox>, CloseReason> {
        let mut out = self.outbox.lock();
        while out.closed.is_none() && out.writing && out.queued.len() >= QUEUE_CAP {
            self.drained.wait(&mut out);
        }
        match &out.closed {
            Some(reason) => Err(reason.clone()),
            None => Ok(out),
        }
    }

    /// Writes what is queued unless another thread is already at it (see the module docs).
    fn write_queued(&self, mut out: MutexGuard<'_, Outbox>) -> Result<(), CloseReason> {
        if out.writing {
            if out.successor || out.drained_for_others < DRAIN_BUDGET {
                return Ok(());
            }
            // The writer has done its share: take over once its batch in progress is out.
            out.successor = true;
            while out.writing && out.closed.is_none() {
                self.drained.wait(&mut out);
            }
            out.successor = false;
            if let Some(reason) = &out.closed {
                // What was queued went with the connection; so does this frame.
                return Err(reason.clone());
            }
            if out.queued.is_empty() {
                return Ok(());
            }
        }
        out.writing = true;
        out.drained_for_others = 0;
        let mut first = true;
        loop {
            let mut batch = std::mem::take(&mut out.spare);
            std::mem::swap(&mut batch, &mut out.queued);
            let result = MutexGuard::unlocked(&mut out, || (&*self.socket).write_all(&batch));
            if !first {
                out.drained_for_others = out.drained_for_others.saturating_add(batch.len());
            }
            first = false;
            batch.clear();
            if batch.capacity() <= KEEP_BUFFER {
                out.spare = batch;
            }
            if let Err(e) = result {
                let reason = out
                    .closed
                    .get_or_insert(CloseReason::Io(format!("write: {e}")))
                    .clone();
                out.writing = false;
                out.queued = Vec::new();
                drop(out);
                self.drained.notify_all();
                let _ = self.socket.shutdown(Shutdown::Both);
                return Err(reason);
            }
            if out.queued.is_empty() || out.successor {
                // Done, or a successor writes the rest.
                out.writing = false;
                drop(out);
                self.drained.notify_all();
                return Ok(());
            }
            self.drained.notify_all();
        }
    }

    /// Writes bytes the handshake produced (tungstenite's HTTP upgrade request or response).
    pub(crate) fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let mut out = self
            .room()
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))?;
        out.queued.extend_from_slice(bytes);
        self.write_queued(out)
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
    }

    /// Writes one binary frame whose `len`-byte payload `write` appends to the buffer it is
    /// given (or queues it for the thread writing now), or declares the connection dead.
    pub(crate) fn send_binary(
        &self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), CloseReason> {
        let mut out = self.room()?;
        out.encode(OP_BINARY, len, self.masked, write);
        self.write_queued(out)
    }

    /// Queues one binary frame like [`FrameWriter::send_binary`] without writing it yet, so
    /// that several requests sent back to back leave in one system call: it goes out with the
    /// next write of any thread or [`FrameWriter::flush`], or at once when the queue has grown
    /// past [`KEEP_BUFFER`].
    pub(crate) fn queue_binary(
        &self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), CloseReason> {
        let mut out = self.room()?;
        out.encode(OP_BINARY, len, self.masked, write);
        if out.queued.len() >= KEEP_BUFFER {
            return self.write_queued(out);
        }
        Ok(())
    }

    /// Writes whatever is queued, unless another thread is writing (it takes the queue along).
    pub(crate) fn flush(&self) -> Result<(), CloseReason> {
        let out = self.room()?;
        if out.queued.is_empty() {
            return Ok(());
        }
        self.write_queued(out)
    }

    /// Writes one control frame (ping, pong) carrying `payload` (at most 125 bytes).
    pub(crate) fn send_control(&self, opcode: u8, payload: &[u8]) -> Result<(), CloseReason> {
        let mut out = self.room()?;
        out.encode(opcode, payload.len(), self.masked, |b| {
            b.extend_from_slice(payload)
        });
        self.write_queued(out)
    }

    /// Sends a close frame with `code` and `reason` (once) and refuses every later write.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let mut out = self.outbox.lock();
        if out.closed.is_some() {
            return;
        }
        out.closed = Some(CloseReason::Local);
        // A control frame carries at most 125 bytes: the code and 123 of the reason.
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let reason = &reason.as_bytes()[..cut];
        out.encode(OP_CLOSE, 2 + reason.len(), self.masked, |b| {
            b.extend_from_slice(&code.to_be_bytes());
            b.extend_from_slice(reason);
        });
        if let Err(e) = self.write_queued(out) {
            log::debug!("close frame not sent: {e}");
        }
    }

    /// Whether writes are refused now (a close frame went out, or the socket was cut).
    pub(crate) fn is_closed(&self) -> bool {
        self.outbox.lock().closed.is_some()
    }

    /// Refuses every later write and cuts the socket, which ends any read on it too.
    pub(crate) fn shutdown(&self) {
        self.outbox.lock().closed.get_or_insert(CloseReason::Local);
        self.drained.notify_all();
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    use super::super::wire::{Frame, FrameReader, OP_PING};
    use super::*;

    /// A connected pair on loopback: (ours, the peer's end).
    fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        theirs
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        (Arc::new(ours), theirs)
    }

    /// The binary payloads the peer reads, until `count` frames of any kind came.
    fn read_frames(peer: &mut TcpStream, masked: bool, count: usize) -> Vec<(u8, Vec<u8>)> {
        let mut reader = FrameReader::new(masked, 1 << 20);
        let mut out = Vec::new();
        while out.len() < count {
            match reader.next().unwrap() {
                Some(Frame::Binary(p)) => out.push((OP_BINARY, reader.payload(&p).to_vec())),
                Some(Frame::Ping(p)) => out.push((OP_PING, reader.payload(&p).to_vec())),
                Some(Frame::Close(code)) => {
                    out.push((OP_CLOSE, code.unwrap_or(0).to_be_bytes().to_vec()))
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => assert!(reader.fill(&mut *peer).unwrap() > 0, "peer closed early"),
            }
        }
        out
    }

    #[test]
    fn a_client_masks_and_a_server_does_not() {
        for masked in [true, false] {
            let (ours, mut peer) = pair();
            let writer = FrameWriter::new(ours, masked);
            writer
                .send_binary(5, |b| b.extend_from_slice(b"hello"))
                .unwrap();
            writer.send_control(OP_PING, b"p").unwrap();
            // The peer's reader insists on the right masking, so this also checks the bit.
            assert_eq!(
                read_frames(&mut peer, masked, 2),
                vec![(OP_BINARY, b"hello".to_vec()), (OP_PING, b"p".to_vec())]
            );
        }
    }

    #[test]
    fn queued_frames_wait_for_a_flush_and_leave_together() {
        let (ours, mut peer) = pair();
        let writer = FrameWriter::new(ours, true);
        for i in 0..3u8 {
            writer.queue_binary(1, |b| b.push(i)).unwrap();
        }
        peer.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert!(
            matches!(peer.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "nothing is written before the flush"
        );
        peer.set_nonblocking(false).unwrap();
        writer.flush().unwrap();
        assert_eq!(
            read_frames(&mut peer, true, 3),
            (0..3u8).map(|i| (OP_BINARY, vec![i])).collect::<Vec<_>>()
        );
        // Nothing queued: a flush writes nothing and succeeds.
        writer.flush().unwrap();
    }

    #[test]
    fn a_queue_past_the_kept_buffer_is_written_without_a_flush() {
        let (ours, mut peer) = pair();
        let writer = FrameWriter::new(ours, false);
        let big = KEEP_BUFFER / 4;
        for i in 0..4u8 {
            writer
                .queue_binary(big, |b| b.resize(b.len() + big, i))
                .unwrap();
        }
        let frames = read_frames(&mut peer, false, 4);
        assert_eq!(frames.len(), 4);
        assert!(frames
            .iter()
            .enumerate()
            .all(|(i, (_, p))| p.len() == big && p[0] == i as u8));
    }

    #[test]
    fn frames_from_many_threads_arrive_whole_and_in_each_threads_order() {
        let (ours, mut peer) = pair();
        let writer = Arc::new(FrameWriter::new(ours, true));
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let writer = &writer;
                s.spawn(move || {
                    for i in 0..500u16 {
                        let mut payload = vec![t];
                        payload.extend_from_slice(&i.to_be_bytes());
                        payload.resize(3 + usize::from(i % 300), t);
                        writer
                            .send_binary(payload.len(), |b| b.extend_from_slice(&payload))
                            .unwrap();
                    }
                });
            }
        });
        let frames = read_frames(&mut peer, true, 2000);
        let mut next = [0u16; 4];
        for (_, payload) in frames {
            let t = usize::from(payload[0]);
            let i = u16::from_be_bytes([payload[1], payload[2]]);
            assert_eq!(i, next[t], "thread {t}'s frames out of order");
            assert_eq!(payload.len(), 3 + usize::from(i % 300));
            assert!(payload[3..].iter().all(|&b| usize::from(b) == t));
            next[t] += 1;
        }
        assert_eq!(next, [500; 4]);
    }

    #[test]
    fn a_writer_hands_over_to_a_queueing_thread_once_past_its_budget() {
        // Small frames, quick to queue: the other thread refills the queue while each batch
        // is written, so it never runs dry before the last.
        const FRAME: usize = 64 * 1024;
        const FRAMES: usize = 256;
        let (ours, mut peer) = pair();
        let writer = Arc::new(FrameWriter::new(ours, false));
        let sent_by_other = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::scope(|s| {
            // The first writer: a frame bigger than the socket buffers, so that it is still
            // writing when the other thread starts queueing.
            let first = s.spawn(|| {
                writer
                    .send_binary(64 * FRAME, |b| b.resize(b.len() + 64 * FRAME, 1))
                    .unwrap();
                // How far the other thread got when this one was let go.
                sent_by_other.load(std::sync::atomic::Ordering::SeqCst)
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !writer.outbox.lock().writing {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never started writing"
                );
                std::thread::yield_now();
            }
            let other = s.spawn(|| {
                for _ in 0..FRAMES {
                    writer
                        .send_binary(FRAME, |b| b.resize(b.len() + FRAME, 2))
                        .unwrap();
                    sent_by_other.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            let mut reader = FrameReader::new(false, 256 * FRAME);
            let mut frames = 0;
            while frames < 1 + FRAMES {
                match reader.next().unwrap() {
                    Some(Frame::Binary(_)) => frames += 1,
                    Some(other) => panic!("unexpected {other:?}"),
                    None => {
                        // A slow peer (the case that matters): 16 KiB a read, a pause before
                        // each, so that the queue never runs dry while the other thread fills it.
                        std::thread::sleep(Duration::from_micros(100));
                        let mut slow = (&mut peer).take(16 * 1024);
                        assert!(reader.fill(&mut slow).unwrap() > 0, "peer closed early");
                    }
                }
            }
            other.join().unwrap();
            let other_at_release = first.join().unwrap();
            // Without the budget the first writer writes every frame the other queues and
            // returns only after the last.
            assert!(
                other_at_release < FRAMES,
                "the first writer wrote all {FRAMES} of the other's frames"
            );
        });
    }

    #[test]
    fn a_misjudged_length_still_makes_a_well_formed_frame() {
        // Only in release builds: debug builds assert on the caller's mistake.
        if cfg!(debug_assertions) {
            return;
        }
        let (ours, mut peer) = pair();
        let writer = FrameWriter::new(ours, true);
        writer
            .send_binary(2, |b| b.extend_from_slice(&[1; 300]))
            .unwrap();
        assert_eq!(
            read_frames(&mut peer, true, 1),
            vec![(OP_BINARY, vec![1; 300])]
        );
    }

    #[test]
    fn close_sends_one_close_frame_then_refuses_writes() {
        let (ours, mut peer) = pair();
        let writer = FrameWriter::new(ours, false);
        writer.close(1001, "going away");
        writer.close(1000, "twice");
        assert!(writer.is_closed());
        assert_eq!(
            writer.send_binary(1, |b| b.push(0)),
            Err(CloseReason::Local)
        );
        assert_eq!(
            read_frames(&mut peer, false, 1),
            vec![(OP_CLOSE, 1001u16.to_be_bytes().to_vec())]
        );
        // Nothing follows the close frame.
        writer.shutdown();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[test]
    fn a_failed_write_closes_the_writer_with_the_error() {
        let (ours, peer) = pair();
        // The peer resets the connection: closing with unread data in its buffer sends RST.
        let writer = FrameWriter::new(ours, false);
        drop(peer);
        let mut result = Ok(());
        for _ in 0..1000 {
            result = writer.send_binary(1000, |b| b.resize(b.len() + 1000, 7));
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(CloseReason::Io(_))), "{result:?}");
        assert!(writer.is_closed());
        assert!(matches!(
            writer.send_binary(1, |b| b.push(0)),
            Err(CloseReason::Io(_))
        ));
    }
}
