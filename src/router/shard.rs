//! A core's local subscribers, per room and format, and the fan-out step.
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

use crate::engine::{EngineError, Recovery};
use crate::limits::close_code;
use crate::protocol::{frame, Ack, Offset, Reply, RequestId, RoomName, StreamPosition};

use super::outbound::{Closing, LocalFrame, Outbound, Pushed};
use super::{ConnId, Format, Frames, PerFormat, RecoveryToken};

/// A local subscriber: a connection and its outbound queue.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) conn: ConnId,
    pub(crate) outbound: Rc<Outbound>,
    /// Wants join and leave events.
    pub(crate) join_leave: bool,
}

/// How a subscribe ended: live after this offset (the room's position when
/// the subscriber was acknowledged), or refused because the engine could
/// not answer.
pub(crate) type Settled = Result<Offset, EngineError>;

/// A subscriber waiting for the home's `Interested`.
struct Waiter {
    subscriber: Subscriber,
    request: RequestId,
    recover: Option<RecoveryToken>,
    settled: oneshot::Sender<Settled>,
}

/// A subscriber waiting for the home's answer to its recovery.
struct Recovering {
    subscriber: Subscriber,
    request: RequestId,
    token: RecoveryToken,
    settled: oneshot::Sender<Settled>,
}

trait Keyed {
    fn conn(&self) -> ConnId;
}

impl Keyed for Subscriber {
    fn conn(&self) -> ConnId {
        self.conn
    }
}

impl Keyed for Waiter {
    fn conn(&self) -> ConnId {
        self.subscriber.conn
    }
}

impl Keyed for Recovering {
    fn conn(&self) -> ConnId {
        self.subscriber.conn
    }
}

/// Entries in a plain vector (fan-out walks contiguous memory), with an
/// index by connection so that removing one is O(1): a mass disconnect
/// from a room of n subscribers costs O(n), not O(n^2). Removal moves the
/// last entry into the gap, so the order of fan-out is not kept (nothing
/// depends on it: each subscriber has its own queue).
struct Roster<T> {
    entries: Vec<T>,
    index: HashMap<ConnId, usize>,
}

impl<T> Default for Roster<T> {
    fn default() -> Roster<T> {
        Roster {
            entries: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<T: Keyed> Roster<T> {
    fn push(&mut self, entry: T) {
        self.index.insert(entry.conn(), self.entries.len());
        self.entries.push(entry);
    }

    fn remove(&mut self, conn: ConnId) -> Option<T> {
        let at = self.index.remove(&conn)?;
        let removed = self.entries.swap_remove(at);
        if let Some(moved) = self.entries.get(at) {
            self.index.insert(moved.conn(), at);
        }
        Some(removed)
    }

    fn find(&self, matches: impl Fn(&T) -> bool) -> Option<ConnId> {
        self.entries.iter().find(|e| matches(e)).map(Keyed::conn)
    }

    #[cfg(any(test, feature = "test-hooks"))]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn drain(&mut self) -> std::vec::Drain<'_, T> {
        self.index.clear();
        self.entries.drain(..)
    }
}

/// Queues the subscribe acknowledgement ahead of any delivery, so a client
/// always learns its starting position before the first message after it.
fn acknowledge(
    subscriber: &Subscriber,
    format: Format,
    request: RequestId,
    ack: Ack,
    now: Instant,
) {
    if request.wants_reply() {
        let ack = frame::reply(format.codec(), &Reply::with(request, ack));
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
    Pending(Roster<Waiter>),
    Active {
        position: StreamPosition,
        subscribers: Roster<Subscriber>,
        recovering: Roster<Recovering>,
    },
}

impl Slot {
    fn is_empty(&self) -> bool {
        match self {
            Slot::Pending(_) => false,
            Slot::Active {
                subscribers,
                recovering,
                ..
            } => subscribers.is_empty() && recovering.is_empty(),
        }
    }
}

#[derive(Default)]
struct LocalRoom {
    by_format: PerFormat<Option<Slot>>,
}

impl LocalRoom {
    fn is_empty(&self) -> bool {
        self.by_format.values().all(Option::is_none)
    }
}

/// The next step of a subscribe.
pub(crate) enum SubscribeStep {
    /// Subscribed and acknowledged, live from the room's current position.
    Live,
    /// Waiting: for the home's `Interested`, or for the answer to its
    /// recovery. `ask_home`: this is the core's first subscriber of the
    /// room in this format, so the home must be sent `Interest`.
    Wait {
        ask_home: bool,
        settled: oneshot::Receiver<Settled>,
    },
}

/// Whether this core still has subscribers of a room in a format, after a
/// change. `Lost` means the home must be sent `Disinterest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum LocalInterest {
    Kept,
    Lost,
}

/// The result of one fan-out. (Slow-consumer outcomes are counted by the
/// queues themselves.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fanout {
    /// Frames queued to subscribers.
    pub(crate) delivered: u64,
}

/// A core's local subscribers.
#[derive(Default)]
pub(crate) struct Shard {
    rooms: HashMap<RoomName, LocalRoom>,
}

impl Shard {
    /// Adds a subscriber of `room` in `format`. Without `recover`, the
    /// acknowledgement of `request` (with the starting position) is queued to
    /// the subscriber as it becomes active, before any delivery; with it, the
    /// subscriber becomes recovering instead, and is acknowledged by
    /// [`Shard::finish_recovery`].
    pub(crate) fn subscribe(
        &mut self,
        room: &RoomName,
        format: Format,
        subscriber: Subscriber,
        request: RequestId,
        recover: Option<RecoveryToken>,
        now: Instant,
    ) -> SubscribeStep {
        let slot = &mut self.rooms.entry(room.detached()).or_default().by_format[format];
        let (settled, wait) = oneshot::channel();
        match slot {
            Some(Slot::Active {
                position,
                subscribers,
                recovering,
            }) => match recover {
                Some(token) => {
                    recovering.push(Recovering {
                        subscriber,
                        request,
                        token,
                        settled,
                    });
                    SubscribeStep::Wait {
                        ask_home: false,
                        settled: wait,
                    }
                }
                None => {
                    acknowledge(&subscriber, format, request, plain_ack(position), now);
                    subscribers.push(subscriber);
                    SubscribeStep::Live
                }
            },
            Some(Slot::Pending(waiters)) => {
                waiters.push(Waiter {
                    subscriber,
                    request,
                    recover,
                    settled,
                });
                SubscribeStep::Wait {
                    ask_home: false,
                    settled: wait,
                }
            }
            None => {
                let mut waiters = Roster::default();
                waiters.push(Waiter {
                    subscriber,
                    request,
                    recover,
                    settled,
                });
                *slot = Some(Slot::Pending(waiters));
                SubscribeStep::Wait {
                    ask_home: true,
                    settled: wait,
                }
            }
        }
    }

    /// The home answered this core's interest: waiting subscribers become
    /// active (or recovering) at `position`; or the engine failed, and every
    /// waiter is refused (the home recorded no interest).
    ///
    /// `Lost` when every waiter left meanwhile, so the home must be told
    /// there is no interest after all.
    pub(crate) fn activate(
        &mut self,
        room: &RoomName,
        format: Format,
        position: Result<StreamPosition, EngineError>,
        now: Instant,
    ) -> LocalInterest {
        let Some(local) = self.rooms.get_mut(room) else {
            return LocalInterest::Kept;
        };
        let slot = &mut local.by_format[format];
        let Some(Slot::Pending(mut waiters)) = slot.take() else {
            return LocalInterest::Kept;
        };
        let position = match position {
            Ok(position) => position,
            Err(error) => {
                for waiter in waiters.drain() {
                    let _ = waiter.settled.send(Err(error.clone()));
                }
                if local.is_empty() {
                    self.rooms.remove(room);
                }
                return LocalInterest::Kept;
            }
        };
        if waiters.is_empty() {
            if local.is_empty() {
                self.rooms.remove(room);
            }
            return LocalInterest::Lost;
        }
        let mut subscribers = Roster::default();
        let mut recovering = Roster::default();
        for waiter in waiters.drain() {
            match waiter.recover {
                Some(token) => recovering.push(Recovering {
                    subscriber: waiter.subscriber,
                    request: waiter.request,
                    token,
                    settled: waiter.settled,
                }),
                None => {
                    let ack = plain_ack(&position);
                    acknowledge(&waiter.subscriber, format, waiter.request, ack, now);
                    // A waiter whose session is gone just misses its answer.
                    let _ = waiter.settled.send(Ok(position.offset));
                    subscribers.push(waiter.subscriber);
                }
            }
        }
        *slot = Some(Slot::Active {
            position,
            subscribers,
            recovering,
        });
        LocalInterest::Kept
    }

    /// The home's answer to a recovery: the subscriber is acknowledged
    /// (`recovered` or not, with the room's position), receives what it
    /// missed, and becomes live. Returns the deliveries queued. An answer for
    /// a subscriber that left is dropped. When the engine failed, the
    /// subscriber is refused and removed, and may have been the last one.
    pub(crate) fn finish_recovery(
        &mut self,
        room: &RoomName,
        format: Format,
        token: RecoveryToken,
        recovery: Result<Recovery, EngineError>,
        now: Instant,
    ) -> (Fanout, LocalInterest) {
        let mut fanout = Fanout::default();
        let Some(local) = self.rooms.get_mut(room) else {
            return (fanout, LocalInterest::Kept);
        };
        let Some(Slot::Active {
            subscribers,
            recovering,
            ..
        }) = local.by_format[format].as_mut()
        else {
            return (fanout, LocalInterest::Kept);
        };
        let Some(conn) = recovering.find(|r| r.token == token) else {
            return (fanout, LocalInterest::Kept);
        };
        let Some(done) = recovering.remove(conn) else {
            return (fanout, LocalInterest::Kept);
        };
        let recovery = match recovery {
            Ok(recovery) => recovery,
            Err(error) => {
                let _ = done.settled.send(Err(error));
                return (fanout, self.forget_if_empty(room, format));
            }
        };
        let (position, missed, recovered) = match recovery {
            Recovery::Recovered { position, missed } => (position, missed, true),
            Recovery::Refused { position } => (position, Vec::new(), false),
        };
        let ack = Ack {
            recovered,
            ..plain_ack(&position)
        };
        acknowledge(&done.subscriber, format, done.request, ack, now);
        for publication in &missed {
            let frame = frame::message(format.codec(), room, publication.offset, &publication.data);
            match done.subscriber.outbound.push(frame, now) {
                Pushed::Queued | Pushed::DroppedOldest(_) => fanout.delivered += 1,
                // Closed as a slow consumer: it stays listed until its
                // session leaves, like any closed subscriber.
                Pushed::ClosedSlow | Pushed::Refused => break,
            }
        }
        let _ = done.settled.send(Ok(position.offset));
        subscribers.push(done.subscriber);
        (fanout, LocalInterest::Kept)
    }

    /// Removes a subscriber (live, recovering or waiting). `Lost` when it
    /// was the last one of this room and format here, so the home must be
    /// told.
    pub(crate) fn unsubscribe(
        &mut self,
        room: &RoomName,
        format: Format,
        conn: ConnId,
    ) -> LocalInterest {
        let Some(local) = self.rooms.get_mut(room) else {
            return LocalInterest::Kept;
        };
        match &mut local.by_format[format] {
            // A waiter that leaves is just forgotten: the acknowledgement
            // still comes, and `activate` then reports whether anyone is left.
            Some(Slot::Pending(waiters)) => {
                waiters.remove(conn);
                LocalInterest::Kept
            }
            Some(Slot::Active {
                subscribers,
                recovering,
                ..
            }) => {
                if subscribers.remove(conn).is_none() && recovering.remove(conn).is_none() {
                    return LocalInterest::Kept;
                }
                self.forget_if_empty(room, format)
            }
            None => LocalInterest::Kept,
        }
    }

    /// Drops an active slot nobody is left in.
    fn forget_if_empty(&mut self, room: &RoomName, format: Format) -> LocalInterest {
        let Some(local) = self.rooms.get_mut(room) else {
            return LocalInterest::Kept;
        };
        let slot = &mut local.by_format[format];
        if !slot.as_ref().is_some_and(Slot::is_empty) {
            return LocalInterest::Kept;
        }
        *slot = None;
        if local.is_empty() {
            self.rooms.remove(room);
        }
        LocalInterest::Lost
    }

    /// The position a new subscriber of an active room is told.
    pub(crate) fn current(&self, room: &RoomName, format: Format) -> Option<StreamPosition> {
        match self.rooms.get(room)?.by_format[format].as_ref()? {
            Slot::Active { position, .. } => Some(position.clone()),
            Slot::Pending(_) => None,
        }
    }

    /// Local subscribers of `room` in `format` (active ones).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn subscriber_count(&self, room: &RoomName, format: Format) -> usize {
        match self
            .rooms
            .get(room)
            .and_then(|r| r.by_format[format].as_ref())
        {
            Some(Slot::Active { subscribers, .. }) => subscribers.len(),
            _ => 0,
        }
    }

    /// Fans one sequenced publication out to the active local subscribers:
    /// each gets a reference to the shared frame of its format. Recovering
    /// subscribers get nothing: the home's answer carries it.
    pub(crate) fn deliver(
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
        for (format, slot) in local.by_format.iter_mut() {
            if let (
                Some(Slot::Active {
                    position,
                    subscribers,
                    ..
                }),
                Some(frame),
            ) = (slot, &frames[format])
            {
                position.offset = offset;
                let local: LocalFrame = Rc::new(frame.clone());
                fan_out(&subscribers.entries, &local, now, &mut fanout);
            }
        }
        fanout
    }

    /// The room's order was lost: closes every active and recovering
    /// subscriber here (4002, after what is queued), so each resumes and
    /// learns whether it recovered; newcomers start after `position`.
    /// Returns how many were closed.
    pub(crate) fn lose(&mut self, room: &RoomName, lost_at: StreamPosition) -> usize {
        let Some(local) = self.rooms.get_mut(room) else {
            return 0;
        };
        let closing = Closing {
            code: close_code::ROOM_STATE_LOST,
            reason: "room state lost: resume with recover",
            flush: true,
        };
        let mut closed = 0;
        for (_, slot) in local.by_format.iter_mut() {
            if let Some(Slot::Active {
                position,
                subscribers,
                recovering,
            }) = slot
            {
                *position = lost_at.clone();
                let outbounds = subscribers.entries.iter().map(|s| &s.outbound);
                let outbounds =
                    outbounds.chain(recovering.entries.iter().map(|r| &r.subscriber.outbound));
                for outbound in outbounds {
                    outbound.close(closing.clone());
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Queues a join or leave event to the subscribers that asked for them.
    pub(crate) fn deliver_presence(&mut self, room: &RoomName, frames: &Frames, now: Instant) {
        let Some(local) = self.rooms.get(room) else {
            return;
        };
        for (format, slot) in local.by_format.iter() {
            if let (Some(Slot::Active { subscribers, .. }), Some(frame)) = (slot, &frames[format]) {
                let local: LocalFrame = Rc::new(frame.clone());
                for subscriber in subscribers.entries.iter().filter(|s| s.join_leave) {
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
        let mut frames = Frames::default();
        frames[Format::MsgPack] = Some(Bytes::from_static(msgpack));
        frames
    }

    #[test]
    fn first_subscriber_asks_home_later_ones_wait_then_all_start_at_the_acked_offset() {
        let mut shard = Shard::default();
        let room = RoomName::new("chat").unwrap();
        let (a, b) = (subscriber(1), subscriber(2));
        let SubscribeStep::Wait {
            ask_home: true,
            settled: mut rx_a,
        } = shard.subscribe(
            &room,
            Format::MsgPack,
            a.clone(),
            RequestId(1),
            None,
            Instant::now(),
        )
        else {
            panic!("first subscriber must ask the home")
        };
        let SubscribeStep::Wait {
            ask_home: false,
            settled: mut rx_b,
        } = shard.subscribe(
            &room,
            Format::MsgPack,
            b.clone(),
            RequestId(0),
            None,
            Instant::now(),
        )
        else {
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
        assert_eq!(
            shard.activate(&room, Format::MsgPack, Ok(at(7)), now),
            LocalInterest::Kept
        );
        assert_eq!(rx_a.try_recv(), Ok(Ok(Offset(7))));
        assert_eq!(rx_b.try_recv(), Ok(Ok(Offset(7))));
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
            Format::MsgPack,
            subscriber(3),
            RequestId(2),
            None,
            now,
        );
        assert!(matches!(late, SubscribeStep::Live));
        assert_eq!(shard.current(&room, Format::MsgPack), Some(at(8)));
    }

    #[test]
    fn a_waiter_that_leaves_before_the_acknowledgement_is_never_activated() {
        let mut shard = Shard::default();
        let room = RoomName::new("chat").unwrap();
        let now = Instant::now();
        let gone = subscriber(1);
        let _ = shard.subscribe(
            &room,
            Format::MsgPack,
            gone.clone(),
            RequestId(1),
            None,
            now,
        );
        assert_eq!(
            shard.unsubscribe(&room, Format::MsgPack, ConnId(1)),
            LocalInterest::Kept
        );
        assert_eq!(
            shard.activate(&room, Format::MsgPack, Ok(at(3)), now),
            LocalInterest::Lost,
            "nobody left: tell the home"
        );
        assert_eq!(shard.subscriber_count(&room, Format::MsgPack), 0);
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
        let _ = shard.subscribe(&room, Format::Proto, a.clone(), RequestId(0), None, now);
        assert_eq!(
            shard.activate(&room, Format::Proto, Ok(at(0)), now),
            LocalInterest::Kept
        );
        let _ = shard.subscribe(&room, Format::Proto, subscriber(2), RequestId(0), None, now);
        assert_eq!(
            shard.unsubscribe(&room, Format::Proto, ConnId(1)),
            LocalInterest::Kept
        );
        assert_eq!(
            shard.unsubscribe(&room, Format::Proto, ConnId(2)),
            LocalInterest::Lost
        );
        assert_eq!(
            shard.unsubscribe(&room, Format::Proto, ConnId(2)),
            LocalInterest::Kept
        );
        let mut both = Frames::default();
        both[Format::MsgPack] = Some(Bytes::from_static(b"m"));
        both[Format::Proto] = Some(Bytes::from_static(b"p"));
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
        let _ = shard.subscribe(
            &room,
            Format::MsgPack,
            live.clone(),
            RequestId(0),
            None,
            now,
        );
        assert_eq!(
            shard.activate(&room, Format::MsgPack, Ok(at(5)), now),
            LocalInterest::Kept
        );
        let token = RecoveryToken(9);
        let step = shard.subscribe(
            &room,
            Format::MsgPack,
            resumed.clone(),
            RequestId(4),
            Some(token),
            now,
        );
        assert!(matches!(
            step,
            SubscribeStep::Wait {
                ask_home: false,
                ..
            }
        ));
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
        let (stale, _) = shard.finish_recovery(
            &room,
            Format::MsgPack,
            RecoveryToken(8),
            Ok(recovery.clone()),
            now,
        );
        assert_eq!(stale.delivered, 0);
        let (replayed, _) = shard.finish_recovery(&room, Format::MsgPack, token, Ok(recovery), now);
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
                crate::protocol::Codec::MsgPack
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
            Format::Proto,
            subscriber(1),
            RequestId(1),
            Some(RecoveryToken(1)),
            now,
        );
        assert_eq!(
            shard.activate(&room, Format::Proto, Ok(at(0)), now),
            LocalInterest::Kept
        );
        assert_eq!(
            shard.unsubscribe(&room, Format::Proto, ConnId(1)),
            LocalInterest::Lost,
            "nobody left: tell the home"
        );
        let recovery = Recovery::Refused { position: at(0) };
        assert_eq!(
            shard.finish_recovery(&room, Format::Proto, RecoveryToken(1), Ok(recovery), now),
            (Fanout::default(), LocalInterest::Kept)
        );
    }
}
