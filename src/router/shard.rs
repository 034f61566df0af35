//! A core's local subscribers, per room and codec, and the fan-out step.
//!
//! Touched only by its own core: no locks. No I/O and no clock: it pushes
//! shared frames into subscribers' bounded queues ([`Outbound`]) and reports
//! what happened; the driver does the rest.
//!
//! Per (room, codec) a core is in one of three states:
//! * absent: no local subscribers;
//! * pending: the first subscriber asked, the home has been told, and its
//!   acknowledgement (with the room's current offset) has not arrived; more
//!   subscribers wait with it; deliveries are ignored (they predate the
//!   acknowledgement, which the home sends after them);
//! * active: subscribers receive every delivery; `last` is the offset of the
//!   last one, which is what a new local subscriber is told.

use std::rc::Rc;
use std::time::Instant;

use foldhash::HashMap;
use tokio::sync::oneshot;

use crate::protocol::{frame, Codec, Offset, Reply, RequestId, RoomName};
use crate::transport::outbound::{LocalFrame, Outbound, Pushed};

use super::{ConnId, Frames};

/// A local subscriber: a connection and its outbound queue.
#[derive(Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub outbound: Rc<Outbound>,
}

struct Waiter {
    subscriber: Subscriber,
    request: RequestId,
    offset: oneshot::Sender<Offset>,
}

/// Queues the subscribe acknowledgement ahead of any delivery, so a client
/// always learns its starting offset before the first message after it.
fn acknowledge(
    subscriber: &Subscriber,
    codec: Codec,
    request: RequestId,
    offset: Offset,
    now: Instant,
) {
    if request.wants_reply() {
        let ack = frame::reply(codec, &Reply::ack(request, offset));
        subscriber.outbound.reply(ack, now);
    }
}

enum Slot {
    Pending(Vec<Waiter>),
    Active {
        last: Offset,
        subscribers: Vec<Subscriber>,
    },
}

#[derive(Default)]
struct LocalRoom {
    by_codec: [Option<Slot>; 2],
}

/// The next step of a subscribe.
pub enum SubscribeStep {
    /// Subscribed; the room's current offset.
    Ready(Offset),
    /// First local subscriber: tell the home (`Interest { on: true }`), then
    /// wait for the offset.
    AskHome(oneshot::Receiver<Offset>),
    /// The home has already been asked; wait for the offset.
    Wait(oneshot::Receiver<Offset>),
}

/// The result of one fan-out. (Slow-consumer outcomes are counted by the
/// queues themselves.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Frames queued to subscribers.
    pub delivered: u64,
}

/// A core's local subscribers.
#[derive(Default)]
pub struct Shard {
    rooms: HashMap<RoomName, LocalRoom>,
}

impl Shard {
    /// Adds a subscriber of `room` in `codec`. The acknowledgement of
    /// `request` (with the starting offset) is queued to the subscriber as it
    /// becomes active, before any delivery.
    pub fn subscribe(
        &mut self,
        room: &RoomName,
        codec: Codec,
        subscriber: Subscriber,
        request: RequestId,
        now: Instant,
    ) -> SubscribeStep {
        let slot = &mut self.rooms.entry(room.detached()).or_default().by_codec[codec.index()];
        match slot {
            Some(Slot::Active { last, subscribers }) => {
                acknowledge(&subscriber, codec, request, *last, now);
                subscribers.push(subscriber);
                SubscribeStep::Ready(*last)
            }
            Some(Slot::Pending(waiters)) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(Waiter {
                    subscriber,
                    request,
                    offset: tx,
                });
                SubscribeStep::Wait(rx)
            }
            None => {
                let (tx, rx) = oneshot::channel();
                *slot = Some(Slot::Pending(vec![Waiter {
                    subscriber,
                    request,
                    offset: tx,
                }]));
                SubscribeStep::AskHome(rx)
            }
        }
    }

    /// The home acknowledged this core's interest: waiting subscribers become
    /// active at `offset` and learn it.
    ///
    /// Returns true when every waiter left meanwhile, so the home must be
    /// told there is no interest after all.
    pub fn activate(
        &mut self,
        room: &RoomName,
        codec: Codec,
        offset: Offset,
        now: Instant,
    ) -> bool {
        let Some(local) = self.rooms.get_mut(room) else {
            return false;
        };
        let slot = &mut local.by_codec[codec.index()];
        if matches!(slot, Some(Slot::Pending(waiters)) if waiters.is_empty()) {
            *slot = None;
            if local.by_codec.iter().all(Option::is_none) {
                self.rooms.remove(room);
            }
            return true;
        }
        if let Some(Slot::Pending(waiters)) = slot.take() {
            let mut subscribers = Vec::with_capacity(waiters.len());
            for waiter in waiters {
                acknowledge(&waiter.subscriber, codec, waiter.request, offset, now);
                // A waiter whose session is gone just misses its answer.
                let _ = waiter.offset.send(offset);
                subscribers.push(waiter.subscriber);
            }
            *slot = Some(Slot::Active {
                last: offset,
                subscribers,
            });
        }
        false
    }

    /// Removes a subscriber. Returns true when it was the last one of this
    /// room and codec here, so the home must be told (`Interest { on: false }`).
    pub fn unsubscribe(&mut self, room: &RoomName, codec: Codec, conn: ConnId) -> bool {
        let Some(local) = self.rooms.get_mut(room) else {
            return false;
        };
        let slot = &mut local.by_codec[codec.index()];
        // A waiter that leaves is just forgotten: the acknowledgement still
        // comes, and `activate` then reports whether anyone is left.
        if let Some(Slot::Pending(waiters)) = slot {
            waiters.retain(|w| w.subscriber.conn != conn);
            return false;
        }
        let Some(Slot::Active { subscribers, .. }) = slot else {
            return false;
        };
        let Some(at) = subscribers.iter().position(|s| s.conn == conn) else {
            return false;
        };
        subscribers.remove(at);
        if !subscribers.is_empty() {
            return false;
        }
        *slot = None;
        if local.by_codec.iter().all(Option::is_none) {
            self.rooms.remove(room);
        }
        true
    }

    /// The offset a new subscriber of an active room is told.
    pub fn current(&self, room: &RoomName, codec: Codec) -> Option<Offset> {
        match self.rooms.get(room)?.by_codec[codec.index()].as_ref()? {
            Slot::Active { last, .. } => Some(*last),
            Slot::Pending(_) => None,
        }
    }

    /// Local subscribers of `room` in `codec` (active ones).
    pub fn subscriber_count(&self, room: &RoomName, codec: Codec) -> usize {
        match self
            .rooms
            .get(room)
            .and_then(|r| r.by_codec[codec.index()].as_ref())
        {
            Some(Slot::Active { subscribers, .. }) => subscribers.len(),
            _ => 0,
        }
    }

    /// Fans one sequenced publication out to the active local subscribers:
    /// each gets a reference to the shared frame of its codec.
    pub fn deliver(
        &mut self,
        room: &RoomName,
        offset: Offset,
        frames: &Frames,
        now: Instant,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        let Some(local) = self.rooms.get_mut(room) else {
            return fanout;
        };
        for (slot, frame) in local.by_codec.iter_mut().zip(frames) {
            if let (Some(Slot::Active { last, subscribers }), Some(frame)) = (slot, frame) {
                *last = offset;
                let local: LocalFrame = Rc::new(frame.clone());
                fan_out(subscribers, &local, now, &mut fanout);
            }
        }
        fanout
    }
}

fn fan_out(subscribers: &[Subscriber], frame: &LocalFrame, now: Instant, fanout: &mut Fanout) {
    for subscriber in subscribers {
        match subscriber.outbound.push(frame.clone(), now) {
            Pushed::Queued | Pushed::DroppedOldest(_) => fanout.delivered += 1,
            Pushed::ClosedSlow | Pushed::Refused => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{OutboundLimits, SlowConsumerPolicy};
    use bytes::Bytes;
    use std::time::Duration;

    fn subscriber(conn: u64) -> Subscriber {
        Subscriber {
            conn: ConnId(conn),
            outbound: Rc::new(Outbound::new(
                OutboundLimits {
                    max_bytes: 1 << 20,
                    max_messages: 1000,
                    max_age: Duration::from_secs(10),
                    policy: SlowConsumerPolicy::Close,
                },
                crate::metrics::CoreStats::detached(),
            )),
        }
    }

    fn frames(msgpack: &'static [u8]) -> Frames {
        [Some(Bytes::from_static(msgpack)), None]
    }

    #[test]
    fn first_subscriber_asks_home_later_ones_wait_then_all_start_at_the_acked_offset() {
        let mut shard = Shard::default();
        let room = RoomName::new("chat").unwrap();
        let (a, b) = (subscriber(1), subscriber(2));
        let SubscribeStep::AskHome(mut rx_a) = shard.subscribe(
            &room,
            Codec::MsgPack,
            a.clone(),
            RequestId(1),
            Instant::now(),
        ) else {
            panic!("first subscriber must ask the home")
        };
        let SubscribeStep::Wait(mut rx_b) = shard.subscribe(
            &room,
            Codec::MsgPack,
            b.clone(),
            RequestId(0),
            Instant::now(),
        ) else {
            panic!("second subscriber must wait")
        };
        // A delivery that predates the acknowledgement is ignored.
        let now = Instant::now();
        assert_eq!(
            shard
                .deliver(&room, Offset(7), &frames(b"old"), now)
                .delivered,
            0
        );
        assert!(!shard.activate(&room, Codec::MsgPack, Offset(7), now));
        assert_eq!(rx_a.try_recv(), Ok(Offset(7)));
        assert_eq!(rx_b.try_recv(), Ok(Offset(7)));
        assert_eq!(
            shard
                .deliver(&room, Offset(8), &frames(b"new"), now)
                .delivered,
            2
        );
        // a asked with an id: its acknowledgement comes first, then the delivery.
        let mut queued = Vec::new();
        a.outbound.take(&mut queued, 10, usize::MAX);
        assert_eq!(queued.len(), 2);
        assert_eq!(&queued[1][..], b"new");
        assert_eq!(b.outbound.len(), 1, "b asked with id 0: no acknowledgement");
        let late = shard.subscribe(&room, Codec::MsgPack, subscriber(3), RequestId(2), now);
        assert!(matches!(late, SubscribeStep::Ready(Offset(8))));
    }

    #[test]
    fn a_waiter_that_leaves_before_the_acknowledgement_is_never_activated() {
        let mut shard = Shard::default();
        let room = RoomName::new("chat").unwrap();
        let now = Instant::now();
        let gone = subscriber(1);
        let _ = shard.subscribe(&room, Codec::MsgPack, gone.clone(), RequestId(1), now);
        assert!(!shard.unsubscribe(&room, Codec::MsgPack, ConnId(1)));
        assert!(
            shard.activate(&room, Codec::MsgPack, Offset(3), now),
            "nobody left: tell the home"
        );
        assert_eq!(shard.subscriber_count(&room, Codec::MsgPack), 0);
        assert_eq!(
            gone.outbound.len(),
            0,
            "no acknowledgement for a subscriber that left"
        );
    }

    #[test]
    fn the_last_unsubscribe_tells_the_home_and_later_deliveries_reach_no_one() {
        let mut shard = Shard::default();
        let room = RoomName::new("chat").unwrap();
        let a = subscriber(1);
        let now = Instant::now();
        let _ = shard.subscribe(&room, Codec::Proto, a.clone(), RequestId(0), now);
        assert!(!shard.activate(&room, Codec::Proto, Offset(0), now));
        let _ = shard.subscribe(&room, Codec::Proto, subscriber(2), RequestId(0), now);
        assert!(!shard.unsubscribe(&room, Codec::Proto, ConnId(1)));
        assert!(shard.unsubscribe(&room, Codec::Proto, ConnId(2)));
        assert!(!shard.unsubscribe(&room, Codec::Proto, ConnId(2)));
        let both = [
            Some(Bytes::from_static(b"m")),
            Some(Bytes::from_static(b"p")),
        ];
        assert_eq!(
            shard.deliver(&room, Offset(1), &both, Instant::now()),
            Fanout::default()
        );
        assert_eq!(a.outbound.len(), 0);
    }
}
