//! What an operator's Prometheus and orchestrator see on the admin
//! listener: `GET /metrics` counting real traffic (deliveries, lag, error
//! replies by code, handshakes by outcome) and passing `promtool check
//! metrics`; `/health` and `/ready` answering while the node drains, at its
//! connection budget, and while its engine (a test engine switched off, or
//! a real Redis killed) is unavailable. Real sockets throughout.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::broker::{config, rooms_on_both_cores, Broker};
use common::jwt::{now, sign};
use common::peer::{room, Peer};
use common::redis::Redis;
use common::ws::{bearer, handshake, http_request};
use jsonwebtoken::Algorithm;
use roomcast::config::List;
use roomcast::protocol::{ClientOp, Codec, Outcome, ServerEvent};
use roomcast::Config;
use serde_json::{json, Value};

const SECRET: &str = "test-secret-with-enough-entropy";

/// One answer of the admin listener.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

async fn get(admin: SocketAddr, path: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let response = http_request(admin, request.as_bytes()).await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no complete answer: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status: {head}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The exposition text of `GET /metrics`.
async fn scrape(admin: SocketAddr) -> String {
    let answer = get(admin, "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    answer.body
}

/// The value of the one sample of `series` (its name and labels, exactly
/// as exposed) in a scrape.
fn sample(text: &str, series: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
        .collect();
    assert_eq!(values.len(), 1, "one sample of {series} in:\n{text}");
    values[0]
}

/// `/ready`'s status and JSON body.
async fn ready(admin: SocketAddr) -> (u16, Value) {
    let answer = get(admin, "/ready").await;
    let body = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("/ready is JSON ({e}): {}", answer.body));
    (answer.status, body)
}

/// Asks `/ready` until it answers `status` (the node changes its mind on
/// its own schedule: a session ending, the engine's next check); fails
/// the test after 30 s with the last answer.
async fn ready_becomes(admin: SocketAddr, status: u16) -> Value {
    let mut last = (0, Value::Null);
    for _ in 0..300 {
        last = ready(admin).await;
        if last.0 == status {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/ready never answered {status}; last {last:?}")
}

fn reasons(body: &Value) -> Vec<&str> {
    body["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("reasons in {body}"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

fn publish(name: &str, data: &str) -> ClientOp {
    ClientOp::publish(room(name), Bytes::copy_from_slice(data.as_bytes()))
}

fn error_code(outcome: &Outcome) -> Option<u32> {
    match outcome {
        Outcome::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// A subscriber of `name`, live (acknowledged) when returned.
async fn subscriber(broker: &Broker, name: &str) -> Peer {
    let mut peer = Peer::connect(broker.addr, Codec::MsgPack).await;
    let outcome = peer.request(ClientOp::subscribe(room(name))).await;
    assert!(matches!(outcome, Outcome::Ack(_)), "{outcome:?}");
    peer
}

/// Reads `count` publications of `name`.
async fn receive(peer: &mut Peer, name: &str, count: usize) {
    for _ in 0..count {
        match peer.event().await {
            Some(ServerEvent::Message { room, .. }) => assert_eq!(room, name),
            other => panic!("expected a publication of {name}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_is_counted_once_per_subscriber_and_the_lag_histogram_grows() {
    let broker = Broker::start();
    let (name, _) = rooms_on_both_cores("metrics.fanout.");
    let (publications, subscribers) = (7, 3);
    let mut peers = Vec::new();
    for _ in 0..subscribers {
        peers.push(subscriber(&broker, &name).await);
    }
    let before = scrape(broker.admin()).await;
    let lag_count = "roomcast_publish_delivery_lag_seconds_count";
    assert_eq!(sample(&before, lag_count), 0.0, "nothing published yet");
    assert_eq!(sample(&before, "roomcast_connections"), subscribers as f64);

    let mut publisher = Peer::connect(broker.addr, Codec::Proto).await;
    for i in 0..publications {
        let outcome = publisher.request(publish(&name, &format!("m{i}"))).await;
        assert!(matches!(outcome, Outcome::Ack(_)), "{outcome:?}");
    }
    for peer in &mut peers {
        receive(peer, &name, publications).await;
    }

    let after = scrape(broker.admin()).await;
    assert_eq!(
        sample(&after, "roomcast_deliveries_total"),
        (publications * subscribers) as f64
    );
    assert_eq!(
        sample(&after, "roomcast_publishes_total"),
        publications as f64
    );
    // One observation per publication and core with subscribers: the
    // subscribers sit on one core or on both.
    let lags = sample(&after, lag_count);
    assert!(
        (publications as f64..=(2 * publications) as f64).contains(&lags),
        "{lags} lag observations for {publications} publications"
    );
    assert_eq!(
        sample(
            &after,
            "roomcast_publish_delivery_lag_seconds_bucket{le=\"+Inf\"}"
        ),
        lags
    );
    assert!(sample(&after, "roomcast_engine_latency_seconds_count") >= publications as f64);
    assert_eq!(
        sample(&after, "roomcast_connections"),
        (subscribers + 1) as f64
    );
    // Three subscribes and seven publishes came in; at least the three
    // subscribe acks went out long before this scrape.
    assert!(sample(&after, "roomcast_messages_received_total") >= 10.0);
    assert!(sample(&after, "roomcast_messages_sent_total") >= subscribers as f64);
    assert!(sample(&after, "roomcast_received_bytes_total") > 0.0);
    assert!(sample(&after, "roomcast_sent_bytes_total") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_are_counted_by_their_wire_code() {
    let broker = Broker::start_with(Config {
        jwt_secret: SECRET.into(),
        max_rooms_per_connection: 1,
        ..config()
    });
    let token = sign(
        Algorithm::HS256,
        &json!({"sub": "ann", "exp": now() + 60, "rooms": {"sub": ["ok.*"], "pub": ["ok.*"]}}),
        SECRET,
    );
    let mut ann = Peer::with_headers(broker.addr, Codec::MsgPack, &bearer(&token)).await;
    let denied = ann.request(ClientOp::subscribe(room("secret.plans"))).await;
    assert_eq!(error_code(&denied), Some(107), "{denied:?}");
    let first = ann.request(ClientOp::subscribe(room("ok.one"))).await;
    assert!(matches!(first, Outcome::Ack(_)), "{first:?}");
    let second = ann.request(ClientOp::subscribe(room("ok.two"))).await;
    assert_eq!(error_code(&second), Some(103), "{second:?}");
    let second_again = ann.request(ClientOp::subscribe(room("ok.three"))).await;
    assert_eq!(error_code(&second_again), Some(103), "{second_again:?}");

    let text = scrape(broker.admin()).await;
    let by_code = |code: u32| {
        sample(
            &text,
            &format!("roomcast_error_replies_total{{code=\"{code}\"}}"),
        )
    };
    assert_eq!(by_code(107), 1.0);
    assert_eq!(by_code(103), 2.0);
    for code in (100..=110).filter(|c| ![103, 107].contains(c)) {
        assert_eq!(by_code(code), 0.0, "code {code}");
    }
    assert_eq!(sample(&text, "roomcast_permission_denials_total"), 1.0);
    assert_eq!(broker.server().stats().error_replies, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_counted_by_outcome_and_the_refusals_add_up() {
    let broker = Broker::start_with(Config {
        jwt_secret: SECRET.into(),
        allowed_origins: List(vec!["https://app.example.com".into()]),
        ..config()
    });
    let addr = broker.addr;
    let status = |extra: String| async move {
        let answer = http_request(addr, handshake("/ws", &extra).as_bytes()).await;
        answer.lines().next().unwrap_or_default().to_owned()
    };
    let token = sign(
        Algorithm::HS256,
        &json!({"sub": "ann", "exp": now() + 60, "rooms": {"sub": ["*"]}}),
        SECRET,
    );
    assert!(status(String::new()).await.contains("401"), "no token");
    assert!(status(bearer("garbage")).await.contains("401"), "bad token");
    let evil = format!("Origin: https://evil.example.com\r\n{}", bearer(&token));
    assert!(status(evil).await.contains("403"));
    let unknown = "Sec-WebSocket-Protocol: mqtt\r\n".to_owned() + &bearer(&token);
    assert!(
        status(unknown).await.contains("400"),
        "no subprotocol we speak"
    );
    // Accepted, and live: its session has started when the ack comes.
    let mut ann = Peer::with_headers(broker.addr, Codec::MsgPack, &bearer(&token)).await;
    let ack = ann.request(ClientOp::subscribe(room("lobby"))).await;
    assert!(matches!(ack, Outcome::Ack(_)), "{ack:?}");

    let text = scrape(broker.admin()).await;
    let outcome = |name: &str| {
        sample(
            &text,
            &format!("roomcast_handshakes_total{{outcome=\"{name}\"}}"),
        )
    };
    assert_eq!(outcome("accepted"), 1.0);
    assert_eq!(outcome("unauthorized"), 2.0);
    assert_eq!(outcome("origin_forbidden"), 1.0);
    assert_eq!(outcome("bad_request"), 1.0);
    let refusals = [
        "unauthorized",
        "origin_forbidden",
        "ip_limited",
        "over_capacity",
        "connection_limit",
        "shutting_down",
        "bad_request",
    ];
    let refused: f64 = refusals.iter().map(|name| outcome(name)).sum();
    assert_eq!(
        refused,
        broker.server().stats().handshakes_rejected as f64,
        "every refusal has its outcome"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_draining_while_the_node_drains_and_health_stays_200() {
    // One core: the admin listener lives on core 0, which runs as long as
    // it has connections to close, so these keep it up through the drain.
    let broker = Broker::start_with(Config {
        workers: 1,
        drain_period: Duration::from_secs(60),
        ..config()
    });
    let admin = broker.admin();
    let (status, body) = ready(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(subscriber(&broker, "drain.watch").await);
    }

    broker.server().shutdown();
    let (status, body) = ready(admin).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(reasons(&body), vec!["draining"]);
    let health = get(admin, "/health").await;
    assert_eq!(health.status, 200, "alive while draining: {}", health.body);
    assert_eq!(sample(&scrape(admin).await, "roomcast_draining"), 1.0);

    for peer in peers {
        peer.cut();
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_connection_limit_while_the_budget_is_spent() {
    let broker = Broker::start_with(Config {
        max_connections: 2,
        ..config()
    });
    let admin = broker.admin();
    let first = subscriber(&broker, "budget").await;
    let (status, body) = ready(admin).await;
    assert_eq!(status, 200, "one of two: {body}");
    let _second = subscriber(&broker, "budget").await;

    let (status, body) = ready(admin).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(reasons(&body), vec!["connection_limit"]);
    assert_eq!(
        (
            body["connections"].as_u64(),
            body["max_connections"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let third = http_request(broker.addr, handshake("/ws", "").as_bytes()).await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    let text = scrape(admin).await;
    assert_eq!(
        sample(
            &text,
            "roomcast_handshakes_total{outcome=\"connection_limit\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "roomcast_connection_limit"), 2.0);

    first.cut();
    let body = ready_becomes(admin, 200).await;
    assert_eq!(body["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_engine_unavailable_while_the_engine_fails_and_recovers_after() {
    let unavailable = Arc::new(AtomicBool::new(false));
    let slow = roomcast::hooks::SlowEngine {
        max_delay: Duration::from_millis(2),
        seed: 12,
        unavailable: unavailable.clone(),
        ..Default::default()
    };
    let broker = Broker::start_slow(config(), slow);
    let admin = broker.admin();
    let mut ann = Peer::connect(broker.addr, Codec::MsgPack).await;
    let ack = ann.request(publish("engine.watch", "fine")).await;
    assert!(matches!(ack, Outcome::Ack(_)), "{ack:?}");
    let (status, body) = ready(admin).await;
    assert_eq!(status, 200, "{body}");

    unavailable.store(true, Ordering::Release);
    let refused = ann.request(publish("engine.watch", "lost")).await;
    assert_eq!(error_code(&refused), Some(110), "{refused:?}");
    // The failure itself marks the engine: no need to wait for a check.
    let (status, body) = ready(admin).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(reasons(&body), vec!["engine_unavailable"]);
    let text = scrape(admin).await;
    // The room's home core saw the failure; the other may be down too
    // by now (the switch is the whole node's, and each core's check sees it).
    let home = roomcast::hooks::home_core("engine.watch", 2);
    let up = format!("roomcast_engine_up{{core=\"{home}\",engine=\"memory\"}}");
    assert_eq!(sample(&text, &up), 0.0, "{text}");
    assert_eq!(
        sample(&text, "roomcast_error_replies_total{code=\"110\"}"),
        1.0
    );
    assert!(sample(&text, "roomcast_engine_failures_total") >= 1.0);
    // Answered late by the slow engine, and measured from their start.
    assert!(sample(&text, "roomcast_engine_latency_seconds_count") >= 2.0);

    unavailable.store(false, Ordering::Release);
    ready_becomes(admin, 200).await;
    let ack = ann.request(publish("engine.watch", "back")).await;
    assert!(matches!(ack, Outcome::Ack(_)), "{ack:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_a_real_redis_going_away_and_coming_back() {
    let mut redis = Redis::start();
    let broker = Broker::start_with(Config {
        redis_url: redis.url(),
        redis_command_timeout: Duration::from_millis(500),
        ..config()
    });
    let admin = broker.admin();
    let (status, body) = ready(admin).await;
    assert_eq!(status, 200, "{body}");
    let text = scrape(admin).await;
    assert_eq!(
        sample(&text, "roomcast_engine_up{core=\"0\",engine=\"redis\"}"),
        1.0
    );

    redis.crash();
    let body = ready_becomes(admin, 503).await;
    assert_eq!(reasons(&body), vec!["engine_unavailable"]);
    let text = scrape(admin).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("roomcast_engine_up{") && l.ends_with(" 0")),
        "{text}"
    );

    redis.revive();
    ready_becomes(admin, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_real_traffic_passes_promtool() {
    let broker = Broker::start();
    let (east, west) = rooms_on_both_cores("metrics.lint.");
    let mut peers = Vec::new();
    for name in [&east, &west] {
        for _ in 0..2 {
            peers.push((name.clone(), subscriber(&broker, name).await));
        }
    }
    let mut publisher = Peer::connect(broker.addr, Codec::MsgPack).await;
    for i in 0..5 {
        for name in [&east, &west] {
            let outcome = publisher.request(publish(name, &format!("m{i}"))).await;
            assert!(matches!(outcome, Outcome::Ack(_)), "{outcome:?}");
        }
    }
    for (name, peer) in &mut peers {
        receive(peer, name, 5).await;
    }
    let not_subscribed = publisher
        .request(ClientOp::Unsubscribe { room: room(&east) })
        .await;
    assert_eq!(error_code(&not_subscribed), Some(104), "{not_subscribed:?}");

    let answer = get(broker.admin(), "/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        answer.head
    );
    let text = answer.body;
    assert!(sample(&text, "roomcast_publish_delivery_lag_seconds_count") > 0.0);
    assert!(sample(&text, "roomcast_engine_latency_seconds_count") > 0.0);

    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!(
            "promtool cannot run ({error}): run scripts/test.sh, which installs it \
             (Debian package prometheus)"
        ),
    };
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().expect("promtool's stdin");
        stdin
            .write_all(text.as_bytes())
            .expect("the scrape reaches promtool");
    }
    let output = promtool.wait_with_output().expect("promtool finishes");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool complains: {said}");
}
