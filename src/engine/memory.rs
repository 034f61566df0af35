//! The in-memory engine: each home core keeps its rooms' state in its own
//! maps. History is lost with the process, which is what epochs are for: a
//! restarted node gives every room a new epoch, so a client resuming with an
//! old one learns it must reload instead of silently missing messages.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};

use super::{
    Answer, Engine, EngineConfig, EngineError, EngineEvent, Op, Outcome, Published, Recovery,
    Ticket,
};
use crate::protocol::{
    ClientInfo, Epoch, HistoryPage, HistoryQuery, IdempotencyKey, Offset, PresenceCounts,
    Publication, RoomName, StreamPosition,
};
use crate::rules::RoomOptions;

struct Stored {
    offset: Offset,
    data: Bytes,
    expires: Instant,
}

struct Remembered {
    key: Bytes,
    expires: Instant,
}

/// One room's state.
struct Room {
    options: RoomOptions,
    epoch: Epoch,
    offset: Offset,
    /// Contiguous offsets, oldest first: trimming only ever drops the front,
    /// so "the oldest kept offset" is all recovery needs to decide.
    history: VecDeque<Stored>,
    /// Idempotency keys and the offset each was given, with their order of
    /// arrival (which is also their order of expiry).
    keys: HashMap<Bytes, Offset>,
    key_order: VecDeque<Remembered>,
    presence: HashMap<String, ClientInfo>,
}

impl Room {
    fn new(options: RoomOptions) -> Room {
        Room {
            options,
            epoch: Epoch::random(),
            offset: Offset(0),
            history: VecDeque::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
            presence: HashMap::new(),
        }
    }

    pub(crate) fn position(&self) -> StreamPosition {
        StreamPosition {
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }

    fn trim(&mut self, now: Instant) {
        while self.history.len() > self.options.history_size {
            self.history.pop_front();
        }
        while self.history.front().is_some_and(|s| s.expires <= now) {
            self.history.pop_front();
        }
        while let Some(oldest) = self.key_order.front() {
            if oldest.expires > now {
                break;
            }
            self.keys.remove(&oldest.key);
            self.key_order.pop_front();
        }
    }

    fn forget_oldest_key(&mut self) {
        if let Some(oldest) = self.key_order.pop_front() {
            self.keys.remove(&oldest.key);
        }
    }

    fn keeps_nothing(&self) -> bool {
        self.history.is_empty() && self.keys.is_empty() && self.presence.is_empty()
    }
}

/// Room state in this core's memory. Every answer is immediate.
pub(crate) struct MemoryEngine {
    config: EngineConfig,
    rooms: HashMap<RoomName, Room>,
}

impl MemoryEngine {
    pub(crate) fn new(config: EngineConfig) -> MemoryEngine {
        MemoryEngine {
            config,
            rooms: HashMap::new(),
        }
    }

    fn room(&mut self, name: &RoomName, now: Instant) -> &mut Room {
        if !self.rooms.contains_key(name) {
            let options = self.config.rooms.options(name.as_str());
            self.rooms.insert(name.detached(), Room::new(options));
        }
        let room = self
            .rooms
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("inserted above"));
        room.trim(now);
        room
    }

    fn not_enabled(room: &RoomName, what: &'static str) -> EngineError {
        EngineError::NotEnabled {
            room: room.to_string(),
            what,
        }
    }
}

impl Engine for MemoryEngine {
    fn start(&mut self, _: Ticket, room: &RoomName, op: Op, now: Instant) -> Option<Outcome> {
        Some(match op {
            Op::Publish { data, key } => Ok(Answer::Published(self.publish(
                room,
                &data,
                key.as_ref(),
                now,
            ))),
            Op::Position => Ok(Answer::Position(self.position(room, now))),
            Op::Recover { from } => Ok(Answer::Recovery(self.recover(room, &from, now))),
            Op::History { query, max_page } => self
                .history(room, query, max_page, now)
                .map(Answer::History),
            Op::Join(info) => Ok(Answer::Joined(self.join(room, info, now))),
            Op::Leave { client } => Ok(Answer::Left(self.leave(room, &client))),
            Op::Presence => self.presence(room, now).map(Answer::Presence),
            Op::PresenceStats => self.presence_stats(room, now).map(Answer::PresenceStats),
        })
    }

    fn poll(&mut self, _: &mut Context<'_>, _: &mut Vec<EngineEvent>) -> Poll<()> {
        Poll::Pending
    }

    fn sweep(&mut self, now: Instant, in_use: &dyn Fn(&RoomName) -> bool) {
        self.rooms.retain(|name, room| {
            room.trim(now);
            !room.keeps_nothing() || in_use(name)
        });
    }
}

/// The operations, each answered at once.
impl MemoryEngine {
    pub(crate) fn publish(
        &mut self,
        name: &RoomName,
        data: &[u8],
        key: Option<&IdempotencyKey>,
        now: Instant,
    ) -> Published {
        let (window, max_keys) = (
            self.config.idempotency_window,
            self.config.idempotency_max_keys,
        );
        let room = self.room(name, now);
        if let Some(key) = key {
            if let Some(&offset) = room.keys.get(key.as_bytes()) {
                return Published {
                    position: StreamPosition {
                        epoch: room.epoch.clone(),
                        offset,
                    },
                    duplicate: true,
                };
            }
        }
        room.offset = room.offset.next();
        if room.options.keeps_history() {
            // Copied: the payload is a slice of the publisher's receive
            // buffer, which must not stay pinned for the history's lifetime.
            room.history.push_back(Stored {
                offset: room.offset,
                data: Bytes::copy_from_slice(data),
                expires: now + room.options.history_ttl,
            });
            if room.history.len() > room.options.history_size {
                room.history.pop_front();
            }
        }
        if let Some(key) = key {
            if room.key_order.len() >= max_keys {
                room.forget_oldest_key();
            }
            let key = Bytes::copy_from_slice(key.as_bytes());
            room.keys.insert(key.clone(), room.offset);
            room.key_order.push_back(Remembered {
                key,
                expires: now + window,
            });
        }
        Published {
            position: room.position(),
            duplicate: false,
        }
    }

    pub(crate) fn position(&mut self, room: &RoomName, now: Instant) -> StreamPosition {
        self.room(room, now).position()
    }

    pub(crate) fn recover(
        &mut self,
        name: &RoomName,
        from: &StreamPosition,
        now: Instant,
    ) -> Recovery {
        let room = self.room(name, now);
        let position = room.position();
        if from.epoch != room.epoch || from.offset > room.offset {
            return Recovery::Refused { position };
        }
        if from.offset == room.offset {
            return Recovery::Recovered {
                position,
                missed: Vec::new(),
            };
        }
        // The first missed publication must still be kept.
        let first_missed = from.offset.next();
        match room.history.front() {
            Some(oldest) if oldest.offset <= first_missed => {
                let skip = (first_missed.0 - oldest.offset.0) as usize;
                let missed = room
                    .history
                    .iter()
                    .skip(skip)
                    .map(|s| Publication {
                        offset: s.offset,
                        data: s.data.clone(),
                    })
                    .collect();
                Recovery::Recovered { position, missed }
            }
            _ => Recovery::Refused { position },
        }
    }

    pub(crate) fn history(
        &mut self,
        name: &RoomName,
        query: HistoryQuery,
        max_page: usize,
        now: Instant,
    ) -> Result<HistoryPage, EngineError> {
        let room = self.room(name, now);
        if !room.options.keeps_history() {
            return Err(Self::not_enabled(name, "history"));
        }
        let limit = match query.limit {
            0 => max_page,
            n => (n as usize).min(max_page),
        };
        let as_publication = |s: &Stored| Publication {
            offset: s.offset,
            data: s.data.clone(),
        };
        let publications = if query.reverse {
            let before = if query.since.0 == 0 {
                Offset(u64::MAX)
            } else {
                query.since
            };
            room.history
                .iter()
                .rev()
                .filter(|s| s.offset < before)
                .take(limit)
                .map(as_publication)
                .collect()
        } else {
            let skip = room.history.front().map_or(0, |oldest| {
                query.since.0.saturating_sub(oldest.offset.0 - 1)
            }) as usize;
            room.history
                .iter()
                .skip(skip)
                .take(limit)
                .map(as_publication)
                .collect()
        };
        Ok(HistoryPage {
            position: room.position(),
            publications,
        })
    }

    pub(crate) fn join(&mut self, name: &RoomName, info: ClientInfo, now: Instant) -> bool {
        let room = self.room(name, now);
        if !room.options.presence {
            return false;
        }
        room.presence.insert(info.client.clone(), info).is_none()
    }

    pub(crate) fn leave(&mut self, name: &RoomName, client: &str) -> Option<ClientInfo> {
        self.rooms.get_mut(name)?.presence.remove(client)
    }

    pub(crate) fn presence(
        &mut self,
        name: &RoomName,
        now: Instant,
    ) -> Result<Vec<ClientInfo>, EngineError> {
        let room = self.room(name, now);
        if !room.options.presence {
            return Err(Self::not_enabled(name, "presence"));
        }
        let mut clients: Vec<ClientInfo> = room.presence.values().cloned().collect();
        clients.sort_by(|a, b| (a.joined_at_ms, &a.client).cmp(&(b.joined_at_ms, &b.client)));
        Ok(clients)
    }

    pub(crate) fn presence_stats(
        &mut self,
        name: &RoomName,
        now: Instant,
    ) -> Result<PresenceCounts, EngineError> {
        let room = self.room(name, now);
        if !room.options.presence {
            return Err(Self::not_enabled(name, "presence"));
        }
        let mut users: Vec<&str> = room
            .presence
            .values()
            .map(|c| c.user.as_str())
            .filter(|u| !u.is_empty())
            .collect();
        users.sort_unstable();
        users.dedup();
        Ok(PresenceCounts {
            clients: room.presence.len() as u32,
            users: users.len() as u32,
        })
    }

    /// Rooms with state.
    #[cfg(test)]
    fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::Engine;
    use crate::rules::{RoomPolicy, RoomRules};

    fn engine(history_size: usize, ttl: Duration) -> MemoryEngine {
        MemoryEngine::new(EngineConfig {
            rooms: RoomPolicy::new(
                RoomRules::default(),
                RoomOptions {
                    history_size,
                    history_ttl: ttl,
                    presence: true,
                    join_leave: true,
                },
            ),
            idempotency_window: Duration::from_secs(60),
            idempotency_max_keys: 2,
        })
    }

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn offsets(publications: &[Publication]) -> Vec<u64> {
        publications.iter().map(|p| p.offset.0).collect()
    }

    #[test]
    fn offsets_start_at_one_and_grow_by_one_per_room() {
        let mut e = engine(0, Duration::from_secs(1));
        let now = Instant::now();
        let (a, b) = (room("a"), room("b"));
        assert_eq!(e.position(&a, now).offset, Offset(0));
        assert_eq!(e.publish(&a, b"1", None, now).position.offset, Offset(1));
        assert_eq!(e.publish(&a, b"2", None, now).position.offset, Offset(2));
        assert_eq!(e.publish(&b, b"1", None, now).position.offset, Offset(1));
        assert_ne!(e.position(&a, now).epoch, e.position(&b, now).epoch);
    }

    #[test]
    fn recovery_returns_exactly_the_missed_publications_while_history_holds_them() {
        let mut e = engine(3, Duration::from_secs(60));
        let (r, now) = (room("ticks"), Instant::now());
        let epoch = e.position(&r, now).epoch;
        for n in 1..=5u8 {
            e.publish(&r, &[n], None, now);
        }
        let from = |offset| StreamPosition {
            epoch: epoch.clone(),
            offset: Offset(offset),
        };
        // Kept: 3, 4, 5.
        let Recovery::Recovered { missed, position } = e.recover(&r, &from(2), now) else {
            panic!("offsets 3..=5 are kept")
        };
        assert_eq!(offsets(&missed), vec![3, 4, 5]);
        assert_eq!(&missed[0].data[..], &[3]);
        assert_eq!(position.offset, Offset(5));
        assert!(
            matches!(e.recover(&r, &from(5), now), Recovery::Recovered { missed, .. } if missed.is_empty())
        );
        // Offset 2 was trimmed: a client at 1 cannot be made whole.
        assert!(matches!(
            e.recover(&r, &from(1), now),
            Recovery::Refused { .. }
        ));
        // A client claiming a future offset, or another epoch, is refused.
        assert!(matches!(
            e.recover(&r, &from(6), now),
            Recovery::Refused { .. }
        ));
        let other = StreamPosition {
            epoch: Epoch("elsewhere".into()),
            offset: Offset(4),
        };
        assert!(matches!(
            e.recover(&r, &other, now),
            Recovery::Refused { .. }
        ));
    }

    #[test]
    fn history_expires_after_its_ttl_and_an_unused_empty_room_gets_a_new_epoch() {
        let mut e = engine(10, Duration::from_secs(5));
        let (r, t0) = (room("ticks"), Instant::now());
        e.publish(&r, b"x", None, t0);
        let before = e.position(&r, t0);
        let later = t0 + Duration::from_secs(6);
        let from = StreamPosition {
            epoch: before.epoch.clone(),
            offset: Offset(0),
        };
        assert!(matches!(
            e.recover(&r, &from, later),
            Recovery::Refused { .. }
        ));
        e.sweep(later, &|_| true);
        assert_eq!(e.room_count(), 1, "a room in use is kept");
        assert_eq!(e.position(&r, later), before);
        e.sweep(later, &|_| false);
        assert_eq!(e.room_count(), 0);
        let after = e.position(&r, later);
        assert_eq!(after.offset, Offset(0));
        assert_ne!(after.epoch, before.epoch);
    }

    #[test]
    fn history_pages_oldest_first_after_since_and_newest_first_before_it() {
        let mut e = engine(100, Duration::from_secs(60));
        let (r, now) = (room("log"), Instant::now());
        for n in 0..10u8 {
            e.publish(&r, &[n], None, now);
        }
        let mut page = |since, limit, reverse| {
            let query = HistoryQuery {
                since: Offset(since),
                limit,
                reverse,
            };
            offsets(&e.history(&r, query, 4, now).unwrap().publications)
        };
        assert_eq!(page(0, 3, false), vec![1, 2, 3]);
        assert_eq!(page(3, 3, false), vec![4, 5, 6]);
        assert_eq!(page(8, 0, false), vec![9, 10]);
        assert_eq!(page(0, 100, false), vec![1, 2, 3, 4], "capped at max_page");
        assert_eq!(page(0, 3, true), vec![10, 9, 8]);
        assert_eq!(page(8, 3, true), vec![7, 6, 5]);
        assert_eq!(page(2, 3, true), vec![1]);
        assert_eq!(page(10, 3, false), Vec::<u64>::new());
        let mut off = engine(0, Duration::from_secs(1));
        assert!(off.history(&r, HistoryQuery::default(), 4, now).is_err());
    }

    #[test]
    fn a_retried_idempotency_key_returns_the_first_offset_and_publishes_nothing() {
        let mut e = engine(10, Duration::from_secs(60));
        let (r, now) = (room("orders"), Instant::now());
        let key = |k: &str| IdempotencyKey::new(k);
        let first = e.publish(&r, b"buy", Some(&key("a")), now);
        let retry = e.publish(&r, b"buy", Some(&key("a")), now);
        assert_eq!((first.position.offset, first.duplicate), (Offset(1), false));
        assert_eq!((retry.position.offset, retry.duplicate), (Offset(1), true));
        assert_eq!(e.position(&r, now).offset, Offset(1));
        // Two keys are remembered at most: "a" is forgotten early.
        e.publish(&r, b"x", Some(&key("b")), now);
        e.publish(&r, b"x", Some(&key("c")), now);
        assert!(!e.publish(&r, b"buy", Some(&key("a")), now).duplicate);
        // Keys expire with the window.
        let later = now + Duration::from_secs(61);
        assert!(!e.publish(&r, b"x", Some(&key("c")), later).duplicate);
    }

    #[test]
    fn presence_lists_members_in_join_order_and_counts_distinct_users() {
        let mut e = engine(0, Duration::from_secs(1));
        let (r, now) = (room("lobby"), Instant::now());
        let info = |client: &str, user: &str, at| ClientInfo {
            client: client.into(),
            user: user.into(),
            joined_at_ms: at,
        };
        assert!(e.join(&r, info("c2", "ann", 2), now));
        assert!(e.join(&r, info("c1", "ann", 1), now));
        assert!(e.join(&r, info("c3", "", 3), now));
        assert!(!e.join(&r, info("c3", "", 3), now));
        let who: Vec<String> = e
            .presence(&r, now)
            .unwrap()
            .into_iter()
            .map(|c| c.client)
            .collect();
        assert_eq!(who, vec!["c1", "c2", "c3"]);
        assert_eq!(
            e.presence_stats(&r, now).unwrap(),
            PresenceCounts {
                clients: 3,
                users: 1
            }
        );
        assert_eq!(e.leave(&r, "c2").map(|c| c.client), Some("c2".into()));
        assert_eq!(e.leave(&r, "c2"), None);
        assert_eq!(e.presence_stats(&r, now).unwrap().clients, 2);
    }
}
