//! The client's frames, read off the socket (RFC 6455 §5.2).
//!
//! Our own reader, in place of fastwebsockets' read half, for one reason:
//! memory. fastwebsockets keeps an 8 KiB read buffer per connection for its
//! life, and most connections of a broker are idle viewers. This reader
//! reads into a per-core scratch buffer and keeps, per connection, only the
//! bytes of a frame not yet complete: an idle connection holds no buffer at
//! all. Each complete frame's payload is unmasked in place and handed over
//! as its own `Bytes`, so what a session keeps (a publication's data) pins
//! nothing else.
//!
//! It refuses, before buffering anything of the frame: an unmasked frame
//! (§5.1: a server MUST close), reserved bits (no extension is negotiated),
//! an unknown opcode, a fragmented or over-long control frame, a 64-bit
//! length with its top bit set, and a frame over the message size limit.
//! Fragments, ping, pong and close are the session's (`reassembly`,
//! `Session::on_frame`).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use crate::metrics;

/// Bytes one socket read takes at most: the per-core scratch buffer.
const SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    /// One per core thread, shared by every connection of the core: a read
    /// lands here and only the part of a frame not yet complete is kept by
    /// the connection.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// A frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// One frame from the client, unmasked.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) fin: bool,
    pub(super) opcode: OpCode,
    pub(super) payload: Bytes,
}

/// Why no frame came.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The frame breaks RFC 6455: close with 1002.
    Protocol(&'static str),
    /// The frame is larger than the message size limit: close with 1009.
    TooBig,
    /// The socket ended or failed.
    Gone,
}

/// What is known of the frame being read.
struct Header {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    /// Bytes of the header, mask key included.
    len: usize,
    payload_len: usize,
}

/// Reads one connection's frames.
pub(super) struct FrameReader {
    /// Bytes read and not yet handed over as a frame: empty, and without an
    /// allocation, between frames.
    pending: BytesMut,
    /// Frames of this size or more are refused.
    max_frame: usize,
}

impl FrameReader {
    /// Starts with what the client sent before its upgrade completed.
    pub(super) fn new(early: Bytes, max_frame: usize) -> FrameReader {
        FrameReader {
            pending: BytesMut::from(&early[..]),
            max_frame,
        }
    }

    /// The next frame, or where to be woken when it may have come. Every
    /// byte read off the socket is counted in `received` (one addition per
    /// read). A poll function, not a future: a connection waiting for its
    /// next frame keeps nothing for the wait but this reader.
    pub(super) fn poll_next<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut R,
        received: &AtomicU64,
    ) -> Poll<Result<Frame, ReadError>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Poll::Ready(Ok(frame));
            }
            let read = ready!(self.poll_fill(cx, stream))?;
            metrics::add(received, read as u64);
        }
    }

    /// The first frame of `pending`, if it is all there.
    fn parse(&mut self) -> Result<Option<Frame>, ReadError> {
        let Some(header) = self.header()? else {
            return Ok(None);
        };
        if self.pending.len() < header.len + header.payload_len {
            // Room for the rest of the frame at once: one allocation, not
            // one per read.
            self.pending
                .reserve(header.len + header.payload_len - self.pending.len());
            return Ok(None);
        }
        self.pending.advance(header.len);
        let mut payload = self.pending.split_to(header.payload_len);
        unmask(&mut payload, header.mask);
        if self.pending.is_empty() {
            // Let the allocation go with the frames that use it.
            self.pending = BytesMut::new();
        }
        Ok(Some(Frame {
            fin: header.fin,
            opcode: header.opcode,
            payload: payload.freeze(),
        }))
    }

    /// The header of the first frame, once all of it has arrived, checked.
    fn header(&self) -> Result<Option<Header>, ReadError> {
        let bytes = &self.pending[..];
        let [first, second, ..] = *bytes else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let fin = first & 0x80 != 0;
        let opcode =
            OpCode::from_bits(first & 0x0F).ok_or(ReadError::Protocol("unknown opcode"))?;
        if second & 0x80 == 0 {
            return Err(ReadError::Protocol("unmasked frame"));
        }
        let (extra, short) = match second & 0x7F {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(usize::from(n))),
        };
        if opcode.is_control() {
            if !fin {
                return Err(ReadError::Protocol("fragmented control frame"));
            }
            if short.is_none() {
                return Err(ReadError::Protocol("control frame too long"));
            }
        }
        let len = 2 + extra + 4;
        if bytes.len() < 2 + extra {
            return Ok(None);
        }
        let payload_len = match (short, extra) {
            (Some(n), _) => n,
            (None, 2) => usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            (None, _) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&bytes[2..10]);
                let n = u64::from_be_bytes(be);
                // A length with its top bit set is out of range (§5.2):
                // refused as too big, like any length over the limit.
                usize::try_from(n).unwrap_or(usize::MAX)
            }
        };
        if payload_len >= self.max_frame {
            return Err(ReadError::TooBig);
        }
        if bytes.len() < len {
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&bytes[len - 4..len]);
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            len,
            payload_len,
        }))
    }

    /// Reads what the socket has into the core's scratch buffer, and keeps
    /// it; ready with how many bytes came. Waiting for the socket holds no
    /// buffer of this connection's.
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut R,
    ) -> Poll<Result<usize, ReadError>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Err(ReadError::Gone)),
                Poll::Ready(Ok(())) => {
                    self.pending.extend_from_slice(buf.filled());
                    Poll::Ready(Ok(buf.filled().len()))
                }
                Poll::Ready(Err(error)) => Poll::Ready(Err(gone(error))),
                Poll::Pending => Poll::Pending,
            }
        })
    }
}

fn gone(_: io::Error) -> ReadError {
    ReadError::Gone
}

/// XORs a client frame's payload with its mask key (§5.3), eight bytes at
/// a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let value = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    impl FrameReader {
        async fn next<R: AsyncRead + Unpin>(
            &mut self,
            stream: &mut R,
            received: &AtomicU64,
        ) -> Result<Frame, ReadError> {
            poll_fn(|cx| self.poll_next(cx, stream, received)).await
        }
    }

    /// A client frame: header, mask key, masked payload.
    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Feeds `wire` to a reader `chunk` bytes at a time; the frames read.
    fn read_all(wire: &[u8], chunk: usize, max_frame: usize) -> Result<Vec<Frame>, ReadError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reader = FrameReader::new(Bytes::new(), max_frame);
            let mut stream = tokio_test_stream(wire, chunk);
            let mut frames = Vec::new();
            loop {
                match reader.next(&mut stream, &AtomicU64::new(0)).await {
                    Ok(frame) => frames.push(frame),
                    Err(ReadError::Gone) => return Ok(frames),
                    Err(error) => return Err(error),
                }
            }
        })
    }

    /// A stream that yields `wire` in pieces of `chunk` bytes.
    fn tokio_test_stream(wire: &[u8], chunk: usize) -> impl AsyncRead + Unpin {
        let pieces: Vec<Vec<u8>> = wire.chunks(chunk.max(1)).map(<[u8]>::to_vec).collect();
        Pieces(pieces.into_iter().rev().collect())
    }

    struct Pieces(Vec<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut piece) = self.0.pop() {
                // A piece larger than the reader's buffer comes in two reads.
                if piece.len() > buf.remaining() {
                    self.0.push(piece.split_off(buf.remaining()));
                }
                buf.put_slice(&piece);
            }
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn frames_of_every_length_form_survive_any_split_of_the_stream() {
        let payloads: Vec<Vec<u8>> = [0usize, 1, 7, 8, 9, 125, 126, 127, 1000, 65535, 65536, 70000]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 % 251) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            wire.extend(client_frame(0x82, payload, [i as u8, 0xA5, 0x3C, 0xFF]));
        }
        for chunk in [1, 2, 3, 7, 14, 100, 4096, wire.len()] {
            let frames = read_all(&wire, chunk, 1 << 20).unwrap_or_else(|e| panic!("{e:?}"));
            let got: Vec<&[u8]> = frames.iter().map(|f| &f.payload[..]).collect();
            let want: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            assert_eq!(got, want, "chunks of {chunk}");
            assert!(frames.iter().all(|f| f.fin && f.opcode == OpCode::Binary));
        }
    }

    #[test]
    fn what_the_rfc_forbids_is_refused_before_its_payload_is_read() {
        let refused = |wire: Vec<u8>| read_all(&wire, 1, 1000);
        let mut unmasked = client_frame(0x82, b"hi", [1, 2, 3, 4]);
        unmasked[1] &= 0x7F;
        assert!(matches!(
            refused(unmasked),
            Err(ReadError::Protocol("unmasked frame"))
        ));
        let reserved = client_frame(0xC2, b"hi", [1, 2, 3, 4]);
        assert!(matches!(refused(reserved), Err(ReadError::Protocol(_))));
        let opcode = client_frame(0x83, b"hi", [1, 2, 3, 4]);
        assert!(matches!(
            refused(opcode),
            Err(ReadError::Protocol("unknown opcode"))
        ));
        let fragmented_ping = client_frame(0x09, b"hi", [1, 2, 3, 4]);
        assert!(matches!(
            refused(fragmented_ping),
            Err(ReadError::Protocol(_))
        ));
        let long_ping = client_frame(0x89, &[0; 126], [1, 2, 3, 4]);
        assert!(matches!(refused(long_ping), Err(ReadError::Protocol(_))));
        // Only the header of a frame over the limit is read.
        let header_only = client_frame(0x82, &[0; 2000], [1, 2, 3, 4])[..8].to_vec();
        assert!(matches!(refused(header_only), Err(ReadError::TooBig)));
        let mut top_bit = vec![0x82, 0x80 | 127];
        top_bit.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(refused(top_bit), Err(ReadError::TooBig)));
    }

    #[test]
    fn frames_ahead_of_a_bad_one_are_served() {
        let mut wire = client_frame(0x82, b"first", [9, 9, 9, 9]);
        let mut bad = client_frame(0x82, b"second", [1, 2, 3, 4]);
        bad[1] &= 0x7F;
        wire.extend(bad);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reader = FrameReader::new(Bytes::new(), 1000);
            let mut stream = tokio_test_stream(&wire, 4096);
            let first = reader.next(&mut stream, &AtomicU64::new(0)).await.unwrap();
            assert_eq!(&first.payload[..], b"first");
            assert!(matches!(
                reader.next(&mut stream, &AtomicU64::new(0)).await,
                Err(ReadError::Protocol("unmasked frame"))
            ));
        });
    }

    #[test]
    fn an_idle_reader_keeps_no_buffer() {
        let wire = client_frame(0x82, &[7; 300], [1, 2, 3, 4]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reader = FrameReader::new(Bytes::new(), 1000);
            let mut stream = tokio_test_stream(&wire, 50);
            let frame = reader.next(&mut stream, &AtomicU64::new(0)).await.unwrap();
            assert_eq!(frame.payload.len(), 300);
            assert_eq!(reader.pending.capacity(), 0, "nothing kept between frames");
        });
    }
}
