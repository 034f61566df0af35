//! Server-Sent Events (docs/PROTOCOL.md, "Server-Sent Events") over raw
//! HTTP: a stream receives what WebSocket publishers publish, with every
//! room's position in each event's id; a reconnect with that id resumes
//! like `recover` (missed once, in order, then live; or the explicit
//! refusal); tokens from the query or a cookie, with the same grants; text
//! rooms; heartbeats; the slow-consumer policy; token expiry; a client
//! that goes away; the door's refusals and CORS; shutdown.
//! `a_python_http_client_...` runs `tests/python/sse_client.py`, a stdlib
//! `http.client` reader.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use common::broker::{config, next, rooms_on_both_cores, Broker};
use common::jwt::{now, sign};
use common::python::run_script;
use common::sse::{encode, request, rooms_query, Event, Item, SseStream};
use jsonwebtoken::Algorithm;
use roomcast::client::{Client, ClientOptions};
use roomcast::config::{List, SlowConsumerPolicy};
use roomcast::protocol::Codec;
use roomcast::Config;
use serde_json::json;
use tokio::time::Instant;

const SECRET: &str = "test-secret-with-enough-entropy";

/// Rooms that keep 100 publications, so streams can resume.
fn with_history() -> Config {
    Config {
        history_size: 100,
        ..config()
    }
}

fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The epoch of a `subscribed` (or `recovery_refused`) event.
fn epoch(event: &Event) -> String {
    event.data["epoch"].as_str().expect("an epoch").to_owned()
}

/// Waits until `check` holds, failing after 10 s with `what`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a client following `rooms` (in request order) expects event ids to
/// carry: each room's epoch and last offset.
struct Positions {
    rooms: Vec<String>,
    at: HashMap<String, (String, u64)>,
}

impl Positions {
    fn new(rooms: &[&str]) -> Positions {
        Positions {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            at: HashMap::new(),
        }
    }

    fn set(&mut self, room: &str, epoch: &str, offset: u64) {
        self.at.insert(room.to_owned(), (epoch.to_owned(), offset));
    }

    fn id(&self) -> String {
        self.rooms
            .iter()
            .map(|room| {
                self.at
                    .get(room)
                    .map_or(String::new(), |(e, o)| format!("{e}:{o}"))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Checks a message event against the positions and moves them: the
    /// room's next offset, and an id carrying every room's position.
    fn message(&mut self, event: &Event) -> (String, u64, Vec<u8>) {
        assert_eq!(event.event, "message", "{event:?}");
        let room = event.data["room"].as_str().unwrap().to_owned();
        let offset = event.data["offset"].as_u64().unwrap();
        let (epoch, last) = self.at.get(&room).cloned().expect("a known room");
        assert_eq!(offset, last + 1, "every offset once, in order: {event:?}");
        assert_eq!(event.data["epoch"], json!(epoch));
        self.set(&room, &epoch, offset);
        assert_eq!(event.id.as_deref(), Some(self.id().as_str()));
        let data = base64::engine::general_purpose::STANDARD
            .decode(event.data["data"].as_str().expect("base64 data"))
            .unwrap();
        (room, offset, data)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_websocket_publications_with_every_rooms_position_in_each_id() {
    let broker = Broker::start_with(with_history());
    let (a, b) = rooms_on_both_cores("sse-live-");
    let target = format!("/sse?{}", rooms_query(&[&a, &b]));
    let mut sse = SseStream::open(broker.addr, &target, "").await;
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache"));
    assert_eq!(sse.header("x-accel-buffering"), Some("no"));

    let mut positions = Positions::new(&[&a, &b]);
    for room in [&a, &b] {
        let subscribed = sse.next_event().await;
        assert_eq!(subscribed.event, "subscribed");
        assert_eq!(subscribed.data["room"], json!(room));
        assert_eq!(subscribed.data["offset"], json!(0));
        assert_eq!(subscribed.data["recovered"], json!(false));
        positions.set(room, &epoch(&subscribed), 0);
        assert_eq!(subscribed.id, Some(positions.id()));
    }
    let publisher = broker.client(Codec::MsgPack).await;
    publisher.publish(&a, "one").await.unwrap();
    publisher.publish(&b, vec![0u8, 0xff]).await.unwrap();
    publisher.publish(&a, "two").await.unwrap();
    let mut got: Vec<(String, u64, Vec<u8>)> = Vec::new();
    for _ in 0..3 {
        got.push(positions.message(&sse.next_event().await));
    }
    got.sort();
    assert_eq!(
        got,
        [
            (a.clone(), 1, b"one".to_vec()),
            (a.clone(), 2, b"two".to_vec()),
            (b.clone(), 1, vec![0, 0xff]),
        ]
    );
    assert_eq!(broker.server().stats().sse_streams_open, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_gets_what_it_missed_once_in_order_then_live() {
    let broker = Broker::start_with(with_history());
    let (a, b) = rooms_on_both_cores("sse-resume-");
    let target = format!("/sse?{}", rooms_query(&[&a, &b]));
    let publisher = broker.client(Codec::MsgPack).await;
    let mut positions = Positions::new(&[&a, &b]);

    let mut sse = SseStream::open(broker.addr, &target, "").await;
    for room in [&a, &b] {
        let subscribed = sse.next_event().await;
        positions.set(room, &epoch(&subscribed), 0);
    }
    publisher.publish(&a, "a1").await.unwrap();
    publisher.publish(&a, "a2").await.unwrap();
    publisher.publish(&b, "b1").await.unwrap();
    let mut last_id = String::new();
    for _ in 0..3 {
        let event = sse.next_event().await;
        positions.message(&event);
        last_id = event.id.unwrap();
    }
    drop(sse);

    // Published while the client is away.
    for (room, data) in [(&a, "a3"), (&b, "b2"), (&a, "a4")] {
        publisher.publish(room, data).await.unwrap();
    }
    let mut sse = SseStream::open(
        broker.addr,
        &target,
        &format!("Last-Event-ID: {last_id}\r\n"),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let event = sse.next_event().await;
        if event.event == "subscribed" {
            assert_eq!(event.data["recovered"], json!(true), "{event:?}");
            let room = event.data["room"].as_str().unwrap();
            let (epoch, offset) = positions.at[room].clone();
            assert_eq!(
                (event.data["epoch"].clone(), event.data["offset"].clone()),
                (json!(epoch), json!(offset)),
                "a recovered room's answer carries the position it resumes from"
            );
            assert_eq!(event.id.as_deref(), Some(positions.id().as_str()));
        } else {
            got.push(positions.message(&event));
        }
    }
    // Then live, and nothing twice: the sentinel is the next event.
    publisher.publish(&a, "a5").await.unwrap();
    got.push(positions.message(&sse.next_event().await));
    publisher.publish(&b, "sentinel").await.unwrap();
    got.push(positions.message(&sse.next_event().await));
    let data: Vec<(String, String)> = got
        .into_iter()
        .map(|(room, _, data)| (room, String::from_utf8(data).unwrap()))
        .collect();
    let of = |room: &str| -> Vec<&str> {
        data.iter()
            .filter(|(r, _)| r == room)
            .map(|(_, d)| d.as_str())
            .collect()
    };
    assert_eq!(of(&a), ["a3", "a4", "a5"]);
    assert_eq!(of(&b), ["b2", "sentinel"]);
    assert_eq!(broker.server().stats().recoveries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_resumes_a_fresh_stream_and_a_single_room_id_is_epoch_colon_offset() {
    let broker = Broker::start_with(with_history());
    let room = "sse:since/é";
    let publisher = broker.client(Codec::MsgPack).await;
    let epoch = publisher.subscribe(room).await.unwrap().epoch.0;
    for data in ["s1", "s2", "s3"] {
        publisher.publish(room, data).await.unwrap();
    }
    let target = format!(
        "/sse?room={}&since={}",
        encode(room),
        encode(&format!("{room}:{epoch}:1"))
    );
    let mut sse = SseStream::open(broker.addr, &target, "").await;
    let subscribed = sse.next_event().await;
    assert_eq!(subscribed.event, "subscribed");
    assert_eq!(subscribed.data["recovered"], json!(true));
    assert_eq!(subscribed.id, Some(format!("{epoch}:1")));
    let mut positions = Positions::new(&[room]);
    positions.set(room, &epoch, 1);
    for expected in ["s2", "s3"] {
        let (_, _, data) = positions.message(&sse.next_event().await);
        assert_eq!(data, expected.as_bytes());
    }
    publisher.publish(room, "s4").await.unwrap();
    let event = sse.next_event().await;
    positions.message(&event);
    assert_eq!(event.id, Some(format!("{epoch}:4")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_history_cannot_serve_gets_the_recovery_refused_event_then_live() {
    let broker = Broker::start_with(Config {
        history_size: 2,
        ..config()
    });
    let room = "sse-refused";
    let publisher = broker.client(Codec::MsgPack).await;
    let epoch = publisher.subscribe(room).await.unwrap().epoch.0;
    for i in 1..=5 {
        publisher.publish(room, format!("r{i}")).await.unwrap();
    }
    let cases = [
        (format!("{epoch}:1"), "2 to 5 are needed, 4 and 5 are kept"),
        (format!("{epoch}:99"), "beyond the room's offset"),
        ("0000000000000000:3".to_owned(), "another epoch"),
    ];
    for (from, why) in cases {
        let target = format!("/sse?room={room}");
        let mut sse =
            SseStream::open(broker.addr, &target, &format!("Last-Event-ID: {from}\r\n")).await;
        let refused = sse.next_event().await;
        let (from_epoch, from_offset) = from.split_once(':').unwrap();
        assert_eq!(refused.event, "recovery_refused", "{why}");
        assert_eq!(
            refused.data,
            json!({"room": room, "epoch": epoch, "offset": 5, "recovered": false,
                   "from": {"epoch": from_epoch, "offset": from_offset.parse::<u64>().unwrap()}}),
            "{why}"
        );
        assert_eq!(refused.id, Some(format!("{epoch}:5")), "{why}");
    }
    let mut sse = SseStream::open(
        broker.addr,
        &format!("/sse?room={room}"),
        &format!("Last-Event-ID: {epoch}:1\r\n"),
    )
    .await;
    assert_eq!(sse.next_event().await.event, "recovery_refused");
    publisher.publish(room, "r6").await.unwrap();
    let live = sse.next_event().await;
    assert_eq!(live.data["offset"], json!(6));
    assert_eq!(live.id, Some(format!("{epoch}:6")));
    assert_eq!(broker.server().stats().recoveries_refused, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_the_query_or_a_cookie_and_its_grants_decide_the_rooms() {
    let broker = Broker::start_with(Config {
        jwt_secret: SECRET.into(),
        jwt_leeway: Duration::ZERO,
        ..config()
    });
    let token = |exp: u64| {
        sign(
            Algorithm::HS256,
            &json!({"sub": "ann", "exp": exp, "rooms": {"sub": ["news.*"]}}),
            SECRET,
        )
    };
    let good = token(now() + 60);

    let refused = SseStream::try_open(broker.addr, "/sse?room=news.a", "")
        .await
        .err()
        .expect("no token");
    assert_eq!(refused.status, 401);
    assert!(
        refused.head.contains("www-authenticate: bearer"),
        "{}",
        refused.head
    );
    assert_eq!(refused.body, "a token is required\n");
    let expired = format!("/sse?room=news.a&token={}", token(now() - 60));
    let refused = SseStream::try_open(broker.addr, &expired, "")
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (401, "token expired\n")
    );

    let mut by_query =
        SseStream::open(broker.addr, &format!("/sse?room=news.a&token={good}"), "").await;
    assert_eq!(by_query.next_event().await.event, "subscribed");
    let mut by_cookie = SseStream::open(
        broker.addr,
        "/sse?room=news.b",
        &format!("Cookie: theme=dark; roomcast_token={good}\r\n"),
    )
    .await;
    assert_eq!(by_cookie.next_event().await.event, "subscribed");
    let mut by_header = SseStream::open(
        broker.addr,
        "/sse?room=news.c",
        &format!("Authorization: Bearer {good}\r\n"),
    )
    .await;
    assert_eq!(by_header.next_event().await.event, "subscribed");

    let denied = format!("/sse?room=news.a&room=secret.x&token={good}");
    let refused = SseStream::try_open(broker.addr, &denied, "")
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (403, "not allowed to subscribe in secret.x\n")
    );
    let stats = broker.server().stats();
    assert_eq!((stats.auth_failures, stats.permission_denials), (2, 1));
    assert_eq!(stats.sse_streams_open, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_a_4001_close_event_when_its_token_expires() {
    let broker = Broker::start_with(Config {
        jwt_secret: SECRET.into(),
        jwt_leeway: Duration::ZERO,
        ..config()
    });
    let token = sign(
        Algorithm::HS256,
        &json!({"sub": "ann", "exp": now() + 2, "rooms": {"sub": ["*"]}}),
        SECRET,
    );
    let mut sse = SseStream::open(broker.addr, &format!("/sse?room=brief&token={token}"), "").await;
    assert_eq!(sse.next_event().await.event, "subscribed");
    let close = sse.next_event().await;
    assert_eq!(close.event, "close");
    assert_eq!(close.data, json!({"code": 4001, "reason": "token expired"}));
    assert!(sse.ends().await);
    assert_eq!(broker.server().stats().token_expirations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_rooms_carry_utf8_payloads_as_text_and_other_rooms_as_base64() {
    let broker = Broker::start_with(Config {
        sse_text_rooms: List(vec!["chat.*".into()]),
        ..config()
    });
    let target = format!("/sse?{}", rooms_query(&["chat.lobby", "bin.x"]));
    let mut sse = SseStream::open(broker.addr, &target, "").await;
    let mut epochs = HashMap::new();
    for _ in 0..2 {
        let subscribed = sse.next_event().await;
        epochs.insert(
            subscribed.data["room"].as_str().unwrap().to_owned(),
            epoch(&subscribed),
        );
    }
    let publisher = broker.client(Codec::MsgPack).await;
    publisher
        .publish("chat.lobby", "héllo \"you\"\nbye")
        .await
        .unwrap();
    let text = sse.next_event().await;
    assert_eq!(
        text.data,
        json!({"room": "chat.lobby", "epoch": epochs["chat.lobby"], "offset": 1, "text": "héllo \"you\"\nbye"})
    );
    publisher
        .publish("chat.lobby", vec![0xffu8, 0])
        .await
        .unwrap();
    let not_utf8 = sse.next_event().await;
    assert_eq!(not_utf8.data["data"], json!(base64(&[0xff, 0])));
    assert!(not_utf8.data.get("text").is_none());
    publisher.publish("bin.x", "plain").await.unwrap();
    let binary = sse.next_event().await;
    assert_eq!(binary.data["data"], json!(base64(b"plain")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_sends_heartbeat_comments_and_outlives_the_handshake_timeout() {
    let handshake_timeout = Duration::from_millis(300);
    let broker = Broker::start_with(Config {
        sse_heartbeat: Duration::from_millis(50),
        handshake_timeout,
        ..config()
    });
    let opened = Instant::now();
    let mut sse = SseStream::open(broker.addr, "/sse?room=quiet", "").await;
    assert_eq!(sse.next_event().await.event, "subscribed");
    let mut heartbeats = 0;
    while heartbeats < 3 || opened.elapsed() < handshake_timeout * 3 {
        match sse.next_item().await {
            Some(Item::Comment(comment)) => {
                assert_eq!(comment, "heartbeat");
                heartbeats += 1;
            }
            other => panic!("only heartbeats on a quiet stream, got {other:?}"),
        }
    }
    let publisher = broker.client(Codec::MsgPack).await;
    publisher.publish("quiet", "still here").await.unwrap();
    assert_eq!(sse.next_event().await.event, "message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_reading_is_closed_by_the_policy_while_a_fast_subscriber_gets_everything(
) {
    let broker = Broker::start_with(Config {
        max_message_size: 1024,
        outbound_max_bytes: 16 * 1024,
        slow_consumer: SlowConsumerPolicy::Close,
        // Long enough for this test to come back and read the close event.
        close_timeout: Duration::from_secs(60),
        ..config()
    });
    let room = "sse-slow";
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(broker.addr).await.unwrap();
    let mut slow = SseStream::send(stream, &request(&format!("/sse?room={room}"), ""))
        .await
        .expect("a stream");
    // Live once its subscribe is answered; from here on it reads nothing.
    assert_eq!(slow.next_event().await.event, "subscribed");

    let mut fast = Client::connect_with(broker.addr, Codec::MsgPack, ClientOptions::default())
        .await
        .unwrap();
    let mut expected = fast.subscribe(room).await.unwrap().offset.0 + 1;
    let publisher = broker.client(Codec::MsgPack).await;
    let payload = vec![b'x'; 900];
    while broker.server().stats().slow_consumer_closes == 0 {
        assert!(expected < 100_000, "the stalled stream was never closed");
        // A burst well inside the bound: the fast one keeps up.
        for _ in 0..4 {
            publisher
                .publish_nowait(room, payload.clone())
                .await
                .unwrap();
        }
        for _ in 0..4 {
            assert_eq!(
                next(&mut fast).await.offset.0,
                expected,
                "the fast one misses nothing"
            );
            expected += 1;
        }
    }
    // The stalled stream now reads: a prefix of the room, in order, then
    // the close event, then the end.
    let mut offset = 0;
    loop {
        let event = slow.next_event().await;
        match event.event.as_str() {
            "message" => {
                offset += 1;
                assert_eq!(event.data["offset"], json!(offset));
            }
            "close" => {
                assert_eq!(event.data, json!({"code": 1013, "reason": "slow consumer"}));
                break;
            }
            _ => panic!("unexpected {event:?}"),
        }
    }
    assert!(offset < expected - 1, "the stalled stream lost the rest");
    assert!(slow.ends().await);
    eventually("the stream's member to go", || {
        broker.server().stats().sse_streams_open == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_its_rooms_and_frees_its_place() {
    let broker = Broker::start_with(Config {
        presence: true,
        ..config()
    });
    let (a, b) = rooms_on_both_cores("sse-gone-");
    let mut sse =
        SseStream::open(broker.addr, &format!("/sse?{}", rooms_query(&[&a, &b])), "").await;
    sse.next_event().await;
    sse.next_event().await;
    let watcher = broker.client(Codec::MsgPack).await;
    assert_eq!(watcher.presence(&a).await.unwrap().len(), 1);
    assert_eq!(watcher.presence(&b).await.unwrap().len(), 1);
    let stats = broker.server().stats();
    assert_eq!((stats.connections_open, stats.sse_streams_open), (2, 1));
    drop(sse);
    eventually("the stream to be counted out", || {
        let stats = broker.server().stats();
        (stats.connections_open, stats.sse_streams_open) == (1, 0)
    })
    .await;
    for room in [&a, &b] {
        assert!(
            watcher.presence(room).await.unwrap().is_empty(),
            "{room} left"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_refuses_bad_requests_for_a_stated_reason_and_answers_cors() {
    let broker = Broker::start_with(Config {
        allowed_origins: List(vec!["https://app.example.com".into()]),
        ..config()
    });
    let status = |refused: common::sse::Refused| (refused.status, refused.body);
    let bad = |target: &'static str, extra: &'static str| {
        let addr = broker.addr;
        async move {
            SseStream::try_open(addr, target, extra)
                .await
                .err()
                .map(status)
                .expect("refused")
        }
    };
    assert_eq!(
        bad("/sse", "").await,
        (400, "name at least one room: ?room=<name>\n".into())
    );
    assert_eq!(
        bad("/sse?room=a&room=a", "").await,
        (400, "room a is named twice\n".into())
    );
    assert_eq!(bad("/sse?room=a%20b", "").await.0, 400);
    assert_eq!(bad("/sse?room=a&since=b:e:1", "").await.0, 400);
    assert_eq!(
        bad("/sse?room=a&room=b", "Last-Event-ID: e:1\r\n").await.0,
        400
    );
    assert_eq!(
        bad("/sse?room=a", "Origin: https://evil.example.com\r\n").await,
        (403, "origin not allowed\n".into())
    );

    let post = "POST /sse?room=a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
    let stream = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let refused = SseStream::send(stream, post).await.err().unwrap();
    assert_eq!(refused.status, 405);
    assert!(
        refused.head.contains("allow: get, options"),
        "{}",
        refused.head
    );

    let preflight = "OPTIONS /sse?room=a HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n\r\n";
    let stream = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let answer = SseStream::send(stream, preflight).await.err().unwrap();
    assert_eq!(answer.status, 204);
    assert!(answer
        .head
        .contains("access-control-allow-origin: https://app.example.com"));
    assert!(answer
        .head
        .contains("access-control-allow-headers: last-event-id"));

    let sse = SseStream::open(
        broker.addr,
        "/sse?room=a",
        "Origin: https://app.example.com\r\n",
    )
    .await;
    assert_eq!(
        sse.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(sse.header("access-control-allow-credentials"), Some("true"));

    // Without allowed_origins, any page may read a stream, never with cookies.
    let open = Broker::start();
    let sse = SseStream::open(
        open.addr,
        "/sse?room=a",
        "Origin: https://any.example.com\r\n",
    )
    .await;
    assert_eq!(sse.header("access-control-allow-origin"), Some("*"));
    assert_eq!(sse.header("access-control-allow-credentials"), None);
    let none = SseStream::open(open.addr, "/sse?room=a", "").await;
    assert_eq!(none.header("access-control-allow-origin"), None);

    // An empty sse_path turns the endpoint off.
    let off = Broker::start_with(Config {
        sse_path: String::new(),
        ..config()
    });
    let refused = SseStream::try_open(off.addr, "/sse?room=a", "")
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_the_stream_with_a_close_event() {
    let broker = Broker::start();
    let mut sse = SseStream::open(broker.addr, "/sse?room=bye", "").await;
    assert_eq!(sse.next_event().await.event, "subscribed");
    let shutdown = tokio::spawn(broker.shutdown());
    let close = sse.next_event().await;
    assert_eq!(close.event, "close");
    assert_eq!(
        close.data,
        json!({"code": 1012, "reason": "service restart"})
    );
    assert!(sse.ends().await);
    shutdown.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_http_client_reads_the_stream_and_resumes_with_last_event_id() {
    let broker = Broker::start_with(Config {
        sse_text_rooms: List(vec!["py.text.*".into()]),
        ..with_history()
    });
    run_script("sse_client.py", vec![broker.addr.to_string()], "sse: ok").await;
}
