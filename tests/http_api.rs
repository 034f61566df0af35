//! The backend HTTP API as a backend uses it: it publishes, broadcasts and
//! batches over HTTP on the admin listener while WebSocket clients
//! subscribe; it reads history and presence, disconnects a user and takes
//! a user out of a room; bad input gets its status and error code and
//! publishes nothing; and schemathesis checks the live API against
//! docs/openapi.json. Real sockets, both codecs where a subscriber is
//! involved.

mod common;

use std::time::Duration;

use jsonwebtoken::Algorithm;
use roomcast::client::{Client, ClientOptions};
use roomcast::config::RoomRules;
use roomcast::protocol::{ClientOp, Codec, HistoryQuery, Offset, Outcome, ServerEvent};
use roomcast::Config;
use serde_json::{json, Value};

use common::broker::{config, next, rooms_on_both_cores, Broker};
use common::http::{raw, Api};
use common::jwt::{now, sign};
use common::peer::{room, Peer};
use common::process::run_with_deadline;
use common::ws::bearer;

const KEY: &str = "backend-key";
const SECRET: &str = "test-secret-with-enough-entropy";

/// The API on; tokens checked (so connections have users); `chat.*` rooms
/// keep history and presence, `ticks.*` rooms keep nothing.
fn api_config() -> Config {
    Config {
        api_key: KEY.into(),
        jwt_secret: SECRET.into(),
        rooms: RoomRules::parse(r#"[{ match = "chat.*", history_size = 100, presence = true }]"#)
            .unwrap(),
        ..config()
    }
}

/// A token for `user` that grants everything.
fn token(user: &str) -> String {
    let rooms = json!({"sub": ["*"], "pub": ["*"], "presence": ["*"]});
    sign(
        Algorithm::HS256,
        &json!({"sub": user, "exp": now() + 600, "rooms": rooms}),
        SECRET,
    )
}

/// A reconnecting Rust client for `user`.
async fn client(broker: &Broker, user: &str, codec: Codec) -> Client {
    let options = ClientOptions {
        token: Some(token(user)),
        ..ClientOptions::default()
    };
    Client::connect_with(broker.addr, codec, options)
        .await
        .expect("client connects")
}

/// A raw connection for `user` that never reconnects.
async fn peer(broker: &Broker, user: &str, codec: Codec) -> Peer {
    Peer::with_headers(broker.addr, codec, &bearer(&token(user))).await
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The answer's JSON, after checking it is a 200.
fn ok(response: common::http::Response) -> Value {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

fn offset(answer: &Value) -> Offset {
    Offset(answer["offset"].as_u64().expect("an offset"))
}

/// The next message a peer receives (replies and events skipped).
async fn next_message(peer: &mut Peer) -> (String, Offset, Vec<u8>) {
    loop {
        match peer.event().await {
            Some(ServerEvent::Message { room, offset, data }) => {
                return (room, offset, data.to_vec())
            }
            Some(_) => {}
            None => panic!("the connection ended before a message"),
        }
    }
}

fn subscribe(name: &str) -> ClientOp {
    ClientOp::subscribe(room(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_publishes_and_each_subscriber_receives_it_at_the_offset_and_epoch_the_answer_gave(
) {
    let broker = Broker::start_with(api_config());
    let api = Api::new(broker.admin(), KEY);
    let (home_0, home_1) = rooms_on_both_cores("chat.orders-");
    for name in [&home_0, &home_1] {
        let mut subscribers = Vec::new();
        for codec in Codec::ALL {
            let subscriber = client(&broker, "ann", codec).await;
            let info = subscriber.subscribe(name).await.unwrap();
            subscribers.push((subscriber, info));
        }
        for n in 1..=3u8 {
            let data = [b'o', n, 0xff];
            let answer = ok(api
                .post(
                    "/api/publish",
                    &json!({"room": name, "data": base64(&data)}),
                )
                .await);
            assert_eq!(answer["duplicate"], false);
            assert_eq!(offset(&answer), Offset(u64::from(n)));
            for (subscriber, info) in &mut subscribers {
                assert_eq!(answer["epoch"], info.epoch.0.as_str(), "the room's epoch");
                let message = next(subscriber).await;
                assert_eq!(
                    (message.room.as_str(), message.offset, &message.data[..]),
                    (name.as_str(), offset(&answer), &data[..])
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_is_answered_duplicate_and_delivered_once() {
    let broker = Broker::start_with(api_config());
    let api = Api::new(broker.admin(), KEY);
    let mut subscriber = client(&broker, "ann", Codec::MsgPack).await;
    subscriber.subscribe("chat.pay").await.unwrap();
    let body = json!({"room": "chat.pay", "data": base64(b"charge"), "idempotency_key": "order-7"});
    let first = ok(api.post("/api/publish", &body).await);
    let retry = ok(api.post("/api/publish", &body).await);
    assert_eq!(first["duplicate"], false);
    assert_eq!(retry["duplicate"], true);
    assert_eq!(offset(&retry), offset(&first));
    assert_eq!(retry["epoch"], first["epoch"]);
    // The key belongs to its room: the same key elsewhere is another key.
    let elsewhere = json!({"room": "chat.other", "data": "", "idempotency_key": "order-7"});
    assert_eq!(
        ok(api.post("/api/publish", &elsewhere).await)["duplicate"],
        false
    );
    // A WebSocket retry under the same key is recognised too.
    let ws = subscriber
        .publish_with_key("chat.pay", b"charge".to_vec(), "order-7")
        .await
        .unwrap();
    assert!(ws.duplicate);
    let marker = ok(api
        .post(
            "/api/publish",
            &json!({"room": "chat.pay", "data": base64(b"next")}),
        )
        .await);
    let delivered = next(&mut subscriber).await;
    assert_eq!(
        (delivered.offset, &delivered.data[..]),
        (offset(&first), &b"charge"[..])
    );
    let delivered = next(&mut subscriber).await;
    assert_eq!(
        (delivered.offset, &delivered.data[..]),
        (offset(&marker), &b"next"[..]),
        "the retries were not delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messagepack_body_carries_raw_bytes() {
    #[derive(serde::Serialize)]
    struct Publish<'a> {
        room: &'a str,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
        idempotency_key: &'a str,
    }
    let broker = Broker::start_with(api_config());
    let api = Api::new(broker.admin(), KEY);
    let mut subscriber = client(&broker, "ann", Codec::Proto).await;
    subscriber.subscribe("chat.bin").await.unwrap();
    let data = [0u8, 0xc1, 0xff, b'x'];
    let body = rmp_serde::to_vec_named(&Publish {
        room: "chat.bin",
        data: &data,
        idempotency_key: "m-1",
    })
    .unwrap();
    for content_type in ["application/msgpack", "application/x-msgpack"] {
        let answer = ok(api.send("POST", "/api/publish", content_type, &body).await);
        assert_eq!(offset(&answer), Offset(1), "the second is a duplicate");
    }
    let message = next(&mut subscriber).await;
    assert_eq!((message.offset, &message.data[..]), (Offset(1), &data[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_the_subscribers_of_every_room_named() {
    let broker = Broker::start_with(api_config());
    let api = Api::new(broker.admin(), KEY);
    let (home_0, home_1) = rooms_on_both_cores("chat.news-");
    let rooms = [home_0, home_1, "ticks.news".to_owned()];
    let mut subscribers = Vec::new();
    for name in &rooms {
        let subscriber = client(&broker, "ann", Codec::MsgPack).await;
        subscriber.subscribe(name).await.unwrap();
        subscribers.push(subscriber);
    }
    ok(api
        .post("/api/publish", &json!({"room": rooms[1], "data": ""}))
        .await);
    let answer = ok(api
        .post(
            "/api/broadcast",
            &json!({"rooms": rooms, "data": base64(b"extra!")}),
        )
        .await);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for ((name, result), subscriber) in rooms.iter().zip(results).zip(&mut subscribers) {
        assert_eq!(result["room"], name.as_str());
        let mut message = next(subscriber).await;
        if message.data.is_empty() {
            // The publish before the broadcast, in rooms[1].
            message = next(subscriber).await;
        }
        assert_eq!(message.offset, offset(result), "{name}");
        assert_eq!(&message.data[..], b"extra!");
    }
    assert_eq!(offset(&results[1]), Offset(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_presence_over_http_agree_with_what_websocket_clients_see() {
    let broker = Broker::start_with(api_config());
    let api = Api::new(broker.admin(), KEY);
    let ann = client(&broker, "ann", Codec::MsgPack).await;
    let bob = client(&broker, "bob", Codec::Proto).await;
    let bob_again = client(&broker, "bob", Codec::MsgPack).await;
    for who in [&ann, &bob, &bob_again] {
        who.subscribe("chat.room").await.unwrap();
    }
    ann.publish("chat.room", b"one".to_vec()).await.unwrap();
    ok(api
        .post(
            "/api/publish",
            &json!({"room": "chat.room", "data": base64(b"two")}),
        )
        .await);
    bob.publish("chat.room", b"three".to_vec()).await.unwrap();

    let page = ok(api.get("/api/history?room=chat.room").await);
    let seen = ann
        .history("chat.room", HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(page["epoch"], seen.position.epoch.0.as_str());
    assert_eq!(offset(&page), seen.position.offset);
    let over_http: Vec<(u64, String)> = page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["offset"].as_u64().unwrap(),
                p["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let over_ws: Vec<(u64, String)> = seen
        .publications
        .iter()
        .map(|p| (p.offset.0, base64(&p.data)))
        .collect();
    assert_eq!(over_http, over_ws);
    assert_eq!(over_http.len(), 3);
    // The query parameters mean what they mean on the wire.
    let newest = ok(api
        .get("/api/history?room=chat.room&limit=1&reverse=true")
        .await);
    assert_eq!(newest["publications"][0]["data"], base64(b"three"));
    let after_one = ok(api.get("/api/history?room=chat.room&since=1&limit=1").await);
    assert_eq!(after_one["publications"][0]["offset"], 2);

    let present = ok(api.get("/api/presence?room=chat.room").await);
    let mut over_http: Vec<(String, String)> = present["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["client"].as_str().unwrap().to_owned(),
                c["user"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut over_ws: Vec<(String, String)> = bob
        .presence("chat.room")
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.client, c.user))
        .collect();
    over_http.sort();
    over_ws.sort();
    assert_eq!(over_http, over_ws);
    assert_eq!(over_http.len(), 3);
    let stats = ok(api.get("/api/presence_stats?room=chat.room").await);
    let counts = ann.presence_stats("chat.room").await.unwrap();
    assert_eq!(
        (stats["clients"].as_u64(), stats["users"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!((counts.clients, counts.users), (3, 2));

    let info = ok(api.get("/api/info").await);
    assert_eq!(info["engine"], "memory");
    assert_eq!(info["workers"], 2);
    assert_eq!(info["connections"], 3);
    assert_eq!(info["publishes"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_every_connection_of_a_user_with_the_code_given_and_no_other() {
    let broker = Broker::start_with(api_config());
    let api = Api::new(broker.admin(), KEY);
    // Enough connections that both cores hold some of mallory's.
    let mut mallory = Vec::new();
    for i in 0..6 {
        let codec = Codec::ALL[i % 2];
        let mut connection = peer(&broker, "mallory", codec).await;
        assert!(matches!(
            connection.request(subscribe("chat.x")).await,
            Outcome::Ack(_)
        ));
        mallory.push(connection);
    }
    let mut ann = peer(&broker, "ann", Codec::MsgPack).await;
    assert!(matches!(
        ann.request(subscribe("chat.x")).await,
        Outcome::Ack(_)
    ));

    let answer = ok(api
        .post("/api/disconnect", &json!({"user": "mallory", "code": 4321}))
        .await);
    assert_eq!(answer["disconnected"], 6);
    for connection in &mut mallory {
        assert_eq!(connection.ws.expect_close().await, Some(4321));
    }
    // Closing connections are not counted twice.
    let again = ok(api
        .post("/api/disconnect", &json!({"user": "mallory"}))
        .await);
    assert_eq!(again["disconnected"], 0);

    // Ann was not touched: she still receives.
    let published = ok(api
        .post(
            "/api/publish",
            &json!({"room": "chat.x", "data": base64(b"hi")}),
        )
        .await);
    let (_, at, data) = next_message(&mut ann).await;
    assert_eq!((at, &data[..]), (offset(&published), &b"hi"[..]));

    // Without a code: 4003, the documented default.
    let mut eve = peer(&broker, "eve", Codec::Proto).await;
    assert!(matches!(
        eve.request(subscribe("chat.y")).await,
        Outcome::Ack(_)
    ));
    let answer = ok(api.post("/api/disconnect", &json!({"user": "eve"})).await);
    assert_eq!(answer["disconnected"], 1);
    assert_eq!(eve.ws.expect_close().await, Some(4003));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_takes_a_user_out_of_one_room_and_leaves_the_connection_open() {
    let broker = Broker::start_with(api_config());
    let api = Api::new(broker.admin(), KEY);
    // Two rooms with the same home: their deliveries to one core keep
    // their order, so "the next message is from the other room" proves
    // that none came from the first.
    let left = "chat.left";
    let home = roomcast::hooks::home_core(left, 2);
    let kept = (0..)
        .map(|i| format!("chat.kept-{i}"))
        .find(|name| roomcast::hooks::home_core(name, 2) == home)
        .unwrap();
    let mut mallory = Vec::new();
    for codec in Codec::ALL {
        let mut connection = peer(&broker, "mallory", codec).await;
        for name in [left, kept.as_str()] {
            assert!(matches!(
                connection.request(subscribe(name)).await,
                Outcome::Ack(_)
            ));
        }
        mallory.push(connection);
    }
    let mut ann = peer(&broker, "ann", Codec::Proto).await;
    assert!(matches!(
        ann.request(subscribe(left)).await,
        Outcome::Ack(_)
    ));

    let answer = ok(api
        .post(
            "/api/unsubscribe",
            &json!({"user": "mallory", "room": left}),
        )
        .await);
    assert_eq!(answer["unsubscribed"], 2);
    let present = ok(api.get(&format!("/api/presence?room={left}")).await);
    let users: Vec<&str> = present["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["ann"], "mallory left the room's presence");

    let in_left = ok(api
        .post(
            "/api/publish",
            &json!({"room": left, "data": base64(b"secret")}),
        )
        .await);
    let in_kept = ok(api
        .post(
            "/api/publish",
            &json!({"room": kept, "data": base64(b"open")}),
        )
        .await);
    for connection in &mut mallory {
        let (name, at, data) = next_message(connection).await;
        assert_eq!(
            (name.as_str(), at, &data[..]),
            (kept.as_str(), offset(&in_kept), &b"open"[..])
        );
        // The connection knows it is out: unsubscribing again is error 104.
        let again = connection
            .request(ClientOp::Unsubscribe { room: room(left) })
            .await;
        assert!(
            matches!(again, Outcome::Error { code: 104, .. }),
            "{again:?}"
        );
    }
    let (_, at, data) = next_message(&mut ann).await;
    assert_eq!((at, &data[..]), (offset(&in_left), &b"secret"[..]));
    // Nobody left to take out.
    let again = ok(api
        .post(
            "/api/unsubscribe",
            &json!({"user": "mallory", "room": left}),
        )
        .await);
    assert_eq!(again["unsubscribed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_operation_in_order() {
    let broker = Broker::start_with(api_config());
    let api = Api::new(broker.admin(), KEY);
    let mut subscriber = peer(&broker, "ann", Codec::MsgPack).await;
    assert!(matches!(
        subscriber.request(subscribe("chat.a")).await,
        Outcome::Ack(_)
    ));
    let mut kicked = peer(&broker, "kick-me", Codec::Proto).await;
    assert!(matches!(
        kicked.request(subscribe("chat.b")).await,
        Outcome::Ack(_)
    ));
    let answer = ok(api
        .post(
            "/api/batch",
            &json!({"operations": [
                {"op": "publish", "room": "chat.a", "data": base64(b"1")},
                {"op": "broadcast", "rooms": ["chat.a", "chat.b"], "data": base64(b"2")},
                {"op": "publish", "room": "chat.a", "data": base64(b"1"), "idempotency_key": "k"},
                {"op": "publish", "room": "chat.a", "data": base64(b"1"), "idempotency_key": "k"},
                {"op": "unsubscribe", "user": "nobody", "room": "chat.a"},
                {"op": "disconnect", "user": "kick-me", "code": 4444},
            ]}),
        )
        .await);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(offset(&results[0]), Offset(1));
    assert_eq!(results[1]["results"][0]["room"], "chat.a");
    assert_eq!(offset(&results[1]["results"][0]), Offset(2));
    assert_eq!(offset(&results[1]["results"][1]), Offset(1));
    assert_eq!(
        (offset(&results[2]), &results[2]["duplicate"]),
        (Offset(3), &json!(false))
    );
    assert_eq!(
        (offset(&results[3]), &results[3]["duplicate"]),
        (Offset(3), &json!(true))
    );
    assert_eq!(results[4], json!({"unsubscribed": 0}));
    assert_eq!(results[5], json!({"disconnected": 1}));
    for expected in 1..=3 {
        let (_, at, _) = next_message(&mut subscriber).await;
        assert_eq!(at, Offset(expected));
    }
    assert_eq!(kicked.ws.expect_close().await, Some(4444));
}

/// Each bad request: its status and code, and nothing published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_code_publishes_nothing_and_the_node_keeps_serving() {
    let broker = Broker::start_with(Config {
        api_max_body_bytes: 4096,
        max_message_size: 1024,
        ..api_config()
    });
    let api = Api::new(broker.admin(), KEY);
    let mut watcher = peer(&broker, "ann", Codec::MsgPack).await;
    assert!(matches!(
        watcher.request(subscribe("chat.a")).await,
        Outcome::Ack(_)
    ));
    let json = "application/json";
    let long_key = "k".repeat(129);
    let too_much_data = base64(&[7u8; 1025]);
    let too_big_body = format!(r#"{{"room":"chat.a","data":"{}"}}"#, "A".repeat(4096));
    let cases: Vec<(&str, &str, &str, String, u16, u64)> = vec![
        ("POST", "/api/publish", json, "{".into(), 400, 101),
        ("POST", "/api/publish", json, "[]".into(), 400, 101),
        (
            "POST",
            "/api/publish",
            json,
            r#"{"room":5}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/publish",
            json,
            r#"{"data":"aGk="}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/publish",
            json,
            r#"{"room":"chat.a","data":"@@"}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/publish",
            json,
            r#"{"room":"chat.a","data":null}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/publish",
            json,
            format!(r#"{{"room":"chat.a","idempotency_key":"{long_key}"}}"#),
            400,
            101,
        ),
        (
            "POST",
            "/api/publish",
            json,
            r#"{"room":"chat a"}"#.into(),
            400,
            102,
        ),
        (
            "POST",
            "/api/publish",
            json,
            r#"{"room":"chat.*"}"#.into(),
            400,
            102,
        ),
        (
            "POST",
            "/api/publish",
            json,
            r#"{"room":"chat.>"}"#.into(),
            400,
            102,
        ),
        (
            "POST",
            "/api/publish",
            json,
            r#"{"room":""}"#.into(),
            400,
            102,
        ),
        (
            "POST",
            "/api/publish",
            json,
            format!(r#"{{"room":"{}"}}"#, "r".repeat(256)),
            400,
            102,
        ),
        (
            "POST",
            "/api/publish",
            json,
            format!(r#"{{"room":"chat.a","data":"{too_much_data}"}}"#),
            413,
            413,
        ),
        ("POST", "/api/publish", json, too_big_body, 413, 413),
        (
            "POST",
            "/api/publish",
            "text/plain",
            r#"{"room":"chat.a"}"#.into(),
            415,
            415,
        ),
        (
            "POST",
            "/api/publish",
            "",
            r#"{"room":"chat.a"}"#.into(),
            415,
            415,
        ),
        (
            "POST",
            "/api/publish",
            "application/msgpack",
            "{}".into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/broadcast",
            json,
            r#"{"rooms":[]}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/broadcast",
            json,
            r#"{"rooms":["chat.a","bad room"]}"#.into(),
            400,
            102,
        ),
        (
            "POST",
            "/api/batch",
            json,
            r#"{"operations":[{"op":"explode"}]}"#.into(),
            400,
            100,
        ),
        (
            "POST",
            "/api/batch",
            json,
            r#"{"operations":[]}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/batch",
            json,
            r#"{"operations":[{"op":"publish","room":"chat.a"},{"op":"publish","room":"a b"}]}"#
                .into(),
            400,
            102,
        ),
        (
            "POST",
            "/api/batch",
            json,
            r#"{"operations":[{"op":"publish","room":"chat.a"},{"op":"publish"}]}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/disconnect",
            json,
            r#"{"user":"u","code":1006}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/disconnect",
            json,
            r#"{"user":"u","code":70000}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/disconnect",
            json,
            r#"{"user":""}"#.into(),
            400,
            101,
        ),
        (
            "POST",
            "/api/unsubscribe",
            json,
            r#"{"user":"u","room":"a?"}"#.into(),
            400,
            102,
        ),
        ("GET", "/api/history", "", String::new(), 400, 101),
        (
            "GET",
            "/api/history?room=chat.a&limit=-1",
            "",
            String::new(),
            400,
            101,
        ),
        (
            "GET",
            "/api/history?room=chat.a&reverse=yes",
            "",
            String::new(),
            400,
            101,
        ),
        (
            "GET",
            "/api/history?room=chat.a&room=chat.b",
            "",
            String::new(),
            400,
            101,
        ),
        (
            "GET",
            "/api/history?room=ticks.a",
            "",
            String::new(),
            422,
            106,
        ),
        (
            "GET",
            "/api/presence?room=bad%20room",
            "",
            String::new(),
            400,
            102,
        ),
        (
            "GET",
            "/api/presence_stats?room=ticks.a",
            "",
            String::new(),
            422,
            106,
        ),
        ("GET", "/api/nope", "", String::new(), 404, 404),
        ("GET", "/api", "", String::new(), 404, 404),
        ("DELETE", "/api/publish", "", String::new(), 405, 405),
        ("GET", "/api/publish", "", String::new(), 405, 405),
        ("POST", "/api/info", json, "{}".into(), 405, 405),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let response = api.send(method, path, content_type, body.as_bytes()).await;
        let what = format!(
            "{method} {path} {content_type} {}",
            &body[..body.len().min(80)]
        );
        assert_eq!(
            response.status,
            status,
            "{what}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.error_code(), Some(code), "{what}");
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        if status == 405 {
            assert!(
                response.header("allow").is_some(),
                "{what}: 405 names the method"
            );
        }
    }
    // A body declared far over the limit is refused before it is read.
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    );
    let refused = raw(broker.admin(), head.as_bytes()).await;
    assert_eq!((refused.status, refused.error_code()), (413, Some(413)));

    // Nothing was published: the first publication is offset 1, and it is
    // the first thing the watcher receives.
    let good = ok(api
        .post(
            "/api/publish",
            &json!({"room": "chat.a", "data": base64(b"good")}),
        )
        .await);
    assert_eq!(offset(&good), Offset(1));
    let (_, at, data) = next_message(&mut watcher).await;
    assert_eq!((at, &data[..]), (Offset(1), &b"good"[..]));
    assert_eq!(broker.server().stats().publishes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_configured_the_api_is_off_not_open() {
    let broker = Broker::start_with(Config {
        jwt_secret: SECRET.into(),
        ..config()
    });
    for key in [Some(""), Some("anything"), None] {
        let api = Api {
            addr: broker.admin(),
            key: key.map(str::to_owned),
        };
        for path in ["/api/info", "/api/openapi.json"] {
            let response = api.get(path).await;
            assert_eq!((response.status, response.error_code()), (404, Some(404)));
            let message = response.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(message.contains("off"), "{message}");
        }
        let publish = api.post("/api/publish", &json!({"room": "chat.a"})).await;
        assert_eq!(publish.status, 404);
    }
    // The rest of the admin listener is unchanged.
    assert_eq!(Api::new(broker.admin(), "").get("/stats").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_key_is_401_and_the_right_key_is_let_in() {
    let broker = Broker::start_with(api_config());
    let wrong_keys = [
        None,
        Some(String::new()),
        Some("backend-kex".to_owned()),
        Some(format!("{KEY}x")),
        Some(KEY[..KEY.len() - 1].to_owned()),
    ];
    for key in wrong_keys {
        let api = Api {
            addr: broker.admin(),
            key: key.clone(),
        };
        for (method, path) in [
            ("GET", "/api/info"),
            ("POST", "/api/publish"),
            ("GET", "/api/nope"),
        ] {
            let body = br#"{"room":"chat.a"}"#;
            let response = api.send(method, path, "application/json", body).await;
            assert_eq!(
                (response.status, response.error_code()),
                (401, Some(401)),
                "{key:?} {path}"
            );
        }
    }
    assert_eq!(broker.server().stats().publishes, 0);
    let document = ok(Api::new(broker.admin(), KEY).get("/api/openapi.json").await);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
}

/// The store behind the rooms fails: a publish is answered 503 (cannot be
/// reached: nothing done) or 504 (no answer in time: maybe done), both
/// error 110; a retry under the key after a 504 is recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_or_silent_store_is_503_or_504_with_error_110() {
    use std::sync::atomic::Ordering;
    let slow = roomcast::hooks::SlowEngine {
        max_delay: Duration::ZERO,
        seed: 3,
        ..Default::default()
    };
    let (unavailable, timing_out) = (slow.unavailable.clone(), slow.timing_out.clone());
    let broker = Broker::start_slow(api_config(), slow);
    let api = Api::new(broker.admin(), KEY);
    let body = json!({"room": "chat.flaky", "data": base64(b"x"), "idempotency_key": "try"});

    unavailable.store(true, Ordering::Release);
    let refused = api.post("/api/publish", &body).await;
    assert_eq!((refused.status, refused.error_code()), (503, Some(110)));
    let history = api.get("/api/history?room=chat.flaky").await;
    assert_eq!((history.status, history.error_code()), (503, Some(110)));
    unavailable.store(false, Ordering::Release);

    timing_out.store(true, Ordering::Release);
    let silent = api.post("/api/publish", &body).await;
    assert_eq!((silent.status, silent.error_code()), (504, Some(110)));
    timing_out.store(false, Ordering::Release);

    let retry = ok(api.post("/api/publish", &body).await);
    assert_eq!(
        (offset(&retry), &retry["duplicate"]),
        (Offset(1), &json!(true))
    );
}

/// schemathesis (pinned in scripts/test.sh) generates requests from
/// docs/openapi.json, as served, and runs every check on the answers: no
/// server error, statuses, content types, headers and bodies as the
/// document says, schema-violating requests refused and valid ones let in,
/// the key enforced. Every room keeps history and presence here, so that
/// any valid request is answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_live_api_as_its_openapi_document_describes_it() {
    let broker = Broker::start_with(Config {
        api_key: KEY.into(),
        history_size: 10,
        presence: true,
        ..config()
    });
    let schema = format!("http://{}/api/openapi.json", broker.admin());
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api");
    let output = tokio::task::spawn_blocking(move || {
        run_with_deadline(
            std::process::Command::new("python3")
                .args(["-m", "schemathesis.cli", "run", &schema])
                .args(["--header", &format!("X-API-Key: {KEY}")])
                .args(["--checks", "all", "--max-examples", "50", "--no-color"])
                .env("SCHEMATHESIS_HOOKS", "hooks")
                .env("PYTHONPATH", hooks)
                .current_dir(env!("CARGO_TARGET_TMPDIR")),
            Duration::from_secs(240),
        )
    })
    .await
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named schemathesis"),
        "schemathesis is not installed: run scripts/test.sh, which installs the pinned version\n{stderr}"
    );
    assert!(
        output.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}"
    );
}
