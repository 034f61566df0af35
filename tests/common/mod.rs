//! Test helpers: a real broker on an ephemeral port, and raw WebSocket
//! access for sending what a well-behaved client never would.
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use roomcast::client::{Client, Message};
use roomcast::protocol::Codec;
use roomcast::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A broker with test-friendly settings: 2 workers, so rooms are homed on
/// both cores and the cross-core path always runs.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        pin_cores: false,
        drain_period: Duration::from_millis(200),
        ..Config::default()
    }
}

/// A running broker that shuts down when dropped.
pub struct Broker {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(config())
    }

    pub fn start_with(config: Config) -> Broker {
        let server = Server::start(config).expect("broker starts");
        let addr = server.local_addr();
        Broker {
            server: Some(server),
            addr,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Starts a graceful shutdown and waits for it on a blocking thread.
    pub async fn shutdown(mut self) {
        let server = self.server.take().unwrap();
        server.shutdown();
        tokio::task::spawn_blocking(move || server.join())
            .await
            .unwrap();
    }

    pub async fn client(&self, codec: Codec) -> Client {
        Client::connect(self.addr, codec)
            .await
            .expect("client connects")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            server.join();
        }
    }
}

/// Waits for the next message, failing the test after 10 s.
pub async fn next(client: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(10), client.recv())
        .await
        .expect("a message within 10 s")
        .expect("connection still open")
}

/// Rooms homed on each of the two test workers (so tests can pick both).
pub fn rooms_on_both_cores(prefix: &str) -> (String, String) {
    use roomcast::protocol::RoomName;
    use roomcast::router::{home_core, CoreId};
    let mut found: [Option<String>; 2] = [None, None];
    for i in 0.. {
        let name = format!("{prefix}{i}");
        let CoreId(core) = home_core(&RoomName::new(&name).unwrap(), 2);
        if found[core].is_none() {
            found[core] = Some(name);
        }
        if let [Some(a), Some(b)] = &found {
            return (a.clone(), b.clone());
        }
    }
    unreachable!()
}

/// A WebSocket connection driven byte by byte: frames are built by hand
/// (masked, as a client must) and the server's frames parsed by hand.
pub struct RawWs {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

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
}

/// Sends a raw HTTP request and returns the response head and body (read
/// up to its Content-Length, or until the server closes).
pub async fn http_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
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
                break;
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// A handshake request for `path` with extra header lines.
pub fn handshake(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

impl RawWs {
    /// Upgrades with the given extra header lines (e.g. a subprotocol offer).
    pub async fn connect(addr: SocketAddr, extra: &str) -> RawWs {
        RawWs::upgrade(TcpStream::connect(addr).await.unwrap(), extra).await
    }

    /// Upgrades over a socket with a tiny receive buffer, so that a client
    /// that stops reading backs up into the server's queue quickly.
    pub async fn connect_small_buffer(addr: SocketAddr) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        RawWs::upgrade(socket.connect(addr).await.unwrap(), "").await
    }

    async fn upgrade(mut stream: TcpStream, extra: &str) -> RawWs {
        stream
            .write_all(handshake("/ws", extra).as_bytes())
            .await
            .unwrap();
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed during handshake");
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
                buffer.drain(..end + 4);
                return RawWs { stream, buffer };
            }
        }
    }

    /// Builds a masked client frame with explicit header bits.
    pub fn frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first_byte];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends one final binary frame.
    pub async fn send_binary(&mut self, payload: &[u8]) {
        self.send_bytes(&RawWs::frame(0x82, payload)).await;
    }

    /// Reads the next server frame; `None` when the socket closes or 10 s pass.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 65536];
            let n =
                match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => return None,
                };
            self.buffer.extend_from_slice(&chunk[..n]);
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
}

fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, header) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            )
        }
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    Some((
        RawFrame {
            fin: buf[0] & 0x80 != 0,
            opcode: buf[0] & 0x0f,
            payload: buf[header..header + len].to_vec(),
        },
        header + len,
    ))
}

/// Runs a program to completion, killing it past `deadline` (a note saying
/// so is appended to its stderr). Blocks the thread: call it from
/// `spawn_blocking`. Both pipes are drained on their own threads, so a
/// chatty child never blocks on a full pipe.
pub fn run_with_deadline(command: &mut Command, deadline: Duration) -> std::io::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let until = Instant::now() + deadline;
    let (status, killed) = loop {
        if let Some(status) = child.try_wait()? {
            break (status, false);
        }
        if Instant::now() >= until {
            child.kill()?;
            break (child.wait()?, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = stderr.join().unwrap();
    if killed {
        stderr.extend_from_slice(
            format!("\n(killed: still running after {deadline:?})\n").as_bytes(),
        );
    }
    Ok(Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr,
    })
}

/// The subprotocol header line that picks `codec`.
pub fn offer(codec: Codec) -> String {
    format!("Sec-WebSocket-Protocol: {}\r\n", codec.subprotocol())
}

/// A client speaking the protocol over a raw WebSocket: requests are encoded
/// with `codec`, server envelopes decoded, pings answered. Unlike the Rust
/// client it never reconnects, so a test controls every cut.
pub struct Peer {
    pub ws: RawWs,
    pub codec: Codec,
    next_id: u64,
    /// Events read while waiting for a reply, handed out by `event` first.
    early: std::collections::VecDeque<roomcast::protocol::ServerEvent>,
}

impl Peer {
    pub async fn connect(addr: SocketAddr, codec: Codec) -> Peer {
        Peer {
            ws: RawWs::connect(addr, &offer(codec)).await,
            codec,
            next_id: 1,
            early: Default::default(),
        }
    }

    /// Sends `op` with a fresh request id, returned.
    pub async fn send(&mut self, op: roomcast::protocol::ClientOp) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_with_id(id, op).await;
        id
    }

    pub async fn send_with_id(&mut self, id: u64, op: roomcast::protocol::ClientOp) {
        let request = roomcast::protocol::ClientRequest {
            id: roomcast::protocol::RequestId(id),
            op,
        };
        self.ws
            .send_binary(&self.codec.encode_request(&request))
            .await;
    }

    /// Sends `op` and waits for its reply (events read meanwhile are kept).
    pub async fn request(
        &mut self,
        op: roomcast::protocol::ClientOp,
    ) -> roomcast::protocol::Outcome {
        let id = self.send(op).await;
        loop {
            match self.read_event().await {
                Some(roomcast::protocol::ServerEvent::Reply(reply)) if reply.id.0 == id => {
                    return reply.outcome
                }
                Some(other) => self.early.push_back(other),
                None => panic!("connection ended before the reply to request {id}"),
            }
        }
    }

    /// The next event; `None` when the connection closes or 10 s pass.
    pub async fn event(&mut self) -> Option<roomcast::protocol::ServerEvent> {
        match self.early.pop_front() {
            Some(event) => Some(event),
            None => self.read_event().await,
        }
    }

    async fn read_event(&mut self) -> Option<roomcast::protocol::ServerEvent> {
        loop {
            let frame = self.ws.read_frame().await?;
            match frame.opcode {
                0x2 => {
                    let payload = bytes::Bytes::from(frame.payload);
                    return Some(
                        self.codec
                            .decode_server(&payload)
                            .expect("a valid envelope"),
                    );
                }
                0x9 => {
                    self.ws
                        .send_bytes(&RawWs::frame(0x8a, &frame.payload))
                        .await
                }
                0x8 => return None,
                _ => {}
            }
        }
    }

    /// Cuts the connection the way a crash or a pulled cable looks to the
    /// server: no close frame, and a reset rather than a goodbye.
    pub fn cut(self) {
        let _ = socket2::SockRef::from(&self.ws.stream).set_linger(Some(Duration::ZERO));
        drop(self);
    }
}

impl Peer {
    /// Connects with extra handshake header lines (a token, an origin).
    pub async fn with_headers(addr: SocketAddr, codec: Codec, extra: &str) -> Peer {
        let mut peer = Peer::connect_raw(
            RawWs::connect(addr, &format!("{}{extra}", offer(codec))).await,
            codec,
        );
        peer.next_id = 1;
        peer
    }

    fn connect_raw(ws: RawWs, codec: Codec) -> Peer {
        Peer {
            ws,
            codec,
            next_id: 1,
            early: Default::default(),
        }
    }
}
