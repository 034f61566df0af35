//! The whole per-connection frame handler, over a real socket: one broker
//! runs in this process (started on the first input), and each input is
//! written, after a WebSocket upgrade, as raw bytes on a connection of its
//! own.
//!
//! Input: the first byte picks how (bit 0: `roomcast.v1.proto` when set,
//! else `roomcast.v1.msgpack`; bit 1: half-close our side right after
//! writing), the rest is written as is: WebSocket frames, as a client must
//! send them masked, or anything else. Then whatever the broker sends is
//! read until it closes or 50 ms pass.
//!
//! Findings, each a panic:
//! * the broker sends a frame a client must never see: masked, fragmented,
//!   reserved bits, an unknown opcode, an oversized control frame, a close
//!   code or reason that is not allowed, or a binary message its own codec
//!   cannot decode;
//! * the upgrade of a well-formed handshake is refused;
//! * after the first input and every 100 after it, a fresh well-behaved client in each
//!   codec subscribes, publishes and must get both acks and its own
//!   message within 5 s, and every connection of the earlier inputs must
//!   have been released within 10 s: a crashed, wedged or leaking broker
//!   is a finding.

#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use roomcast::protocol::{
    ClientOp, ClientRequest, Codec, Outcome, RequestId, RoomName, ServerEvent,
};
use roomcast::{Config, Server};

/// How long an input's connection is read when the broker does not close it.
const WAIT: Duration = Duration::from_millis(50);
/// Inputs between two health checks.
const HEALTH_EVERY: u64 = 100;
/// How long a health check waits for each answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the connections of earlier inputs may take to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

struct Harness {
    server: Server,
    addr: SocketAddr,
    runs: AtomicU64,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // libFuzzer's main does not ignore SIGPIPE as a Rust main would.
        // SAFETY: setting a signal's disposition to "ignore" before any socket is used.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let workers = std::env::var("ROOMCAST_FUZZ_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(2);
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            // Two cores, so rooms homed on the other core take the cross-core path.
            workers,
            pin_cores: false,
            // Every room keeps history and presence, so every operation is served.
            history_size: 16,
            presence: true,
            join_leave: true,
            close_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        let server = Server::start(config).expect("the broker starts");
        let addr = server.local_addr();
        Harness {
            server,
            addr,
            runs: AtomicU64::new(0),
        }
    })
}

/// One read, retried when a signal interrupts it: libFuzzer's timeout
/// timer (SIGALRM) interrupts blocking reads, and `Read::read` does not
/// retry by itself.
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Connects and upgrades; returns the stream and any bytes read past the
/// response head.
fn upgrade(addr: SocketAddr, codec: Codec) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the broker");
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(HEALTH_TIMEOUT))
        .expect("a read timeout");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {}\r\n\r\n",
        codec.subprotocol()
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the handshake");
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match read_some(&mut stream, &mut chunk) {
            Ok(0) => panic!("the broker closed during a valid handshake"),
            Ok(n) => n,
            Err(e) => panic!("no answer to a valid handshake: {e}"),
        };
        received.extend_from_slice(&chunk[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).into_owned();
            assert!(
                head.starts_with("HTTP/1.1 101"),
                "a valid upgrade was refused: {head}"
            );
            received.drain(..end + 4);
            return (stream, received);
        }
    }
}

/// Drops a connection with a reset, so no TIME_WAIT is left behind (a long
/// run would otherwise exhaust the local ports).
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket, and a pointer to a linger value of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// A masked client frame.
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x13, 0xc4, 0x7e];
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

/// One frame the broker sent.
struct ServerFrame {
    first_byte: u8,
    payload: Vec<u8>,
}

/// Takes the first complete server frame off `buf`, checking its header.
fn next_frame(buf: &mut Vec<u8>) -> Option<ServerFrame> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "the broker sent a masked frame");
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let len = u64::from_be_bytes(buf[2..10].try_into().unwrap());
            assert!(len <= 1 << 32, "the broker sent a frame of {len} bytes");
            (len as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    let frame = ServerFrame {
        first_byte: buf[0],
        payload: buf[header..header + len].to_vec(),
    };
    buf.drain(..header + len);
    Some(frame)
}

/// Checks one frame the broker sent on a connection using `codec`.
fn check_frame(codec: Codec, frame: &ServerFrame) -> Option<ServerEvent> {
    let first = frame.first_byte;
    assert_eq!(
        first & 0x80,
        0x80,
        "the broker sent a fragment: {first:#04x}"
    );
    assert_eq!(
        first & 0x70,
        0,
        "the broker set reserved bits: {first:#04x}"
    );
    let opcode = first & 0x0f;
    let payload = &frame.payload;
    match opcode {
        0x2 => {
            let bytes = Bytes::copy_from_slice(payload);
            match codec.decode_server(&bytes) {
                Ok(event) => return Some(event),
                Err(e) => {
                    panic!("the broker sent an envelope {codec} cannot read ({e}): {payload:02x?}")
                }
            }
        }
        0x8..=0xa => {
            assert!(
                payload.len() <= 125,
                "a control frame of {} bytes",
                payload.len()
            );
            if opcode == 0x8 && !payload.is_empty() {
                assert!(payload.len() >= 2, "a close frame of one byte");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                    "the broker closed with code {code}, which may not be sent"
                );
                assert!(
                    std::str::from_utf8(&payload[2..]).is_ok(),
                    "a close reason that is not UTF-8"
                );
            }
        }
        other => panic!("the broker sent opcode {other:#x}"),
    }
    None
}

/// Reads what the broker sends on an input's connection, until it closes
/// or `WAIT` passes, and checks every complete frame.
fn drain(stream: &mut TcpStream, codec: Codec, mut received: Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some(frame) = next_frame(&mut received) {
            check_frame(codec, &frame);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match read_some(stream, &mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A well-behaved client in `codec`: subscribe, publish, and get both acks
/// and the publication back, each within `HEALTH_TIMEOUT`.
fn health_check(harness: &Harness, run: u64) {
    for codec in Codec::ALL {
        let room = RoomName::new(&format!("fuzz.health.{run}.{codec}")).unwrap();
        let (mut stream, mut received) = upgrade(harness.addr, codec);
        let send = |stream: &mut TcpStream, id: u64, op: ClientOp| {
            let request = ClientRequest {
                id: RequestId(id),
                op,
            };
            let frame = client_frame(0x82, &codec.encode_request(&request));
            stream
                .write_all(&frame)
                .unwrap_or_else(|e| panic!("health check after {run} inputs: write failed: {e}"));
        };
        send(&mut stream, 1, ClientOp::subscribe(room.clone()));
        send(
            &mut stream,
            2,
            ClientOp::publish(room.clone(), Bytes::from_static(b"health")),
        );
        let (mut subscribed, mut published, mut delivered) = (false, false, false);
        let started = Instant::now();
        let mut chunk = [0u8; 16 * 1024];
        while !(subscribed && published && delivered) {
            while let Some(frame) = next_frame(&mut received) {
                match check_frame(codec, &frame) {
                    Some(ServerEvent::Reply(reply)) => {
                        assert!(
                            matches!(reply.outcome, Outcome::Ack(_)),
                            "health check after {run} inputs: {reply:?}"
                        );
                        subscribed |= reply.id.0 == 1;
                        published |= reply.id.0 == 2;
                    }
                    Some(ServerEvent::Message { room: r, data, .. }) => {
                        assert_eq!(r, room.as_str());
                        assert_eq!(&data[..], b"health");
                        delivered = true;
                    }
                    _ => {}
                }
            }
            if subscribed && published && delivered {
                break;
            }
            let left = HEALTH_TIMEOUT.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "health check after {run} inputs: the broker stopped serving {codec} \
                 (subscribed {subscribed}, published {published}, delivered {delivered})"
            );
            stream.set_read_timeout(Some(left)).unwrap();
            match read_some(&mut stream, &mut chunk) {
                Ok(0) => {
                    panic!("health check after {run} inputs: the broker closed the connection")
                }
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("health check after {run} inputs: {e}"),
            }
        }
        let _ = stream.write_all(&client_frame(0x88, &1000u16.to_be_bytes()));
        let _ = stream.shutdown(Shutdown::Write);
        drain(&mut stream, codec, received);
        reset(stream);
    }
    // Every earlier input's connection must be released (its session ended
    // and deregistered): the health connections themselves may still be
    // closing, so a few may remain.
    let started = Instant::now();
    loop {
        let open = harness.server.stats().connections_open;
        if open <= 2 {
            break;
        }
        assert!(
            started.elapsed() < RELEASE_TIMEOUT,
            "after {run} inputs, {open} connections are still open {RELEASE_TIMEOUT:?} after their clients left"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Inputs between two health checks: `HEALTH_EVERY`, or
/// `ROOMCAST_FUZZ_HEALTH_EVERY` (1 to check after every input, to find
/// which input of a run broke the broker).
fn health_every() -> u64 {
    static EVERY: OnceLock<u64> = OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("ROOMCAST_FUZZ_HEALTH_EVERY")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(HEALTH_EVERY)
    })
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let run = harness.runs.fetch_add(1, Ordering::Relaxed);
    if let Some((&flags, body)) = data.split_first() {
        let codec = if flags & 1 == 0 {
            Codec::MsgPack
        } else {
            Codec::Proto
        };
        let (mut stream, received) = upgrade(harness.addr, codec);
        let _ = stream.write_all(body);
        if flags & 2 != 0 {
            let _ = stream.shutdown(Shutdown::Write);
        }
        drain(&mut stream, codec, received);
        reset(stream);
    }
    // After the first input (so that replaying one input checks it) and
    // every `health_every()` inputs.
    if run.is_multiple_of(health_every()) {
        health_check(harness, run);
    }
});
