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
//! A subscriber resuming with `recover` is *recovering* while its room is
//! active: it gets no deliveries yet, but every delivery is kept for it. The
//! home answers with the publications it missed up to some offset N; since
//! the home sent every delivery up to N before its answer, the kept ones
//! cover everything after N. Missed, then kept deliveries after N, then live:
//! no gap and no duplicate, whatever was published meanwhile.

use std::rc::Rc;
use std::time::Instant;

use foldhash::HashMap;
use tokio::sync::oneshot;

use crate::engine::Recovery;
use crate::limits::close_code;
use crate::protocol::{frame, Ack, Codec, Offset, Reply, RequestId, RoomName, StreamPosition};
use crate::transport::outbound::{Closing, LocalFrame, Outbound, Pushed};

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

/// A subscriber waiting for the home's answer to its recovery, and the
/// deliveries that arrived meanwhile.
struct Recovering {
    subscriber: Subscriber,
    request: RequestId,
    token: RecoveryToken,
    kept: Vec<(Offset, LocalFrame)>,
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
pub struct Shard {
    rooms: HashMap<RoomName, LocalRoom>,
    /// Deliveries kept for one recovering subscriber, at most; past it the
    /// subscriber is closed as a slow consumer (1013).
    recovery_buffer: usize,
}

impl Shard {
    pub fn new(recovery_buffer: usize) -> Shard {
        Shard {
            rooms: HashMap::default(),
            recovery_buffer,
        }
    }

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
                        kept: Vec::new(),
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
                        kept: Vec::new(),
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
    /// missed, then what was kept for it after that, and becomes live.
    /// Returns the deliveries queued. An answer for a subscriber that left is
    /// dropped.
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
        let upto = recovery.position().offset;
        let (position, missed, recovered) = match recovery {
            Recovery::Recovered { position, missed } => (position, missed, true),
            Recovery::Refused { position } => (position, Vec::new(), false),
        };
        let ack = Ack {
            recovered,
            ..plain_ack(&position)
        };
        acknowledge(&done.subscriber, codec, done.request, ack, now);
        let outbound = &done.subscriber.outbound;
        let replay = missed
            .iter()
            .map(|p| Rc::new(frame::message(codec, room, p.offset, &p.data)))
            .chain(
                done.kept
                    .into_iter()
                    .filter(|(offset, _)| *offset > upto)
                    .map(|(_, frame)| frame),
            );
        for frame in replay {
            match outbound.push(frame, now) {
                Pushed::Queued | Pushed::DroppedOldest(_) => fanout.delivered += 1,
                Pushed::ClosedSlow | Pushed::Refused => return fanout,
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
    /// subscribers get it kept for later.
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
                    recovering,
                }),
                Some(frame),
            ) = (slot, frame)
            {
                position.offset = offset;
                let local: LocalFrame = Rc::new(frame.clone());
                fan_out(subscribers, &local, now, &mut fanout);
                if !recovering.is_empty() {
                    keep_for_recovering(recovering, offset, &local, self.recovery_buffer);
                }
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

fn keep_for_recovering(
    recovering: &mut Vec<Recovering>,
    offset: Offset,
    frame: &LocalFrame,
    limit: usize,
) {
    recovering.retain_mut(|r| {
        if r.kept.len() < limit {
            r.kept.push((offset, frame.clone()));
            return true;
        }
        // The home's answer is taking longer than this many publications:
        // treat it as a slow consumer rather than keep without bound.
        r.subscriber.outbound.close(Closing {
            code: close_code::TRY_AGAIN_LATER,
            reason: "slow consumer",
            flush: false,
        });
        false
    });
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
        let mut shard = Shard::new(100);
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
        let mut shard = Shard::new(100);
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
        let mut shard = Shard::new(100);
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
}
