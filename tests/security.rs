//! Security as an operator configures it and an attacker meets it: tokens
//! checked before the upgrade, room permissions and role rules, expiry and
//! refresh, origins, per-IP and handshake limits, publish rate limits, and
//! `wss://` with a real TLS client. Real sockets throughout.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::broker::{config, Broker};
use common::jwt::{now, sign};
use common::peer::{room, Peer};
use common::process::run_with_deadline;
use common::ws::{bearer, handshake, http_request, offer, RawWs};
use jsonwebtoken::Algorithm;
use roomcast::config::List;
use roomcast::config::RoomRules;
use roomcast::protocol::{ClientOp, Codec, ErrorCode, Outcome, ServerEvent};
use roomcast::Config;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "test-secret-with-enough-entropy";

fn token(claims: Value) -> String {
    sign(Algorithm::HS256, &claims, SECRET)
}

/// A token for `user` valid for a minute, with these room grants.
fn token_for(user: &str, rooms: Value) -> String {
    token(json!({"sub": user, "exp": now() + 60, "rooms": rooms}))
}

fn secured() -> Config {
    Config {
        jwt_secret: SECRET.into(),
        jwt_leeway: Duration::ZERO,
        ..config()
    }
}

/// The status line of the answer to a handshake with `extra` headers.
async fn status(broker: &Broker, path: &str, extra: &str) -> String {
    let response = http_request(broker.addr, handshake(path, extra).as_bytes()).await;
    response.lines().next().unwrap_or_default().to_owned()
}

async fn peer_with(broker: &Broker, codec: Codec, extra: &str) -> Peer {
    Peer::with_headers(broker.addr, codec, extra).await
}

fn error_code(outcome: &Outcome) -> Option<u32> {
    match outcome {
        Outcome::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_checked_before_the_upgrade_wherever_the_client_puts_it() {
    let broker = Broker::start_with(secured());
    let good = token_for("ann", json!({"sub": ["*"]}));
    assert!(status(&broker, "/ws", "").await.contains("401"), "no token");
    assert!(status(&broker, "/ws", &bearer("garbage"))
        .await
        .contains("401"));
    let forged = sign(
        Algorithm::HS256,
        &json!({"sub": "ann", "exp": now() + 60}),
        "another secret",
    );
    assert!(
        status(&broker, "/ws", &bearer(&forged))
            .await
            .contains("401"),
        "forged"
    );
    let expired = token(json!({"sub": "ann", "exp": now() - 10}));
    let answer = http_request(broker.addr, handshake("/ws", &bearer(&expired)).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.contains("token expired"),
        "the reason is given: {answer}"
    );
    assert!(!answer.contains(&expired), "the token is never echoed");
    // alg: none, with the same claims, unsigned.
    let payload = good.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    assert!(
        status(&broker, "/ws", &bearer(&unsigned))
            .await
            .contains("401"),
        "alg none"
    );
    // The three places a good token may be.
    assert!(status(&broker, "/ws", &bearer(&good)).await.contains("101"));
    assert!(status(&broker, &format!("/ws?token={good}"), "")
        .await
        .contains("101"));
    let answer = http_request(
        broker.addr,
        handshake(
            "/ws",
            &format!("Sec-WebSocket-Protocol: roomcast.v1.proto, roomcast.jwt.{good}\r\n"),
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let chosen = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("sec-websocket-protocol"))
        .unwrap_or_default();
    assert!(
        chosen.ends_with("roomcast.v1.proto"),
        "only the codec is echoed: {chosen}"
    );
    assert!(broker.server().stats().auth_failures >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_permissions_come_from_the_token_and_role_rules_from_the_config() {
    let broker = Broker::start_with(Config {
        rooms: RoomRules::parse(
            r#"[{ match = "admin.*", publish_roles = ["admin"] },
                { match = "chat.*", presence = true }]"#,
        )
        .unwrap(),
        ..secured()
    });
    for codec in Codec::ALL {
        let grants = json!({"sub": ["ticks.*", "admin.*"], "pub": ["chat.room-42", "admin.*"]});
        let mut ann = peer_with(&broker, codec, &bearer(&token_for("ann", grants))).await;
        let denied = ErrorCode::PermissionDenied.code();
        let ok = |o: &Outcome| matches!(o, Outcome::Ack(_));
        assert!(ok(&ann
            .request(ClientOp::subscribe(room("ticks.btc")))
            .await));
        let o = ann.request(ClientOp::subscribe(room("chat.room-42"))).await;
        assert_eq!(error_code(&o), Some(denied), "no subscribe grant for chat");
        let publish = |name: &str| ClientOp::publish(room(name), Bytes::from_static(b"x"));
        assert!(ok(&ann.request(publish("chat.room-42")).await));
        assert_eq!(
            error_code(&ann.request(publish("ticks.btc")).await),
            Some(denied)
        );
        let o = ann
            .request(ClientOp::Presence {
                room: room("chat.room-42"),
            })
            .await;
        assert_eq!(error_code(&o), Some(denied), "no presence grant");
        // The token grants admin.*, but the server's rule wants the admin role.
        assert_eq!(
            error_code(&ann.request(publish("admin.alerts")).await),
            Some(denied)
        );
        assert!(ok(&ann
            .request(ClientOp::subscribe(room("admin.alerts")))
            .await));
        // The connection stayed open through every refusal.
        assert!(ok(&ann.request(publish("chat.room-42")).await));

        let admin_token = token(json!({"sub": "root", "exp": now() + 60, "role": "admin",
                                        "rooms": {"pub": ["admin.*"]}}));
        let mut root = peer_with(&broker, codec, &bearer(&admin_token)).await;
        assert!(ok(&root.request(publish("admin.alerts")).await));
    }
    assert!(broker.server().stats().permission_denials >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_the_connection_unless_refreshed_in_time() {
    let broker = Broker::start_with(secured());
    let short = |user: &str| token(json!({"sub": user, "exp": now() + 2, "rooms": {"sub": ["*"]}}));
    let mut lapsing = RawWs::connect(broker.addr, &bearer(&short("ann"))).await;
    let mut refreshed = peer_with(&broker, Codec::MsgPack, &bearer(&short("bob"))).await;
    let o = refreshed
        .request(ClientOp::Refresh {
            token: token_for("eve", json!({})),
        })
        .await;
    assert_eq!(
        error_code(&o),
        Some(ErrorCode::InvalidToken.code()),
        "another user's token"
    );
    let o = refreshed
        .request(ClientOp::Refresh {
            token: token_for("bob", json!({"sub": ["*"]})),
        })
        .await;
    assert!(matches!(o, Outcome::Ack(_)), "{o:?}");
    assert_eq!(lapsing.expect_close().await, Some(4001));
    // Past the first token's expiry, the refreshed connection still works.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let o = refreshed
        .request(ClientOp::subscribe(room("ticks.btc")))
        .await;
    assert!(matches!(o, Outcome::Ack(_)), "{o:?}");
    assert_eq!(broker.server().stats().token_expirations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connections_may_only_read_the_rooms_the_operator_opened() {
    let closed = Broker::start_with(secured());
    assert!(status(&closed, "/ws", "").await.contains("401"));
    let open = Broker::start_with(Config {
        allow_anonymous: true,
        anonymous_rooms: List(vec!["public.*".into()]),
        ..secured()
    });
    let mut guest = Peer::connect(open.addr, Codec::Proto).await;
    assert!(matches!(
        guest
            .request(ClientOp::subscribe(room("public.news")))
            .await,
        Outcome::Ack(_)
    ));
    let denied = Some(ErrorCode::PermissionDenied.code());
    let o = guest.request(ClientOp::subscribe(room("private.x"))).await;
    assert_eq!(error_code(&o), denied);
    let o = guest
        .request(ClientOp::publish(
            room("public.news"),
            Bytes::from_static(b"x"),
        ))
        .await;
    assert_eq!(
        error_code(&o),
        denied,
        "anonymous connections never publish"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_from_other_origins_are_refused_before_the_upgrade() {
    let broker = Broker::start_with(Config {
        allowed_origins: List(vec!["https://app.example.com".into()]),
        ..config()
    });
    assert!(
        status(&broker, "/ws", "Origin: https://evil.example.com\r\n")
            .await
            .contains("403")
    );
    assert!(
        status(&broker, "/ws", "Origin: https://app.example.com\r\n")
            .await
            .contains("101")
    );
    assert!(
        status(&broker, "/ws", "").await.contains("101"),
        "not a browser"
    );
    assert_eq!(broker.server().stats().origin_rejections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_more_than_its_share() {
    let broker = Broker::start_with(Config {
        max_connections_per_ip: 2,
        ..config()
    });
    let first = RawWs::connect(broker.addr, "").await;
    let _second = RawWs::connect(broker.addr, "").await;
    assert!(status(&broker, "/ws", "").await.contains("429"));
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        if status(&broker, "/ws", "").await.contains("101") {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "a closed connection frees its address's slot");

    let rated = Broker::start_with(Config {
        handshake_rate_per_ip: 3,
        ..config()
    });
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(status(&rated, "/ws", "").await);
    }
    assert!(answers[0].contains("101"));
    assert!(answers.iter().any(|a| a.contains("429")), "{answers:?}");
}

/// A slowloris client: connected, the start of a request sent, and no more.
async fn slowloris(broker: &Broker) -> TcpStream {
    let mut stream = TcpStream::connect(broker.addr).await.unwrap();
    stream.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_in_progress_are_capped_and_slow_ones_cut() {
    let broker = Broker::start_with(Config {
        max_handshakes_in_progress: 2,
        handshake_timeout: Duration::from_millis(500),
        ..config()
    });
    let idle_a = slowloris(&broker).await;
    let idle_b = slowloris(&broker).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = http_request(broker.addr, handshake("/ws", "").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // They are cut at the handshake timeout, and the places come back.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(status(&broker, "/ws", "").await.contains("101"));
    drop((idle_a, idle_b));
    assert_eq!(broker.server().stats().handshakes_over_capacity, 1);
}

/// Waits for the server to end a connection that never spoke; how long
/// that took. An answer, if any, may only be hyper's 408.
async fn dropped_after(mut stream: TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("a silent connection is dropped within 10 s");
    if let Ok(n) = read {
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    started.elapsed()
}

/// A connection that says nothing waits in the kernel for `tcp_defer_accept`
/// (Linux's TCP_DEFER_ACCEPT), not in a core: meanwhile it holds no
/// handshake place and costs no core a wake-up. It is still dropped: the
/// kernel hands it over when the deferral ends, and `handshake_timeout`
/// runs from there. With `0s`, every connection reaches a core at once.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_waits_in_the_kernel_and_is_still_dropped() {
    let deferring = Broker::start_with(Config {
        max_handshakes_in_progress: 1,
        handshake_timeout: Duration::from_millis(500),
        tcp_defer_accept: Duration::from_secs(1),
        ..config()
    });
    let silent = TcpStream::connect(deferring.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(status(&deferring, "/ws", "").await.contains("101"));
    let lived = dropped_after(silent).await;
    assert!(lived >= Duration::from_millis(1200), "{lived:?}");
    assert_eq!(deferring.server().stats().handshakes_over_capacity, 0);

    let eager = Broker::start_with(Config {
        max_handshakes_in_progress: 1,
        handshake_timeout: Duration::from_millis(500),
        tcp_defer_accept: Duration::ZERO,
        ..config()
    });
    let silent = TcpStream::connect(eager.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(status(&eager, "/ws", "").await.contains("503"));
    let lived = dropped_after(silent).await;
    assert!(lived < Duration::from_millis(1000), "{lived:?}");
    assert_eq!(eager.server().stats().handshakes_over_capacity, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_over_its_rate_gets_errors_then_a_1008_and_others_are_unaffected() {
    let broker = Broker::start_with(Config {
        publish_rate: 20,
        publish_burst: 20,
        rate_limit_close_after: 50,
        ..config()
    });
    let mut watcher = Peer::connect(broker.addr, Codec::MsgPack).await;
    assert!(matches!(
        watcher.request(ClientOp::subscribe(room("flood"))).await,
        Outcome::Ack(_)
    ));
    let mut flooder = RawWs::connect(broker.addr, &offer(Codec::MsgPack)).await;
    let publish = Codec::MsgPack.encode_request(&roomcast::protocol::ClientRequest {
        id: roomcast::protocol::RequestId(0),
        op: ClientOp::publish(room("flood"), Bytes::from_static(b"x")),
    });
    for _ in 0..200 {
        flooder.send_binary(&publish).await;
    }
    let mut limited = 0;
    let close = loop {
        let Some(frame) = flooder.read_frame().await else {
            break None;
        };
        if frame.opcode == 0x8 {
            break frame.close_code();
        }
        let event = Codec::MsgPack
            .decode_server(&Bytes::from(frame.payload))
            .unwrap();
        if let ServerEvent::Reply(reply) = event {
            assert_eq!(
                error_code(&reply.outcome),
                Some(ErrorCode::RateLimited.code())
            );
            limited += 1;
        }
    };
    assert_eq!(close, Some(1008));
    // Error replies still queued at the close may be dropped with it; the
    // counter has them all.
    let counted = broker.server().stats().rate_limited_publishes;
    assert!(
        counted >= 50,
        "{counted} rate-limited publishes before the close"
    );
    assert!(limited <= counted);
    // The watcher got the publishes within the rate, in order, and is fine.
    let mut received = 0;
    while received < 20 {
        match watcher.event().await {
            Some(ServerEvent::Message { offset, .. }) => {
                received += 1;
                assert_eq!(offset.0, received);
            }
            other => panic!("{other:?}"),
        }
    }
    let o = watcher
        .request(ClientOp::publish(
            room("flood"),
            Bytes::from_static(b"still fine"),
        ))
        .await;
    assert!(matches!(o, Outcome::Ack(_)));
    assert_eq!(broker.server().stats().rate_limit_closes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_serves_a_real_tls_client_and_plain_clients_get_nowhere() {
    let dir = std::env::temp_dir().join(format!("roomcast-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = common::tls::self_signed(&dir);
    let broker = Broker::start_with(Config {
        tls_cert: cert.clone(),
        tls_key: key,
        ..config()
    });
    // Python's ssl module (OpenSSL), verifying our certificate, speaks the
    // protocol over wss:// with the websockets library.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/tls_client.py");
    let output = run_with_deadline(
        Command::new("python3")
            .arg(script)
            .arg(format!("wss://localhost:{}/ws", broker.addr.port()))
            .arg(&cert),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        output.status.success(),
        "tls_client.py failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // A plain-text handshake on the TLS port is not answered as HTTP.
    let answer = http_request(broker.addr, handshake("/ws", "").as_bytes()).await;
    assert!(!answer.starts_with("HTTP/1.1 101"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_carries_its_token_and_refreshes_it() {
    use roomcast::client::{Client, ClientError, ClientOptions};
    let broker = Broker::start_with(secured());
    let refused = Client::connect(broker.addr, Codec::MsgPack).await;
    assert!(
        matches!(refused, Err(ClientError::Handshake(_))),
        "no token, no connection"
    );
    let options = ClientOptions {
        token: Some(token_for("ann", json!({"sub": ["*"], "pub": ["*"]}))),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(broker.addr, Codec::Proto, options)
        .await
        .unwrap();
    client.subscribe("ticks.btc").await.unwrap();
    client
        .refresh(&token_for("ann", json!({"sub": ["*"]})))
        .await
        .unwrap();
    let other = client.refresh(&token_for("eve", json!({}))).await;
    assert!(
        matches!(other, Err(ClientError::Server { code: 108, .. })),
        "{other:?}"
    );
    // The refreshed token has no publish grant.
    let denied = client.publish("ticks.btc", b"x".to_vec()).await;
    assert!(
        matches!(denied, Err(ClientError::Server { code: 107, .. })),
        "{denied:?}"
    );
}

// ---------------------------------------------------------------- refusal reasons

/// Where a handshake carries its token (docs/SECURITY.md §5).
#[derive(Debug, Clone, Copy)]
enum Place {
    Header,
    Query,
    Subprotocol,
}

impl Place {
    const ALL: [Place; 3] = [Place::Header, Place::Query, Place::Subprotocol];

    /// The whole answer (head and body) to a handshake carrying `token` here.
    async fn answer(self, broker: &Broker, token: &str) -> String {
        let request = match self {
            Place::Header => handshake("/ws", &bearer(token)),
            Place::Query => handshake(&format!("/ws?token={token}"), ""),
            Place::Subprotocol => handshake(
                "/ws",
                &format!("Sec-WebSocket-Protocol: roomcast.v1.msgpack, roomcast.jwt.{token}\r\n"),
            ),
        };
        http_request(broker.addr, request.as_bytes()).await
    }
}

/// The reason a 401 gives (its body), or `None` for any other answer.
fn refusal(answer: &str) -> Option<&str> {
    if !answer.starts_with("HTTP/1.1 401") {
        return None;
    }
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.to_ascii_lowercase()
        .contains("www-authenticate: bearer")
        .then_some(body.trim_end())
}

/// The reasons docs/SECURITY.md lists for a refused token: the first column
/// of its `| reason | when |` table, without the backticks.
fn documented_refusals() -> Vec<String> {
    let doc = include_str!("../docs/SECURITY.md");
    let mut lines = doc
        .lines()
        .skip_while(|line| !line.starts_with("| reason | when |"));
    assert!(
        lines.next().is_some(),
        "docs/SECURITY.md has no `| reason | when |` table"
    );
    lines
        .skip(1) // |---|---|
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cell = line.split('|').nth(1).unwrap_or_default().trim();
            cell.trim_matches('`').to_owned()
        })
        .collect()
}

/// A token carrying `base` with `set` merged in and the `remove` keys left out.
fn changed(base: &Value, set: Value, remove: &[&str]) -> String {
    let mut claims = base.clone();
    let object = claims.as_object_mut().unwrap();
    for key in remove {
        object.remove(*key);
    }
    if let Value::Object(set) = set {
        object.extend(set);
    }
    token(claims)
}

/// A token says who its holder is with `sub`, and the empty user id is
/// anonymous connections' (SECURITY.md §4): a token must name a user, in
/// whichever of the three places it travels. The claims that say what the
/// user may do (`role`, `rooms`) are refused, with their name, when they
/// have the wrong type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_names_no_user_is_refused_wherever_it_is_carried() {
    let broker = Broker::start_with(secured());
    let claims = json!({"sub": "ann", "exp": now() + 60, "rooms": {"sub": ["*"], "pub": ["*"]}});
    let blank = "token sub is empty or only whitespace";
    let lacks_sub = "token lacks a required claim (sub)";
    let cases = [
        ("an empty sub", json!({"sub": ""}), blank),
        ("a sub of spaces", json!({"sub": "   "}), blank),
        (
            "a sub of a tab and a no-break space",
            json!({"sub": "\t\u{a0}"}),
            blank,
        ),
        ("a numeric sub", json!({"sub": 42}), lacks_sub),
        ("a null sub", json!({"sub": null}), lacks_sub),
        // jsonwebtoken cannot read a payload with a list where `sub` goes.
        (
            "a list for a sub",
            json!({"sub": ["ann"]}),
            "token signature, algorithm or format is invalid",
        ),
        (
            "rooms as a string",
            json!({"rooms": "*"}),
            "token claim rooms is malformed",
        ),
        (
            "a pattern list as a string",
            json!({"rooms": {"pub": "*"}}),
            "token claim rooms is malformed",
        ),
        (
            "a pattern that is a number",
            json!({"rooms": {"sub": [7]}}),
            "token claim rooms is malformed",
        ),
        (
            "a numeric role",
            json!({"role": 7}),
            "token claim role is malformed",
        ),
        (
            "a list of roles holding a number",
            json!({"role": ["admin", 7]}),
            "token claim role is malformed",
        ),
    ];
    let mut refused = 0;
    for (case, set, reason) in cases {
        let token = changed(&claims, set, &[]);
        for place in Place::ALL {
            let answer = place.answer(&broker, &token).await;
            assert_eq!(
                refusal(&answer),
                Some(reason),
                "{case}, in {place:?}: {answer}"
            );
            refused += 1;
        }
    }
    let good = changed(&claims, json!({}), &[]);
    for place in Place::ALL {
        let answer = place.answer(&broker, &good).await;
        assert!(answer.starts_with("HTTP/1.1 101"), "{place:?}: {answer}");
    }
    assert_eq!(broker.server().stats().auth_failures, refused);
}

/// `refresh` compares users: a token that names no user must never make a
/// guest into a token holder, nor a token holder into a guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_never_confuses_a_token_holder_with_an_anonymous_connection() {
    let broker = Broker::start_with(Config {
        allow_anonymous: true,
        anonymous_rooms: List(vec!["public.*".into()]),
        ..secured()
    });
    let everything = json!({"sub": ["*"], "pub": ["*"], "presence": ["*"]});
    let nobody = token(json!({"sub": "", "exp": now() + 60, "rooms": everything}));
    let refused = |o: &Outcome| match o {
        Outcome::Error { code, message } => {
            *code == ErrorCode::InvalidToken.code()
                && message == "refresh refused: token sub is empty or only whitespace"
        }
        _ => false,
    };
    let publish = || ClientOp::publish(room("public.news"), Bytes::from_static(b"x"));

    let mut guest = Peer::connect(broker.addr, Codec::MsgPack).await;
    let o = guest
        .request(ClientOp::Refresh {
            token: nobody.clone(),
        })
        .await;
    assert!(refused(&o), "a guest took a token with an empty sub: {o:?}");
    assert_eq!(
        error_code(&guest.request(publish()).await),
        Some(ErrorCode::PermissionDenied.code()),
        "the guest is still a guest: it never publishes"
    );

    let mut ann = peer_with(
        &broker,
        Codec::Proto,
        &bearer(&token_for("ann", everything)),
    )
    .await;
    let o = ann.request(ClientOp::Refresh { token: nobody }).await;
    assert!(refused(&o), "a user took a token with an empty sub: {o:?}");
    assert!(matches!(ann.request(publish()).await, Outcome::Ack(_)));
}

/// docs/SECURITY.md §4 lists every reason a refused token is given. That
/// list, the broker's own list and what the broker answers on the wire are
/// one and the same: each documented reason is provoked here, over a real
/// socket, and must come back word for word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_refusal_reason_is_the_one_the_broker_gives() {
    const ISSUER: &str = "https://auth.example.com";
    const AUDIENCE: &str = "roomcast";
    let broker = Broker::start_with(Config {
        jwt_issuer: ISSUER.into(),
        jwt_audience: AUDIENCE.into(),
        ..secured()
    });
    let base = json!({"sub": "ann", "exp": now() + 60, "iss": ISSUER, "aud": AUDIENCE});

    /// How a case provokes its refusal.
    enum Provoke {
        /// A handshake without a token.
        NoToken,
        /// A handshake with this bearer token.
        Handshake(String),
        /// A `refresh` with this token, on ann's connection.
        Refresh(String),
    }
    use Provoke::{Handshake, NoToken, Refresh};
    let cases = [
        ("a token is required", NoToken),
        (
            "token signature, algorithm or format is invalid",
            Handshake(sign(Algorithm::HS256, &base, "another secret")),
        ),
        (
            "token expired",
            Handshake(changed(&base, json!({"exp": now() - 60}), &[])),
        ),
        (
            "token not valid yet",
            Handshake(changed(&base, json!({"nbf": now() + 300}), &[])),
        ),
        (
            "token issuer or audience is not accepted",
            Handshake(changed(
                &base,
                json!({"iss": "https://elsewhere.example.com"}),
                &[],
            )),
        ),
        (
            "token lacks a required claim (exp)",
            Handshake(changed(&base, json!({}), &["exp"])),
        ),
        (
            "token lacks a required claim (sub)",
            Handshake(changed(&base, json!({}), &["sub"])),
        ),
        (
            "token lacks a required claim (iss)",
            Handshake(changed(&base, json!({}), &["iss"])),
        ),
        (
            "token lacks a required claim (aud)",
            Handshake(changed(&base, json!({}), &["aud"])),
        ),
        (
            "token sub is empty or only whitespace",
            Handshake(changed(&base, json!({"sub": " "}), &[])),
        ),
        (
            "token claim nbf is malformed",
            Handshake(changed(&base, json!({"nbf": "tomorrow"}), &[])),
        ),
        (
            "token claim role is malformed",
            Handshake(changed(&base, json!({"role": {"admin": true}}), &[])),
        ),
        (
            "token claim rooms is malformed",
            Handshake(changed(&base, json!({"rooms": ["*"]}), &[])),
        ),
        (
            "token is for another user",
            Refresh(changed(&base, json!({"sub": "eve"}), &[])),
        ),
    ];

    let mut documented = documented_refusals();
    let mut given = roomcast::hooks::token_refusal_reasons();
    let mut provoked: Vec<String> = cases.iter().map(|(reason, _)| reason.to_string()).collect();
    documented.sort();
    given.sort();
    provoked.sort();
    assert_eq!(
        documented, given,
        "docs/SECURITY.md §4 against the broker's reasons"
    );
    assert_eq!(
        documented, provoked,
        "docs/SECURITY.md §4 against this test's cases"
    );

    let mut ann = peer_with(&broker, Codec::MsgPack, &bearer(&token(base.clone()))).await;
    for (reason, provoke) in cases {
        let answer = match provoke {
            NoToken => refusal(&http_request(broker.addr, handshake("/ws", "").as_bytes()).await)
                .map(str::to_owned),
            Handshake(token) => {
                let answer = Place::Header.answer(&broker, &token).await;
                refusal(&answer).map(str::to_owned)
            }
            Refresh(token) => match ann.request(ClientOp::Refresh { token }).await {
                Outcome::Error { code: 108, message } => {
                    message.strip_prefix("refresh refused: ").map(str::to_owned)
                }
                _ => None,
            },
        };
        assert_eq!(answer.as_deref(), Some(reason));
    }
}

/// docs/SECURITY.md §5: an `Authorization` header of another scheme (a
/// proxy's or a staging gate's `Basic` credentials, which a browser repeats
/// by itself) is not where our token goes, so it hides neither the query
/// nor the subprotocol entry. A `Bearer` header is the first place, though:
/// whatever it holds is the token, and the other places are not looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_basic_credentials_do_not_hide_the_token_elsewhere() {
    let broker = Broker::start_with(secured());
    let good = token_for("ann", json!({"sub": ["*"]}));
    let forged = sign(
        Algorithm::HS256,
        &json!({"sub": "ann", "exp": now() + 60}),
        "another secret",
    );
    let basic = "Authorization: Basic YWxpY2U6b3BlbnNlc2FtZQ==\r\n";
    let entry = |token: &str| {
        format!("Sec-WebSocket-Protocol: roomcast.v1.msgpack, roomcast.jwt.{token}\r\n")
    };
    let answer = |path: String, extra: String| {
        let request = handshake(&path, &extra);
        async move { http_request(broker.addr, request.as_bytes()).await }
    };

    let in_query = answer(format!("/ws?token={good}"), basic.into()).await;
    assert!(in_query.starts_with("HTTP/1.1 101"), "{in_query}");
    let in_entry = answer("/ws".into(), format!("{basic}{}", entry(&good))).await;
    assert!(in_entry.starts_with("HTTP/1.1 101"), "{in_entry}");
    // What is found behind the Basic header is checked in full.
    let forged_in_query = answer(format!("/ws?token={forged}"), basic.into()).await;
    assert_eq!(
        refusal(&forged_in_query),
        Some("token signature, algorithm or format is invalid")
    );
    let basic_alone = answer("/ws".into(), basic.into()).await;
    assert_eq!(refusal(&basic_alone), Some("a token is required"));

    // A Bearer header, whatever it holds, is the token: a good one in the
    // query does not rescue a bad one there, nor an empty one.
    for bearer_header in [
        bearer(&forged),
        "Authorization: Bearer\r\n".to_owned(),
        format!("authorization: bEaReR {forged}\r\n"),
    ] {
        let shadowed = answer(format!("/ws?token={good}"), bearer_header.clone()).await;
        assert_eq!(
            refusal(&shadowed),
            Some("token signature, algorithm or format is invalid"),
            "{bearer_header:?}: {shadowed}"
        );
    }
    let scheme_in_any_case =
        answer("/ws".into(), format!("authorization: BEARER {good}\r\n")).await;
    assert!(
        scheme_in_any_case.starts_with("HTTP/1.1 101"),
        "{scheme_in_any_case}"
    );
}
