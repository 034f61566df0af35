//! Every row of the bad-input table in docs/PROTOCOL.md, over real sockets:
//! each gets its documented answer, and a well-behaved subscriber connected
//! throughout receives every message.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::broker::{config, next, Broker};
use common::msgpack::{envelope, map, text, uint};
use common::ws::{frame, handshake, header_only_64, http_request, unmasked, RawFrame, RawWs};
use roomcast::protocol::{ClientOp, ClientRequest, Codec, RequestId, RoomName, ServerEvent};

fn subscribe(id: u64, room: &str) -> Vec<u8> {
    Codec::MsgPack.encode_request(&ClientRequest {
        id: RequestId(id),
        op: ClientOp::subscribe(RoomName::new(room).unwrap()),
    })
}

fn publish(id: u64, room: &str, data: &[u8]) -> Vec<u8> {
    Codec::MsgPack.encode_request(&ClientRequest {
        id: RequestId(id),
        op: ClientOp::publish(RoomName::new(room).unwrap(), Bytes::copy_from_slice(data)),
    })
}

/// Reads the next reply and returns its error code (None for an ack).
async fn reply_code(ws: &mut RawWs) -> Option<u32> {
    let payload = ws.read_binary().await.expect("a reply");
    match Codec::MsgPack.decode_server(&Bytes::from(payload)).unwrap() {
        ServerEvent::Reply(reply) => match reply.outcome {
            roomcast::protocol::Outcome::Error { code, .. } => Some(code),
            _ => None,
        },
        other => panic!("expected a reply, got {other:?}"),
    }
}

async fn closes_with(broker: &Broker, bytes: &[u8]) -> Option<u16> {
    let mut ws = RawWs::connect(broker.addr, "").await;
    ws.send_bytes(bytes).await;
    ws.expect_close().await
}

fn small_limits() -> roomcast::Config {
    roomcast::Config {
        max_message_size: 1024,
        max_fragments: 4,
        max_rooms_per_connection: 3,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_break_the_protocol_close_with_the_documented_code() {
    let broker = Broker::start_with(small_limits());
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("text frame", frame(0x81, b"{}"), 1003),
        ("fragmented text frame", frame(0x01, b"{"), 1003),
        ("undecodable envelope", frame(0x82, &[0xc1, 0x00]), 1007),
        ("envelope that is not a map", frame(0x82, &[0x2a]), 1007),
        (
            "room of the wrong type",
            frame(
                0x82,
                &map([("subscribe", map([("room", uint(7))]))]).to_bytes(),
            ),
            1007,
        ),
        (
            "message over max_message_size",
            frame(0x82, &vec![0u8; 2000]),
            1009,
        ),
        ("continuation without a message", frame(0x80, b"x"), 1002),
        ("reserved bit set", frame(0xC2, b"x"), 1002),
        ("unknown opcode", frame(0x83, b"x"), 1002),
        ("ping over 125 bytes", frame(0x89, &[0u8; 126]), 1002),
        ("fragmented ping", frame(0x09, b"x"), 1002),
        ("pong over 125 bytes", frame(0x8A, &[0u8; 126]), 1002),
        ("close frame of one byte", frame(0x88, &[0x03]), 1002),
        ("close code 999", frame(0x88, &999u16.to_be_bytes()), 1002),
        ("close code 1005", frame(0x88, &1005u16.to_be_bytes()), 1002),
        (
            "close reason not UTF-8",
            frame(0x88, &[0x03, 0xe8, 0xff, 0xfe]),
            1007,
        ),
        (
            "valid close is echoed",
            frame(0x88, &[0x03, 0xe8, b'o', b'k']),
            1000,
        ),
        (
            "close 4321 is echoed",
            frame(0x88, &4321u16.to_be_bytes()),
            4321,
        ),
    ];
    for (case, bytes, code) in cases {
        assert_eq!(closes_with(&broker, &bytes).await, Some(code), "{case}");
    }
    // Fragments: a new data frame inside a fragmented message, too many
    // fragments, and a reassembled message over the size limit.
    let mut inside = frame(0x02, b"a");
    inside.extend(frame(0x82, b"b"));
    assert_eq!(
        closes_with(&broker, &inside).await,
        Some(1002),
        "data frame inside a fragmented message"
    );
    let mut many = frame(0x02, b"a");
    for _ in 0..4 {
        many.extend(frame(0x00, b"a"));
    }
    assert_eq!(
        closes_with(&broker, &many).await,
        Some(1009),
        "more than max_fragments fragments"
    );
    let mut big = frame(0x02, &[0u8; 600]);
    big.extend(frame(0x80, &[0u8; 600]));
    assert_eq!(
        closes_with(&broker, &big).await,
        Some(1009),
        "reassembled message over the limit"
    );
}

/// The frames the server sends until its close frame, and that close's code
/// (`None` if the connection ends without one).
async fn frames_until_close(ws: &mut RawWs) -> (Vec<RawFrame>, Option<u16>) {
    let mut before = Vec::new();
    while let Some(frame) = ws.read_frame().await {
        if frame.opcode == 0x8 {
            return (before, frame.close_code());
        }
        before.push(frame);
    }
    (before, None)
}

/// RFC 6455 §5.1: a client masks every frame, and a server MUST close the
/// connection when one is not masked. The frame is refused from its second
/// byte, before its length or payload is looked at: whatever else it
/// carries, nothing of it is acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_is_closed_with_1002_and_never_acted_on() {
    let broker = Broker::start_with(small_limits());
    let mut header_only = unmasked(0x82, &[0; 100]);
    header_only.truncate(2);
    let mut inside_a_message = frame(0x02, &subscribe(1, "frag")[..3]);
    inside_a_message.extend(unmasked(0x80, &subscribe(1, "frag")[3..]));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a subscribe", unmasked(0x82, &subscribe(1, "unmasked"))),
        ("a ping", unmasked(0x89, b"are you there")),
        ("a close", unmasked(0x88, &1000u16.to_be_bytes())),
        ("a frame with a 16-bit length", unmasked(0x82, &[0xc1; 300])),
        ("a frame over max_message_size", unmasked(0x82, &[0; 2000])),
        ("a text frame", unmasked(0x81, b"hi")),
        ("a header whose payload never comes", header_only),
        ("the last fragment of a message", inside_a_message),
    ];
    for (case, bytes) in &cases {
        let mut ws = RawWs::connect(broker.addr, "").await;
        ws.send_bytes(bytes).await;
        let (before, close) = frames_until_close(&mut ws).await;
        assert_eq!(close, Some(1002), "{case}");
        assert!(before.is_empty(), "{case}: answered {before:?}");
        assert!(ws.ends_within(Duration::from_secs(5)).await, "{case}");
    }
    // Written right behind the handshake, before the 101 is read.
    let mut ws = RawWs::open_with_early(broker.addr, "", &unmasked(0x82, &subscribe(1, "early")))
        .await
        .unwrap();
    assert_eq!(frames_until_close(&mut ws).await, (Vec::new(), Some(1002)));
    let closes = u64::try_from(cases.len()).unwrap() + 1;
    assert_eq!(broker.server().stats().protocol_closes, closes);
}

/// The frames a client sent ahead of an unmasked one, in the same write,
/// are acted on as usual; the unmasked one and everything behind it are
/// not. (Replies still queued for the client when the close comes are
/// dropped with the connection, as for any protocol error, so a watcher
/// of the room tells what was published.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_ahead_of_an_unmasked_one_are_served_and_none_behind_it() {
    let broker = Broker::start_with(small_limits());
    let mut watcher = broker.client(Codec::MsgPack).await;
    let start = watcher.subscribe("mask.watch").await.unwrap().offset;
    let mut ws = RawWs::connect(broker.addr, "").await;
    let mut bytes = frame(0x82, &publish(0, "mask.watch", b"ahead"));
    bytes.extend(unmasked(0x82, &publish(0, "mask.watch", b"unmasked")));
    bytes.extend(frame(0x82, &publish(0, "mask.watch", b"behind")));
    ws.send_bytes(&bytes).await;
    assert_eq!(ws.expect_close().await, Some(1002));
    let publisher = broker.client(Codec::MsgPack).await;
    publisher
        .publish("mask.watch", b"marker".to_vec())
        .await
        .unwrap();
    for (n, data) in [&b"ahead"[..], b"marker"].into_iter().enumerate() {
        let message = next(&mut watcher).await;
        assert_eq!(message.offset.0, start.0 + n as u64 + 1);
        assert_eq!(&message.data[..], data);
    }
}

/// The echo endpoint reads frames through the same reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_endpoint_closes_on_an_unmasked_frame_too() {
    let broker = Broker::start_with(roomcast::Config {
        path: "/broker".into(),
        echo_path: "/ws".into(),
        ..config()
    });
    let mut ws = RawWs::connect(broker.addr, "").await;
    ws.send_bytes(&frame(0x82, b"masked")).await;
    assert_eq!(ws.read_binary().await.as_deref(), Some(&b"masked"[..]));
    ws.send_bytes(&unmasked(0x82, b"unmasked")).await;
    assert_eq!(frames_until_close(&mut ws).await, (Vec::new(), Some(1002)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_length_prefix_is_refused_before_any_payload_arrives() {
    let broker = Broker::start_with(small_limits());
    let mut ws = RawWs::connect(broker.addr, "").await;
    // A header announcing 4 GiB, and no payload: the answer must not wait for it.
    ws.send_bytes(&header_only_64(0x82, 4 << 30)).await;
    assert_eq!(ws.expect_close().await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_bad_fields_get_error_replies_and_the_connection_stays() {
    let broker = Broker::start_with(small_limits());
    let mut ws = RawWs::connect(broker.addr, "").await;
    ws.send_binary(&envelope(5, "frobnicate", map([]))).await;
    assert_eq!(reply_code(&mut ws).await, Some(100), "unknown operation");
    let two = map([
        ("id", uint(6)),
        ("subscribe", map([("room", text("a"))])),
        ("unsubscribe", map([("room", text("a"))])),
    ]);
    ws.send_binary(&two.to_bytes()).await;
    assert_eq!(reply_code(&mut ws).await, Some(101), "two operations");
    for bad_room in ["", "has space", "star*", "ctrl\u{1}"] {
        // Built by hand: the client library refuses such names itself.
        let bad = envelope(7, "subscribe", map([("room", text(bad_room))]));
        ws.send_binary(&bad).await;
        assert_eq!(reply_code(&mut ws).await, Some(102), "room {bad_room:?}");
    }
    let long = envelope(8, "subscribe", map([("room", text(&"x".repeat(256)))]));
    ws.send_binary(&long).await;
    assert_eq!(reply_code(&mut ws).await, Some(102), "256-byte room name");
    // Unsubscribing from a room we are not in.
    let unsubscribe = Codec::MsgPack.encode_request(&ClientRequest {
        id: RequestId(9),
        op: ClientOp::Unsubscribe {
            room: RoomName::new("never-joined").unwrap(),
        },
    });
    ws.send_binary(&unsubscribe).await;
    assert_eq!(reply_code(&mut ws).await, Some(104), "not subscribed");
    // max_rooms_per_connection = 3: the fourth room is refused.
    for (i, room) in ["r1", "r2", "r3"].into_iter().enumerate() {
        ws.send_binary(&subscribe(10 + i as u64, room)).await;
        assert_eq!(reply_code(&mut ws).await, None, "room {room}");
    }
    ws.send_binary(&subscribe(20, "r4")).await;
    assert_eq!(reply_code(&mut ws).await, Some(103), "too many rooms");
    // An error in a fire-and-forget publish is still reported (with id 0).
    let mut bad_publish = publish(0, "ok", b"x");
    let at = bad_publish
        .windows(3)
        .position(|w| w == [0xa2, b'o', b'k'])
        .unwrap();
    bad_publish.splice(at..at + 3, [0xa3, b'o', b' ', b'k']);
    ws.send_binary(&bad_publish).await;
    assert_eq!(
        reply_code(&mut ws).await,
        Some(102),
        "fire-and-forget publish to a bad room"
    );
    // And the connection still works.
    ws.send_binary(&publish(30, "r1", b"still here")).await;
    let mut saw_ack = false;
    let mut saw_message = false;
    while !(saw_ack && saw_message) {
        let payload = ws.read_binary().await.expect("connection stays open");
        match Codec::MsgPack.decode_server(&Bytes::from(payload)).unwrap() {
            ServerEvent::Reply(reply) => saw_ack |= reply.id == RequestId(30),
            ServerEvent::Message { data, .. } => saw_message |= &data[..] == b"still here",
            ServerEvent::Presence { .. } => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_within_the_limit_are_reassembled() {
    let broker = Broker::start_with(small_limits());
    let mut subscriber = broker.client(Codec::MsgPack).await;
    subscriber.subscribe("frag").await.unwrap();
    let mut ws = RawWs::connect(broker.addr, "").await;
    let envelope = publish(1, "frag", &[7u8; 500]);
    let (a, rest) = envelope.split_at(100);
    let (b, c) = rest.split_at(200);
    let mut frames = frame(0x02, a);
    frames.extend(frame(0x89, b"ping between fragments"));
    frames.extend(frame(0x00, b));
    frames.extend(frame(0x80, c));
    ws.send_bytes(&frames).await;
    let message = next(&mut subscriber).await;
    assert_eq!(&message.data[..], &[7u8; 500][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_is_answered_with_its_payload() {
    let broker = Broker::start();
    let mut ws = RawWs::connect(broker.addr, "").await;
    ws.send_bytes(&frame(0x89, b"are you there")).await;
    let pong = ws.read_frame().await.unwrap();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (0xA, &b"are you there"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_closed_with_4000_and_one_that_does_stays() {
    let broker = Broker::start_with(roomcast::Config {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(200),
        ..config()
    });
    let mut alive = broker.client(Codec::MsgPack).await;
    alive.subscribe("beat").await.unwrap();
    let mut silent = RawWs::connect(broker.addr, "").await;
    let first = silent.read_frame().await.unwrap();
    assert_eq!(first.opcode, 0x9, "the server pings");
    assert_eq!(silent.expect_close().await, Some(4000));
    // The client library answers pings, so it is still connected well after the timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let publisher = broker.client(Codec::MsgPack).await;
    publisher
        .publish("beat", b"still alive".to_vec())
        .await
        .unwrap();
    assert_eq!(&next(&mut alive).await.data[..], b"still alive");
    assert!(broker.server().stats().heartbeat_timeouts >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_never_cost_a_good_subscriber_a_message() {
    let broker = Broker::start_with(small_limits());
    let mut good = broker.client(Codec::Proto).await;
    let start = good.subscribe("steady").await.unwrap().offset;
    let publisher = broker.client(Codec::MsgPack).await;
    let abuse: Vec<Vec<u8>> = vec![
        frame(0x81, b"text"),
        frame(0x82, &[0xc1]),
        frame(0x82, &vec![0u8; 5000]),
        frame(0xC2, b"rsv"),
        frame(0x80, b"orphan"),
    ];
    for round in 0..20u8 {
        let bad = &abuse[usize::from(round) % abuse.len()];
        let _ = closes_with(&broker, bad).await;
        publisher
            .publish_nowait("steady", vec![round])
            .await
            .unwrap();
    }
    publisher.publish("steady", vec![255]).await.unwrap();
    for round in 0..20u64 {
        let message = next(&mut good).await;
        assert_eq!(message.offset.0, start.0 + round + 1);
        assert_eq!(message.data[0], round as u8);
    }
    assert_eq!(next(&mut good).await.data[0], 255);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_before_the_upgrade() {
    let broker = Broker::start_with(roomcast::Config {
        max_headers: 16,
        handshake_timeout: Duration::from_millis(300),
        ..config()
    });
    let addr = broker.addr;
    let other_path = http_request(
        addr,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(other_path.starts_with("HTTP/1.1 404"), "{other_path}");
    let plain = http_request(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    let unknown = http_request(
        addr,
        handshake(
            "/ws",
            "Sec-WebSocket-Protocol: chat, mqtt\r\nConnection: close\r\n",
        )
        .as_bytes(),
    )
    .await;
    assert!(unknown.starts_with("HTTP/1.1 400"), "{unknown}");
    assert!(
        unknown.contains("roomcast.v1.msgpack") && unknown.contains("roomcast.v1.proto"),
        "{unknown}"
    );
    let non_ascii = http_request(addr, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: r\u{e9}\r\n\r\n".as_bytes()).await;
    assert!(non_ascii.starts_with("HTTP/1.1 400"), "{non_ascii}");
    let bad_version = http_request(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n").await;
    assert!(bad_version.starts_with("HTTP/1.1 400"), "{bad_version}");
    let many: String = (0..40).map(|i| format!("X-Filler-{i}: y\r\n")).collect();
    let too_many = http_request(addr, handshake("/ws", &many).as_bytes()).await;
    assert!(too_many.starts_with("HTTP/1.1 431"), "{too_many}");
    let huge = format!("X-Big: {}\r\n", "y".repeat(20_000));
    let too_big = http_request(addr, handshake("/ws", &huge).as_bytes()).await;
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");
    // Offered subprotocols: the one we speak is echoed.
    let proto = http_request(
        addr,
        handshake("/ws", "Sec-WebSocket-Protocol: mqtt, roomcast.v1.proto\r\n").as_bytes(),
    )
    .await;
    assert!(proto.starts_with("HTTP/1.1 101"), "{proto}");
    assert!(
        proto
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol: roomcast.v1.proto"),
        "{proto}"
    );
    // The counters live on the admin listener, not on the public port.
    let get_stats = b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let public = http_request(addr, get_stats).await;
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    let stats = http_request(broker.admin(), get_stats).await;
    assert!(
        stats.starts_with("HTTP/1.1 200") && stats.contains("\"deliveries\""),
        "{stats}"
    );
    // The admin listener's unknown paths answer a JSON error body.
    let unknown = http_request(
        broker.admin(),
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert!(
        unknown.contains(r#"{"error":{"code":404,"message":"no endpoint GET /nope"}}"#),
        "{unknown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_on_the_public_port_is_an_opt_in_and_the_admin_port_can_be_turned_off() {
    let broker = Broker::start_with(roomcast::Config {
        stats_on_public: true,
        admin_listen: "off".to_owned(),
        ..config()
    });
    assert_eq!(broker.server().admin_addr(), None);
    let stats = http_request(
        broker.addr,
        b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        stats.starts_with("HTTP/1.1 200") && stats.contains("\"connections_open\""),
        "{stats}"
    );
}

/// RFC 6455 §4.2.2: a client speaking another version (or none) is told,
/// in a `Sec-WebSocket-Version` header, the one this server speaks, so it
/// can retry with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_in_another_websocket_version_is_told_which_one_we_speak() {
    let broker = Broker::start();
    let without_version = |version: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{version}\r\n"
        )
    };
    for (case, request) in [
        ("version 8", without_version("Sec-WebSocket-Version: 8\r\n")),
        (
            "version 14",
            without_version("Sec-WebSocket-Version: 14\r\n"),
        ),
        ("no version", without_version("")),
    ] {
        let answer = http_request(broker.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{case}: {answer}");
        let versions: Vec<&str> = answer
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-version")
                    .then_some(value.trim())
            })
            .collect();
        assert_eq!(versions, ["13"], "{case}: {answer}");
    }
    assert_eq!(broker.server().stats().handshakes_rejected, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_completes_is_dropped_at_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::start_with(roomcast::Config {
        handshake_timeout: Duration::from_millis(300),
        ..config()
    });
    let mut stream = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: slow\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    let n = read.expect("dropped well before 5 s").unwrap_or(0);
    // Either a bare close or hyper's 408: never an upgrade.
    assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_upgrades_get_503() {
    let broker = Broker::start_with(roomcast::Config {
        max_connections: 2,
        ..config()
    });
    let _a = broker.client(Codec::MsgPack).await;
    let _b = broker.client(Codec::MsgPack).await;
    let third = http_request(broker.addr, handshake("/ws", "").as_bytes()).await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    drop(_a);
    // The slot frees once the server sees the first connection end.
    let mut admitted = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let retry = http_request(broker.addr, handshake("/ws", "").as_bytes()).await;
        if retry.starts_with("HTTP/1.1 101") {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "a freed slot is reused");
}
