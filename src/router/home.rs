//! The home side of a room: which cores want its publications, in which
//! codecs, and the steps only the home may take because they must be in the
//! room's one order: sequencing a publication (and encoding it once),
//! answering recovery and history, and turning presence changes into events.
//!
//! No I/O: each step returns what to send and to whom; the driver sends.

use std::time::Instant;

use bytes::Bytes;
use foldhash::HashMap;

use crate::engine::{Engine, EngineError, Recovery};
use crate::protocol::{
    frame, ClientInfo, Codec, ErrorCode, IdempotencyKey, Offset, Outcome, PresenceChange, Reply,
    RequestId, RoomName, StreamPosition,
};

use super::{CoreId, CoreSet, Frames, Query};

/// Which cores have local subscribers of a room, per codec.
#[derive(Debug, Default, Clone, Copy)]
struct Interest {
    by_codec: [CoreSet; 2],
}

impl Interest {
    fn cores(&self) -> CoreSet {
        self.by_codec[0].union(self.by_codec[1])
    }

    /// One frame per codec somebody subscribes with.
    fn frames(&self, build: impl Fn(Codec) -> Bytes) -> Frames {
        let frame = |codec: Codec| (!self.by_codec[codec.index()].is_empty()).then(|| build(codec));
        [frame(Codec::MsgPack), frame(Codec::Proto)]
    }
}

/// The rooms whose home is this core.
pub struct Home<E> {
    engine: E,
    interest: HashMap<RoomName, Interest>,
    history_max_page: usize,
}

/// A sequenced publication, ready to send.
pub struct Sequenced {
    pub offset: Offset,
    /// A retry of an earlier publication: nothing to send.
    pub duplicate: bool,
    pub frames: Frames,
    /// Cores with subscribers of the room (may include this one).
    pub targets: CoreSet,
}

/// Frames for some cores.
pub struct Broadcast {
    pub frames: Frames,
    pub targets: CoreSet,
}

impl<E: Engine> Home<E> {
    pub fn new(engine: E, history_max_page: usize) -> Home<E> {
        Home {
            engine,
            interest: HashMap::default(),
            history_max_page,
        }
    }

    /// Records that `core` gained (`on`) or lost its subscribers of `room` in
    /// `codec`. Returns the room's position: deliveries to `core` start after it.
    pub fn interest(
        &mut self,
        room: &RoomName,
        codec: Codec,
        core: CoreId,
        on: bool,
        now: Instant,
    ) -> StreamPosition {
        if on {
            self.interest.entry(room.detached()).or_default().by_codec[codec.index()].insert(core);
        } else if let Some(interest) = self.interest.get_mut(room) {
            interest.by_codec[codec.index()].remove(core);
            if interest.by_codec.iter().all(|set| set.is_empty()) {
                self.interest.remove(room);
            }
        }
        self.engine.position(room, now)
    }

    /// Sequences one publication and builds its frame once per codec that
    /// someone subscribes with. A publication nobody subscribes to is still
    /// sequenced (its offset is part of the room's order) but not encoded.
    pub fn publish(
        &mut self,
        room: &RoomName,
        data: &[u8],
        key: Option<&IdempotencyKey>,
        now: Instant,
    ) -> Sequenced {
        let published = self.engine.publish(room, data, key, now);
        let offset = published.position.offset;
        let interest = match self.interest.get(room) {
            Some(interest) if !published.duplicate => *interest,
            _ => Interest::default(),
        };
        Sequenced {
            offset,
            duplicate: published.duplicate,
            frames: interest.frames(|codec| frame::message(codec, room, offset, data)),
            targets: interest.cores(),
        }
    }

    /// Which publications after `from` are still kept.
    pub fn recover(&mut self, room: &RoomName, from: &StreamPosition, now: Instant) -> Recovery {
        self.engine.recover(room, from, now)
    }

    /// Answers a history or presence query with a reply frame in `codec`,
    /// and whether the reply is an error.
    pub fn query(
        &mut self,
        room: &RoomName,
        query: Query,
        codec: Codec,
        request: RequestId,
        now: Instant,
    ) -> (Bytes, bool) {
        let outcome = match query {
            Query::History(q) => self
                .engine
                .history(room, q, self.history_max_page, now)
                .map(Outcome::History),
            Query::Presence => self.engine.presence(room, now).map(Outcome::Presence),
            Query::PresenceStats => self
                .engine
                .presence_stats(room, now)
                .map(Outcome::PresenceStats),
        };
        let reply = match outcome {
            Ok(outcome) => Reply {
                id: request,
                outcome,
            },
            Err(error @ EngineError::NotEnabled { .. }) => {
                Reply::error(request, ErrorCode::NotEnabled, error.to_string())
            }
        };
        let is_error = matches!(reply.outcome, Outcome::Error { .. });
        (frame::reply(codec, &reply), is_error)
    }

    /// Applies a join or leave; returns the event to send to the cores with
    /// subscribers when the room has join and leave events.
    pub fn presence(
        &mut self,
        room: &RoomName,
        change: PresenceChange,
        info: ClientInfo,
        now: Instant,
    ) -> Option<Broadcast> {
        let info = match change {
            PresenceChange::Join => self.engine.join(room, info.clone(), now).then_some(info)?,
            PresenceChange::Leave => self.engine.leave(room, &info.client)?,
        };
        if !self.engine.options(room, now).join_leave {
            return None;
        }
        let interest = self.interest.get(room)?;
        Some(Broadcast {
            frames: interest.frames(|codec| frame::presence(codec, change, room, &info)),
            targets: interest.cores(),
        })
    }

    /// Expires history and keys, and forgets rooms nobody uses that keep nothing.
    pub fn sweep(&mut self, now: Instant) {
        let interest = &self.interest;
        self.engine
            .sweep(now, &|room: &RoomName| interest.contains_key(room));
    }

    /// Rooms whose state this core keeps.
    pub fn room_count(&self) -> usize {
        self.engine.room_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, MemoryEngine};
    use crate::rules::{RoomOptions, RoomRules};
    use std::time::Duration;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn home() -> Home<MemoryEngine> {
        Home::new(
            MemoryEngine::new(EngineConfig {
                rules: RoomRules::default(),
                defaults: RoomOptions {
                    history_size: 0,
                    history_ttl: Duration::from_secs(1),
                    presence: true,
                    join_leave: true,
                },
                idempotency_window: Duration::from_secs(1),
                idempotency_max_keys: 10,
            }),
            100,
        )
    }

    #[test]
    fn encodes_only_for_codecs_with_subscribers_and_targets_their_cores() {
        let mut home = home();
        let (r, now) = (room("ticks.btc"), Instant::now());
        assert!(home.publish(&r, b"x", None, now).targets.is_empty());
        let at = home.interest(&r, Codec::Proto, CoreId(3), true, now);
        assert_eq!(at.offset, Offset(1));
        let seq = home.publish(&r, b"y", None, now);
        assert_eq!(seq.offset, Offset(2));
        assert!(seq.frames[Codec::MsgPack.index()].is_none());
        assert!(seq.frames[Codec::Proto.index()].is_some());
        assert_eq!(seq.targets.iter().collect::<Vec<_>>(), vec![CoreId(3)]);
        home.interest(&r, Codec::Proto, CoreId(3), false, now);
        assert!(home.publish(&r, b"z", None, now).targets.is_empty());
    }

    #[test]
    fn a_duplicate_publish_goes_to_no_one() {
        let mut home = home();
        let (r, now) = (room("orders"), Instant::now());
        home.interest(&r, Codec::MsgPack, CoreId(0), true, now);
        let key = IdempotencyKey::new("k");
        assert!(!home.publish(&r, b"x", Some(&key), now).targets.is_empty());
        let again = home.publish(&r, b"x", Some(&key), now);
        assert!(again.duplicate && again.targets.is_empty());
        assert_eq!(again.offset, Offset(1));
    }

    #[test]
    fn joins_and_leaves_become_events_for_the_cores_with_subscribers() {
        let mut home = home();
        let (r, now) = (room("lobby"), Instant::now());
        let info = ClientInfo {
            client: "n-0-1".into(),
            ..ClientInfo::default()
        };
        home.interest(&r, Codec::MsgPack, CoreId(1), true, now);
        let join = home.presence(&r, PresenceChange::Join, info.clone(), now);
        assert_eq!(
            join.map(|b| b.targets),
            Some(CoreSet::from_iter([CoreId(1)]))
        );
        assert!(
            home.presence(&r, PresenceChange::Join, info.clone(), now)
                .is_none(),
            "no second join"
        );
        assert!(home
            .presence(&r, PresenceChange::Leave, info.clone(), now)
            .is_some());
        assert!(
            home.presence(&r, PresenceChange::Leave, info, now)
                .is_none(),
            "no second leave"
        );
    }
}
