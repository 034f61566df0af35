//! The minimal WebSocket client path: a hand-written upgrade, masked client
//! frames, and server frames parsed in place from a read buffer.
//!
//! What it does not do, on purpose: fragmented server messages (roomcast
//! never sends them: they count as a protocol fault), extensions, and checks
//! a general client would make but a load generator talking to a known
//! server can skip (UTF-8 of close reasons, the control-frame size limit).

use std::io;

use roomcast::protocol::Codec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `Sec-WebSocket-Key` every connection sends: the example nonce of
/// RFC 6455 §1.3. The server does not care that it repeats, and a fixed key
/// means the expected accept value is a constant (no SHA-1 at run time).
const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The `Sec-WebSocket-Accept` answering [`CLIENT_KEY`] (RFC 6455 §1.3).
const EXPECTED_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The longest HTTP response head accepted from the server.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

const FIN: u8 = 0x80;
const MASKED: u8 = 0x80;

/// WebSocket opcodes.
pub(crate) mod opcode {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// Why an upgrade or a server frame was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed during the handshake")]
    HandshakeEof,
    #[error("handshake refused: {0}")]
    HandshakeRefused(String),
    #[error("server frame is masked")]
    MaskedServerFrame,
    #[error("server frame is fragmented (opcode {0:#x}), roomcast never fragments")]
    Fragmented(u8),
    #[error("server frame length {0} does not fit in memory")]
    FrameTooLarge(u64),
}

/// Bytes read from a socket and not yet parsed.
///
/// One allocation for the life of the connection; it only grows when a
/// single frame is larger than it.
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    pub(crate) fn with_capacity(capacity: usize) -> ReadBuffer {
        ReadBuffer {
            buf: vec![0; capacity.max(256)],
            start: 0,
            end: 0,
        }
    }

    /// The unparsed bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops `n` parsed bytes from the front.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for `need` unparsed bytes in total: moves the unparsed
    /// tail to the front when the space after it is short, and grows only
    /// when `need` exceeds the capacity.
    fn reserve_for(&mut self, need: usize) {
        if self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need {
                self.buf.resize(need, 0);
            }
        }
    }

    /// One `read` of at most `limit` bytes; returns the bytes read (0: end
    /// of stream). `want` is how many unparsed bytes the caller needs in all
    /// (the length of the frame it is waiting for), or 0.
    pub(crate) async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        want: usize,
        limit: usize,
    ) -> io::Result<usize> {
        let unparsed = self.end - self.start;
        self.reserve_for(want.max(unparsed + 1));
        let stop = self.buf.len().min(self.end.saturating_add(limit.max(1)));
        let n = reader.read(&mut self.buf[self.end..stop]).await?;
        self.end += n;
        Ok(n)
    }
}

/// One server frame, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// A close frame and its status code, if it had one.
    Close(Option<u16>),
    /// Text or an unknown opcode: roomcast never sends these.
    Other(u8),
}

/// What parsing the front of a buffer found.
pub(crate) enum Parsed<'a> {
    /// A whole frame and the bytes it took.
    Frame(Frame<'a>, usize),
    /// Not enough bytes yet: the whole frame needs this many.
    Incomplete(usize),
}

/// Parses one server frame at the front of `data`.
pub(crate) fn parse_frame(data: &[u8]) -> Result<Parsed<'_>, WsError> {
    if data.len() < 2 {
        return Ok(Parsed::Incomplete(2));
    }
    let (b0, b1) = (data[0], data[1]);
    if b1 & MASKED != 0 {
        return Err(WsError::MaskedServerFrame);
    }
    let op = b0 & 0x0F;
    if b0 & FIN == 0 || op == opcode::CONTINUATION {
        return Err(WsError::Fragmented(op));
    }
    let (header, len) = match b1 & 0x7F {
        126 => {
            if data.len() < 4 {
                return Ok(Parsed::Incomplete(4));
            }
            (4, u64::from(u16::from_be_bytes([data[2], data[3]])))
        }
        127 => {
            if data.len() < 10 {
                return Ok(Parsed::Incomplete(10));
            }
            let mut be = [0u8; 8];
            be.copy_from_slice(&data[2..10]);
            (10, u64::from_be_bytes(be))
        }
        short => (2, u64::from(short)),
    };
    let total = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_add(header))
        .ok_or(WsError::FrameTooLarge(len))?;
    if data.len() < total {
        return Ok(Parsed::Incomplete(total));
    }
    let payload = &data[header..total];
    let frame = match op {
        opcode::BINARY => Frame::Binary(payload),
        opcode::PING => Frame::Ping(payload),
        opcode::PONG => Frame::Pong,
        opcode::CLOSE => {
            Frame::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])))
        }
        other => Frame::Other(other),
    };
    Ok(Parsed::Frame(frame, total))
}

/// Appends one final, masked client frame carrying `payload`; returns the
/// position of the payload's first byte in `out` (where the masking starts).
pub(crate) fn write_masked_frame(op: u8, payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) -> usize {
    out.push(FIN | op);
    let len = payload.len();
    if len < 126 {
        out.push(MASKED | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(MASKED | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(MASKED | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, byte) in out[start..].iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
    start
}

/// A masking key for connection number `n`: fixed for the connection,
/// different between connections, never all zeros.
pub(crate) fn mask_key(n: u64) -> [u8; 4] {
    // SplitMix64's finaliser: cheap and well spread.
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let key = (z as u32).to_le_bytes();
    if key == [0; 4] {
        [1, 2, 3, 4]
    } else {
        key
    }
}

/// Upgrades `stream` to a WebSocket speaking `codec`. Bytes the server sent
/// after its response head stay in `buffer`.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    codec: Codec,
    buffer: &mut ReadBuffer,
) -> Result<(), WsError> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {}\r\n\r\n",
        codec.subprotocol()
    );
    stream.write_all(request.as_bytes()).await?;
    let head_len = loop {
        if let Some(pos) = find(buffer.data(), b"\r\n\r\n") {
            break pos + 4;
        }
        if buffer.data().len() >= MAX_RESPONSE_HEAD {
            return Err(WsError::HandshakeRefused("response head too long".into()));
        }
        if buffer.fill(stream, 0, MAX_RESPONSE_HEAD).await? == 0 {
            return Err(WsError::HandshakeEof);
        }
    };
    let head = String::from_utf8_lossy(&buffer.data()[..head_len]).into_owned();
    buffer.consume(head_len);
    check_response(&head, codec)
}

/// Checks the status line, the accept value and the subprotocol echo.
fn check_response(head: &str, codec: Codec) -> Result<(), WsError> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        return Err(WsError::HandshakeRefused(status.to_owned()));
    }
    let (mut accept, mut protocol) = (None, None);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("sec-websocket-accept") {
                accept = Some(value);
            } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                protocol = Some(value);
            }
        }
    }
    if accept != Some(EXPECTED_ACCEPT) {
        return Err(WsError::HandshakeRefused(format!(
            "bad Sec-WebSocket-Accept {accept:?}"
        )));
    }
    if protocol != Some(codec.subprotocol()) {
        return Err(WsError::HandshakeRefused(format!(
            "server chose subprotocol {protocol:?}, we offered {}",
            codec.subprotocol()
        )));
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_frame_unmasks_to_the_payload() {
        for len in [0usize, 5, 125, 126, 300, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let key = mask_key(7);
            let mut out = Vec::new();
            let start = write_masked_frame(opcode::BINARY, &payload, key, &mut out);
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0x80);
            assert_eq!(&out[start - 4..start], &key);
            let unmasked: Vec<u8> = out[start..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i & 3])
                .collect();
            assert_eq!(unmasked, payload, "len {len}");
        }
    }

    #[test]
    fn parses_server_frames_of_every_length_form() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536] {
            let payload = vec![0xAB; len];
            let mut header = [0u8; roomcast::protocol::frame::MAX_HEADER_LEN];
            let n = roomcast::protocol::frame::write_header(
                roomcast::protocol::frame::Opcode::Binary,
                len,
                &mut header,
            );
            let mut wire = header[..n].to_vec();
            wire.extend_from_slice(&payload);
            match parse_frame(&wire[..wire.len() - 1]).unwrap() {
                Parsed::Incomplete(need) => assert!(need <= wire.len()),
                Parsed::Frame(..) => panic!("a truncated frame parsed"),
            }
            wire.push(0x82);
            match parse_frame(&wire).unwrap() {
                Parsed::Frame(Frame::Binary(p), used) => {
                    assert_eq!(p.len(), len);
                    assert_eq!(used, wire.len() - 1);
                }
                _ => panic!("no frame for len {len}"),
            }
        }
    }

    #[test]
    fn close_and_ping_frames() {
        match parse_frame(&[0x88, 0x02, 0x03, 0xF5]).unwrap() {
            Parsed::Frame(Frame::Close(Some(1013)), 4) => {}
            _ => panic!("close"),
        }
        match parse_frame(&[0x89, 0x01, 0x07]).unwrap() {
            Parsed::Frame(Frame::Ping(&[7]), 3) => {}
            _ => panic!("ping"),
        }
        assert!(matches!(
            parse_frame(&[0x02, 0x00]),
            Err(WsError::Fragmented(2))
        ));
    }

    #[test]
    fn read_buffer_compacts_and_grows() {
        let mut buffer = ReadBuffer::with_capacity(256);
        buffer.buf[..10].copy_from_slice(b"0123456789");
        buffer.end = 10;
        buffer.consume(8);
        buffer.reserve_for(1000);
        assert_eq!(buffer.data(), b"89");
        assert!(buffer.buf.len() >= 1000);
    }

    #[test]
    fn accepts_the_rfc_response() {
        let head =
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
                    sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                    sec-websocket-protocol: roomcast.v1.proto\r\n\r\n";
        check_response(head, Codec::Proto).unwrap();
        assert!(check_response(head, Codec::MsgPack).is_err());
        assert!(check_response("HTTP/1.1 503 Service Unavailable\r\n\r\n", Codec::Proto).is_err());
    }
}
