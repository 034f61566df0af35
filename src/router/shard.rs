//! A core's local subscribers, per room and codec, and the fan-out step.
//!
//! Touched only by its own core: no locks. No I/O and no clock: it pushes
//! shared frames into subscribers' bounded queues ([`Outbound`]) and reports
//! what happened; the driver does the rest.
//!
//! Per (room, codec) a core is in one of three states:
//! * absent: no local subscribers;
//! * pending: the first subscriber asked, the home has been told, and its
//!   acknowledgement (with the room's current position) has not arrived;
//!   more subscribers wait with it; deliveries are ignored (they predate the
//!   acknowledgement, which the home sends after them);
//! * active: subscribers receive every delivery; `position` is the offset of
//!   the last one, which is what a new local subscriber is told.
//!
//! A subscriber resuming with `recover` is *recovering* until the home's
//! answer arrives: it is in the room (so it is not forgotten) but gets no
//! deliveries. The home answers with the publications it missed up to the
//! room's offset N at that moment. Everything the home sends this core
//! arrives in the order it was sent, so every delivery up to N came before
//! the answer (and was held back from the recovering subscriber: the answer
//! carries it) and every delivery after N comes after it (when the
//! subscriber is live). Missed, then live: no gap and no duplicate, whatever
//! was published meanwhile.

use std::rc::Rc;
use std::time::Instant;

use foldhash::HashMap;
use tokio::sync::oneshot;

use crate::engine::Recovery;
use crate::protocol::{frame, Ack, Codec, Offset, Reply, RequestId, RoomName, StreamPosition};
use crate::transport::outbound::{LocalFrame, Outbound, Pushed};

use super::{ConnId, Frames, RecoveryToken};

/// A local subscriber: a connection and its outbound queue.
#[derive(Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub outbound: Rc<Outbound>,
    /// Wants join and leave events.
    pub join_leave: bool,
}

struct Waiter {
    subscriber: Subscriber,
    request: RequestId,
    recover: Option<RecoveryToken>,
    offset: oneshot::Sender<Offset>,
}

/// A subscriber waiting for the home's answer to its recovery.
struct Recovering {
    subscriber: Subscriber,
    request: RequestId,
    token: RecoveryToken,
}

/// Queues the subscribe acknowledgement ahead of any delivery, so a client
/// always learns its starting position before the first message after it.
fn acknowledge(subscriber: &Subscriber, codec: Codec, request: RequestId, ack: Ack, now: Instant) {
    if request.wants_reply() {
        let ack = frame::reply(codec, &Reply::with(request, ack));
        subscriber.outbound.reply(ack, now);
    }
}

fn plain_ack(position: &StreamPosition) -> Ack {
    Ack {
        offset: position.offset,
        epoch: position.epoch.clone(),
        ..Ack::default()
    }
}

enum Slot {
    Pending(Vec<Waiter>),
    Active {
        position: StreamPosition,
        subscribers: Vec<Subscriber>,
        recovering: Vec<Recovering>,
    },
}

#[derive(Default)]
struct LocalRoom {
    by_codec: [Option<Slot>; 2],
}

/// The next step of a subscribe.
pub enum SubscribeStep {
    /// Subscribed (or recovering); the room's current position.
    Ready(StreamPosition),
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
    /// Adds a subscriber of `room` in `codec`. Without `recover`, the
    /// acknowledgement of `request` (with the starting position) is queued to
    /// the subscriber as it becomes active, before any delivery; with it, the
    /// subscriber becomes recovering instead, and is acknowledged by
    /// [`Shard::finish_recovery`].
    pub fn subscribe(
        &mut self,
        room: &RoomName,
        codec: Codec,
        subscriber: Subscriber,
        request: RequestId,
        recover: Option<RecoveryToken>,
        now: Instant,
    ) -> SubscribeStep {
        let slot = &mut self.rooms.entry(room.detached()).or_default().by_codec[codec.index()];
        match slot {
            Some(Slot::Active {
                position,
                subscribers,
                recovering,
            }) => {
                match recover {
                    Some(token) => recovering.push(Recovering {
                        subscriber,
                        request,
                        token,
                    }),
                    None => {
                        acknowledge(&subscriber, codec, request, plain_ack(position), now);
                        subscribers.push(subscriber);
                    }
                }
                SubscribeStep::Ready(position.clone())
            }
            Some(Slot::Pending(waiters)) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(Waiter {
                    subscriber,
                    request,
                    recover,
                    offset: tx,
                });
                SubscribeStep::Wait(rx)
            }
            None => {
                let (tx, rx) = oneshot::channel();
                *slot = Some(Slot::Pending(vec![Waiter {
                    subscriber,
                    request,
                    recover,
                    offset: tx,
                }]));
                SubscribeStep::AskHome(rx)
            }
        }
    }

    /// The home acknowledged this core's interest: waiting subscribers become
    /// active (or recovering) at `position`.
    ///
    /// Returns true when every waiter left meanwhile, so the home must be
    /// told there is no interest after all.
    pub fn activate(
        &mut self,
        room: &RoomName,
        codec: Codec,
        position: StreamPosition,
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
            let mut recovering = Vec::new();
            for waiter in waiters {
                // A waiter whose session is gone just misses its answer.
                let _ = waiter.offset.send(position.offset);
                match waiter.recover {
                    Some(token) => recovering.push(Recovering {
                        subscriber: waiter.subscriber,
                        request: waiter.request,
                        token,
                    }),
                    None => {
                        let ack = plain_ack(&position);
                        acknowledge(&waiter.subscriber, codec, waiter.request, ack, now);
                        subscribers.push(waiter.subscriber);
                    }
                }
            }
            *slot = Some(Slot::Active {
                position,
                subscribers,
                recovering,
            });
        }
        false
    }

    /// The home's answer to a recovery: the subscriber is acknowledged
    /// (`recovered` or not, with the room's position), receives what it
    /// missed, and becomes live. Returns the deliveries queued. An answer for
    /// a subscriber that left is dropped.
    pub fn finish_recovery(
        &mut self,
        room: &RoomName,
        codec: Codec,
        token: RecoveryToken,
        recovery: Recovery,
        now: Instant,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        let Some(Slot::Active {
            subscribers,
            recovering,
            ..
        }) = self
            .rooms
            .get_mut(room)
            .and_then(|local| local.by_codec[codec.index()].as_mut())
        else {
            return fanout;
        };
        let Some(at) = recovering.iter().position(|r| r.token == token) else {
            return fanout;
        };
        let done = recovering.swap_remove(at);
        let (position, missed, recovered) = match recovery {
            Recovery::Recovered { position, missed } => (position, missed, true),
            Recovery::Refused { position } => (position, Vec::new(), false),
        };
        let ack = Ack {
            recovered,
            ..plain_ack(&position)
        };
        acknowledge(&done.subscriber, codec, done.request, ack, now);
        for publication in &missed {
            let frame = frame::message(codec, room, publication.offset, &publication.data);
            match done.subscriber.outbound.push(frame, now) {
                Pushed::Queued | Pushed::DroppedOldest(_) => fanout.delivered += 1,
                // Closed as a slow consumer: it stays listed until its
                // session leaves, like any closed subscriber.
                Pushed::ClosedSlow | Pushed::Refused => break,
            }
        }
        subscribers.push(done.subscriber);
        fanout
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
        let Some(Slot::Active {
            subscribers,
            recovering,
            ..
        }) = slot
        else {
            return false;
        };
        if let Some(at) = subscribers.iter().position(|s| s.conn == conn) {
            subscribers.remove(at);
        } else if let Some(at) = recovering.iter().position(|r| r.subscriber.conn == conn) {
            recovering.remove(at);
        } else {
            return false;
        }
        if !subscribers.is_empty() || !recovering.is_empty() {
            return false;
        }
        *slot = None;
        if local.by_codec.iter().all(Option::is_none) {
            self.rooms.remove(room);
        }
        true
    }

    /// The position a new subscriber of an active room is told.
    pub fn current(&self, room: &RoomName, codec: Codec) -> Option<StreamPosition> {
        match self.rooms.get(room)?.by_codec[codec.index()].as_ref()? {
            Slot::Active { position, .. } => Some(position.clone()),
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
    /// each gets a reference to the shared frame of its codec. Recovering
    /// subscribers get nothing: the home's answer carries it.
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
            if let (
                Some(Slot::Active {
                    position,
                    subscribers,
                    ..
                }),
                Some(frame),
            ) = (slot, frame)
            {
                position.offset = offset;
                let local: LocalFrame = Rc::new(frame.clone());
                fan_out(subscribers, &local, now, &mut fanout);
            }
        }
        fanout
    }

    /// Queues a join or leave event to the subscribers that asked for them.
    pub fn deliver_presence(&mut self, room: &RoomName, frames: &Frames, now: Instant) {
        let Some(local) = self.rooms.get(room) else {
            return;
        };
        for (slot, frame) in local.by_codec.iter().zip(frames) {
            if let (Some(Slot::Active { subscribers, .. }), Some(frame)) = (slot, frame) {
                let local: LocalFrame = Rc::new(frame.clone());
                for subscriber in subscribers.iter().filter(|s| s.join_leave) {
                    subscriber.outbound.push(local.clone(), now);
                }
            }
        }
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
            join_leave: false,
        }
    }

    fn at(offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: crate::protocol::Epoch("e".into()),
            offset: Offset(offset),
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
            None,
            Instant::now(),
        ) else {
            panic!("first subscriber must ask the home")
        };
        let SubscribeStep::Wait(mut rx_b) = shard.subscribe(
            &room,
            Codec::MsgPack,
            b.clone(),
            RequestId(0),
            None,
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
        assert!(!shard.activate(&room, Codec::MsgPack, at(7), now));
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
        let late = shard.subscribe(
            &room,
            Codec::MsgPack,
            subscriber(3),
            RequestId(2),
            None,
            now,
        );
        assert!(matches!(late, SubscribeStep::Ready(p) if p == at(8)));
    }

    #[test]
    fn a_waiter_that_leaves_before_the_acknowledgement_is_never_activated() {
        let mut shard = Shard::default();
        let room = RoomName::new("chat").unwrap();
        let now = Instant::now();
        let gone = subscriber(1);
        let _ = shard.subscribe(&room, Codec::MsgPack, gone.clone(), RequestId(1), None, now);
        assert!(!shard.unsubscribe(&room, Codec::MsgPack, ConnId(1)));
        assert!(
            shard.activate(&room, Codec::MsgPack, at(3), now),
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
        let _ = shard.subscribe(&room, Codec::Proto, a.clone(), RequestId(0), None, now);
        assert!(!shard.activate(&room, Codec::Proto, at(0), now));
        let _ = shard.subscribe(&room, Codec::Proto, subscriber(2), RequestId(0), None, now);
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

    #[test]
    fn a_recovering_subscriber_gets_the_missed_publications_then_live_ones_and_nothing_twice() {
        let mut shard = Shard::default();
        let room = RoomName::new("ticks").unwrap();
        let now = Instant::now();
        let (live, resumed) = (subscriber(1), subscriber(2));
        let _ = shard.subscribe(&room, Codec::MsgPack, live.clone(), RequestId(0), None, now);
        assert!(!shard.activate(&room, Codec::MsgPack, at(5), now));
        let token = RecoveryToken(9);
        let step = shard.subscribe(
            &room,
            Codec::MsgPack,
            resumed.clone(),
            RequestId(4),
            Some(token),
            now,
        );
        assert!(matches!(step, SubscribeStep::Ready(_)));
        // Offset 6 is published before the home answers: the recovering
        // subscriber does not get it live; the answer carries it.
        assert_eq!(
            shard
                .deliver(&room, Offset(6), &frames(b"six"), now)
                .delivered,
            1
        );
        assert_eq!(resumed.outbound.len(), 0);
        let missed = [4, 5, 6].map(|n| crate::protocol::Publication {
            offset: Offset(n),
            data: Bytes::from(vec![n as u8]),
        });
        let recovery = Recovery::Recovered {
            position: at(6),
            missed: missed.to_vec(),
        };
        // An answer for another recovery of the same connection is ignored.
        let stale = shard.finish_recovery(
            &room,
            Codec::MsgPack,
            RecoveryToken(8),
            recovery.clone(),
            now,
        );
        assert_eq!(stale.delivered, 0);
        let replayed = shard.finish_recovery(&room, Codec::MsgPack, token, recovery, now);
        assert_eq!(replayed.delivered, 3);
        assert_eq!(
            shard
                .deliver(&room, Offset(7), &frames(b"seven"), now)
                .delivered,
            2
        );
        let mut queued = Vec::new();
        resumed.outbound.take(&mut queued, 10, usize::MAX);
        let events: Vec<_> = queued[..4]
            .iter()
            .map(|f| {
                Codec::MsgPack
                    .decode_server(&Bytes::copy_from_slice(&f[2..]))
                    .unwrap()
            })
            .collect();
        let crate::protocol::ServerEvent::Reply(reply) = &events[0] else {
            panic!("the acknowledgement comes first: {events:?}")
        };
        let crate::protocol::Outcome::Ack(ack) = &reply.outcome else {
            panic!("{reply:?}")
        };
        assert!(ack.recovered);
        assert_eq!(ack.offset, Offset(6));
        let offsets: Vec<u64> = events[1..4]
            .iter()
            .map(|e| match e {
                crate::protocol::ServerEvent::Message { offset, .. } => offset.0,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, vec![4, 5, 6]);
        assert_eq!(&queued[4][..], b"seven", "then live, from 7");
        assert_eq!(queued.len(), 5);
    }

    #[test]
    fn a_recovering_subscriber_that_leaves_is_the_last_one_like_any_other() {
        let mut shard = Shard::default();
        let room = RoomName::new("ticks").unwrap();
        let now = Instant::now();
        let _ = shard.subscribe(
            &room,
            Codec::Proto,
            subscriber(1),
            RequestId(1),
            Some(RecoveryToken(1)),
            now,
        );
        assert!(!shard.activate(&room, Codec::Proto, at(0), now));
        assert!(
            shard.unsubscribe(&room, Codec::Proto, ConnId(1)),
            "nobody left: tell the home"
        );
        let recovery = Recovery::Refused { position: at(0) };
        assert_eq!(
            shard.finish_recovery(&room, Codec::Proto, RecoveryToken(1), recovery, now),
            Fanout::default()
        );
    }
}
