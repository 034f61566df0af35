//! The Redis engine: every node of a cluster keeps its rooms in one Redis
//! (standalone, or a Redis Cluster with sharded pub/sub), so N nodes behave
//! as one broker. Nothing else in roomcast talks to Redis.
//!
//! * **One order per room, from Redis.** A publish is one script call
//!   (publish.lua) that checks the idempotency key, takes the room's next
//!   offset, appends to the room's history stream and SPUBLISHes the
//!   publication on the room's shard channel. Every node, the publisher's
//!   included, delivers from that channel: all nodes deliver the same
//!   sequence, and history and live delivery cannot disagree.
//! * **A feed without gaps.** A node subscribes to a room's channel while
//!   it has local subscribers (the first one subscribes *before* the room's
//!   position is read; messages meanwhile are held and merged by offset;
//!   the last one unsubscribes after [`UNFOLLOW_DELAY`]). Each room's feed
//!   is handed to the home in offset order: a gap (a lost message, a lagged
//!   receiver, a reconnect) is filled from the history stream first; only
//!   when history no longer holds it, or the epoch changed, is the room
//!   *lost* (`Feed::Lost`: its subscribers are closed with 4002 and learn
//!   on resume that they did not recover).
//! * **Answers in each room's start order**, with `Position` and `Recover`
//!   answered from the feed's position when they reach the front, so the
//!   home needs no more than the order of events (see `engine`).
//! * **Per core**: one command client (fred pipelines every core's
//!   commands on one connection per server) and one subscriber client for
//!   the rooms homed on that core. All commands have a timeout
//!   (`redis_command_timeout`): during an outage operations fail with error
//!   110 in bounded time, fred's queue is bounded, and fred reconnects
//!   forever with a bounded delay.
//!
//! docs/design/cluster.md has the research behind it (fred's pitfalls,
//! the key layout, the failure semantics).

pub(crate) mod keys;
mod payload;
mod scripts;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt, HashSet};
use fred::prelude::{
    Builder, ClientLike, Config as RedisConfig, Error as RedisError, ErrorKind, EventInterface,
    PubsubInterface, ReconnectPolicy, Server as RedisServer, TcpConfig,
};
use fred::types::{ClusterStateChange, Message, Value};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::{
    Answer, Delivery, Engine, EngineConfig, EngineError, EngineEvent, Feed, Op, Outcome, Published,
    Recovery, Ticket,
};
use crate::limits::{
    CHECK_BATCH, FILL_BUFFER_MAX, META_TTL_MARGIN, NODE_KEY_TTL, POSITION_CHECK, PRESENCE_REFRESH,
    PRESENCE_TTL, REDIS_MESSAGES_PER_TURN, REDIS_MESSAGE_CAPACITY, REDIS_RECONNECT_DELAY,
    UNFOLLOW_DELAY,
};
use crate::metrics::{self, CoreStats};
use crate::protocol::{
    ClientInfo, Epoch, HistoryPage, HistoryQuery, Offset, PresenceCounts, RoomName, StreamPosition,
};
use crate::rules::RoomOptions;

use keys::RoomKeys;
use payload::ChannelMessage;
use scripts::Scripts;

/// The oldest Redis with sharded pub/sub and script flags.
const MIN_REDIS_MAJOR: u32 = 7;

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub(crate) struct RedisSettings {
    /// `redis://host:port` or `redis-cluster://host:port?node=host:port`.
    pub(crate) url: String,
    /// Every command's time limit.
    pub(crate) command_timeout: Duration,
}

/// Why a node could not start on Redis.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot use redis_url={url}: {reason}")]
    Unusable { url: String, reason: String },
    #[error("redis_url={url} is Redis {version}; roomcast needs 7.0 or newer (sharded pub/sub, script flags)")]
    TooOld { url: String, version: String },
}

/// The URL with any password hidden, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

type Running = Pin<Box<dyn Future<Output = Done>>>;

/// A Redis call that came back.
enum Done {
    /// The outcome of an operation the home started.
    Answer {
        room: RoomName,
        ticket: Ticket,
        outcome: Outcome,
    },
    /// The room's channel is subscribed (or could not be).
    Subscribed {
        room: RoomName,
        generation: u64,
        result: Result<(), EngineError>,
    },
    /// The room's position, read once its channel was subscribed.
    Positioned {
        room: RoomName,
        generation: u64,
        result: Result<StreamPosition, EngineError>,
    },
    /// A range of history, to fill a gap or to recover a subscriber.
    Filled {
        room: RoomName,
        generation: u64,
        purpose: Fill,
        result: Result<scripts::Range, EngineError>,
    },
    /// The positions Redis holds for some followed rooms of one partition.
    Checked {
        rooms: Vec<(RoomName, u64)>,
        result: Result<Vec<StreamPosition>, EngineError>,
    },
    /// A call whose outcome matters to nobody (unsubscribe, refresh).
    Background(Result<(), EngineError>),
}

/// What a range of history is read for.
#[derive(Debug, Clone)]
enum Fill {
    /// The feed jumped from `after` to `upto + 1`.
    Gap { after: Offset, upto: Offset },
    /// A subscriber recovers; the room's feed is at `upto`.
    Recovery {
        ticket: Ticket,
        upto: StreamPosition,
    },
}

/// What a started operation waits for before it can be answered.
enum Wait {
    /// Its Redis reply (or nothing: `outcome` is set).
    Reply,
    /// The room's feed position.
    Position,
    /// The room's feed position, then (maybe) a range of history.
    Recover(StreamPosition),
    /// Its range of history is being read.
    Range(StreamPosition),
}

struct Pending {
    ticket: Ticket,
    wait: Wait,
    outcome: Option<Outcome>,
    started: Instant,
}

/// How far a followed room's subscription has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// SSUBSCRIBE sent; messages are held.
    Subscribing,
    /// Subscribed; its position is being read; messages are held.
    Positioning,
    /// Messages are handed over in offset order.
    Live,
    /// A resync failed (Redis unreachable); tried again at the next sweep.
    Stale,
}

/// A room this core follows: subscribed to its channel, feeding the home.
struct Follow {
    /// Bumped by every (re)subscription: a reply for an older one is stale.
    generation: u64,
    stage: Stage,
    /// The last publication handed over (absent before the first position).
    at: Option<StreamPosition>,
    /// Messages that came early: before the position, during a fill, or
    /// after a gap. Keyed by offset.
    early: BTreeMap<u64, (Epoch, Bytes)>,
    /// A range read in flight: the feed waits for it.
    filling: bool,
    /// When the home stopped using the room.
    unused_since: Option<Instant>,
    /// When the room's channel last brought a message (or the room was
    /// last checked): a room silent for [`POSITION_CHECK`] is checked.
    heard: Instant,
    /// A position check is in flight.
    checking: bool,
}

/// One room's state on its home core.
struct Room {
    keys: RoomKeys,
    options: RoomOptions,
    /// Started operations, in start order; answered from the front.
    queue: VecDeque<Pending>,
    follow: Option<Follow>,
}

/// The Redis engine of one core.
pub(crate) struct RedisEngine {
    config: EngineConfig,
    settings: RedisSettings,
    /// Names this core's publishes (nonces and keys the node makes).
    origin: String,
    commands: fred::clients::Client,
    subscriber: fred::clients::Client,
    scripts: Arc<Scripts>,
    messages: BroadcastStream<Message>,
    reconnects: BroadcastStream<RedisServer>,
    cluster_changes: BroadcastStream<Vec<ClusterStateChange>>,
    running: FuturesUnordered<Running>,
    rooms: HashMap<RoomName, Room>,
    /// Presence entries this core added, refreshed until they leave.
    owned: HashMap<RoomName, HashSet<String>>,
    events: Vec<EngineEvent>,
    /// The driver's waker, from its last poll: work that arrives outside a
    /// poll (a start from a member's task, the sweep) wakes it, since a
    /// call pushed into `running` or an event pushed into `events` is
    /// otherwise only seen at the driver's next wake-up.
    driver: Option<Waker>,
    /// Something was launched or an event pushed since the last poll.
    nudge: bool,
    generation: u64,
    last_refresh: Instant,
    stats: CoreStats,
}

impl RedisEngine {
    /// Connects one core to Redis: checks the server's version and loads
    /// the scripts. Fails when Redis cannot be reached or used.
    pub(crate) async fn connect(
        settings: RedisSettings,
        config: EngineConfig,
        origin: String,
        stats: CoreStats,
        queue_capacity: usize,
    ) -> Result<RedisEngine, ConnectError> {
        let url = redacted(&settings.url);
        let unusable = |reason: String| ConnectError::Unusable {
            url: url.clone(),
            reason,
        };
        let redis_config =
            RedisConfig::from_url(&settings.url).map_err(|e| unusable(e.to_string()))?;
        let timeout = settings.command_timeout;
        let build = |broadcast_capacity: usize| {
            let mut builder = Builder::from_config(redis_config.clone());
            builder
                .with_connection_config(|c| {
                    c.connection_timeout = timeout;
                    c.internal_command_timeout = timeout;
                    c.max_command_buffer_len = queue_capacity;
                    // Redirections are the engine's to repeat: see `scripts::run`.
                    c.max_redirections = 0;
                    c.tcp = TcpConfig {
                        nodelay: Some(true),
                        ..TcpConfig::default()
                    };
                })
                .with_performance_config(|p| {
                    p.default_command_timeout = timeout;
                    p.broadcast_channel_capacity = broadcast_capacity;
                })
                .set_policy(ReconnectPolicy::new_exponential(
                    0,
                    REDIS_RECONNECT_DELAY.0,
                    REDIS_RECONNECT_DELAY.1,
                    2,
                ));
            builder.build()
        };
        let commands = build(32).map_err(|e| unusable(e.to_string()))?;
        let subscriber = build(REDIS_MESSAGE_CAPACITY).map_err(|e| unusable(e.to_string()))?;
        // Receivers only see what is sent after they exist: take them first.
        let messages = BroadcastStream::new(subscriber.message_rx());
        let reconnects = BroadcastStream::new(subscriber.reconnect_rx());
        let cluster_changes = BroadcastStream::new(commands.cluster_change_rx());
        for client in [&commands, &subscriber] {
            match tokio::time::timeout(timeout * 5, client.init()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(unusable(error.to_string())),
                Err(_) => return Err(unusable(format!("no connection within {:?}", timeout * 5))),
            }
        }
        let info: String = commands
            .info(Some(fred::types::InfoKind::Server))
            .await
            .map_err(|e| unusable(e.to_string()))?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < MIN_REDIS_MAJOR {
            let _ = commands.quit().await;
            let _ = subscriber.quit().await;
            return Err(ConnectError::TooOld { url, version });
        }
        let scripts = Scripts::new();
        scripts
            .load(&commands)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        Ok(RedisEngine {
            config,
            settings,
            origin,
            commands,
            subscriber,
            scripts: Arc::new(scripts),
            messages,
            reconnects,
            cluster_changes,
            running: FuturesUnordered::new(),
            rooms: HashMap::new(),
            owned: HashMap::new(),
            events: Vec::new(),
            driver: None,
            nudge: false,
            generation: 0,
            last_refresh: Instant::now(),
            stats,
        })
    }

    fn room_entry(&mut self, name: &RoomName) -> &mut Room {
        if !self.rooms.contains_key(name) {
            let room = Room {
                keys: RoomKeys::new(name),
                options: self.config.rooms.options(name.as_str()),
                queue: VecDeque::new(),
                follow: None,
            };
            self.rooms.insert(name.detached(), room);
        }
        self.rooms
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Starts a Redis call now: its first poll queues the command, so calls
    /// leave in the order they are made.
    fn launch(&mut self, call: impl Future<Output = Done> + 'static) {
        self.nudge = true;
        let mut call: Running = Box::pin(call);
        match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(done) => self.on_done(done),
            Poll::Pending => self.running.push(call),
        }
    }

    /// Runs `script` (with `keys` and `args`) and hands its reply to `done`,
    /// which says what came back.
    fn call(
        &mut self,
        script: fn(&Scripts) -> &fred::types::scripts::Script,
        keys: Vec<Bytes>,
        args: Vec<Value>,
        done: impl FnOnce(Result<Value, EngineError>) -> Done + 'static,
    ) {
        let give_up = self.deadline();
        let (client, scripts) = (self.commands.clone(), self.scripts.clone());
        self.launch(async move {
            let reply = scripts::run(&client, script(&scripts), keys, args, give_up).await;
            done(reply.map_err(engine_error))
        });
    }

    /// Runs `script` for the operation `ticket` on `room`, whose answer
    /// `read` makes of the reply.
    fn answer_with(
        &mut self,
        ticket: Ticket,
        room: &RoomName,
        script: fn(&Scripts) -> &fred::types::scripts::Script,
        keys: Vec<Bytes>,
        args: Vec<Value>,
        read: impl FnOnce(Value) -> Result<Answer, EngineError> + 'static,
    ) {
        let room = room.detached();
        self.call(script, keys, args, move |reply| Done::Answer {
            room,
            ticket,
            outcome: reply.and_then(read),
        });
    }

    /// When a call started now must have its answer.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.settings.command_timeout
    }

    fn meta_ttl(&self, options: &RoomOptions) -> Duration {
        options.history_ttl.max(self.config.idempotency_window) + META_TTL_MARGIN
    }

    // Operations.

    fn start_publish(
        &mut self,
        ticket: Ticket,
        name: &RoomName,
        data: Bytes,
        key: Option<crate::protocol::IdempotencyKey>,
    ) {
        let nonce = format!("{}:{}", self.origin, ticket.0);
        let window = self.config.idempotency_window;
        let room = self.room_entry(name);
        let (key, key_ttl) = match &key {
            Some(key) => (room.keys.idempotency(name, key.as_bytes()), window),
            None => (room.keys.idempotency(name, nonce.as_bytes()), NODE_KEY_TTL),
        };
        let options = room.options;
        let keys = vec![
            room.keys.meta.clone(),
            room.keys.stream.clone(),
            key,
            room.keys.channel.clone(),
        ];
        let meta_ttl = self.meta_ttl(&options);
        let args = vec![
            Value::Bytes(data),
            Value::from(Epoch::random().0),
            Value::from(options.history_size as i64),
            Value::from(millis(options.history_ttl)),
            Value::from(millis(meta_ttl)),
            Value::from(millis(key_ttl)),
            Value::from(nonce),
        ];
        self.answer_with(
            ticket,
            name,
            |s| &s.publish,
            keys,
            args,
            |value| {
                let (position, duplicate) = scripts::published(value).map_err(malformed)?;
                Ok(Answer::Published(Published {
                    position,
                    duplicate,
                }))
            },
        );
    }

    fn start_history(
        &mut self,
        ticket: Ticket,
        name: &RoomName,
        query: HistoryQuery,
        max_page: usize,
    ) {
        let room = self.room_entry(name);
        let limit = match query.limit {
            0 => max_page,
            n => (n as usize).min(max_page),
        };
        let keys = vec![room.keys.meta.clone(), room.keys.stream.clone()];
        let args = vec![
            Value::from(query.since.0 as i64),
            Value::from(limit as i64),
            Value::from(if query.reverse { "1" } else { "0" }),
            Value::from(millis(room.options.history_ttl)),
        ];
        self.answer_with(
            ticket,
            name,
            |s| &s.history,
            keys,
            args,
            |value| {
                let (position, publications) = scripts::history(value).map_err(malformed)?;
                Ok(Answer::History(HistoryPage {
                    position,
                    publications,
                }))
            },
        );
    }

    fn start_join(&mut self, ticket: Ticket, name: &RoomName, info: ClientInfo) {
        self.owned
            .entry(name.detached())
            .or_default()
            .insert(info.client.clone());
        let room = self.room_entry(name);
        let keys = presence_keys(&room.keys);
        let args = vec![
            Value::from(info.client.clone()),
            Value::Bytes(payload::encode_info(&info).into()),
            Value::from(millis(PRESENCE_TTL)),
            Value::from(flag(room.options.join_leave)),
        ];
        self.answer_with(
            ticket,
            name,
            |s| &s.join,
            keys,
            args,
            |added| Ok(Answer::Joined(scripts::number(&added) == Some(1))),
        );
    }

    fn start_leave(&mut self, ticket: Ticket, name: &RoomName, client_id: String) {
        if let Some(owned) = self.owned.get_mut(name) {
            owned.remove(&client_id);
            if owned.is_empty() {
                self.owned.remove(name);
            }
        }
        let room = self.room_entry(name);
        let keys = presence_keys(&room.keys);
        let args = vec![
            Value::from(client_id),
            Value::from(flag(room.options.join_leave)),
        ];
        self.answer_with(
            ticket,
            name,
            |s| &s.leave,
            keys,
            args,
            |entry| {
                let info = scripts::bytes(entry).and_then(|b| payload::decode_info(&b));
                Ok(Answer::Left(info))
            },
        );
    }

    fn start_presence(&mut self, ticket: Ticket, name: &RoomName, stats_only: bool) {
        let room = self.room_entry(name);
        let keys = presence_keys(&room.keys);
        let args = vec![Value::from(flag(room.options.join_leave))];
        self.answer_with(
            ticket,
            name,
            |s| &s.presence,
            keys,
            args,
            move |entries| {
                let mut clients: Vec<ClientInfo> = entries
                    .into_array()
                    .into_iter()
                    .filter_map(|e| payload::decode_info(&scripts::bytes(e)?))
                    .collect();
                if stats_only {
                    let users: HashSet<&str> = clients
                        .iter()
                        .map(|c| c.user.as_str())
                        .filter(|u| !u.is_empty())
                        .collect();
                    return Ok(Answer::PresenceStats(PresenceCounts {
                        clients: clients.len() as u32,
                        users: users.len() as u32,
                    }));
                }
                clients
                    .sort_by(|a, b| (a.joined_at_ms, &a.client).cmp(&(b.joined_at_ms, &b.client)));
                Ok(Answer::Presence(clients))
            },
        );
    }

    // Following a room.

    /// Subscribes to the room's channel unless it is already followed.
    fn follow(&mut self, name: &RoomName) {
        self.generation += 1;
        let generation = self.generation;
        let room = self.room_entry(name);
        if let Some(follow) = &mut room.follow {
            follow.unused_since = None;
            return;
        }
        room.follow = Some(Follow {
            generation,
            stage: Stage::Subscribing,
            at: None,
            early: BTreeMap::new(),
            filling: false,
            unused_since: None,
            heard: Instant::now(),
            checking: false,
        });
        self.subscribe(name, generation);
    }

    /// SSUBSCRIBE, one channel per command (fred 10 takes the first of a
    /// multi-channel confirmation as the reply and would hand the others
    /// to later commands), then the room's position.
    fn subscribe(&mut self, name: &RoomName, generation: u64) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let channel = std::str::from_utf8(&room.keys.channel)
            .ok()
            .map(str::to_owned);
        let (subscriber, room) = (self.subscriber.clone(), name.detached());
        self.launch(async move {
            let result = match channel {
                Some(channel) => subscriber.ssubscribe(channel).await.map_err(engine_error),
                None => Err(EngineError::Unavailable(
                    "room name is not a channel".into(),
                )),
            };
            Done::Subscribed {
                room,
                generation,
                result,
            }
        });
    }

    fn read_position(&mut self, name: &RoomName, generation: u64) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let keys = vec![room.keys.meta.clone(), room.keys.stream.clone()];
        let args = vec![
            Value::from(millis(self.meta_ttl(&room.options))),
            Value::from(Epoch::random().0),
        ];
        let room = name.detached();
        self.call(
            |s| &s.follow,
            keys,
            args,
            move |reply| Done::Positioned {
                room,
                generation,
                result: reply.and_then(|v| scripts::followed(v).map_err(malformed)),
            },
        );
    }

    /// Gives the room a new epoch after its offset went backwards.
    fn rebase(&mut self, name: &RoomName, generation: u64, seen: Epoch) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let keys = vec![room.keys.meta.clone(), room.keys.stream.clone()];
        let args = vec![Value::from(seen.0), Value::from(Epoch::random().0)];
        let room = name.detached();
        self.call(
            |s| &s.rebase,
            keys,
            args,
            move |reply| Done::Positioned {
                room,
                generation,
                result: reply.and_then(|v| scripts::followed(v).map_err(malformed)),
            },
        );
    }

    fn read_range(&mut self, name: &RoomName, from: Offset, to: Offset, purpose: Fill) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(follow) = &mut room.follow else {
            return;
        };
        follow.filling = true;
        let generation = follow.generation;
        let keys = vec![room.keys.meta.clone(), room.keys.stream.clone()];
        let args = vec![
            Value::from(from.0 as i64),
            Value::from(to.0 as i64),
            Value::from(millis(room.options.history_ttl)),
        ];
        let room = name.detached();
        self.call(
            |s| &s.range,
            keys,
            args,
            move |reply| Done::Filled {
                room,
                generation,
                purpose,
                result: reply.and_then(|v| scripts::range(v).map_err(malformed)),
            },
        );
    }

    /// Every followed room is subscribed again and its position checked
    /// against the feed's: after a reconnect, a lagged receiver or a
    /// cluster change, messages may have been missed.
    fn resync_all(&mut self) {
        let names: Vec<RoomName> = self
            .rooms
            .iter()
            .filter(|(_, room)| room.follow.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        metrics::add(&self.stats.counters().redis_resyncs, 1);
        for name in names {
            self.resync(&name);
        }
    }

    fn resync(&mut self, name: &RoomName) {
        self.generation += 1;
        let generation = self.generation;
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(follow) = &mut room.follow else {
            return;
        };
        follow.generation = generation;
        follow.stage = Stage::Subscribing;
        follow.filling = false;
        // A recovery whose range read is now stale decides again.
        for pending in room.queue.iter_mut() {
            if let Wait::Range(from) = &pending.wait {
                if pending.outcome.is_none() {
                    pending.wait = Wait::Recover(from.clone());
                }
            }
        }
        self.subscribe(name, generation);
    }

    // Replies.

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Answer {
                room,
                ticket,
                outcome,
            } => {
                if let Some(state) = self.rooms.get_mut(&room) {
                    if let Some(p) = state.queue.iter_mut().find(|p| p.ticket == ticket) {
                        p.outcome = Some(outcome);
                    }
                }
                self.settle(&room);
            }
            Done::Subscribed {
                room,
                generation,
                result,
            } => {
                if !self.is_current(&room, generation) {
                    return;
                }
                match result {
                    Ok(()) => {
                        self.set_stage(&room, Stage::Positioning);
                        self.read_position(&room, generation);
                    }
                    Err(error) => self.follow_failed(&room, error),
                }
            }
            Done::Positioned {
                room,
                generation,
                result,
            } => {
                if !self.is_current(&room, generation) {
                    return;
                }
                match result {
                    Ok(position) => self.positioned(&room, generation, position),
                    Err(error) => self.follow_failed(&room, error),
                }
            }
            Done::Filled {
                room,
                generation,
                purpose,
                result,
            } => {
                if !self.is_current(&room, generation) {
                    return;
                }
                if let Some(follow) = self.rooms.get_mut(&room).and_then(|r| r.follow.as_mut()) {
                    follow.filling = false;
                }
                match purpose {
                    Fill::Gap { after, upto } => self.gap_filled(&room, after, upto, result),
                    Fill::Recovery { ticket, upto } => {
                        let outcome = result.map(|range| {
                            let complete = range.position.epoch == upto.epoch;
                            match range.publications {
                                Some(missed) if complete => Answer::Recovery(Recovery::Recovered {
                                    position: upto.clone(),
                                    missed,
                                }),
                                _ => Answer::Recovery(Recovery::Refused {
                                    position: upto.clone(),
                                }),
                            }
                        });
                        if let Some(state) = self.rooms.get_mut(&room) {
                            if let Some(p) = state.queue.iter_mut().find(|p| p.ticket == ticket) {
                                p.wait = Wait::Reply;
                                p.outcome = Some(outcome);
                            }
                        }
                        self.settle(&room);
                        self.drain_early(&room);
                    }
                }
            }
            Done::Checked { rooms, result } => self.checked(rooms, result),
            Done::Background(result) => {
                if result.is_err() {
                    metrics::add(&self.stats.counters().engine_failures, 1);
                }
            }
        }
    }

    fn is_current(&self, room: &RoomName, generation: u64) -> bool {
        self.rooms
            .get(room)
            .and_then(|r| r.follow.as_ref())
            .is_some_and(|f| f.generation == generation)
    }

    fn set_stage(&mut self, room: &RoomName, stage: Stage) {
        if let Some(follow) = self.rooms.get_mut(room).and_then(|r| r.follow.as_mut()) {
            follow.stage = stage;
        }
    }

    /// A first subscription failed: the operations waiting for it fail
    /// too, and the next one tries again. A resubscription that failed is
    /// tried again by the sweep.
    fn follow_failed(&mut self, name: &RoomName, error: EngineError) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(follow) = &mut room.follow else {
            return;
        };
        if follow.at.is_some() {
            follow.stage = Stage::Stale;
            return;
        }
        room.follow = None;
        for pending in room.queue.iter_mut() {
            if matches!(pending.wait, Wait::Position | Wait::Recover(_)) {
                pending.wait = Wait::Reply;
                pending.outcome = Some(Err(error.clone()));
            }
        }
        self.settle(name);
    }

    /// The room's position, read once its channel was subscribed: the feed
    /// starts (or, after a resubscription, goes on) from here.
    fn positioned(&mut self, name: &RoomName, generation: u64, redis: StreamPosition) {
        let Some(follow) = self.rooms.get_mut(name).and_then(|r| r.follow.as_mut()) else {
            return;
        };
        follow.stage = Stage::Live;
        let Some(at) = follow.at.clone() else {
            follow.at = Some(redis);
            self.settle(name);
            self.drain_early(name);
            return;
        };
        if at.epoch != redis.epoch {
            self.lose(name, redis);
        } else if redis.offset < at.offset {
            // Redis went back in time under the same epoch (an older
            // snapshot): the offsets after it would be given again.
            follow.stage = Stage::Positioning;
            self.rebase(name, generation, at.epoch);
            return;
        } else if redis.offset > at.offset {
            // Missed while not subscribed: filled from history first.
            let (after, upto) = (at.offset, redis.offset);
            self.read_range(name, after.next(), upto, Fill::Gap { after, upto });
            return;
        }
        self.settle(name);
        self.drain_early(name);
    }

    fn gap_filled(
        &mut self,
        name: &RoomName,
        after: Offset,
        upto: Offset,
        result: Result<scripts::Range, EngineError>,
    ) {
        let Some(at) = self
            .rooms
            .get(name)
            .and_then(|r| r.follow.as_ref())
            .and_then(|f| f.at.clone())
        else {
            return;
        };
        match result {
            Ok(range) => match range.publications {
                Some(publications) if range.position.epoch == at.epoch && at.offset == after => {
                    metrics::add(&self.stats.counters().redis_gap_fills, 1);
                    for publication in publications {
                        self.hand_over(name, &at.epoch, publication.offset, publication.data);
                    }
                }
                _ => {
                    // History no longer holds the gap: the order is lost.
                    let position = StreamPosition {
                        epoch: at.epoch,
                        offset: upto,
                    };
                    self.lose(name, position);
                }
            },
            // Redis is unreachable: the held messages wait, and the next
            // message or sweep tries again.
            Err(_) => return,
        }
        self.settle(name);
        self.drain_early(name);
    }

    /// The room's order is lost: the home closes its subscribers, and the
    /// feed goes on after `position`.
    fn lose(&mut self, name: &RoomName, position: StreamPosition) {
        if let Some(follow) = self.rooms.get_mut(name).and_then(|r| r.follow.as_mut()) {
            follow.at = Some(position.clone());
            follow.early.retain(|&offset, (epoch, _)| {
                *epoch == position.epoch && offset > position.offset.0
            });
        }
        self.events
            .push(EngineEvent::Feed(name.clone(), Feed::Lost { position }));
    }

    /// Hands the next publication to the home, if it is the next.
    fn hand_over(&mut self, name: &RoomName, epoch: &Epoch, offset: Offset, data: Bytes) {
        let Some(follow) = self.rooms.get_mut(name).and_then(|r| r.follow.as_mut()) else {
            return;
        };
        let Some(at) = &mut follow.at else {
            return;
        };
        if at.epoch == *epoch && offset == at.offset.next() {
            at.offset = offset;
            self.events.push(EngineEvent::Feed(
                name.clone(),
                Feed::Publication { offset, data },
            ));
        }
    }

    /// A publication from the room's channel: the next one is handed over
    /// in place (one lookup, nothing cloned: this runs per message).
    fn on_publication(&mut self, name: &RoomName, epoch: Epoch, offset: Offset, data: Bytes) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let waiting = !room.queue.is_empty();
        let Some(follow) = room.follow.as_mut() else {
            return;
        };
        let live = follow.stage == Stage::Live && !follow.filling;
        let at = match &mut follow.at {
            Some(at) if live => at,
            _ => return hold(follow, epoch, offset, data),
        };
        if epoch != at.epoch {
            // Another epoch: Redis lost the room (restarted without
            // persistence) and a publish began it again.
            let position = StreamPosition {
                epoch: epoch.clone(),
                offset: Offset(offset.0.saturating_sub(1)),
            };
            self.lose(name, position);
            self.hand_over(name, &epoch, offset, data);
        } else if offset <= at.offset {
            return; // Seen already (a resubscription overlaps).
        } else if offset > at.offset.next() {
            let after = at.offset;
            hold(follow, epoch, offset, data);
            let upto = Offset(offset.0 - 1);
            self.read_range(name, after.next(), upto, Fill::Gap { after, upto });
            return;
        } else {
            at.offset = offset;
            let item = Feed::Publication { offset, data };
            self.events.push(EngineEvent::Feed(name.clone(), item));
        }
        // A recovery may be parked until the feed reaches its offset.
        if waiting {
            self.settle(name);
        }
    }

    /// Feeds the messages held back, in order, until one has to wait again.
    fn drain_early(&mut self, name: &RoomName) {
        loop {
            let Some(follow) = self.rooms.get_mut(name).and_then(|r| r.follow.as_mut()) else {
                return;
            };
            if follow.stage != Stage::Live || follow.filling {
                return;
            }
            let Some((offset, (epoch, data))) = follow.early.pop_first() else {
                return;
            };
            self.on_publication(name, epoch, Offset(offset), data);
        }
    }

    /// Answers the room's operations from the front, as far as they can be.
    fn settle(&mut self, name: &RoomName) {
        let timeout = self.settings.command_timeout;
        loop {
            let Some(room) = self.rooms.get_mut(name) else {
                return;
            };
            let live = room
                .follow
                .as_ref()
                .filter(|f| f.stage == Stage::Live && !f.filling)
                .and_then(|f| f.at.clone());
            let Some(front) = room.queue.front_mut() else {
                return;
            };
            let outcome = match (&front.wait, live) {
                (Wait::Reply | Wait::Range(_), _) => match front.outcome.take() {
                    Some(outcome) => outcome,
                    None => return,
                },
                (Wait::Position, Some(at)) => Ok(Answer::Position(at)),
                (Wait::Recover(from), Some(at)) => {
                    if from.epoch == at.epoch && from.offset < at.offset {
                        // Read what the subscriber missed; the feed waits.
                        let (first, ticket) = (from.offset.next(), front.ticket);
                        front.wait = Wait::Range(from.clone());
                        let upto = at.offset;
                        self.read_range(name, first, upto, Fill::Recovery { ticket, upto: at });
                        return;
                    }
                    if from.epoch == at.epoch && from.offset > at.offset {
                        // The client comes from a node whose feed is ahead
                        // of ours: wait for ours, but not for ever (the
                        // client may claim what Redis never had).
                        if front.started.elapsed() <= timeout {
                            return;
                        }
                    }
                    Ok(Answer::Recovery(if from == &at {
                        Recovery::Recovered {
                            position: at,
                            missed: Vec::new(),
                        }
                    } else {
                        Recovery::Refused { position: at }
                    }))
                }
                (Wait::Position | Wait::Recover(_), None) => return,
            };
            let Some(done) = room.queue.pop_front() else {
                return;
            };
            self.events.push(EngineEvent::Answer(done.ticket, outcome));
        }
    }

    /// Answers `ticket` now when nothing of the room waits before it,
    /// otherwise in its turn.
    fn answer_in_turn(
        &mut self,
        ticket: Ticket,
        name: &RoomName,
        outcome: Outcome,
    ) -> Option<Outcome> {
        let room = self.room_entry(name);
        if room.queue.is_empty() {
            return Some(outcome);
        }
        room.queue.push_back(Pending {
            ticket,
            wait: Wait::Reply,
            outcome: Some(outcome),
            started: Instant::now(),
        });
        None
    }

    /// Wakes the driver when work arrived outside its poll: a call it must
    /// poll, or an event it must apply.
    fn wake_driver(&mut self) {
        if self.nudge || !self.events.is_empty() {
            self.nudge = false;
            if let Some(driver) = &self.driver {
                driver.wake_by_ref();
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        let Some(room) = keys::room_of_channel(&message.channel) else {
            return;
        };
        if let Some(follow) = self.rooms.get_mut(&room).and_then(|r| r.follow.as_mut()) {
            follow.heard = Instant::now();
        }
        let Some(bytes) = scripts::bytes(message.value) else {
            return;
        };
        match payload::decode(bytes) {
            Ok(ChannelMessage::Publication {
                epoch,
                offset,
                data,
            }) => self.on_publication(&room, epoch, offset, data),
            Ok(ChannelMessage::Presence { change, info }) => {
                let followed = self.rooms.get(&room).is_some_and(|r| r.follow.is_some());
                if followed {
                    self.events
                        .push(EngineEvent::Feed(room, Feed::Presence { change, info }));
                }
            }
            Err(payload::Foreign) => {}
        }
    }

    /// Rooms this core follows, as a list of (room, keys) for refreshes.
    fn refresh(&mut self) {
        let mut rooms: HashMap<RoomName, Vec<String>> = HashMap::new();
        for (name, room) in &self.rooms {
            if room.follow.is_some() {
                rooms.insert(name.clone(), Vec::new());
            }
        }
        for (name, clients) in &self.owned {
            rooms
                .entry(name.clone())
                .or_default()
                .extend(clients.iter().cloned());
        }
        for (name, clients) in rooms {
            let room = self.room_entry(&name);
            let mut keys = presence_keys(&room.keys);
            keys[2] = room.keys.meta.clone();
            let meta_ttl =
                room.options.history_ttl.max(self.config.idempotency_window) + META_TTL_MARGIN;
            let mut args = vec![
                Value::from(millis(PRESENCE_TTL)),
                Value::from(millis(meta_ttl)),
            ];
            args.extend(clients.into_iter().map(Value::from));
            self.call(
                |s| &s.refresh,
                keys,
                args,
                |reply| Done::Background(reply.map(drop)),
            );
        }
    }
}

impl RedisEngine {
    /// Reads the position Redis holds for every followed room that has
    /// been silent for [`POSITION_CHECK`], a partition (one slot) per call.
    /// A room whose position moved without a message here lost its
    /// subscription without a word: Redis drops shard channel subscribers
    /// when their slot moves or their master is demoted, and fred does not
    /// say so; or the last message was lost. Such a room is subscribed
    /// again and its gap filled (`resync`). A call to a slot that moved
    /// also teaches fred the new owner (MOVED).
    fn check_silent(&mut self, now: Instant) {
        let mut by_partition: HashMap<usize, Vec<RoomName>> = HashMap::new();
        for (name, room) in &mut self.rooms {
            let Some(follow) = &mut room.follow else {
                continue;
            };
            let silent = now.duration_since(follow.heard) >= POSITION_CHECK;
            if follow.stage == Stage::Live && !follow.filling && !follow.checking && silent {
                follow.checking = true;
                follow.heard = now;
                by_partition
                    .entry(room.keys.partition)
                    .or_default()
                    .push(name.clone());
            }
        }
        for names in by_partition.into_values() {
            for chunk in names.chunks(CHECK_BATCH) {
                self.check(chunk);
            }
        }
    }

    fn check(&mut self, names: &[RoomName]) {
        let mut keys = Vec::with_capacity(names.len() * 2);
        let mut args = vec![Value::from(0i64)];
        let mut rooms = Vec::with_capacity(names.len());
        let mut meta_ttl = Duration::ZERO;
        for name in names {
            let Some(room) = self.rooms.get(name) else {
                continue;
            };
            let Some(follow) = &room.follow else {
                continue;
            };
            keys.push(room.keys.meta.clone());
            keys.push(room.keys.stream.clone());
            args.push(Value::from(Epoch::random().0));
            meta_ttl = meta_ttl.max(self.meta_ttl(&room.options));
            rooms.push((name.clone(), follow.generation));
        }
        args[0] = Value::from(millis(meta_ttl));
        self.call(
            |s| &s.follow,
            keys,
            args,
            move |reply| Done::Checked {
                rooms,
                result: reply.and_then(|v| scripts::positions(v).map_err(malformed)),
            },
        );
    }

    fn checked(
        &mut self,
        rooms: Vec<(RoomName, u64)>,
        result: Result<Vec<StreamPosition>, EngineError>,
    ) {
        let positions = result.ok();
        for (n, (name, generation)) in rooms.into_iter().enumerate() {
            let Some(follow) = self.rooms.get_mut(&name).and_then(|r| r.follow.as_mut()) else {
                continue;
            };
            follow.checking = false;
            let redis = positions.as_ref().and_then(|p| p.get(n));
            let moved = match (&follow.at, redis) {
                (Some(at), Some(redis)) => redis != at,
                _ => false,
            };
            if moved && follow.generation == generation && follow.stage == Stage::Live {
                metrics::add(&self.stats.counters().redis_resyncs, 1);
                self.resync(&name);
            }
        }
    }
}

/// Holds a message that came before its turn, within the bound.
fn hold(follow: &mut Follow, epoch: Epoch, offset: Offset, data: Bytes) {
    follow.early.insert(offset.0, (epoch, data));
    while follow.early.len() > FILL_BUFFER_MAX {
        // The newest go: they are read from history when their turn comes.
        follow.early.pop_last();
    }
}

impl Engine for RedisEngine {
    fn start(&mut self, ticket: Ticket, name: &RoomName, op: Op, now: Instant) -> Option<Outcome> {
        let room = self.room_entry(name);
        let options = room.options;
        let not_enabled = |what| {
            Err(EngineError::NotEnabled {
                room: name.to_string(),
                what,
            })
        };
        // What is known at once is answered at once, or in its turn.
        let known = match &op {
            Op::History { .. } if !options.keeps_history() => Some(not_enabled("history")),
            Op::Presence | Op::PresenceStats if !options.presence => Some(not_enabled("presence")),
            Op::Join(_) if !options.presence => Some(Ok(Answer::Joined(false))),
            Op::Leave { .. } if !options.presence => Some(Ok(Answer::Left(None))),
            Op::Position if room.queue.is_empty() => room
                .follow
                .as_mut()
                .filter(|f| f.stage == Stage::Live && !f.filling)
                .and_then(|f| {
                    f.unused_since = None;
                    f.at.clone()
                })
                .map(|at| Ok(Answer::Position(at))),
            _ => None,
        };
        if let Some(outcome) = known {
            return self.answer_in_turn(ticket, name, outcome);
        }
        let wait = match &op {
            Op::Position => Wait::Position,
            Op::Recover { from } => Wait::Recover(from.clone()),
            _ => Wait::Reply,
        };
        // Queued before the call starts: a call that fails at once finds it.
        room.queue.push_back(Pending {
            ticket,
            wait,
            outcome: None,
            started: now,
        });
        match op {
            Op::Position | Op::Recover { .. } => self.follow(name),
            Op::Publish { data, key } => self.start_publish(ticket, name, data, key),
            Op::History { query, max_page } => self.start_history(ticket, name, query, max_page),
            Op::Join(info) => self.start_join(ticket, name, info),
            Op::Leave { client } => self.start_leave(ticket, name, client),
            Op::Presence => self.start_presence(ticket, name, false),
            Op::PresenceStats => self.start_presence(ticket, name, true),
        }
        self.settle(name);
        self.wake_driver();
        None
    }

    fn poll(&mut self, cx: &mut Context<'_>, out: &mut Vec<EngineEvent>) -> Poll<()> {
        if !self
            .driver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.driver = Some(cx.waker().clone());
        }
        self.nudge = false;
        let mut resync = false;
        let mut handled = 0;
        while handled < REDIS_MESSAGES_PER_TURN {
            match self.messages.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(message))) => self.on_message(message),
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => resync = true,
                Poll::Ready(None) | Poll::Pending => break,
            }
            handled += 1;
        }
        while let Poll::Ready(Some(_)) = self.reconnects.poll_next_unpin(cx) {
            resync = true;
        }
        while let Poll::Ready(Some(_)) = self.cluster_changes.poll_next_unpin(cx) {
            resync = true;
        }
        if resync {
            self.resync_all();
        }
        while let Poll::Ready(Some(done)) = self.running.poll_next_unpin(cx) {
            self.on_done(done);
        }
        if handled == REDIS_MESSAGES_PER_TURN {
            // More may be waiting: come back after the core's other work.
            cx.waker().wake_by_ref();
        }
        if self.events.is_empty() {
            return Poll::Pending;
        }
        out.append(&mut self.events);
        Poll::Ready(())
    }

    fn delivery(&self) -> Delivery {
        Delivery::FromFeed
    }

    /// Both clients connected, as fred last saw them: a lost connection
    /// shows here at once, before any operation times out on it.
    fn reachable(&self) -> bool {
        self.commands.is_connected() && self.subscriber.is_connected()
    }

    fn sweep(&mut self, now: Instant, in_use: &dyn Fn(&RoomName) -> bool) {
        let mut unfollow: HashMap<usize, Vec<Bytes>> = HashMap::new();
        let mut stale = Vec::new();
        let mut waiting = Vec::new();
        self.rooms.retain(|name, room| {
            if let Some(follow) = &mut room.follow {
                if follow.stage == Stage::Stale {
                    stale.push(name.clone());
                }
                if room.queue.is_empty() && !in_use(name) {
                    let since = *follow.unused_since.get_or_insert(now);
                    if now.duration_since(since) >= UNFOLLOW_DELAY {
                        unfollow
                            .entry(room.keys.partition)
                            .or_default()
                            .push(room.keys.channel.clone());
                        room.follow = None;
                    }
                } else {
                    follow.unused_since = None;
                }
            }
            if !room.queue.is_empty() {
                waiting.push(name.clone());
            }
            room.follow.is_some() || !room.queue.is_empty()
        });
        for name in stale {
            self.resync(&name);
        }
        for name in waiting {
            self.settle(&name);
        }
        for channels in unfollow.into_values() {
            let subscriber = self.subscriber.clone();
            let channels: Vec<String> = channels
                .into_iter()
                .filter_map(|c| String::from_utf8(c.to_vec()).ok())
                .collect();
            self.launch(async move {
                Done::Background(
                    subscriber
                        .sunsubscribe(channels)
                        .await
                        .map_err(engine_error),
                )
            });
        }
        if now.duration_since(self.last_refresh) >= PRESENCE_REFRESH {
            self.last_refresh = now;
            self.refresh();
        }
        self.check_silent(now);
        self.wake_driver();
    }
}

fn presence_keys(keys: &RoomKeys) -> Vec<Bytes> {
    vec![
        keys.presence_expiry.clone(),
        keys.presence_info.clone(),
        keys.channel.clone(),
    ]
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

/// A failed Redis call, as the asker learns it (error 110 either way). A
/// publish that timed out may still have run: retried under its
/// idempotency key it is not published twice, and if it ran, every node
/// delivers it from the channel.
fn engine_error(error: RedisError) -> EngineError {
    match error.kind() {
        ErrorKind::Timeout => EngineError::Timeout,
        _ => EngineError::Unavailable(error.to_string()),
    }
}

fn malformed(error: scripts::Malformed) -> EngineError {
    EngineError::Unavailable(error.to_string())
}
