//! RFC 6455 §5.1: a client masks every frame it sends, and a server MUST
//! close the connection on a frame that is not masked. fastwebsockets reads
//! the mask bit but keeps it to itself (`Frame` has no getter for its key,
//! and an unmasked payload is simply not unmasked), so the check is made
//! here, on the bytes on their way to it. [`MaskCheck`] wraps the
//! connection's reader and follows the frame headers as they pass, jumping
//! over each payload by its length.
//!
//! At the first unmasked frame it stops the stream just before that
//! frame's second byte (the one with the mask bit): the bytes ahead are
//! handed over, so the frames before it are served as usual, and the next
//! read fails with [`UnmaskedFrame`]. fastwebsockets, which needs two bytes
//! to begin a frame, therefore never returns the unmasked frame: it returns
//! the error, and the session closes with 1002. Nothing after the mask bit
//! (the length, the payload) is acted on or waited for.
//!
//! Cost: a few steps per frame header and one subtraction per read that
//! lands in a payload; no copy, no buffer and no allocation (but for the
//! error, once, on a refusal). The state is a small enum inside the reader.
//!
//! It checks nothing else: reserved bits, opcodes, lengths and control
//! frames are fastwebsockets' and the session's to refuse, and once they
//! have, nothing reads on, so the header this reader follows is never out
//! of step with theirs.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The mask bit, in a frame's second byte.
const MASK_BIT: u8 = 0x80;

/// A client frame was not masked: the read error [`MaskCheck`] gives
/// instead of the frame, which the session answers with close 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a client frame is not masked (RFC 6455 §5.1)")]
pub(crate) struct UnmaskedFrame;

impl UnmaskedFrame {
    /// Whether `error` is this refusal, as it comes back out of
    /// fastwebsockets (inside its `IoError`).
    pub(crate) fn caused(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<UnmaskedFrame>())
    }
}

impl From<UnmaskedFrame> for io::Error {
    fn from(refusal: UnmaskedFrame) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, refusal)
    }
}

/// Where the stream is within the client's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// At a frame's first byte (FIN, reserved bits, opcode).
    Start,
    /// At its second byte: the mask bit and the 7-bit length.
    MaskAndLength,
    /// In the 16- or 64-bit length: `left` more bytes, `len` so far.
    ExtendedLength { left: u8, len: u64 },
    /// In the masking key: `left` more bytes, then a payload of `len`.
    MaskingKey { left: u8, len: u64 },
    /// In the payload: `left` more bytes.
    Payload { left: u64 },
    /// An unmasked frame was met: nothing more passes.
    Refused,
}

impl Position {
    /// Follows `bytes`, the next ones of the stream. Returns the offset of
    /// the second byte of an unmasked frame if they hold one (and from then
    /// on, 0: the stream is refused).
    fn follow(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while let Some(&byte) = bytes.get(at) {
            if let Position::Payload { left } = *self {
                let here = bytes.len() - at;
                let skipped = usize::try_from(left).map_or(here, |left| left.min(here));
                let left = left - skipped as u64;
                *self = if left == 0 {
                    Position::Start
                } else {
                    Position::Payload { left }
                };
                at += skipped;
                continue;
            }
            *self = self.after_header_byte(byte);
            if *self == Position::Refused {
                return Some(at);
            }
            at += 1;
        }
        None
    }

    /// The position after one more byte of a frame header.
    fn after_header_byte(self, byte: u8) -> Position {
        match self {
            Position::Start => Position::MaskAndLength,
            Position::MaskAndLength if byte & MASK_BIT == 0 => Position::Refused,
            Position::MaskAndLength => match byte & !MASK_BIT {
                126 => Position::ExtendedLength { left: 2, len: 0 },
                127 => Position::ExtendedLength { left: 8, len: 0 },
                len => Position::MaskingKey {
                    left: 4,
                    len: u64::from(len),
                },
            },
            Position::ExtendedLength { left, len } => {
                // At most 8 bytes: the first is shifted by 56 bits, never out.
                let len = (len << 8) | u64::from(byte);
                match left {
                    1 => Position::MaskingKey { left: 4, len },
                    _ => Position::ExtendedLength {
                        left: left - 1,
                        len,
                    },
                }
            }
            Position::MaskingKey { left: 1, len: 0 } => Position::Start,
            Position::MaskingKey { left: 1, len } => Position::Payload { left: len },
            Position::MaskingKey { left, len } => Position::MaskingKey {
                left: left - 1,
                len,
            },
            // `follow` skips payloads itself; a refused stream stays refused.
            Position::Payload { .. } | Position::Refused => Position::Refused,
        }
    }
}

/// The connection's reader, refusing to pass an unmasked client frame
/// (see the module's documentation).
pub(crate) struct MaskCheck<R> {
    inner: R,
    position: Position,
}

impl<R> MaskCheck<R> {
    /// `inner` must start at a frame boundary: right after the handshake.
    pub(crate) fn new(inner: R) -> MaskCheck<R> {
        MaskCheck {
            inner,
            position: Position::Start,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for MaskCheck<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.position == Position::Refused {
            return Poll::Ready(Err(UnmaskedFrame.into()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let Some(at) = this.position.follow(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        // Hand over only what lies ahead of the mask bit. If that is
        // nothing, fail now: an empty read would say the stream ended.
        buf.set_filled(before + at);
        if at == 0 {
            Poll::Ready(Err(UnmaskedFrame.into()))
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use fastwebsockets::{Frame, OpCode, Role, WebSocketError};

    /// A client frame, masked or not, with `payload`.
    fn client_frame(first_byte: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask_bit = if masked { MASK_BIT } else { 0 };
        let mut out = vec![first_byte];
        match payload.len() {
            len @ 0..=125 => out.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// Masked frames of every length form, each length at its edges.
    fn masked_frames() -> Vec<u8> {
        [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]
            .into_iter()
            .flat_map(|len| client_frame(0x82, &vec![0x80; len], true))
            .collect()
    }

    /// Where `follow` refuses `stream` when it arrives in chunks of `size`.
    fn refused_at(stream: &[u8], size: usize) -> Option<usize> {
        let mut position = Position::Start;
        let mut offset = 0;
        for chunk in stream.chunks(size) {
            if let Some(at) = position.follow(chunk) {
                return Some(offset + at);
            }
            offset += chunk.len();
        }
        None
    }

    #[test]
    fn masked_frames_pass_however_the_stream_is_cut() {
        let stream = masked_frames();
        for size in [1, 2, 3, 5, 7, 13, 64, 4096, stream.len()] {
            assert_eq!(refused_at(&stream, size), None, "chunks of {size}");
        }
    }

    #[test]
    fn an_unmasked_frame_is_refused_at_its_mask_bit_however_the_stream_is_cut() {
        let ahead = masked_frames();
        for unmasked in [
            client_frame(0x82, b"", false),
            client_frame(0x89, b"ping", false),
            client_frame(0x82, &[0x80; 300], false),
            client_frame(0x82, &[0x80; 70_000], false),
        ] {
            let mut stream = ahead.clone();
            stream.extend_from_slice(&unmasked);
            stream.extend(client_frame(0x82, b"behind", true));
            for size in [1, 2, 3, 7, 4096, stream.len()] {
                assert_eq!(
                    refused_at(&stream, size),
                    Some(ahead.len() + 1),
                    "chunks of {size}"
                );
            }
        }
    }

    #[test]
    fn a_refused_stream_stays_refused() {
        let mut position = Position::Start;
        assert_eq!(position.follow(&client_frame(0x82, b"x", false)), Some(1));
        assert_eq!(position.follow(&client_frame(0x82, b"x", true)), Some(0));
    }

    /// Yields its bytes `size` at a time, like a socket that gets them in
    /// small packets.
    struct Trickle {
        bytes: Vec<u8>,
        size: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.size.min(self.bytes.len()).min(buf.remaining());
            buf.put_slice(&self.bytes[..n]);
            self.bytes.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    /// What fastwebsockets, reading through a [`MaskCheck`], makes of
    /// `bytes` arriving `size` at a time: the payloads of the frames it
    /// returns, then the error it ends with.
    async fn read_through(bytes: Vec<u8>, size: usize) -> (Vec<Vec<u8>>, WebSocketError) {
        let reader = MaskCheck::new(Trickle { bytes, size });
        let (mut ws, _) =
            fastwebsockets::after_handshake_split(reader, tokio::io::sink(), Role::Server);
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        let mut no_send = |_: Frame<'_>| async { Ok::<(), io::Error>(()) };
        let mut payloads = Vec::new();
        loop {
            match ws.read_frame(&mut no_send).await {
                Ok(frame) => {
                    assert_ne!(frame.opcode, OpCode::Close);
                    payloads.push(frame.payload.to_vec());
                }
                Err(error) => return (payloads, error),
            }
        }
    }

    #[tokio::test]
    async fn fastwebsockets_returns_the_frames_ahead_then_the_refusal_never_the_unmasked_frame() {
        let mut bytes = client_frame(0x82, b"ahead", true);
        bytes.extend(client_frame(0x89, b"ping", true));
        bytes.extend(client_frame(0x82, b"", false));
        bytes.extend(client_frame(0x82, b"behind", true));
        for size in [1, 3, 8192] {
            let (payloads, error) = read_through(bytes.clone(), size).await;
            assert_eq!(payloads, [&b"ahead"[..], b"ping"], "chunks of {size}");
            assert!(
                matches!(&error, WebSocketError::IoError(e) if UnmaskedFrame::caused(e)),
                "chunks of {size}: {error:?}"
            );
        }
        // The end of a stream of masked frames is still just the end.
        let (payloads, error) = read_through(client_frame(0x82, b"only", true), 2).await;
        assert_eq!(payloads, [b"only"]);
        assert!(matches!(error, WebSocketError::UnexpectedEOF), "{error:?}");
    }
}
