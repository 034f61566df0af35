//! Slow consumers: a subscriber that stops reading is handled by the
//! configured policy, while a fast subscriber of the same room still
//! receives everything.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::broker::{config, next, Broker};
use common::ws::RawWs;
use roomcast::client::{Client, ClientOptions};
use roomcast::config::SlowConsumerPolicy;
use roomcast::protocol::{
    ClientOp, ClientRequest, Codec, Offset, RequestId, RoomName, ServerEvent,
};

const MESSAGES: u64 = 20_000;

/// A raw subscriber that will stop reading after its subscribe reply.
async fn stalled_subscriber(broker: &Broker, room: &str) -> (RawWs, Offset) {
    let mut ws = RawWs::connect_small_buffer(broker.addr).await;
    let request = ClientRequest {
        id: RequestId(1),
        op: ClientOp::subscribe(RoomName::new(room).unwrap()),
    };
    ws.send_binary(&Codec::MsgPack.encode_request(&request))
        .await;
    let reply = ws.read_binary().await.expect("subscribe reply");
    let ServerEvent::Reply(reply) = Codec::MsgPack.decode_server(&Bytes::from(reply)).unwrap()
    else {
        panic!("expected the subscribe reply first")
    };
    let roomcast::protocol::Outcome::Ack(ack) = reply.outcome else {
        panic!("subscribe refused: {reply:?}")
    };
    (ws, ack.offset)
}

/// Publishes MESSAGES 1 KiB messages in bursts of BURST, the fast subscriber
/// reading each burst before the next (a subscriber that keeps up), and
/// checks it got every one.
async fn publish_and_check_fast(
    broker: &Broker,
    room: &str,
    fast: &mut Client,
    fast_start: Offset,
) -> Offset {
    const BURST: u64 = 16;
    let publisher = broker.client(Codec::MsgPack).await;
    let payload = vec![0xab; 1024];
    let mut expected = fast_start.next();
    for _ in 0..MESSAGES / BURST {
        for _ in 0..BURST {
            publisher
                .publish_nowait(room, payload.clone())
                .await
                .unwrap();
        }
        for _ in 0..BURST {
            let message = next(fast).await;
            assert_eq!(
                message.offset, expected,
                "the fast subscriber misses nothing"
            );
            expected = expected.next();
        }
    }
    Offset(expected.0 - 1)
}

async fn fast_subscriber(broker: &Broker, room: &str) -> (Client, Offset) {
    let options = ClientOptions {
        message_buffer: MESSAGES as usize + 16,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(broker.addr, Codec::Proto, options)
        .await
        .unwrap();
    let start = client.subscribe(room).await.unwrap().offset;
    (client, start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_close_a_stalled_subscriber_is_closed_with_1013_and_the_fast_one_gets_everything() {
    let broker = Broker::start_with(roomcast::Config {
        outbound_max_bytes: 64 * 1024,
        slow_consumer: SlowConsumerPolicy::Close,
        // Long enough for this test to come back and read the close frame.
        close_timeout: Duration::from_secs(30),
        ..config()
    });
    let (mut slow, _) = stalled_subscriber(&broker, "telemetry").await;
    let (mut fast, start) = fast_subscriber(&broker, "telemetry").await;
    publish_and_check_fast(&broker, "telemetry", &mut fast, start).await;
    assert_eq!(broker.server().stats().slow_consumer_closes, 1);
    // Now the stalled client reads: what was in flight, then the close.
    assert_eq!(slow.expect_close().await, Some(1013));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_drop_oldest_a_stalled_subscriber_sees_a_gap_equal_to_what_was_dropped() {
    let broker = Broker::start_with(roomcast::Config {
        outbound_max_messages: 32,
        slow_consumer: SlowConsumerPolicy::DropOldest,
        ..config()
    });
    let (mut slow, slow_start) = stalled_subscriber(&broker, "telemetry").await;
    let (mut fast, start) = fast_subscriber(&broker, "telemetry").await;
    let last = publish_and_check_fast(&broker, "telemetry", &mut fast, start).await;
    // The stalled client reads everything it was left: increasing offsets,
    // never a duplicate, ending with the last publication, still connected.
    let mut received = 0u64;
    let mut previous = slow_start;
    let mut gaps = 0;
    loop {
        let payload = slow.read_binary().await.expect("still connected");
        let ServerEvent::Message { offset, .. } =
            Codec::MsgPack.decode_server(&Bytes::from(payload)).unwrap()
        else {
            panic!("only messages expected")
        };
        assert!(offset > previous, "offsets only increase");
        if offset != previous.next() {
            gaps += 1;
        }
        previous = offset;
        received += 1;
        if offset == last {
            break;
        }
    }
    assert!(gaps > 0, "a stalled subscriber must have lost something");
    let missing = (last.0 - slow_start.0) - received;
    assert_eq!(
        broker.server().stats().slow_consumer_dropped,
        missing,
        "every drop is counted"
    );
    assert_eq!(broker.server().stats().slow_consumer_closes, 0);
}
