//! A hostile-client suite over real sockets. One broker, configured the way an
//! operator exposed to the internet would (HS256 tokens, an origin
//! allow-list, no anonymous access, tight limits, a publish rate), meets
//! every kind of malformed or abusive traffic in a table: bad masks, reserved
//! bits and opcodes, absurd length fields, bad control frames, broken
//! fragmentation, bad close frames, text frames, floods of pings and of
//! publishes, pathological MessagePack and protobuf envelopes, bad room
//! names, forged and expired tokens, wrong origins, slowloris handshakes and
//! oversized request heads. Each row states the answer docs/PROTOCOL.md
//! documents (a close code, an HTTP status, an error reply) and the test
//! checks exactly that answer.
//!
//! Throughout, a well-behaved subscriber stays connected to one room, and a
//! well-behaved publisher publishes a numbered message there before and
//! after every attack: the subscriber must receive each one exactly once, in
//! order, with contiguous offsets. The broker's counters must show the
//! attacks.
//!
//! A second test runs the `roomcast` binary with `RUST_LOG=trace` and checks
//! that no token (nor its signature) ever reaches its output.
//!
//! Raw frames are built by hand (by `tests/common/ws.rs`, masked unless a
//! row says otherwise) and every wait has a timeout.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use roomcast::config::List;
use roomcast::protocol::{ClientOp, Codec, Outcome, ServerEvent};
use roomcast::Config;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use common::broker::{config, Broker};
use common::jwt::{now, sign};
use common::msgpack::{bin, envelope, map, nested_arrays, nested_maps, text, uint, Mp};
use common::peer::room;
use common::protobuf::{length_delimited, varint};
use common::ws::{
    bearer, close_payload, frame, frame_with_keys, handshake, header_only_64, offer, pong,
    read_response, unmasked, NoFrame, RawWs, MASK,
};

const SECRET: &str = "hostile-suite-secret-7f3a9c1e5b2d4f60";
const ALLOWED_ORIGIN: &str = "https://app.example.com";
/// The room the well-behaved subscriber watches.
const STEADY: &str = "steady.watch";
const MAX_MESSAGE: usize = 16 * 1024;
const MAX_FRAGMENTS: usize = 8;
const MAX_ROOMS: usize = 4;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection that never speaks reaches a core only after this.
const TCP_DEFER_ACCEPT: Duration = Duration::from_secs(1);
/// Per connection. The well-behaved publisher (two publishes per attack,
/// fewer than the burst in all) stays under it; a flood trips it at once.
const PUBLISH_RATE: u32 = 100;
const PUBLISH_BURST: u32 = 300;
const RATE_LIMIT_CLOSE_AFTER: usize = 20;
/// The request id of the request an "accepted" row expects an ack for.
const ACCEPTED_ID: u64 = 77;
/// The request id of the probe sent after an error reply.
const PROBE_ID: u64 = 999;

// ---------------------------------------------------------------- broker

fn hostile_config() -> Config {
    Config {
        jwt_secret: SECRET.into(),
        jwt_leeway: Duration::ZERO,
        allow_anonymous: false,
        allowed_origins: List(vec![ALLOWED_ORIGIN.into()]),
        max_message_size: MAX_MESSAGE,
        max_fragments: MAX_FRAGMENTS,
        max_rooms_per_connection: MAX_ROOMS,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        tcp_defer_accept: TCP_DEFER_ACCEPT,
        publish_rate: PUBLISH_RATE,
        publish_burst: PUBLISH_BURST,
        rate_limit_close_after: RATE_LIMIT_CLOSE_AFTER,
        // max_headers (64) and max_header_bytes (8192) keep their defaults.
        ..config()
    }
}

// ---------------------------------------------------------------- tokens

/// A valid HS256 token for `user` with these room grants, for ten minutes.
fn token_for(user: &str, rooms: Value) -> String {
    sign(
        Algorithm::HS256,
        &json!({"sub": user, "exp": now() + 600, "rooms": rooms}),
        SECRET,
    )
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Every kind of bad token, made against `secret`.
struct BadTokens {
    forged: String,
    expired: String,
    alg_none: String,
    hs384: String,
    hs512: String,
    rs256_header: String,
    tampered: String,
    no_exp: String,
    not_yet_valid: String,
}

impl BadTokens {
    fn new(secret: &str) -> BadTokens {
        let claims =
            json!({"sub": "mallory", "exp": now() + 600, "rooms": {"sub": ["*"], "pub": ["*"]}});
        let valid = sign(Algorithm::HS256, &claims, secret);
        let parts: Vec<&str> = valid.split('.').collect();
        let rs256_header = format!(
            "{}.{}.{}",
            base64_url(br#"{"typ":"JWT","alg":"RS256"}"#),
            parts[1],
            parts[2]
        );
        let promoted = json!({"sub": "admin", "exp": now() + 600, "rooms": {"sub": ["*"], "pub": ["*"]}, "role": "admin"});
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            base64_url(&serde_json::to_vec(&promoted).unwrap()),
            parts[2]
        );
        BadTokens {
            forged: sign(Algorithm::HS256, &claims, "not-the-secret"),
            expired: sign(
                Algorithm::HS256,
                &json!({"sub": "mallory", "exp": now() - 30, "rooms": {"sub": ["*"]}}),
                secret,
            ),
            alg_none: format!(
                "{}.{}.",
                base64_url(br#"{"alg":"none","typ":"JWT"}"#),
                parts[1]
            ),
            hs384: sign(Algorithm::HS384, &claims, secret),
            hs512: sign(Algorithm::HS512, &claims, secret),
            rs256_header,
            tampered,
            no_exp: sign(Algorithm::HS256, &json!({"sub": "mallory"}), secret),
            not_yet_valid: sign(
                Algorithm::HS256,
                &json!({"sub": "mallory", "exp": now() + 600, "nbf": now() + 300}),
                secret,
            ),
        }
    }
}

// ---------------------------------------------------------------- frames

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// An upgraded connection with the attacker's (valid) token.
async fn attacker_conn(addr: SocketAddr, codec: Codec, token: &str) -> Result<RawWs, String> {
    RawWs::open(addr, &format!("{}{}", offer(codec), bearer(token))).await
}

// ---------------------------------------------------------------- envelopes

/// A subscribe to a room given as raw bytes.
fn subscribe_raw(id: u64, name: &[u8]) -> Vec<u8> {
    envelope(
        id,
        "subscribe",
        map([("room", Mp::StrBytes(name.to_vec()))]),
    )
}

fn subscribe_to(id: u64, name: &str) -> Vec<u8> {
    subscribe_raw(id, name.as_bytes())
}

fn publish_to(id: u64, name: &str, data: &[u8]) -> Vec<u8> {
    envelope(
        id,
        "publish",
        map([("room", text(name)), ("data", bin(data))]),
    )
}

/// A subscribe (id [`ACCEPTED_ID`]) whose envelope also carries an unknown
/// key holding `raw`.
fn subscribe_with_unknown(raw: Vec<u8>) -> Vec<u8> {
    map([
        ("id", uint(ACCEPTED_ID)),
        ("x", Mp::Raw(raw)),
        ("subscribe", map([("room", text("attack.nested"))])),
    ])
    .to_bytes()
}

/// A publish envelope to `attack.big` of exactly `size` bytes.
fn publish_of_size(size: usize) -> Vec<u8> {
    let overhead = publish_to(ACCEPTED_ID, "attack.big", &[0; 300]).len() - 300;
    let envelope = publish_to(ACCEPTED_ID, "attack.big", &vec![7; size - overhead]);
    assert_eq!(envelope.len(), size);
    envelope
}

/// A protobuf `ClientMessage` subscribing to a room given as raw bytes.
fn pb_subscribe(id: u64, name: &[u8]) -> Vec<u8> {
    [
        varint(1 << 3),
        varint(id),
        length_delimited(2, &length_delimited(1, name)),
    ]
    .concat()
}

// ---------------------------------------------------------------- the table

/// What an attack sends.
enum Send {
    /// Bytes after an upgrade with the attacker's valid token and this codec.
    Frames(Codec, Vec<u8>),
    /// The same, written with the upgrade request, before the 101.
    Pipelined(Codec, Vec<u8>),
    /// A raw HTTP request, written at once.
    Http(Vec<u8>),
    /// A raw HTTP request too big to be written before the answer: written
    /// while the answer is read.
    HttpStream(Vec<u8>),
    /// A request trickled a byte every 100 ms.
    Trickle(Vec<u8>),
    /// A TCP connection that never sends anything.
    Idle,
    /// One keep-alive connection sending a refused handshake every 100 ms.
    KeepAlive(Vec<u8>),
    /// This many pings in one write, then a request.
    PingFlood(usize),
    /// Publishes until refused, then many more.
    PublishFlood,
    /// Subscribes to one room more than allowed.
    RoomsPastMax,
}

/// The documented answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A close frame with this code, then the TCP connection ends.
    Close(u16),
    /// An error reply with this code, and the connection keeps working.
    Error(u32),
    /// Acknowledged like any request: the input is accepted.
    Accepted,
    /// This HTTP status, and no upgrade.
    Status(u16),
    /// This HTTP status, or the connection dropped without an answer; never an upgrade.
    StatusOrDropped(u16),
    /// Dropped at the handshake timeout (a bare close, or hyper's 408), never an upgrade.
    CutAtHandshakeTimeout,
    /// Held by the kernel until `tcp_defer_accept` ends, then dropped at the
    /// handshake timeout.
    CutAfterDeferral,
    /// A pong with the latest ping's payload, pongs in order and never more
    /// than pings, and the connection keeps working.
    LatestPingAnswered,
    /// Error replies with this code, then a close with this code.
    ErrorsThenClose(u32, u16),
}

/// What the broker did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observed {
    Close {
        code: u16,
        tcp_ended: bool,
    },
    /// An error reply; `serving`: a later request on the same connection was acknowledged.
    Error {
        code: u32,
        serving: bool,
    },
    Ack,
    Http {
        status: u16,
        after_ms: u128,
    },
    Dropped {
        after_ms: u128,
    },
    /// A keep-alive connection: the statuses answered, then dropped.
    KeptAlive {
        statuses: Vec<u16>,
        after_ms: u128,
    },
    Pongs {
        pings: usize,
        pongs: usize,
        in_order: bool,
        latest_answered: bool,
        serving: bool,
    },
    Flood {
        accepted: usize,
        errors: Vec<u32>,
        close: Option<u16>,
    },
    Nothing(String),
}

fn fits(answer: Answer, observed: &Observed) -> bool {
    let cut = HANDSHAKE_TIMEOUT.as_millis();
    match (answer, observed) {
        (Answer::Close(want), Observed::Close { code, tcp_ended }) => want == *code && *tcp_ended,
        (Answer::Error(want), Observed::Error { code, serving }) => want == *code && *serving,
        (Answer::Accepted, Observed::Ack) => true,
        (Answer::Status(want), Observed::Http { status, .. }) => want == *status,
        (Answer::StatusOrDropped(want), Observed::Http { status, .. }) => want == *status,
        (Answer::StatusOrDropped(_), Observed::Dropped { .. }) => true,
        (Answer::CutAtHandshakeTimeout, Observed::Dropped { after_ms })
        | (
            Answer::CutAtHandshakeTimeout,
            Observed::Http {
                status: 408,
                after_ms,
            },
        ) => *after_ms >= cut * 9 / 10 && *after_ms <= cut + 2000,
        (Answer::CutAfterDeferral, Observed::Dropped { after_ms })
        | (
            Answer::CutAfterDeferral,
            Observed::Http {
                status: 408,
                after_ms,
            },
        ) => {
            let cut = cut + TCP_DEFER_ACCEPT.as_millis();
            *after_ms >= cut * 9 / 10 && *after_ms <= cut + 2000
        }
        (Answer::CutAtHandshakeTimeout, Observed::KeptAlive { statuses, after_ms }) => {
            !statuses.is_empty()
                && statuses.iter().all(|s| *s == 401)
                && *after_ms >= cut * 9 / 10
                && *after_ms <= cut + 2000
        }
        (
            Answer::LatestPingAnswered,
            Observed::Pongs {
                pings,
                pongs,
                in_order,
                latest_answered,
                serving,
            },
        ) => *pongs >= 1 && pongs <= pings && *in_order && *latest_answered && *serving,
        (
            Answer::ErrorsThenClose(want_error, want_close),
            Observed::Flood { errors, close, .. },
        ) => {
            !errors.is_empty()
                && errors.iter().all(|e| *e == want_error)
                && *close == Some(want_close)
        }
        _ => false,
    }
}

struct Row {
    name: String,
    send: Send,
    answer: Answer,
}

fn row(name: impl Into<String>, send: Send, answer: Answer) -> Row {
    Row {
        name: name.into(),
        send,
        answer,
    }
}

/// A row sending MessagePack-connection frames.
fn frames(name: impl Into<String>, bytes: Vec<u8>, answer: Answer) -> Row {
    row(name, Send::Frames(Codec::MsgPack, bytes), answer)
}

/// A row sending protobuf-connection frames.
fn proto_frames(name: impl Into<String>, bytes: Vec<u8>, answer: Answer) -> Row {
    row(name, Send::Frames(Codec::Proto, bytes), answer)
}

fn http(name: impl Into<String>, request: impl Into<Vec<u8>>, answer: Answer) -> Row {
    row(name, Send::Http(request.into()), answer)
}

fn rows(attacker: &str, bad: &BadTokens) -> Vec<Row> {
    use Answer::{Accepted, Close, Error, Status, StatusOrDropped};
    let accepted_subscribe = subscribe_to(ACCEPTED_ID, "attack.ok");
    let mut rows = vec![
        // Masks.
        frames(
            "unmasked client frame",
            unmasked(0x82, &accepted_subscribe),
            Close(1002),
        ),
        frames(
            "masked with an all-zero key",
            frame_with_keys(0x82, &accepted_subscribe, [0; 4], [0; 4]),
            Accepted,
        ),
        frames(
            "payload masked with another key than the one declared",
            frame_with_keys(
                0x82,
                &accepted_subscribe,
                [MASK[0] ^ 0x43, MASK[1], MASK[2], MASK[3]],
                MASK,
            ),
            Close(1007),
        ),
        // Reserved bits.
        frames("RSV1 set", frame(0xc2, &accepted_subscribe), Close(1002)),
        frames("RSV2 set", frame(0xa2, &accepted_subscribe), Close(1002)),
        frames("RSV3 set", frame(0x92, &accepted_subscribe), Close(1002)),
        frames("RSV1 set on a ping", frame(0xc9, b"p"), Close(1002)),
    ];
    // Reserved opcodes.
    for opcode in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        rows.push(frames(
            format!("reserved opcode {opcode:#x}"),
            frame(0x80 | opcode, b"x"),
            Close(1002),
        ));
    }
    let mut top_bit = vec![0x82, 0x80 | 127];
    top_bit.extend_from_slice(&(0x8000_0000_0000_0005u64).to_be_bytes());
    top_bit.extend_from_slice(&MASK);
    top_bit.extend_from_slice(b"hello");
    let mut len16 = vec![0x82, 0x80 | 126, 0xff, 0xff];
    len16.extend_from_slice(&MASK);
    rows.extend([
        // Length fields.
        frames("64-bit length with the top bit set", top_bit, Close(1009)),
        frames(
            "length prefix of 4 GiB and no payload",
            header_only_64(0x82, 4 << 30),
            Close(1009),
        ),
        frames(
            "length prefix of 2^64-1 and no payload",
            header_only_64(0x82, u64::MAX),
            Close(1009),
        ),
        frames(
            "16-bit length of 65535 (over max_message_size) and no payload",
            len16,
            Close(1009),
        ),
        frames(
            "one frame one byte over max_message_size",
            frame(0x82, &vec![0; MAX_MESSAGE + 1]),
            Close(1009),
        ),
        frames(
            "a publish of exactly max_message_size bytes",
            frame(0x82, &publish_of_size(MAX_MESSAGE)),
            Accepted,
        ),
        // Control frames.
        frames(
            "ping with 126 bytes",
            frame(0x89, &[b'p'; 126]),
            Close(1002),
        ),
        frames(
            "pong with 126 bytes",
            frame(0x8a, &[b'p'; 126]),
            Close(1002),
        ),
        frames(
            "close with 126 bytes",
            frame(0x88, &close_payload(1000, &[b'r'; 124])),
            Close(1002),
        ),
        frames("fragmented ping", frame(0x09, b"p"), Close(1002)),
        frames("fragmented pong", frame(0x0a, b"p"), Close(1002)),
        frames(
            "fragmented close",
            frame(0x08, &close_payload(1000, b"")),
            Close(1002),
        ),
        frames(
            "10,000 unsolicited pongs, then a request",
            concat(&[
                (0..10_000u32)
                    .flat_map(|i| frame(0x8a, &i.to_be_bytes()))
                    .collect(),
                frame(0x82, &accepted_subscribe),
            ]),
            Accepted,
        ),
        // Fragmentation.
        frames(
            "continuation without a start",
            frame(0x80, &accepted_subscribe),
            Close(1002),
        ),
        frames(
            "non-final continuation without a start",
            frame(0x00, b"x"),
            Close(1002),
        ),
        frames(
            "new binary frame inside a fragmented message",
            concat(&[frame(0x02, b"a"), frame(0x82, &accepted_subscribe)]),
            Close(1002),
        ),
        frames(
            "two fragmented messages interleaved",
            concat(&[
                frame(0x02, &accepted_subscribe[..3]),
                frame(0x02, &accepted_subscribe[..3]),
                frame(0x80, &accepted_subscribe[3..]),
            ]),
            Close(1002),
        ),
        frames(
            "text frame inside a fragmented binary message",
            concat(&[frame(0x02, b"a"), frame(0x81, b"b")]),
            Close(1002),
        ),
        frames(
            "too many fragments (max_fragments + 1)",
            concat(
                &std::iter::once(frame(0x02, b"a"))
                    .chain((0..MAX_FRAGMENTS).map(|_| frame(0x00, b"a")))
                    .collect::<Vec<_>>(),
            ),
            Close(1009),
        ),
        frames(
            "fragments adding up over max_message_size",
            concat(&[
                frame(0x02, &vec![0; MAX_MESSAGE / 2]),
                frame(0x00, &vec![0; MAX_MESSAGE / 2]),
                frame(0x80, &[0; 1]),
            ]),
            Close(1009),
        ),
        frames(
            "fragmented message within the limits, a ping between fragments",
            concat(&[
                frame(0x02, &accepted_subscribe[..4]),
                frame(0x89, b"between"),
                frame(0x00, &accepted_subscribe[4..9]),
                frame(0x80, &accepted_subscribe[9..]),
            ]),
            Accepted,
        ),
        // Close frames.
        frames(
            "close with a 1-byte payload",
            frame(0x88, &[0x03]),
            Close(1002),
        ),
    ]);
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        rows.push(frames(
            format!("close with code {code}"),
            frame(0x88, &close_payload(code, b"bye")),
            Close(1002),
        ));
    }
    rows.extend([
        frames(
            "close reason not UTF-8",
            frame(0x88, &close_payload(1000, &[0xff, 0xfe, 0xfd])),
            Close(1007),
        ),
        frames(
            "close reason with a truncated UTF-8 sequence",
            frame(0x88, &close_payload(1000, &[b'o', b'k', 0xe2, 0x82])),
            Close(1007),
        ),
        // Text frames.
        frames("text frame", frame(0x81, br#"{"id":1}"#), Close(1003)),
        frames(
            "text frame with invalid UTF-8",
            frame(0x81, &[b'a', 0xc3, 0x28]),
            Close(1007),
        ),
        frames("fragmented text frame", frame(0x01, b"{"), Close(1003)),
        // Floods.
        row(
            "ping flood: 10,000 pings in one write",
            Send::PingFlood(10_000),
            Answer::LatestPingAnswered,
        ),
        row(
            "publish flood over the rate limit",
            Send::PublishFlood,
            Answer::ErrorsThenClose(109, 1008),
        ),
        // MessagePack envelopes.
        frames(
            "garbage (0xc1, never used)",
            frame(0x82, &[0xc1; 64]),
            Close(1007),
        ),
        frames(
            "JSON in a binary frame",
            frame(0x82, br#"{"id":1,"subscribe":{"room":"a"}}"#),
            Close(1007),
        ),
        frames("a bare integer", frame(0x82, &[0x2a]), Close(1007)),
        frames(
            "truncated map",
            frame(0x82, &accepted_subscribe[..accepted_subscribe.len() - 3]),
            Close(1007),
        ),
        frames(
            "arrays nested 10,000 deep in an unknown key",
            frame(0x82, &subscribe_with_unknown(nested_arrays(10_000))),
            Close(1007),
        ),
        frames(
            "maps nested 5,000 deep in an unknown key",
            frame(0x82, &subscribe_with_unknown(nested_maps(5_000))),
            Close(1007),
        ),
        frames(
            "the envelope itself nested 10,000 deep",
            frame(0x82, &nested_arrays(10_000)),
            Close(1007),
        ),
        frames(
            "nesting at 16 levels (one past the documented 15)",
            frame(0x82, &subscribe_with_unknown(nested_arrays(15))),
            Close(1007),
        ),
        frames(
            "nesting at the documented 15 levels",
            frame(0x82, &subscribe_with_unknown(nested_arrays(14))),
            Accepted,
        ),
        frames(
            "unknown fields at every level",
            frame(
                0x82,
                &map([
                    ("zzz", map([("deep", Mp::Array(vec![uint(1), text("x")]))])),
                    ("id", uint(ACCEPTED_ID)),
                    (
                        "subscribe",
                        map([
                            ("room", text("attack.unknown")),
                            ("colour", text("blue")),
                            ("n", Mp::Int(-5)),
                        ]),
                    ),
                    ("trailer", Mp::Bool(true)),
                ])
                .to_bytes(),
            ),
            Accepted,
        ),
        frames(
            "an unknown field of 10 KB",
            frame(
                0x82,
                &subscribe_with_unknown(Mp::Bin(vec![0xab; 10_000]).to_bytes()),
            ),
            Accepted,
        ),
        frames(
            "id of the wrong type (string)",
            frame(
                0x82,
                &map([
                    ("id", text("seventy-seven")),
                    ("subscribe", map([("room", text("attack.types"))])),
                ])
                .to_bytes(),
            ),
            Close(1007),
        ),
        frames(
            "negative id",
            frame(
                0x82,
                &map([
                    ("id", Mp::Int(-77)),
                    ("subscribe", map([("room", text("attack.types"))])),
                ])
                .to_bytes(),
            ),
            Close(1007),
        ),
        frames(
            "room of the wrong type (integer)",
            frame(
                0x82,
                &envelope(ACCEPTED_ID, "subscribe", map([("room", uint(7))])),
            ),
            Close(1007),
        ),
        frames(
            "operation of the wrong type (string)",
            frame(
                0x82,
                &envelope(ACCEPTED_ID, "subscribe", text("attack.types")),
            ),
            Close(1007),
        ),
        frames(
            "data of the wrong type (map)",
            frame(
                0x82,
                &envelope(
                    ACCEPTED_ID,
                    "publish",
                    map([
                        ("room", text("attack.types")),
                        ("data", map([("x", uint(1))])),
                    ]),
                ),
            ),
            Close(1007),
        ),
        frames(
            "join_leave of the wrong type (string)",
            frame(
                0x82,
                &envelope(
                    ACCEPTED_ID,
                    "subscribe",
                    map([("room", text("attack.types")), ("join_leave", text("yes"))]),
                ),
            ),
            Close(1007),
        ),
        frames(
            "repeated key",
            frame(
                0x82,
                &map([
                    ("id", uint(1)),
                    ("id", uint(2)),
                    ("subscribe", map([("room", text("attack.types"))])),
                ])
                .to_bytes(),
            ),
            Close(1007),
        ),
        frames(
            "room name not UTF-8",
            frame(0x82, &subscribe_raw(ACCEPTED_ID, &[b'a', 0xff, 0xfe])),
            Close(1007),
        ),
        frames(
            "two operations in one envelope",
            frame(
                0x82,
                &map([
                    ("id", uint(5)),
                    ("subscribe", map([("room", text("attack.two"))])),
                    ("publish", map([("room", text("attack.two"))])),
                ])
                .to_bytes(),
            ),
            Error(101),
        ),
        frames(
            "no known operation",
            frame(0x82, &envelope(5, "frobnicate", map([]))),
            Error(100),
        ),
        frames(
            "idempotency key of 129 bytes",
            frame(
                0x82,
                &envelope(
                    5,
                    "publish",
                    map([
                        ("room", text("attack.key")),
                        ("data", bin(b"x")),
                        ("idempotency_key", text(&"k".repeat(129))),
                    ]),
                ),
            ),
            Error(101),
        ),
        frames(
            "room name of 256 bytes",
            frame(0x82, &subscribe_to(5, &"r".repeat(256))),
            Error(102),
        ),
        frames(
            "room name of 12,000 bytes",
            frame(0x82, &subscribe_to(5, &"r".repeat(12_000))),
            Error(102),
        ),
        frames(
            "room name of 255 bytes (the limit)",
            frame(0x82, &subscribe_to(ACCEPTED_ID, &"r".repeat(255))),
            Accepted,
        ),
        frames(
            "empty room name",
            frame(0x82, &subscribe_to(5, "")),
            Error(102),
        ),
    ]);
    for (what, name) in [
        ("a space", "a b"),
        ("a tab", "a\tb"),
        ("a newline", "a\nb"),
        ("a no-break space", "a\u{a0}b"),
        ("an ideographic space", "a\u{3000}b"),
        ("*", "ticks.*"),
        ("?", "ticks.?"),
        (">", "ticks.>"),
        ("a C0 control character", "a\u{1}b"),
        ("DEL", "a\u{7f}b"),
        ("a C1 control character", "a\u{85}b"),
    ] {
        rows.push(frames(
            format!("room name with {what}"),
            frame(0x82, &subscribe_to(5, name)),
            Error(102),
        ));
    }
    rows.extend([
        frames(
            "fire-and-forget publish to an invalid room",
            frame(0x82, &publish_to(0, "bad room", b"x")),
            Error(102),
        ),
        frames(
            "unsubscribe from a room never joined",
            frame(
                0x82,
                &envelope(5, "unsubscribe", map([("room", text("attack.never"))])),
            ),
            Error(104),
        ),
        frames(
            "history of a room that keeps none",
            frame(
                0x82,
                &envelope(5, "history", map([("room", text("attack.history"))])),
            ),
            Error(106),
        ),
        frames(
            "publish into the watched room without a grant",
            frame(0x82, &publish_to(5, STEADY, b"injected")),
            Error(107),
        ),
        frames(
            "refresh with a forged token",
            frame(
                0x82,
                &envelope(5, "refresh", map([("token", text(&bad.forged))])),
            ),
            Error(108),
        ),
        frames(
            "refresh with an expired token",
            frame(
                0x82,
                &envelope(5, "refresh", map([("token", text(&bad.expired))])),
            ),
            Error(108),
        ),
        frames(
            "refresh with an alg: none token",
            frame(
                0x82,
                &envelope(5, "refresh", map([("token", text(&bad.alg_none))])),
            ),
            Error(108),
        ),
        row(
            "subscribe past max_rooms_per_connection",
            Send::RoomsPastMax,
            Error(103),
        ),
        // Protobuf envelopes.
        proto_frames("protobuf garbage", frame(0x82, &[0xff; 32]), Close(1007)),
        proto_frames(
            "protobuf length prefix past the end",
            frame(0x82, &[0x08, 0x05, 0x22, 0x7f, 0x0a, 0x01]),
            Close(1007),
        ),
        proto_frames(
            "protobuf varint of 11 bytes",
            frame(
                0x82,
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
            ),
            Close(1007),
        ),
        proto_frames(
            "protobuf id with the wrong wire type",
            frame(0x82, &[0x0d, 1, 2, 3, 4]),
            Close(1007),
        ),
        proto_frames(
            "protobuf room name not UTF-8",
            frame(0x82, &pb_subscribe(ACCEPTED_ID, &[b'a', 0xff])),
            Close(1007),
        ),
        proto_frames(
            "protobuf unknown fields",
            frame(
                0x82,
                &concat(&[
                    length_delimited(99, b"unknown bytes"),
                    varint(100 << 3),
                    varint(12345),
                    pb_subscribe(ACCEPTED_ID, b"attack.proto"),
                ]),
            ),
            Accepted,
        ),
        proto_frames("protobuf empty message", frame(0x82, &[]), Error(100)),
        proto_frames(
            "protobuf room name of 256 bytes",
            frame(0x82, &pb_subscribe(5, &[b'r'; 256])),
            Error(102),
        ),
    ]);
    // Before the upgrade: tokens, origins, subprotocols, heads.
    let good = bearer(attacker);
    let with_token = |extra: &str| handshake("/ws", &format!("{good}{extra}"));
    for (what, token) in [
        ("forged token (another secret)", &bad.forged),
        ("expired token", &bad.expired),
        ("alg: none token", &bad.alg_none),
        ("HS384 token signed with the right secret", &bad.hs384),
        ("HS512 token signed with the right secret", &bad.hs512),
        ("token whose header says RS256", &bad.rs256_header),
        ("tampered claims under a valid signature", &bad.tampered),
        ("token without exp", &bad.no_exp),
        ("token not valid yet (nbf)", &bad.not_yet_valid),
    ] {
        rows.push(http(what, handshake("/ws", &bearer(token)), Status(401)));
    }
    rows.extend([
        http("no token", handshake("/ws", ""), Status(401)),
        http(
            "garbage token",
            handshake("/ws", &bearer("not.a.token")),
            Status(401),
        ),
        http(
            "empty bearer token",
            handshake("/ws", "Authorization: Bearer \r\n"),
            Status(401),
        ),
        http(
            "expired token in the query string",
            handshake(&format!("/ws?token={}", bad.expired), ""),
            Status(401),
        ),
        http(
            "forged token in a subprotocol entry",
            handshake(
                "/ws",
                &format!(
                    "Sec-WebSocket-Protocol: roomcast.v1.msgpack, roomcast.jwt.{}\r\n",
                    bad.forged
                ),
            ),
            Status(401),
        ),
        http(
            "wrong Origin",
            with_token("Origin: https://evil.example.com\r\n"),
            Status(403),
        ),
        http("Origin: null", with_token("Origin: null\r\n"), Status(403)),
        http(
            "Origin that only starts with the allowed one",
            with_token(&format!("Origin: {ALLOWED_ORIGIN}.evil.com\r\n")),
            Status(403),
        ),
        http(
            "non-ASCII subprotocol name",
            with_token("Sec-WebSocket-Protocol: r\u{f6}\u{f6}mcast.v1.msgpack\r\n"),
            Status(400),
        ),
        http(
            "subprotocol with a raw Latin-1 byte",
            concat(&[
                {
                    // The request without its final empty line.
                    let request = with_token("");
                    request.as_bytes()[..request.len() - 2].to_vec()
                },
                b"Sec-WebSocket-Protocol: roomcast\xe9\r\n\r\n".to_vec(),
            ]),
            Status(400),
        ),
        http(
            "only unknown subprotocols",
            with_token("Sec-WebSocket-Protocol: mqtt, roomcast.v2.msgpack\r\n"),
            Status(400),
        ),
        http(
            "missing Sec-WebSocket-Key",
            format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{good}\r\n"
            ),
            Status(400),
        ),
        http(
            "Sec-WebSocket-Version 8",
            format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n{good}\r\n"
            ),
            Status(400),
        ),
        http(
            "100 short header lines (over max_headers, under max_header_bytes)",
            with_token(&(0..100).map(|i| format!("h{i}: v\r\n")).collect::<String>()),
            Status(431),
        ),
        row(
            "5,000 header lines",
            Send::HttpStream(
                with_token(
                    &(0..5_000)
                        .map(|i| format!("X-Filler-{i}: y\r\n"))
                        .collect::<String>(),
                )
                .into_bytes(),
            ),
            StatusOrDropped(431),
        ),
        row(
            "a 20 MB header",
            Send::HttpStream(
                with_token(&format!("X-Big: {}\r\n", "y".repeat(20 << 20))).into_bytes(),
            ),
            StatusOrDropped(431),
        ),
        row(
            "a 20 KB token",
            Send::HttpStream(handshake("/ws", &bearer(&"t".repeat(20_000))).into_bytes()),
            StatusOrDropped(431),
        ),
        row(
            "slowloris: a handshake trickled a byte every 100 ms",
            Send::Trickle(with_token("").into_bytes()),
            Answer::CutAtHandshakeTimeout,
        ),
        row(
            "idle connection: nothing sent",
            Send::Idle,
            Answer::CutAfterDeferral,
        ),
        row(
            "keep-alive: a refused handshake every 100 ms on one connection",
            Send::KeepAlive(handshake("/ws", &bearer(&bad.forged)).into_bytes()),
            Answer::CutAtHandshakeTimeout,
        ),
        http(
            "upgrade headers missing",
            format!("GET /ws HTTP/1.1\r\nHost: x\r\n{good}\r\n"),
            Status(426),
        ),
        // Hostile frames written with the upgrade request, before the 101.
        row(
            "a subscribe pipelined behind the handshake",
            Send::Pipelined(Codec::MsgPack, frame(0x82, &accepted_subscribe)),
            Accepted,
        ),
        row(
            "an unmasked subscribe pipelined behind the handshake",
            Send::Pipelined(Codec::MsgPack, unmasked(0x82, &accepted_subscribe)),
            Close(1002),
        ),
        row(
            "a text frame pipelined behind the handshake",
            Send::Pipelined(Codec::MsgPack, frame(0x81, b"hi")),
            Close(1003),
        ),
        row(
            "a 4 GiB length prefix pipelined behind the handshake",
            Send::Pipelined(Codec::MsgPack, header_only_64(0x82, 4 << 30)),
            Close(1009),
        ),
        row(
            "protobuf garbage pipelined behind the handshake",
            Send::Pipelined(Codec::Proto, frame(0x82, &[0xff; 8])),
            Close(1007),
        ),
    ]);
    rows
}

// ---------------------------------------------------------------- running a row

async fn attack(addr: SocketAddr, attacker: &str, send: &Send) -> Observed {
    match send {
        Send::Frames(codec, bytes) => frames_attack(addr, attacker, *codec, bytes, false).await,
        Send::Pipelined(codec, bytes) => frames_attack(addr, attacker, *codec, bytes, true).await,
        Send::KeepAlive(request) => keep_alive(addr, request).await,
        Send::Http(request) => http_attack(addr, request, false).await,
        Send::HttpStream(request) => http_attack(addr, request, true).await,
        Send::Trickle(request) => trickle(addr, request).await,
        Send::Idle => trickle(addr, &[]).await,
        Send::PingFlood(n) => ping_flood(addr, attacker, *n).await,
        Send::PublishFlood => publish_flood(addr, attacker).await,
        Send::RoomsPastMax => rooms_past_max(addr, attacker).await,
    }
}

/// Whether the connection still serves: a publish to a granted room is acknowledged.
async fn still_serving(conn: &mut RawWs, codec: Codec) -> bool {
    let op = ClientOp::publish(room("probe.alive"), Bytes::from_static(b"alive"));
    if conn.send_request(codec, PROBE_ID, op).await.is_err() {
        return false;
    }
    matches!(
        conn.reply_to(codec, PROBE_ID, Duration::from_secs(5)).await,
        Ok((Outcome::Ack(_), _))
    )
}

async fn frames_attack(
    addr: SocketAddr,
    attacker: &str,
    codec: Codec,
    bytes: &[u8],
    pipelined: bool,
) -> Observed {
    let extra = format!("{}{}", offer(codec), bearer(attacker));
    let early = if pipelined { bytes } else { &[] };
    let mut conn = match RawWs::open_with_early(addr, &extra, early).await {
        Ok(conn) => conn,
        Err(e) => return Observed::Nothing(e),
    };
    if !pipelined {
        // The server may close before reading everything: a failed write is not the answer.
        let _ = conn.try_send(bytes).await;
    }
    loop {
        let frame = match conn.next_frame(Duration::from_secs(5)).await {
            Ok(frame) => frame,
            Err(e) => return Observed::Nothing(e.to_string()),
        };
        match frame.opcode {
            0x8 => {
                let code = frame.close_status();
                let tcp_ended = conn.ends_within(Duration::from_secs(4)).await;
                return Observed::Close { code, tcp_ended };
            }
            0x2 => {
                let event = match codec.decode_server(&Bytes::from(frame.payload)) {
                    Ok(event) => event,
                    Err(e) => return Observed::Nothing(format!("undecodable reply: {e}")),
                };
                return match event {
                    ServerEvent::Reply(reply) => match reply.outcome {
                        Outcome::Error { code, .. } => Observed::Error {
                            code,
                            serving: still_serving(&mut conn, codec).await,
                        },
                        Outcome::Ack(_) if reply.id.0 == ACCEPTED_ID => Observed::Ack,
                        other => Observed::Nothing(format!("reply {}: {other:?}", reply.id.0)),
                    },
                    other => Observed::Nothing(format!("unexpected event {other:?}")),
                };
            }
            0x9 | 0xa => {}
            other => return Observed::Nothing(format!("unexpected frame, opcode {other:#x}")),
        }
    }
}

/// Parses the status line of an HTTP answer.
fn status_of(head: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(head);
    let mut words = text.split_whitespace();
    words.next()?;
    words.next()?.parse().ok()
}

/// Reads an HTTP answer: its status as soon as the head is complete, or
/// `None` if the connection ends (or `wait` passes) before one.
async fn read_status(stream: &mut tokio::net::tcp::OwnedReadHalf, wait: Duration) -> Option<u16> {
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if response.windows(4).any(|w| w == b"\r\n\r\n") {
            return status_of(&response);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            // Ended (or reset) before a complete head: whatever came is the answer, if any.
            _ => return status_of(&response).filter(|_| !response.is_empty()),
        }
    }
}

async fn http_attack(addr: SocketAddr, request: &[u8], stream_it: bool) -> Observed {
    let started = Instant::now();
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => return Observed::Nothing(e.to_string()),
    };
    let (mut read, mut write) = stream.into_split();
    let request = request.to_vec();
    let total = request.len();
    // The write half is kept open until the answer is read: hyper drops a
    // connection whose client half-closes before the response.
    let writer = tokio::spawn(async move {
        let ok = write.write_all(&request).await.is_ok();
        (ok, write)
    });
    let status = read_status(&mut read, Duration::from_secs(10)).await;
    let after_ms = started.elapsed().as_millis();
    // The server must not swallow a huge head whole: once it has answered, or
    // dropped the connection, the rest of the write fails.
    let wrote_all = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .map(|r| r.map(|(ok, _)| ok).unwrap_or(false))
        .unwrap_or(false);
    if stream_it && wrote_all && total > 16 << 20 {
        return Observed::Nothing(format!("the server read all {total} bytes of the head"));
    }
    match status {
        Some(status) => Observed::Http { status, after_ms },
        None => Observed::Dropped { after_ms },
    }
}

/// Sends `request` a byte every 100 ms (nothing, if empty) and waits for the
/// server to answer or drop the connection.
async fn trickle(addr: SocketAddr, request: &[u8]) -> Observed {
    let started = Instant::now();
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => return Observed::Nothing(e.to_string()),
    };
    let (mut read, mut write) = stream.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        for byte in request {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Hold the write half open: the slow client never finishes.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let status = read_status(&mut read, HANDSHAKE_TIMEOUT + Duration::from_secs(4)).await;
    let after_ms = started.elapsed().as_millis();
    writer.abort();
    match status {
        Some(status) => Observed::Http { status, after_ms },
        None if after_ms >= (HANDSHAKE_TIMEOUT + Duration::from_secs(4)).as_millis() => {
            Observed::Nothing("still connected 5 s later".into())
        }
        None => Observed::Dropped { after_ms },
    }
}

/// Sends `request` every 100 ms on one keep-alive connection, reading each
/// answer, until the server drops the connection.
async fn keep_alive(addr: SocketAddr, request: &[u8]) -> Observed {
    let started = Instant::now();
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => return Observed::Nothing(e.to_string()),
    };
    let mut answers = Vec::new();
    let limit = HANDSHAKE_TIMEOUT + Duration::from_secs(4);
    while started.elapsed() < limit {
        if stream.write_all(request).await.is_err() {
            break;
        }
        // One whole answer: its head, then Content-Length bytes of body.
        let status = match read_response(&mut stream, limit).await {
            (response, true) => status_of(&response),
            (_, false) => None,
        };
        match status {
            Some(status) => answers.push(status),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_ms = started.elapsed().as_millis();
    if after_ms >= limit.as_millis() {
        return Observed::Nothing(format!(
            "answers {answers:?}, still connected after {after_ms} ms"
        ));
    }
    Observed::KeptAlive {
        statuses: answers,
        after_ms,
    }
}

async fn ping_flood(addr: SocketAddr, attacker: &str, pings: usize) -> Observed {
    let codec = Codec::MsgPack;
    let mut conn = match attacker_conn(addr, codec, attacker).await {
        Ok(conn) => conn,
        Err(e) => return Observed::Nothing(e),
    };
    let flood: Vec<u8> = (0..pings as u32)
        .flat_map(|i| frame(0x89, &i.to_be_bytes()))
        .collect();
    let publish = ClientOp::publish(room("probe.alive"), Bytes::from_static(b"after pings"));
    if conn.try_send(&flood).await.is_err()
        || conn.send_request(codec, PROBE_ID, publish).await.is_err()
    {
        return Observed::Nothing("the flood could not be written".into());
    }
    let mut pongs = 0;
    let mut last: Option<u32> = None;
    let mut in_order = true;
    let serving = loop {
        let frame = match conn.next_frame(Duration::from_secs(10)).await {
            Ok(frame) => frame,
            Err(_) => break false,
        };
        match frame.opcode {
            0xa => {
                pongs += 1;
                let n = frame
                    .payload
                    .try_into()
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX);
                in_order &= last.is_none_or(|l| l < n);
                last = Some(n);
            }
            0x2 => match codec.decode_server(&Bytes::from(frame.payload)) {
                Ok(ServerEvent::Reply(reply)) if reply.id.0 == PROBE_ID => {
                    break matches!(reply.outcome, Outcome::Ack(_))
                }
                _ => {}
            },
            0x8 => break false,
            _ => {}
        }
    };
    eprintln!("ping flood: {pings} pings, {pongs} pongs came back before the next reply");
    Observed::Pongs {
        pings,
        pongs,
        in_order,
        latest_answered: last == Some(pings as u32 - 1),
        serving,
    }
}

async fn publish_flood(addr: SocketAddr, attacker: &str) -> Observed {
    let codec = Codec::MsgPack;
    let mut conn = match attacker_conn(addr, codec, attacker).await {
        Ok(conn) => conn,
        Err(e) => return Observed::Nothing(e),
    };
    let publish = |id: u64| frame(0x82, &publish_to(id, "flood.x", b"f"));
    let mut accepted = 0;
    let mut errors = Vec::new();
    let mut id = 0;
    // Phase 1: chunks smaller than rate_limit_close_after, each read back,
    // until a publish is refused.
    'phase1: for _ in 0..400 {
        let chunk: Vec<u8> = (0..10)
            .flat_map(|_| {
                id += 1;
                publish(id)
            })
            .collect();
        if conn.try_send(&chunk).await.is_err() {
            return Observed::Nothing("connection failed during the flood".into());
        }
        let mut answered = 0;
        while answered < 10 {
            let frame = match conn.next_frame(Duration::from_secs(5)).await {
                Ok(frame) => frame,
                Err(e) => return Observed::Nothing(e.to_string()),
            };
            match frame.opcode {
                0x2 => match codec.decode_server(&Bytes::from(frame.payload)) {
                    Ok(ServerEvent::Reply(reply)) => {
                        answered += 1;
                        match reply.outcome {
                            Outcome::Ack(_) => accepted += 1,
                            Outcome::Error { code, .. } => errors.push(code),
                            _ => {}
                        }
                    }
                    _ => return Observed::Nothing("unexpected envelope".into()),
                },
                0x8 => {
                    return Observed::Flood {
                        accepted,
                        errors,
                        close: Some(frame.close_status()),
                    }
                }
                _ => {}
            }
        }
        if !errors.is_empty() {
            break 'phase1;
        }
    }
    // Phase 2: bursts of 500 more, read back, until the connection is
    // closed. (A success resets the count of refusals in a row, so a burst
    // cut by a refill of the rate is followed by another.)
    let mut close = None;
    'phase2: for _ in 0..10 {
        let burst: Vec<u8> = (0..500)
            .flat_map(|_| {
                id += 1;
                publish(id)
            })
            .collect();
        let _ = conn.try_send(&burst).await;
        loop {
            match conn.next_frame(Duration::from_secs(1)).await {
                Ok(frame) if frame.opcode == 0x8 => {
                    close = Some(frame.close_status());
                    break 'phase2;
                }
                Ok(frame) if frame.opcode == 0x2 => {
                    if let Ok(ServerEvent::Reply(reply)) =
                        codec.decode_server(&Bytes::from(frame.payload))
                    {
                        match reply.outcome {
                            Outcome::Ack(_) => accepted += 1,
                            Outcome::Error { code, .. } => errors.push(code),
                            _ => {}
                        }
                    }
                }
                Ok(_) => {}
                Err(NoFrame::Timeout(_)) => break,
                Err(_) => break 'phase2,
            }
        }
    }
    eprintln!(
        "publish flood: {id} publishes sent, {accepted} accepted, {} refused (seen), closed with {close:?}",
        errors.len()
    );
    Observed::Flood {
        accepted,
        errors,
        close,
    }
}

async fn rooms_past_max(addr: SocketAddr, attacker: &str) -> Observed {
    let codec = Codec::MsgPack;
    let mut conn = match attacker_conn(addr, codec, attacker).await {
        Ok(conn) => conn,
        Err(e) => return Observed::Nothing(e),
    };
    for i in 0..=MAX_ROOMS as u64 {
        let op = ClientOp::subscribe(room(&format!("attack.room{i}")));
        if conn.send_request(codec, i + 1, op).await.is_err() {
            return Observed::Nothing("write failed".into());
        }
        match conn.reply_to(codec, i + 1, Duration::from_secs(5)).await {
            Ok((Outcome::Ack(_), _)) if i < MAX_ROOMS as u64 => {}
            Ok((Outcome::Error { code, .. }, _)) if i == MAX_ROOMS as u64 => {
                return Observed::Error {
                    code,
                    serving: still_serving(&mut conn, codec).await,
                }
            }
            other => return Observed::Nothing(format!("room {i}: {other:?}")),
        }
    }
    Observed::Ack
}

// ---------------------------------------------------------------- the well-behaved pair

/// What the watcher's reader saw.
#[derive(Debug)]
#[allow(dead_code)] // the payloads are read through Debug
enum Seen {
    Message {
        room: String,
        offset: u64,
        data: Vec<u8>,
    },
    Other(String),
    Ended(String),
}

/// The well-behaved subscriber: connected once, never reconnecting, its
/// frames read by a task of its own that answers pings.
struct Watcher {
    rx: mpsc::UnboundedReceiver<Seen>,
    reader: tokio::task::JoinHandle<()>,
    /// The room's offset at the subscribe ack.
    start: u64,
    received: Vec<(u64, Vec<u8>)>,
}

impl Watcher {
    async fn start(addr: SocketAddr, token: &str) -> Watcher {
        let codec = Codec::Proto;
        let mut conn = RawWs::open(addr, &format!("{}{}", offer(codec), bearer(token)))
            .await
            .expect("the watcher connects");
        conn.send_request(codec, 1, ClientOp::subscribe(room(STEADY)))
            .await
            .unwrap();
        let start = match conn.reply_to(codec, 1, Duration::from_secs(5)).await {
            Ok((Outcome::Ack(ack), _)) => ack.offset.0,
            other => panic!("the watcher could not subscribe: {other:?}"),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let frame = match conn.next_frame(Duration::from_secs(3600)).await {
                    Ok(frame) => frame,
                    Err(e) => {
                        let _ = tx.send(Seen::Ended(e.to_string()));
                        return;
                    }
                };
                let seen = match frame.opcode {
                    0x2 => match codec.decode_server(&Bytes::from(frame.payload)) {
                        Ok(ServerEvent::Message { room, offset, data }) => Seen::Message {
                            room,
                            offset: offset.0,
                            data: data.to_vec(),
                        },
                        other => Seen::Other(format!("{other:?}")),
                    },
                    0x8 => Seen::Ended(format!("closed with {}", frame.close_status())),
                    0x9 => {
                        let _ = conn.try_send(&pong(&frame.payload)).await;
                        continue;
                    }
                    other => Seen::Other(format!("frame with opcode {other:#x}")),
                };
                let ended = matches!(seen, Seen::Ended(_));
                if tx.send(seen).is_err() || ended {
                    return;
                }
            }
        });
        Watcher {
            rx,
            reader,
            start,
            received: Vec::new(),
        }
    }

    /// Waits for message number `n`, which must be the next one.
    async fn expect(&mut self, n: u64, around: &str) {
        let seen = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("the watcher got no message #{n} within 10 s ({around})"));
        match seen {
            Some(Seen::Message { room, offset, data }) => {
                assert_eq!(room, STEADY, "{around}");
                assert_eq!(
                    (offset, data.as_slice()),
                    (self.start + n, &n.to_be_bytes()[..]),
                    "the watcher's next message is #{n} at offset start + {n} ({around})"
                );
                self.received.push((offset, data));
            }
            Some(Seen::Other(what)) => panic!("the watcher was disturbed {around}: {what}"),
            Some(Seen::Ended(why)) => panic!("the watcher was disconnected {around}: {why}"),
            None => panic!("the watcher's reader stopped {around}"),
        }
    }
}

/// The well-behaved publisher.
struct Publisher {
    conn: RawWs,
    start: u64,
}

impl Publisher {
    async fn connect(addr: SocketAddr, token: &str, start: u64) -> Publisher {
        let conn = RawWs::open(addr, &format!("{}{}", offer(Codec::MsgPack), bearer(token)))
            .await
            .expect("the publisher connects");
        Publisher { conn, start }
    }

    /// Publishes message number `n` and waits for its ack.
    async fn publish(&mut self, n: u64, around: &str) {
        let op = ClientOp::publish(room(STEADY), Bytes::copy_from_slice(&n.to_be_bytes()));
        self.conn.send_request(Codec::MsgPack, n, op).await.unwrap();
        match self
            .conn
            .reply_to(Codec::MsgPack, n, Duration::from_secs(10))
            .await
        {
            Ok((Outcome::Ack(ack), _)) => assert_eq!(ack.offset.0, self.start + n, "{around}"),
            other => panic!("the publisher was disturbed {around}: {other:?}"),
        }
    }
}

async fn stats_json(addr: SocketAddr) -> Value {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("/stats answers")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/stats is JSON ({e}): {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_their_documented_answers_and_a_good_subscriber_misses_nothing() {
    let broker = Broker::start_with(hostile_config());
    let addr = broker.addr;
    let attacker = token_for(
        "mallory",
        json!({"sub": ["*"], "pub": ["attack.*", "probe.*", "flood.*"]}),
    );
    let bad = BadTokens::new(SECRET);
    let rows = rows(&attacker, &bad);
    assert!(rows.len() >= 24, "{} kinds of attack", rows.len());

    let mut watcher = Watcher::start(addr, &token_for("watcher", json!({"sub": [STEADY]}))).await;
    let mut publisher = Publisher::connect(
        addr,
        &token_for("publisher", json!({"pub": [STEADY]})),
        watcher.start,
    )
    .await;

    let mut report = Vec::new();
    let mut n = 0u64;
    for row in &rows {
        n += 1;
        let before = format!("before `{}`", row.name);
        publisher.publish(n, &before).await;
        watcher.expect(n, &before).await;

        let observed =
            tokio::time::timeout(Duration::from_secs(30), attack(addr, &attacker, &row.send))
                .await
                .unwrap_or_else(|_| Observed::Nothing("the attack itself hung for 30 s".into()));

        n += 1;
        let after = format!("after `{}`", row.name);
        publisher.publish(n, &after).await;
        watcher.expect(n, &after).await;
        report.push((row, observed));
    }

    eprintln!("{:<72} {:<28} observed", "attack", "documented answer");
    for (row, observed) in &report {
        let mark = if fits(row.answer, observed) {
            "ok  "
        } else {
            "FAIL"
        };
        eprintln!(
            "{mark} {:<67} {:<28} {observed:?}",
            row.name,
            format!("{:?}", row.answer)
        );
    }
    let failures: Vec<String> = report
        .iter()
        .filter(|(row, observed)| !fits(row.answer, observed))
        .map(|(row, observed)| {
            format!(
                "{}: documented {:?}, got {observed:?}",
                row.name, row.answer
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} attacks got another answer:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The watcher got every message exactly once, in order, offsets contiguous.
    tokio::time::sleep(Duration::from_millis(200)).await;
    match watcher.rx.try_recv() {
        Err(mpsc::error::TryRecvError::Empty) => {}
        other => panic!("the watcher got something more: {other:?}"),
    }
    assert_eq!(watcher.received.len() as u64, n);
    for (i, (offset, data)) in watcher.received.iter().enumerate() {
        let k = i as u64 + 1;
        assert_eq!(
            (*offset, data.as_slice()),
            (watcher.start + k, &k.to_be_bytes()[..])
        );
    }
    assert!(
        !watcher.reader.is_finished(),
        "the watcher is still connected"
    );

    // The attacks were counted.
    let count =
        |f: &dyn Fn(Answer) -> bool| report.iter().filter(|(r, _)| f(r.answer)).count() as u64;
    // Every attacker's connection ends; only the watcher and the publisher stay.
    let settled = Instant::now() + Duration::from_secs(5);
    while broker.server().stats().connections_open != 2 && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = broker.server().stats();
    let closes = count(&|a| matches!(a, Answer::Close(_) | Answer::ErrorsThenClose(..)));
    let errors = count(&|a| matches!(a, Answer::Error(_)));
    let kept_alive: u64 = report
        .iter()
        .map(|(_, o)| match o {
            Observed::KeptAlive { statuses, .. } => statuses.len() as u64,
            _ => 0,
        })
        .sum();
    let unauthorized = count(&|a| a == Answer::Status(401)) + kept_alive;
    let forbidden = count(&|a| a == Answer::Status(403));
    let bad_requests = count(&|a| a == Answer::Status(400));
    assert_eq!(stats.protocol_closes, closes, "{stats:?}");
    assert_eq!(stats.auth_failures, unauthorized, "{stats:?}");
    assert_eq!(stats.origin_rejections, forbidden, "{stats:?}");
    assert!(
        stats.handshakes_rejected >= unauthorized + forbidden + bad_requests,
        "{stats:?}"
    );
    assert_eq!(stats.rate_limit_closes, 1, "{stats:?}");
    assert!(
        stats.rate_limited_publishes >= RATE_LIMIT_CLOSE_AFTER as u64,
        "{stats:?}"
    );
    // One error reply per error row, plus the refused publishes.
    let refused = stats.rate_limited_publishes;
    assert_eq!(
        stats.error_replies,
        errors + refused,
        "{errors} error rows, {refused} refused publishes: {stats:?}"
    );
    assert_eq!(stats.permission_denials, 1, "{stats:?}");
    assert_eq!(
        stats.deliveries, n,
        "nothing was delivered but the watcher's messages: {stats:?}"
    );
    assert_eq!(stats.slow_consumer_closes, 0, "{stats:?}");
    assert_eq!(
        stats.connections_open, 2,
        "only the watcher and the publisher are left: {stats:?}"
    );
    let json = stats_json(broker.admin()).await;
    for (name, value) in [
        ("protocol_closes", stats.protocol_closes),
        ("auth_failures", stats.auth_failures),
        ("origin_rejections", stats.origin_rejections),
        ("rate_limit_closes", stats.rate_limit_closes),
        ("error_replies", stats.error_replies),
    ] {
        assert_eq!(json[name].as_u64(), Some(value), "/stats {name}: {json}");
    }
    eprintln!(
        "{} attacks; the watcher received all {n} messages; stats: {stats:?}",
        report.len()
    );
}

// ---------------------------------------------------------------- tokens never in logs

/// Kills the broker process if the test fails before it stops.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A `roomcast` process with `RUST_LOG=trace` and a JWT secret, its output captured.
struct Binary {
    child: std::process::Child,
    addr: SocketAddr,
    stdout_first: String,
    stdout_rest: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    guard: KillOnDrop,
}

impl Binary {
    fn start(secret: &str) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--pin-cores",
                "false",
                "--drain-period",
                "100ms",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("ROOMCAST_JWT_SECRET", secret)
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the roomcast binary starts");
        let guard = KillOnDrop(Some(child.id()));
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut bytes);
            bytes
        });
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let stdout_rest = std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = stdout.read(&mut byte) {
                if byte[0] == b'\n' {
                    break;
                }
                line.push(byte[0]);
            }
            let _ = first_tx.send(String::from_utf8_lossy(&line).into_owned());
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest);
            rest
        });
        let stdout_first = first_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the binary says where it listens");
        let url = stdout_first
            .split("ws://")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {stdout_first:?}"));
        let addr = url.split('/').next().unwrap().parse().unwrap();
        Binary {
            child,
            addr,
            stdout_first,
            stdout_rest,
            stderr,
            guard,
        }
    }

    /// SIGTERM, then everything it wrote.
    async fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut child = self.child;
        let waited = tokio::task::spawn_blocking(move || {
            let until = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
                if Instant::now() >= until {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        if waited.is_some() {
            // Reaped: its pid may be reused, so never kill it again.
            self.guard.0 = None;
        }
        assert!(
            waited.is_some_and(|s| s.success()),
            "exits 0 on SIGTERM: {waited:?}"
        );
        let stdout = self.stdout_rest.join().unwrap();
        let stderr = self.stderr.join().unwrap();
        format!(
            "{}\n{}{}",
            self.stdout_first,
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    }
}

/// The handshake status for a token placed in the header, the query string
/// or a subprotocol entry.
async fn handshake_status(addr: SocketAddr, request: String) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(request.as_bytes()).await.unwrap();
    let status = read_status(&mut read, Duration::from_secs(5)).await;
    drop(write);
    status
}

fn token_requests(token: &str) -> [(&'static str, String); 3] {
    [
        ("header", handshake("/ws", &bearer(token))),
        ("query", handshake(&format!("/ws?token={token}"), "")),
        (
            "subprotocol",
            handshake(
                "/ws",
                &format!("Sec-WebSocket-Protocol: roomcast.v1.proto, roomcast.jwt.{token}\r\n"),
            ),
        ),
    ]
}

/// The parts of a token that must never be logged: the token, its claims
/// and its signature.
fn secret_parts(token: &str) -> Vec<String> {
    let mut parts = vec![token.to_owned()];
    parts.extend(
        token
            .split('.')
            .skip(1)
            .filter(|p| p.len() >= 16)
            .map(str::to_owned),
    );
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_the_logs_even_at_trace_level() {
    let secret = "log-test-secret-4b1d8e2a9c7f6053";
    let binary = Binary::start(secret);
    let addr = binary.addr;
    let claims = json!({"sub": "ann", "exp": now() + 600, "rooms": {"sub": ["*"], "pub": ["*"]}});
    let valid = sign(Algorithm::HS256, &claims, secret);
    let bad = BadTokens::new(secret);
    let mut tokens = vec![valid.clone()];
    let refused = [
        &bad.forged,
        &bad.expired,
        &bad.alg_none,
        &bad.hs384,
        &bad.tampered,
        &bad.not_yet_valid,
    ];
    for token in refused {
        tokens.push(token.clone());
        for (place, request) in token_requests(token) {
            assert_eq!(
                handshake_status(addr, request).await,
                Some(401),
                "a bad token in the {place}"
            );
        }
    }
    for (place, request) in token_requests(&valid) {
        assert_eq!(
            handshake_status(addr, request).await,
            Some(101),
            "the valid token in the {place}"
        );
    }
    // On a live connection: refreshes with bad and good tokens, traffic, a
    // protocol violation, all logged at trace level.
    let codec = Codec::MsgPack;
    let mut conn = RawWs::open(addr, &format!("{}{}", offer(codec), bearer(&valid)))
        .await
        .unwrap();
    let fresh = sign(
        Algorithm::HS256,
        &json!({"sub": "ann", "exp": now() + 900, "rooms": {"sub": ["*"]}}),
        secret,
    );
    tokens.push(fresh.clone());
    for (id, token) in [(1, &bad.forged), (2, &bad.expired), (3, &fresh)] {
        conn.send_request(
            codec,
            id,
            ClientOp::Refresh {
                token: token.clone(),
            },
        )
        .await
        .unwrap();
        let (outcome, _) = conn
            .reply_to(codec, id, Duration::from_secs(5))
            .await
            .unwrap();
        match (id, outcome) {
            (3, Outcome::Ack(_)) | (1 | 2, Outcome::Error { code: 108, .. }) => {}
            other => panic!("refresh {id}: {other:?}"),
        }
    }
    conn.send_request(codec, 4, ClientOp::subscribe(room("logs.room")))
        .await
        .unwrap();
    assert!(conn
        .reply_to(codec, 4, Duration::from_secs(5))
        .await
        .is_ok());
    conn.try_send(&frame(0xc2, b"rsv")).await.unwrap();
    assert_eq!(
        conn.next_frame(Duration::from_secs(5))
            .await
            .map(|f| f.close_code()),
        Ok(Some(1002))
    );
    let output = binary.stop().await;
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "trace logging was on: {output}"
    );
    assert!(
        output.contains("connected"),
        "connections were logged: {output}"
    );
    assert!(!output.contains(secret), "the secret is never logged");
    for token in &tokens {
        for part in secret_parts(token) {
            assert!(
                !output.contains(&part),
                "a token part was logged: {part}\n{output}"
            );
        }
    }
}

// ---------------------------------------------------------------- bugs found

/// docs/PROTOCOL.md: "upgrade with a bad `Sec-WebSocket-Key` or
/// `Sec-WebSocket-Version` → 400". RFC 6455 §4.2.1: the key must be the
/// base64 of 16 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_websocket_key_gets_400() {
    let broker = Broker::start_with(hostile_config());
    let attacker = token_for("mallory", json!({"sub": ["*"]}));
    for key in [
        "",
        "x",
        "not base64!!",
        "dGhlIHNhbXBsZSBub25jZQ",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
            bearer(&attacker)
        );
        assert_eq!(
            handshake_status(broker.addr, request).await,
            Some(400),
            "Sec-WebSocket-Key: {key:?}"
        );
    }
}

/// A client that sends `refresh` as a string instead of a map gets its
/// 1007, and must not get its token written to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_a_malformed_envelope_never_reaches_the_log() {
    let secret = "log-test-secret-0d9e8f7a6b5c4d3e";
    let binary = Binary::start(secret);
    let claims = json!({"sub": "ann", "exp": now() + 600, "rooms": {"sub": ["*"]}});
    let valid = sign(Algorithm::HS256, &claims, secret);
    let fresh = sign(
        Algorithm::HS256,
        &json!({"sub": "ann", "exp": now() + 900}),
        secret,
    );
    let codec = Codec::MsgPack;
    let mut conn = RawWs::open(binary.addr, &format!("{}{}", offer(codec), bearer(&valid)))
        .await
        .unwrap();
    conn.try_send(&frame(0x82, &envelope(1, "refresh", text(&fresh))))
        .await
        .unwrap();
    assert_eq!(
        conn.next_frame(Duration::from_secs(5))
            .await
            .map(|f| f.close_code()),
        Ok(Some(1007))
    );
    let output = binary.stop().await;
    for token in [&valid, &fresh] {
        for part in secret_parts(token) {
            assert!(
                !output.contains(&part),
                "a token part was logged: {part}\n{output}"
            );
        }
    }
}

/// `/stats` `error_replies` counts error replies sent; error 106 to
/// `history`, `presence` and `presence_stats` is built by the room's home
/// core and sent without being counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_reply_is_counted_in_stats() {
    let broker = Broker::start_with(hostile_config());
    let attacker = token_for("mallory", json!({"sub": ["*"], "presence": ["*"]}));
    let codec = Codec::MsgPack;
    let mut conn = attacker_conn(broker.addr, codec, &attacker).await.unwrap();
    let ops = [
        ClientOp::History {
            room: room("attack.history"),
            query: Default::default(),
        },
        ClientOp::Presence {
            room: room("attack.presence"),
        },
        ClientOp::PresenceStats {
            room: room("attack.presence"),
        },
    ];
    for (id, op) in (1..).zip(ops) {
        conn.send_request(codec, id, op).await.unwrap();
        let (outcome, _) = conn
            .reply_to(codec, id, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Error { code: 106, .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(broker.server().stats().error_replies, 3);
}
