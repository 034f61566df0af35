//! Presence as a dashboard sees it: who is in a room, how many, and join and
//! leave events, including for connections that vanish without a goodbye.
//! Both codecs, real sockets.

mod common;

use std::time::Duration;

use common::broker::{config, Broker};
use common::peer::{room, Peer};
use common::ws::{offer, RawWs};
use roomcast::config::RoomRules;
use roomcast::protocol::{
    ClientInfo, ClientOp, Codec, ErrorCode, Outcome, PresenceChange, PresenceCounts, ServerEvent,
};
use roomcast::Config;

/// `chat.*` rooms track presence and offer join and leave events; `ticks.*`
/// track nothing. A short heartbeat, so a silent peer is dropped quickly.
fn presence_config() -> Config {
    Config {
        rooms: RoomRules::parse(r#"[{ match = "chat.*", presence = true, join_leave = true }]"#)
            .unwrap(),
        ping_interval: Duration::from_millis(200),
        pong_timeout: Duration::from_millis(300),
        ..config()
    }
}

fn subscribe(name: &str, join_leave: bool) -> ClientOp {
    ClientOp::Subscribe {
        room: room(name),
        recover: None,
        join_leave,
    }
}

async fn who(peer: &mut Peer, name: &str) -> Vec<ClientInfo> {
    match peer.request(ClientOp::Presence { room: room(name) }).await {
        Outcome::Presence(clients) => clients,
        other => panic!("expected a presence list, got {other:?}"),
    }
}

async fn counts(peer: &mut Peer, name: &str) -> PresenceCounts {
    match peer
        .request(ClientOp::PresenceStats { room: room(name) })
        .await
    {
        Outcome::PresenceStats(counts) => counts,
        other => panic!("expected presence counts, got {other:?}"),
    }
}

/// The next join or leave event in `name`.
async fn presence_event(peer: &mut Peer, name: &str) -> (PresenceChange, ClientInfo) {
    loop {
        match peer.event().await {
            Some(ServerEvent::Presence { change, room, info }) => {
                assert_eq!(room, name);
                return (change, info);
            }
            Some(ServerEvent::Message { .. }) => {}
            other => panic!("expected a presence event, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_who_joins_and_leaves_including_those_that_vanish() {
    let broker = Broker::start_with(presence_config());
    for codec in Codec::ALL {
        let name = &format!("chat.lobby-{codec:?}");
        let mut alice = Peer::connect(broker.addr, codec).await;
        assert!(matches!(
            alice.request(subscribe(name, true)).await,
            Outcome::Ack(_)
        ));
        let me = who(&mut alice, name).await;
        assert_eq!(me.len(), 1, "alice is alone: {me:?}");
        assert!(me[0].joined_at_ms > 0);
        // A subscriber that asks for events also hears of its own join.
        let (change, own) = presence_event(&mut alice, name).await;
        assert_eq!(
            (change, own.client.as_str()),
            (PresenceChange::Join, me[0].client.as_str())
        );

        // Bob joins: alice hears of it, and both are listed.
        let mut bob = Peer::connect(broker.addr, codec).await;
        assert!(matches!(
            bob.request(subscribe(name, false)).await,
            Outcome::Ack(_)
        ));
        let (change, bob_info) = presence_event(&mut alice, name).await;
        assert_eq!(change, PresenceChange::Join);
        assert_ne!(bob_info.client, me[0].client);
        // Listed by join time, then client id: two joins within the same
        // millisecond are ordered by id, not by who came first.
        let listed = who(&mut alice, name).await;
        let mut expected = vec![
            (me[0].joined_at_ms, me[0].client.clone()),
            (bob_info.joined_at_ms, bob_info.client.clone()),
        ];
        expected.sort();
        let both: Vec<(u64, String)> = listed
            .into_iter()
            .map(|c| (c.joined_at_ms, c.client))
            .collect();
        assert_eq!(both, expected);
        assert_eq!(
            counts(&mut alice, name).await,
            PresenceCounts {
                clients: 2,
                users: 0
            },
            "anonymous connections count as clients, not users"
        );

        // Bob's process dies: a reset, no close frame. He leaves at once.
        bob.cut();
        let (change, gone) = presence_event(&mut alice, name).await;
        assert_eq!(
            (change, gone.client.as_str()),
            (PresenceChange::Leave, bob_info.client.as_str())
        );
        assert_eq!(counts(&mut alice, name).await.clients, 1);

        // Carol's network goes quiet: she never answers a ping. The
        // heartbeat drops her within ping_interval + pong_timeout.
        let mut carol = RawWs::connect(broker.addr, &offer(codec)).await;
        let join = codec.encode_request(&roomcast::protocol::ClientRequest {
            id: roomcast::protocol::RequestId(1),
            op: subscribe(name, false),
        });
        carol.send_binary(&join).await;
        let (change, carol_info) = presence_event(&mut alice, name).await;
        assert_eq!(change, PresenceChange::Join);
        let started = std::time::Instant::now();
        let (change, gone) = presence_event(&mut alice, name).await;
        assert_eq!(
            (change, gone.client.as_str()),
            (PresenceChange::Leave, carol_info.client.as_str())
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a silent peer must be dropped by the heartbeat, not by TCP"
        );
        drop(carol);

        // Unsubscribing is leaving too.
        assert!(matches!(
            alice
                .request(ClientOp::Unsubscribe { room: room(name) })
                .await,
            Outcome::Ack(_)
        ));
        let mut observer = Peer::connect(broker.addr, codec).await;
        assert!(who(&mut observer, name).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_without_presence_say_so() {
    let broker = Broker::start_with(presence_config());
    for codec in Codec::ALL {
        let mut peer = Peer::connect(broker.addr, codec).await;
        let not_enabled = ErrorCode::NotEnabled.code();
        for op in [
            ClientOp::Presence {
                room: room("ticks.btc"),
            },
            ClientOp::PresenceStats {
                room: room("ticks.btc"),
            },
            subscribe("ticks.btc", true),
        ] {
            match peer.request(op.clone()).await {
                Outcome::Error { code, .. } => assert_eq!(code, not_enabled, "{op:?}"),
                other => panic!("{op:?}: expected error 106, got {other:?}"),
            }
        }
        // Without join_leave the same subscribe is fine.
        assert!(matches!(
            peer.request(subscribe("ticks.btc", false)).await,
            Outcome::Ack(_)
        ));
    }
}
