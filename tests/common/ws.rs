//! Raw HTTP and WebSocket access, for sending what a well-behaved client
//! never would. Handshake requests and header lines are plain strings;
//! client frames are built by hand (masked, as a client must, unless a
//! builder says otherwise); server frames are parsed strictly, so a
//! server frame no server may send fails the test.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use roomcast::protocol::{ClientOp, ClientRequest, Codec, Outcome, RequestId, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The mask key of every masked frame built here.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// How long connecting and upgrading may take.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- handshake

/// A handshake request for `path` with extra header lines.
pub fn handshake(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The subprotocol header line that picks `codec`.
pub fn offer(codec: Codec) -> String {
    format!("Sec-WebSocket-Protocol: {}\r\n", codec.subprotocol())
}

/// The header line that presents `token`.
pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// Sends a raw HTTP request and returns the response head and body (read
/// up to its Content-Length, or until the server closes).
pub async fn http_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (response, _) = read_response(&mut stream, Duration::from_secs(5)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Reads one HTTP response: its head, then Content-Length bytes of body.
/// Returns what arrived, and whether that is the whole response (false when
/// the connection ended or went quiet for `wait` first).
pub async fn read_response(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                return (response, true);
            }
        }
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            _ => return (response, false),
        }
    }
}

// ---------------------------------------------------------------- client frames

/// A masked client frame with explicit header bits, as a client must send.
pub fn frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    frame_with_keys(first_byte, payload, MASK, MASK)
}

/// A masked pong answering a ping's `payload`.
pub fn pong(payload: &[u8]) -> Vec<u8> {
    frame(0x8a, payload)
}

/// A client frame with explicit first byte that declares the mask key
/// `declared` in its header but has its payload masked with `applied`.
pub fn frame_with_keys(
    first_byte: u8,
    payload: &[u8],
    declared: [u8; 4],
    applied: [u8; 4],
) -> Vec<u8> {
    let mut out = vec![first_byte];
    push_length(&mut out, 0x80, payload.len());
    out.extend_from_slice(&declared);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ applied[i % 4]));
    out
}

/// A frame without a mask: what a server sends (RFC 6455 §5.2), and what a
/// client must not.
pub fn unmasked(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    push_length(&mut out, 0, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A masked frame header announcing `len` bytes in the 64-bit form, and no payload.
pub fn header_only_64(first_byte: u8, len: u64) -> Vec<u8> {
    let mut out = vec![first_byte, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&MASK);
    out
}

/// The payload of a close frame: `code`, then `reason`.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// The second header byte (mask bit and length) and any extended length,
/// in the shortest form.
fn push_length(out: &mut Vec<u8>, mask_bit: u8, len: usize) {
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

// ---------------------------------------------------------------- server frames

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The close code of a close frame as RFC 6455 §7.1.5 reports it: 1005
    /// (no status) when it carries none.
    pub fn close_status(&self) -> u16 {
        self.close_code().unwrap_or(1005)
    }
}

/// The first server frame in `buf` and its length; `Ok(None)` while it is
/// incomplete, an error for a frame no server may send (masked, or with
/// reserved bits set).
fn parse_server_frame(buf: &[u8]) -> Result<Option<(RawFrame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("the server sent a masked frame".into());
    }
    if buf[0] & 0x70 != 0 {
        return Err("the server set reserved bits".into());
    }
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() < 4 => return Ok(None),
        126 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    if buf.len() < header + len {
        return Ok(None);
    }
    Ok(Some((
        RawFrame {
            fin: buf[0] & 0x80 != 0,
            opcode: buf[0] & 0x0f,
            payload: buf[header..header + len].to_vec(),
        },
        header + len,
    )))
}

/// Why [`RawWs::next_frame`] has no frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFrame {
    /// The server sent a frame no server may send.
    Malformed(String),
    /// The connection ended before another frame (a close frame, if any,
    /// was read already).
    Ended,
    /// Reading failed (a reset, say).
    Failed(String),
    /// No whole frame arrived within the wait.
    Timeout(Duration),
}

impl std::fmt::Display for NoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoFrame::Malformed(why) => f.write_str(why),
            NoFrame::Ended => f.write_str("connection ended without a close frame"),
            NoFrame::Failed(why) => write!(f, "connection failed: {why}"),
            NoFrame::Timeout(wait) => write!(f, "nothing within {wait:?}"),
        }
    }
}

// ---------------------------------------------------------------- the connection

/// A WebSocket connection driven byte by byte: frames are built by hand
/// and the server's frames parsed by hand.
pub struct RawWs {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawWs {
    /// Connects and upgrades with `extra` header lines (a subprotocol offer,
    /// a token); the head of any answer other than 101 is the error.
    pub async fn open(addr: SocketAddr, extra: &str) -> Result<RawWs, String> {
        RawWs::open_with_early(addr, extra, &[]).await
    }

    /// Like [`RawWs::open`], with `early` bytes written in the same write as
    /// the request, before the 101 arrives.
    pub async fn open_with_early(
        addr: SocketAddr,
        extra: &str,
        early: &[u8],
    ) -> Result<RawWs, String> {
        let stream = async { TcpStream::connect(addr).await.map_err(|e| e.to_string()) };
        RawWs::upgrade(stream, extra, early).await
    }

    /// Like [`RawWs::open`], failing the test if the upgrade fails.
    pub async fn connect(addr: SocketAddr, extra: &str) -> RawWs {
        RawWs::open(addr, extra)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Upgrades over a socket with a tiny receive buffer, so that a client
    /// that stops reading backs up into the server's queue quickly.
    pub async fn connect_small_buffer(addr: SocketAddr) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = async { socket.connect(addr).await.map_err(|e| e.to_string()) };
        RawWs::upgrade(stream, "", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn upgrade(
        stream: impl std::future::Future<Output = Result<TcpStream, String>>,
        extra: &str,
        early: &[u8],
    ) -> Result<RawWs, String> {
        let upgrading = async {
            let mut stream = stream.await?;
            let mut request = handshake("/ws", extra).into_bytes();
            request.extend_from_slice(early);
            stream
                .write_all(&request)
                .await
                .map_err(|e| e.to_string())?;
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed during the handshake".to_owned());
                }
                buffer.extend_from_slice(&chunk[..n]);
                if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    if !head.starts_with("HTTP/1.1 101") {
                        return Err(format!("upgrade refused: {head}"));
                    }
                    buffer.drain(..end + 4);
                    return Ok(RawWs { stream, buffer });
                }
            }
        };
        tokio::time::timeout(HANDSHAKE_WAIT, upgrading)
            .await
            .unwrap_or_else(|_| Err("handshake timed out".into()))
    }

    /// Writes `bytes` as they are; the server may have closed already.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Writes `bytes` as they are, failing the test if the write fails.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.unwrap();
    }

    /// Sends one final binary frame.
    pub async fn send_binary(&mut self, payload: &[u8]) {
        self.send_bytes(&frame(0x82, payload)).await;
    }

    /// Sends one request, encoded with `codec`, in a final binary frame.
    pub async fn send_request(
        &mut self,
        codec: Codec,
        id: u64,
        op: ClientOp,
    ) -> std::io::Result<()> {
        let request = ClientRequest {
            id: RequestId(id),
            op,
        };
        self.try_send(&frame(0x82, &codec.encode_request(&request)))
            .await
    }

    /// The next server frame, or why there is none within `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<RawFrame, NoFrame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((frame, used)) =
                parse_server_frame(&self.buffer).map_err(NoFrame::Malformed)?
            {
                self.buffer.drain(..used);
                return Ok(frame);
            }
            let mut chunk = vec![0u8; 65536];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err(NoFrame::Ended),
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(NoFrame::Failed(e.to_string())),
                Err(_) => return Err(NoFrame::Timeout(wait)),
            }
        }
    }

    /// Reads the next server frame; `None` when the socket closes or 10 s
    /// pass. A frame no server may send fails the test.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        match self.next_frame(Duration::from_secs(10)).await {
            Ok(frame) => Some(frame),
            Err(NoFrame::Malformed(why)) => panic!("{why}"),
            Err(_) => None,
        }
    }

    /// Reads frames until a close frame arrives; returns its code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        while let Some(frame) = self.read_frame().await {
            if frame.opcode == 0x8 {
                return frame.close_code();
            }
        }
        None
    }

    /// Reads frames until a binary one arrives.
    pub async fn read_binary(&mut self) -> Option<Vec<u8>> {
        while let Some(frame) = self.read_frame().await {
            match frame.opcode {
                0x2 => return Some(frame.payload),
                0x8 => return None,
                _ => {}
            }
        }
        None
    }

    /// Reads until the reply to `id`, answering pings; the other events read
    /// meanwhile are returned too.
    pub async fn reply_to(
        &mut self,
        codec: Codec,
        id: u64,
        wait: Duration,
    ) -> Result<(Outcome, Vec<ServerEvent>), String> {
        let mut others = Vec::new();
        loop {
            let frame = self.next_frame(wait).await.map_err(|e| e.to_string())?;
            match frame.opcode {
                0x2 => match codec.decode_server(&Bytes::from(frame.payload)) {
                    Ok(ServerEvent::Reply(reply)) if reply.id.0 == id => {
                        return Ok((reply.outcome, others))
                    }
                    Ok(other) => others.push(other),
                    Err(e) => return Err(format!("undecodable server envelope: {e}")),
                },
                0x8 => return Err(format!("closed with {}", frame.close_status())),
                0x9 => {
                    let _ = self.try_send(&pong(&frame.payload)).await;
                }
                _ => {}
            }
        }
    }

    /// Whether the server ends the TCP connection within `wait`.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}
