//! Graceful shutdown: stop accepting, deliver what was queued, close every
//! connection with 1012 spread over the drain period, exit 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{config, Broker};
use roomcast::client::{Client, ClientOptions};
use roomcast::protocol::Codec;

/// Clients that stop at the first close, so the test sees it end.
fn no_reconnect() -> ClientOptions {
    ClientOptions {
        max_reconnect_attempts: Some(0),
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_every_queued_message_then_1012_spread_over_the_drain_period() {
    let broker = Broker::start_with(roomcast::Config {
        drain_period: Duration::from_millis(600),
        ..config()
    });
    let addr = broker.addr;
    let mut subscribers = Vec::new();
    for i in 0..6 {
        let client = Client::connect_with(addr, Codec::ALL[i % 2], no_reconnect())
            .await
            .unwrap();
        let start = client.subscribe("shutdown-room").await.unwrap().offset;
        subscribers.push((client, start));
    }
    let publisher = broker.client(Codec::MsgPack).await;
    for i in 0..500u32 {
        publisher
            .publish_nowait("shutdown-room", i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    let last = publisher
        .publish("shutdown-room", b"last".to_vec())
        .await
        .unwrap()
        .offset;
    // Let the deliveries reach every core before the drain starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(broker.shutdown());
    let mut closed_at = Vec::new();
    for (mut client, start) in subscribers {
        let mut expected = start.next();
        while let Some(message) = client.recv().await {
            assert_eq!(message.offset, expected);
            expected = expected.next();
        }
        assert_eq!(
            expected,
            last.next(),
            "every queued message arrived before the close"
        );
        assert_eq!(
            client.close_reason(),
            Some((1012, "service restart".to_owned()))
        );
        closed_at.push(started.elapsed());
    }
    stopping.await.unwrap();
    closed_at.sort();
    let spread = closed_at[closed_at.len() - 1] - closed_at[0];
    assert!(
        spread >= Duration::from_millis(150),
        "closes are spread, not simultaneous: {closed_at:?}"
    );
    assert!(
        Client::connect(addr, Codec::MsgPack).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_0_on_sigterm_after_closing_its_clients_with_1012() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--drain-period",
            "100ms",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    let url = line.split("ws://").nth(1).expect("prints where it listens");
    let addr = url.split('/').next().unwrap().parse().unwrap();
    // Whatever happens below, do not leave the broker running.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
    let _guard = KillOnDrop(child.id());
    let mut client = Client::connect_with(addr, Codec::Proto, no_reconnect())
        .await
        .unwrap();
    client.subscribe("bye").await.unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(tokio::time::timeout(Duration::from_secs(10), client.recv())
        .await
        .unwrap()
        .is_none());
    assert_eq!(client.close_reason().map(|(code, _)| code), Some(1012));
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
