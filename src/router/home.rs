//! The home side of a room: which cores want its publications, in which
//! formats, and the steps only the home may take because they must be in
//! the room's one order: sequencing a publication (and encoding it once),
//! answering recovery, history and presence, and turning presence changes
//! into events.
//!
//! A state machine without I/O. Each step is *begun* (which returns the
//! engine operation the driver must start) and *finished* when the engine's
//! answer comes, now or later. The home keeps, per room, the steps begun
//! and not yet finished, and finishes them strictly in the order they were
//! begun, holding back an answer that overtook an earlier one. Since the
//! engine makes a room's operations take effect in the order they were
//! started, the home always acts on answers in the order their effects
//! happened: an `Interest` answered with position N is applied before the
//! publication that got offset N + 1 is fanned out, so that core receives
//! `Interested(N)` before `Deliver(N + 1)`, however late either answer was.
//! A room without outstanding steps costs nothing here: an engine that
//! answers at once (memory) never queues.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use foldhash::HashMap;

use crate::engine::{Answer, Delivery, EngineError, Feed, Op, Outcome, Ticket};
use crate::metrics::{self, CoreStats};
use crate::protocol::{
    self, frame, Ack, ClientInfo, Epoch, IdempotencyKey, PresenceChange, RoomName, StreamPosition,
};
use crate::rules::RoomPolicy;

use super::message::FromHome;
use super::top_rooms::{RoomCount, TopRooms};
use super::{CoreId, CoreSet, Format, Frames, PerFormat, Query, RecoveryToken, ReplyTo};

/// Something to send: to a core (this one included) from the home.
pub(crate) type Outbox = Vec<(CoreId, FromHome)>;

/// One thing asked of a room's home.
#[derive(Debug)]
pub(crate) enum Step {
    /// Sequence and fan out a publication; ack (or refuse) to `reply_to`.
    Publish {
        data: Bytes,
        key: Option<IdempotencyKey>,
        reply_to: ReplyTo,
    },
    /// `core` wants the room's deliveries in `format`.
    Interest { format: Format, core: CoreId },
    /// `core` no longer does.
    Disinterest { format: Format, core: CoreId },
    /// A subscriber on `core` resumes after `from`.
    Recover {
        format: Format,
        from: StreamPosition,
        core: CoreId,
        token: RecoveryToken,
    },
    /// History or presence, answered to `reply_to`.
    Query { query: Query, reply_to: ReplyTo },
    /// A connection joined or left the room's presence.
    Presence {
        change: PresenceChange,
        info: ClientInfo,
    },
}

/// What is left to do once a step's answer is in.
#[derive(Debug)]
pub(crate) enum Then {
    Publish {
        data: Bytes,
        reply_to: ReplyTo,
    },
    Interest {
        format: Format,
        core: CoreId,
    },
    Disinterest {
        format: Format,
        core: CoreId,
    },
    Recover {
        format: Format,
        core: CoreId,
        token: RecoveryToken,
    },
    Query {
        reply_to: ReplyTo,
    },
    Join {
        info: ClientInfo,
    },
    Leave,
}

/// A begun step, as the driver must carry it on.
pub(crate) enum Begun {
    /// Nothing of the room is outstanding: when the engine answers `op` at
    /// once, [`Home::finish`] applies it straight away (`op` is `None` for a
    /// step that needs no engine); otherwise [`Home::wait`] queues it.
    Idle {
        ticket: Ticket,
        op: Option<Op>,
        then: Then,
    },
    /// Queued behind the room's earlier steps: start `op` (if any) and hand
    /// its answer, whenever it comes, to [`Home::answer`].
    Queued { ticket: Ticket, op: Option<Op> },
}

/// A step waiting for its answer or for the steps before it.
struct Outstanding {
    ticket: Ticket,
    then: Then,
    outcome: Option<Outcome>,
}

/// The rooms whose home is this core.
pub(crate) struct Home {
    interest: HashMap<RoomName, PerFormat<CoreSet>>,
    /// Steps begun and not finished, oldest first, for the rooms that have any.
    outstanding: HashMap<RoomName, VecDeque<Outstanding>>,
    /// The room of each outstanding ticket.
    room_of: HashMap<Ticket, RoomName>,
    next_ticket: u64,
    rooms: RoomPolicy,
    history_max_page: usize,
    /// Whether publications and presence events are fanned out when their
    /// step is answered, or when the engine's feed brings them.
    delivery: Delivery,
    stats: CoreStats,
    /// The busiest rooms, sampled, for the dashboard.
    top: TopRooms,
}

impl Home {
    pub(crate) fn new(
        rooms: RoomPolicy,
        history_max_page: usize,
        delivery: Delivery,
        stats: CoreStats,
    ) -> Home {
        Home {
            interest: HashMap::default(),
            outstanding: HashMap::default(),
            room_of: HashMap::default(),
            next_ticket: 1,
            rooms,
            history_max_page,
            delivery,
            stats,
            top: TopRooms::default(),
        }
    }

    /// Begins `step` on `room`.
    pub(crate) fn begin(&mut self, room: &RoomName, step: Step) -> Begun {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let (op, then) = match step {
            Step::Publish {
                data,
                key,
                reply_to,
            } => (
                Some(Op::Publish {
                    data: data.clone(),
                    key,
                }),
                Then::Publish { data, reply_to },
            ),
            Step::Interest { format, core } => {
                (Some(Op::Position), Then::Interest { format, core })
            }
            Step::Disinterest { format, core } => (None, Then::Disinterest { format, core }),
            Step::Recover {
                format,
                from,
                core,
                token,
            } => (
                Some(Op::Recover { from }),
                Then::Recover {
                    format,
                    core,
                    token,
                },
            ),
            Step::Query { query, reply_to } => {
                let op = match query {
                    Query::History(query) => Op::History {
                        query,
                        max_page: self.history_max_page,
                    },
                    Query::Presence => Op::Presence,
                    Query::PresenceStats => Op::PresenceStats,
                };
                (Some(op), Then::Query { reply_to })
            }
            Step::Presence {
                change: PresenceChange::Join,
                info,
            } => (Some(Op::Join(info.clone())), Then::Join { info }),
            Step::Presence {
                change: PresenceChange::Leave,
                info,
            } => (
                Some(Op::Leave {
                    client: info.client,
                }),
                Then::Leave,
            ),
        };
        // The common case, an idle room, costs no allocation.
        if self.outstanding.is_empty() || !self.outstanding.contains_key(room) {
            return Begun::Idle { ticket, op, then };
        }
        self.queue(room, ticket, then);
        Begun::Queued { ticket, op }
    }

    /// The engine will answer an idle room's step later: queue it.
    pub(crate) fn wait(&mut self, room: &RoomName, ticket: Ticket, then: Then) {
        self.queue(room, ticket, then);
    }

    fn queue(&mut self, room: &RoomName, ticket: Ticket, then: Then) {
        let room = room.detached();
        self.room_of.insert(ticket, room.clone());
        self.outstanding
            .entry(room)
            .or_default()
            .push_back(Outstanding {
                ticket,
                then,
                outcome: None,
            });
    }

    /// The answer to a queued step: applies it, and every answer already in
    /// behind it, in the room's order. An answer that overtook an earlier
    /// step's waits for it. `now` is when the answer came.
    pub(crate) fn answer(
        &mut self,
        ticket: Ticket,
        outcome: Outcome,
        now: Instant,
        out: &mut Outbox,
    ) {
        let Some(room) = self.room_of.get(&ticket).cloned() else {
            return;
        };
        let Some(queue) = self.outstanding.get_mut(&room) else {
            return;
        };
        if let Some(step) = queue.iter_mut().find(|s| s.ticket == ticket) {
            step.outcome = Some(outcome);
        }
        loop {
            let Some(queue) = self.outstanding.get_mut(&room) else {
                return;
            };
            if queue.front().is_none_or(|s| s.outcome.is_none()) {
                return;
            }
            let Some(Outstanding {
                ticket,
                then,
                outcome: Some(outcome),
            }) = queue.pop_front()
            else {
                return;
            };
            if queue.is_empty() {
                self.outstanding.remove(&room);
            }
            self.room_of.remove(&ticket);
            self.finish(&room, then, outcome, now, out);
        }
    }

    /// Applies one step's answer: what it changes here, and what to send.
    /// `now` is when the answer came: a publication fanned out now is
    /// stamped with it (see `FromHome::Deliver`).
    pub(crate) fn finish(
        &mut self,
        room: &RoomName,
        then: Then,
        outcome: Outcome,
        now: Instant,
        out: &mut Outbox,
    ) {
        if let Err(EngineError::Unavailable(_) | EngineError::Timeout) = &outcome {
            metrics::add(&self.stats.counters().engine_failures, 1);
        }
        match then {
            Then::Publish { data, reply_to } => {
                self.published(room, &data, reply_to, outcome, now, out)
            }
            Then::Interest { format, core } => {
                let position = expect(outcome, |a| match a {
                    Answer::Position(p) => Some(p),
                    _ => None,
                });
                if position.is_ok() {
                    self.interest.entry(room.detached()).or_default()[format].insert(core);
                }
                let room = room.clone();
                out.push((
                    core,
                    FromHome::Interested {
                        room,
                        format,
                        position,
                    },
                ));
            }
            Then::Disinterest { format, core } => {
                if let Some(interest) = self.interest.get_mut(room) {
                    interest[format].remove(core);
                    if interest.values().all(|cores| cores.is_empty()) {
                        self.interest.remove(room);
                    }
                }
            }
            Then::Recover {
                format,
                core,
                token,
            } => {
                let recovery = expect(outcome, |a| match a {
                    Answer::Recovery(r) => Some(r),
                    _ => None,
                });
                let room = room.clone();
                out.push((
                    core,
                    FromHome::Recovered {
                        room,
                        format,
                        token,
                        recovery,
                    },
                ));
            }
            Then::Query { reply_to } => {
                let outcome = match outcome {
                    Ok(Answer::History(page)) => protocol::Outcome::History(page),
                    Ok(Answer::Presence(clients)) => protocol::Outcome::Presence(clients),
                    Ok(Answer::PresenceStats(counts)) => protocol::Outcome::PresenceStats(counts),
                    Ok(_) => mismatched().outcome(),
                    Err(error) => error.outcome(),
                };
                out.push((
                    reply_to.core(),
                    FromHome::Reply {
                        to: reply_to,
                        outcome,
                    },
                ));
            }
            // With a feed, every node's joins and leaves arrive through it.
            Then::Join { info } => {
                if let (Ok(Answer::Joined(true)), Delivery::OnAnswer) = (outcome, self.delivery) {
                    self.presence_event(room, PresenceChange::Join, &info, out);
                }
            }
            Then::Leave => {
                if let (Ok(Answer::Left(Some(info))), Delivery::OnAnswer) = (outcome, self.delivery)
                {
                    self.presence_event(room, PresenceChange::Leave, &info, out);
                }
            }
        }
    }

    /// One item of a room's feed (engines that deliver from one): fanned
    /// out to the cores with subscribers as a publication answered here
    /// would be. `now` is when the item came.
    pub(crate) fn feed(&mut self, room: &RoomName, item: Feed, now: Instant, out: &mut Outbox) {
        match item {
            Feed::Publication { offset, data } => self.fan_out(room, offset, &data, now, out),
            Feed::Presence { change, info } => self.presence_event(room, change, &info, out),
            Feed::Lost { position } => {
                metrics::add(&self.stats.counters().rooms_lost, 1);
                let Some(interest) = self.interest.get(room) else {
                    return;
                };
                for core in cores_of(interest).iter() {
                    let (room, position) = (room.clone(), position.clone());
                    out.push((core, FromHome::Lost { room, position }));
                }
            }
        }
    }

    /// Sends one publication to the cores with subscribers, encoded once per
    /// format somebody subscribes with, and stamped with `now`, the moment
    /// it was sequenced.
    fn fan_out(
        &mut self,
        room: &RoomName,
        offset: protocol::Offset,
        data: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) {
        self.top.published(room);
        if let Some(interest) = self.interest.get(room) {
            let frames = frames_for(interest, |codec| frame::message(codec, room, offset, data));
            send_to_each(cores_of(interest), frames, out, |frames| {
                FromHome::Deliver {
                    room: room.clone(),
                    offset,
                    frames,
                    sequenced_at: now,
                }
            });
        }
    }

    /// A publication's answer: fan it out (encoded once per format somebody
    /// subscribes with) and ack it; a duplicate goes to no one; a failure is
    /// reported and never acked. A publication nobody subscribes to is
    /// still sequenced (its offset is part of the room's order) but not
    /// encoded.
    fn published(
        &mut self,
        room: &RoomName,
        data: &[u8],
        reply_to: ReplyTo,
        outcome: Outcome,
        now: Instant,
        out: &mut Outbox,
    ) {
        let published = expect(outcome, |a| match a {
            Answer::Published(p) => Some(p),
            _ => None,
        });
        let published = match published {
            Ok(published) => published,
            Err(error) => {
                let outcome = error.outcome();
                out.push((
                    reply_to.core(),
                    FromHome::Reply {
                        to: reply_to,
                        outcome,
                    },
                ));
                return;
            }
        };
        let counters = self.stats.counters();
        let offset = published.position.offset;
        if published.duplicate {
            metrics::add(&counters.duplicate_publishes, 1);
        } else {
            metrics::add(&counters.publishes, 1);
            if self.delivery == Delivery::OnAnswer {
                self.fan_out(room, offset, data, now, out);
            }
        }
        if reply_to.wants_success() {
            // A waiter (the HTTP API) is told the epoch too: it has no
            // subscribe ack to learn it from. The wire's publish ack has none.
            let epoch = match reply_to {
                ReplyTo::Waiter { .. } => published.position.epoch,
                ReplyTo::Connection { .. } => Epoch::default(),
            };
            let ack = Ack {
                offset,
                epoch,
                duplicate: published.duplicate,
                ..Ack::default()
            };
            let outcome = protocol::Outcome::Ack(ack);
            out.push((
                reply_to.core(),
                FromHome::Reply {
                    to: reply_to,
                    outcome,
                },
            ));
        }
    }

    /// Sends a join or leave event to the cores with subscribers, when the
    /// room has join and leave events.
    fn presence_event(
        &self,
        room: &RoomName,
        change: PresenceChange,
        info: &ClientInfo,
        out: &mut Outbox,
    ) {
        if !self.rooms.options(room.as_str()).join_leave {
            return;
        }
        let Some(interest) = self.interest.get(room) else {
            return;
        };
        let frames = frames_for(interest, |codec| frame::presence(codec, change, room, info));
        send_to_each(cores_of(interest), frames, out, |frames| {
            FromHome::PresenceEvent {
                room: room.clone(),
                frames,
            }
        });
    }

    /// Steps waiting for an engine answer or for an earlier step's.
    /// The `n` busiest rooms homed here since the last call (sampled).
    pub(crate) fn top_rooms(&mut self, n: usize) -> Vec<RoomCount> {
        self.top.take(n)
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.room_of.len()
    }

    /// Whether the engine must keep `room` even when it keeps nothing:
    /// somebody subscribes to it, or a step on it is outstanding.
    pub(crate) fn in_use(&self, room: &RoomName) -> bool {
        self.interest.contains_key(room) || self.outstanding.contains_key(room)
    }
}

/// The cores with subscribers of a room, whatever their format.
fn cores_of(interest: &PerFormat<CoreSet>) -> CoreSet {
    interest
        .values()
        .fold(CoreSet::default(), |all, cores| all.union(*cores))
}

/// Sends one message with `frames` to each of `cores`: the frames are
/// shared by reference, and the last core gets the original (one reference
/// count less per publication than cloning for every core).
fn send_to_each(
    cores: CoreSet,
    frames: Frames,
    out: &mut Outbox,
    message: impl Fn(Frames) -> FromHome,
) {
    let mut cores = cores.iter().peekable();
    while let Some(core) = cores.next() {
        if cores.peek().is_none() {
            return out.push((core, message(frames)));
        }
        out.push((core, message(frames.clone())));
    }
}

/// One frame per format somebody subscribes with.
fn frames_for(interest: &PerFormat<CoreSet>, build: impl Fn(protocol::Codec) -> Bytes) -> Frames {
    let mut frames = Frames::default();
    for (format, cores) in interest.iter() {
        if !cores.is_empty() {
            frames[format] = Some(build(format.codec()));
        }
    }
    frames
}

/// The answer of the expected kind, or the error.
fn expect<T>(outcome: Outcome, pick: impl FnOnce(Answer) -> Option<T>) -> Result<T, EngineError> {
    outcome.and_then(|answer| pick(answer).ok_or_else(mismatched))
}

/// An engine that answered an operation with another operation's answer:
/// a bug in the engine, reported to the asker as unavailability.
fn mismatched() -> EngineError {
    EngineError::Unavailable("the engine answered another operation".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig, MemoryEngine};
    use crate::protocol::{Offset, RequestId};
    use crate::router::{ConnId, WaiterId};
    use crate::rules::{RoomOptions, RoomRules};
    use std::time::Duration;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn policy() -> RoomPolicy {
        RoomPolicy::new(
            RoomRules::default(),
            RoomOptions {
                history_size: 0,
                history_ttl: Duration::from_secs(1),
                presence: true,
                join_leave: true,
            },
        )
    }

    fn home() -> (Home, MemoryEngine) {
        let engine = MemoryEngine::new(EngineConfig {
            rooms: policy(),
            idempotency_window: Duration::from_secs(1),
            idempotency_max_keys: 10,
        });
        (
            Home::new(policy(), 100, Delivery::OnAnswer, CoreStats::detached()),
            engine,
        )
    }

    /// Runs one step the way the driver does, with an engine that answers
    /// at once; returns what the home sends.
    fn run(home: &mut Home, engine: &mut MemoryEngine, room: &RoomName, step: Step) -> Outbox {
        let mut out = Outbox::new();
        let now = Instant::now();
        let Begun::Idle { ticket, op, then } = home.begin(room, step) else {
            panic!("nothing is outstanding with an engine that answers at once")
        };
        let outcome = match op {
            Some(op) => engine
                .start(ticket, room, op, now)
                .expect("answered at once"),
            None => Ok(Answer::Nothing),
        };
        home.finish(room, then, outcome, now, &mut out);
        out
    }

    fn publish(key: Option<&str>) -> Step {
        Step::Publish {
            data: Bytes::from_static(b"x"),
            key: key.map(IdempotencyKey::new),
            reply_to: ReplyTo::Connection {
                core: CoreId(0),
                conn: ConnId(1),
                request: RequestId(5),
            },
        }
    }

    fn deliveries(out: &Outbox) -> Vec<(CoreId, Offset, Frames)> {
        out.iter()
            .filter_map(|(core, msg)| match msg {
                FromHome::Deliver { offset, frames, .. } => Some((*core, *offset, frames.clone())),
                _ => None,
            })
            .collect()
    }

    fn acked_offset(out: &Outbox) -> Option<(Offset, bool)> {
        out.iter().find_map(|(_, msg)| match msg {
            FromHome::Reply {
                outcome: protocol::Outcome::Ack(ack),
                ..
            } => Some((ack.offset, ack.duplicate)),
            _ => None,
        })
    }

    #[test]
    fn encodes_only_for_formats_with_subscribers_and_targets_their_cores() {
        let (mut home, mut engine) = home();
        let r = room("ticks.btc");
        let out = run(&mut home, &mut engine, &r, publish(None));
        assert!(deliveries(&out).is_empty());
        let interest = Step::Interest {
            format: Format::Proto,
            core: CoreId(3),
        };
        let out = run(&mut home, &mut engine, &r, interest);
        let [(
            CoreId(3),
            FromHome::Interested {
                position: Ok(at), ..
            },
        )] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(at.offset, Offset(1));
        let out = run(&mut home, &mut engine, &r, publish(None));
        let sent = deliveries(&out);
        assert_eq!(sent.len(), 1);
        let (core, offset, frames) = &sent[0];
        assert_eq!((*core, *offset), (CoreId(3), Offset(2)));
        assert!(frames[Format::MsgPack].is_none());
        assert!(frames[Format::Proto].is_some());
        let disinterest = Step::Disinterest {
            format: Format::Proto,
            core: CoreId(3),
        };
        run(&mut home, &mut engine, &r, disinterest);
        assert!(deliveries(&run(&mut home, &mut engine, &r, publish(None))).is_empty());
    }

    #[test]
    fn a_duplicate_publish_goes_to_no_one() {
        let (mut home, mut engine) = home();
        let r = room("orders");
        let interest = Step::Interest {
            format: Format::MsgPack,
            core: CoreId(0),
        };
        run(&mut home, &mut engine, &r, interest);
        let first = run(&mut home, &mut engine, &r, publish(Some("k")));
        assert!(!deliveries(&first).is_empty());
        let again = run(&mut home, &mut engine, &r, publish(Some("k")));
        assert!(deliveries(&again).is_empty());
        assert_eq!(acked_offset(&again), Some((Offset(1), true)));
    }

    #[test]
    fn joins_and_leaves_become_events_for_the_cores_with_subscribers() {
        let (mut home, mut engine) = home();
        let r = room("lobby");
        let info = ClientInfo {
            client: "n-0-1".into(),
            ..ClientInfo::default()
        };
        let presence = |change| Step::Presence {
            change,
            info: info.clone(),
        };
        let events = |out: &Outbox| -> Vec<CoreId> {
            out.iter()
                .filter(|(_, m)| matches!(m, FromHome::PresenceEvent { .. }))
                .map(|(core, _)| *core)
                .collect()
        };
        let interest = Step::Interest {
            format: Format::MsgPack,
            core: CoreId(1),
        };
        run(&mut home, &mut engine, &r, interest);
        let join = run(&mut home, &mut engine, &r, presence(PresenceChange::Join));
        assert_eq!(events(&join), vec![CoreId(1)]);
        let again = run(&mut home, &mut engine, &r, presence(PresenceChange::Join));
        assert!(events(&again).is_empty(), "no second join");
        let leave = run(&mut home, &mut engine, &r, presence(PresenceChange::Leave));
        assert_eq!(events(&leave), vec![CoreId(1)]);
        let again = run(&mut home, &mut engine, &r, presence(PresenceChange::Leave));
        assert!(events(&again).is_empty(), "no second leave");
    }

    /// An engine that answers late and out of order: the home must still
    /// act on each room's answers in the order the steps were begun. Here
    /// a core's interest is answered after the next publication's answer:
    /// the core must hear `Interested` first, then the delivery.
    #[test]
    fn answers_that_overtake_earlier_ones_wait_for_them() {
        let (mut home, mut engine) = home();
        let (r, other) = (room("ticks"), room("other"));
        let now = Instant::now();
        let mut started = Vec::new();
        let mut begin = |home: &mut Home, room: &RoomName, step| match home.begin(room, step) {
            Begun::Idle { ticket, op, then } => {
                home.wait(room, ticket, then);
                let outcome = engine.start(ticket, room, op.expect("an engine step"), now);
                started.push((ticket, outcome.expect("memory answers")));
            }
            Begun::Queued { ticket, op } => {
                let outcome = engine.start(ticket, room, op.expect("an engine step"), now);
                started.push((ticket, outcome.expect("memory answers")));
            }
        };
        let interest = Step::Interest {
            format: Format::MsgPack,
            core: CoreId(2),
        };
        begin(&mut home, &r, interest);
        begin(&mut home, &r, publish(None));
        let query = Step::Query {
            query: Query::Presence,
            reply_to: ReplyTo::Waiter {
                core: CoreId(0),
                waiter: WaiterId(9),
            },
        };
        begin(&mut home, &other, query);
        let mut answers = started.into_iter();
        let (interest, publication, query) = (
            answers.next().unwrap(),
            answers.next().unwrap(),
            answers.next().unwrap(),
        );
        // Answers arrive backwards: the other room's first, then the
        // publication, then the interest.
        let mut out = Outbox::new();
        home.answer(query.0, query.1, now, &mut out);
        assert_eq!(out.len(), 1, "another room's answer is not held back");
        out.clear();
        home.answer(publication.0, publication.1, now, &mut out);
        assert!(out.is_empty(), "held until the interest's answer is in");
        home.answer(interest.0, interest.1, now, &mut out);
        let order: Vec<&str> = out
            .iter()
            .map(|(_, msg)| match msg {
                FromHome::Interested { .. } => "interested",
                FromHome::Deliver { .. } => "deliver",
                FromHome::Reply { .. } => "ack",
                _ => "other",
            })
            .collect();
        assert_eq!(order, vec!["interested", "deliver", "ack"]);
        let Some((
            _,
            FromHome::Interested {
                position: Ok(at), ..
            },
        )) = out.first()
        else {
            panic!("{out:?}")
        };
        assert_eq!(at.offset, Offset(0), "the position before the publication");
        assert!(!home.in_use(&other) && home.in_use(&r));
    }

    #[test]
    fn a_publication_the_engine_could_not_store_is_refused_never_acked_or_sent() {
        let (mut home, _) = home();
        let r = room("ticks");
        let mut out = Outbox::new();
        let interest = Step::Interest {
            format: Format::MsgPack,
            core: CoreId(1),
        };
        let Begun::Idle { then, .. } = home.begin(&r, interest) else {
            panic!()
        };
        let position = StreamPosition::default();
        let now = Instant::now();
        home.finish(&r, then, Ok(Answer::Position(position)), now, &mut out);
        out.clear();
        let Begun::Idle { then, .. } = home.begin(&r, publish(None)) else {
            panic!()
        };
        let down = EngineError::Unavailable("down".into());
        home.finish(&r, then, Err(down), now, &mut out);
        assert!(deliveries(&out).is_empty());
        assert!(acked_offset(&out).is_none());
        assert!(matches!(
            &out[..],
            [(
                CoreId(0),
                FromHome::Reply {
                    outcome: protocol::Outcome::Error { code: 110, .. },
                    ..
                }
            )]
        ));
    }
}
