//! Rooms as a user sees them: subscribe, publish, receive in order, unsubscribe.

mod common;

use common::broker::{next, rooms_on_both_cores, Broker};
use roomcast::protocol::Codec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_what_is_published_to_its_room_in_both_codecs() {
    let broker = Broker::start();
    let (room_a, room_b) = rooms_on_both_cores("lobby-");
    for codec in Codec::ALL {
        for room in [&room_a, &room_b] {
            let mut alice = broker.client(codec).await;
            let bob = broker.client(Codec::MsgPack).await;
            let start = alice.subscribe(room).await.unwrap().offset;
            let offset = bob.publish(room, b"hello".to_vec()).await.unwrap().offset;
            assert_eq!(offset, start.next());
            let message = next(&mut alice).await;
            assert_eq!(message.room, *room);
            assert_eq!(message.offset, offset);
            assert_eq!(&message.data[..], b"hello");
        }
    }
}
