//! One core: its runtime, its accept loop, and its driver, the task that
//! drains the core's inboxes into its home rooms and its shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::LocalSet;
use tokio::time::Instant;

use crate::engine::{EngineConfig, MemoryEngine, Recovery};
use crate::metrics::{self, CoreCounters, CoreStats};
use crate::protocol::{frame, Ack, Codec, Reply, RequestId};
use crate::router::home::Home;
use crate::router::postbox::{Inbox, Mailbox, Postbox};
use crate::router::shard::{Fanout, Shard};
use crate::router::{home_core, ConnId, CoreId, CoreMsg, PublishMsg, RecoveryToken, ReplyTo};
use crate::transport::http;
use crate::transport::outbound::{Closing, Outbound};

use super::Node;

/// Inbox messages handled before the driver lets sessions run again.
const DRIVER_BATCH: usize = 256;

/// How often expired history and idempotency keys are dropped, and unused
/// rooms forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A session as its core knows it.
pub struct SessionEntry {
    pub codec: Codec,
    pub outbound: Rc<Outbound>,
}

/// Everything a core owns. Shared (`Rc`) by the core's tasks only.
pub struct Core {
    pub id: CoreId,
    pub node: Arc<Node>,
    pub shard: RefCell<Shard>,
    pub home: RefCell<Home<MemoryEngine>>,
    pub postbox: Postbox,
    pub sessions: RefCell<HashMap<ConnId, SessionEntry>>,
    next_conn: Cell<u64>,
    next_token: Cell<u64>,
    /// Wakes the accept loop when shutdown begins.
    stop_accepting: Notify,
}

impl Core {
    /// This core's counters.
    pub fn counters(&self) -> &CoreCounters {
        self.node.stats.core(self.id.0)
    }

    /// Registers a new session and gives it an id and an outbound queue.
    pub fn register(&self, codec: Codec) -> (ConnId, Rc<Outbound>) {
        let conn = ConnId(self.next_conn.get());
        self.next_conn.set(conn.0 + 1);
        let stats = CoreStats::new(self.node.stats.clone(), self.id.0);
        let outbound = Rc::new(Outbound::new(self.node.limits.outbound, stats));
        self.sessions.borrow_mut().insert(
            conn,
            SessionEntry {
                codec,
                outbound: outbound.clone(),
            },
        );
        (conn, outbound)
    }

    /// A token no other recovery on this core has.
    pub fn recovery_token(&self) -> RecoveryToken {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        RecoveryToken(token)
    }

    /// The cluster-wide id of one of this core's connections, as presence shows it.
    pub fn client_id(&self, conn: ConnId) -> String {
        format!("{}-{}-{}", self.node.id, self.id.0, conn.0)
    }

    pub fn deregister(&self, conn: ConnId) {
        self.sessions.borrow_mut().remove(&conn);
    }

    fn count_fanout(&self, fanout: Fanout) {
        metrics::add(&self.counters().deliveries, fanout.delivered);
    }

    /// Sends an event to a core: handled at once when it is this core,
    /// posted otherwise. Never waits, and keeps the order of every event this
    /// core sends to one destination (interest on/off above all).
    pub fn route(&self, dest: CoreId, msg: CoreMsg) {
        if dest == self.id {
            self.handle_event(msg);
        } else {
            self.postbox.post(dest, msg);
        }
    }

    /// Sends an event a session asked for (interest, recovery, a query, a
    /// join or leave), then waits while this core's overflow holds anything,
    /// so a session that pipelines requests adds at most one event to it.
    pub async fn send_for_session(&self, dest: CoreId, msg: CoreMsg) {
        self.route(dest, msg);
        if self.postbox.has_overflow() {
            self.postbox.overflow_drained().await;
        }
    }

    /// Hands a publication to its home core from a session. On the home core
    /// it is sequenced and fanned out at once; the session then waits until
    /// the deliveries to other cores are all posted, so the overflow stays
    /// bounded by one publication per session.
    pub async fn send_publish(&self, home: CoreId, msg: PublishMsg) {
        if home == self.id {
            self.handle_publish(msg);
            if self.postbox.has_overflow() {
                self.postbox.overflow_drained().await;
            }
        } else {
            self.postbox.send_publish(home, msg).await;
        }
    }

    /// Handles one event addressed to this core.
    pub fn handle_event(&self, msg: CoreMsg) {
        let now = Instant::now().into_std();
        match msg {
            CoreMsg::Interest {
                room,
                codec,
                core,
                on,
            } => {
                let position = self.home.borrow_mut().interest(&room, codec, core, on, now);
                if on {
                    let ack = CoreMsg::InterestAck {
                        room,
                        codec,
                        position,
                    };
                    self.route(core, ack);
                }
            }
            CoreMsg::InterestAck {
                room,
                codec,
                position,
            } => {
                let nobody_left = self
                    .shard
                    .borrow_mut()
                    .activate(&room, codec, position, now);
                if nobody_left {
                    let home = home_core(&room, self.node.config.workers);
                    let off = CoreMsg::Interest {
                        room,
                        codec,
                        core: self.id,
                        on: false,
                    };
                    self.route(home, off);
                }
            }
            CoreMsg::Deliver {
                room,
                offset,
                frames,
            } => {
                let fanout = self.shard.borrow_mut().deliver(&room, offset, &frames, now);
                self.count_fanout(fanout);
            }
            CoreMsg::PublishAck {
                conn,
                request,
                offset,
                duplicate,
            } => {
                let ack = Ack {
                    offset,
                    duplicate,
                    ..Ack::default()
                };
                self.reply_to(conn, request, ack);
            }
            CoreMsg::Recover {
                room,
                codec,
                from,
                core,
                token,
            } => {
                let recovery = self.home.borrow_mut().recover(&room, &from, now);
                let answer = CoreMsg::Recovered {
                    room,
                    codec,
                    token,
                    recovery,
                };
                self.route(core, answer);
            }
            CoreMsg::Recovered {
                room,
                codec,
                token,
                recovery,
            } => {
                let counter = match recovery {
                    Recovery::Recovered { .. } => &self.counters().recoveries,
                    Recovery::Refused { .. } => &self.counters().recoveries_refused,
                };
                metrics::add(counter, 1);
                let fanout = self
                    .shard
                    .borrow_mut()
                    .finish_recovery(&room, codec, token, recovery, now);
                metrics::add(&self.counters().recovered_deliveries, fanout.delivered);
            }
            CoreMsg::Query {
                room,
                query,
                codec,
                reply_to,
            } => {
                let (frame, is_error) =
                    self.home
                        .borrow_mut()
                        .query(&room, query, codec, reply_to.request, now);
                if is_error {
                    metrics::add(&self.counters().error_replies, 1);
                }
                let reply = CoreMsg::Reply {
                    conn: reply_to.conn,
                    frame,
                };
                self.route(reply_to.core, reply);
            }
            CoreMsg::Reply { conn, frame } => {
                if let Some(session) = self.sessions.borrow().get(&conn) {
                    session.outbound.reply(frame, now);
                }
            }
            CoreMsg::Presence { room, change, info } => {
                let event = self.home.borrow_mut().presence(&room, change, info, now);
                if let Some(event) = event {
                    for core in event.targets.iter() {
                        let msg = CoreMsg::PresenceEvent {
                            room: room.clone(),
                            frames: event.frames.clone(),
                        };
                        self.route(core, msg);
                    }
                }
            }
            CoreMsg::PresenceEvent { room, frames } => {
                self.shard
                    .borrow_mut()
                    .deliver_presence(&room, &frames, now);
            }
        }
    }

    /// Sequences one publication to a room whose home is this core, fans it
    /// out to local subscribers and posts it to the other interested cores.
    pub fn handle_publish(&self, msg: PublishMsg) {
        let now = Instant::now().into_std();
        let sequenced =
            self.home
                .borrow_mut()
                .publish(&msg.room, &msg.data, msg.idempotency_key.as_ref(), now);
        let counter = if sequenced.duplicate {
            &self.counters().duplicate_publishes
        } else {
            &self.counters().publishes
        };
        metrics::add(counter, 1);
        for core in sequenced.targets.iter() {
            if core == self.id {
                let fanout = self.shard.borrow_mut().deliver(
                    &msg.room,
                    sequenced.offset,
                    &sequenced.frames,
                    now,
                );
                self.count_fanout(fanout);
            } else {
                self.postbox.post(
                    core,
                    CoreMsg::Deliver {
                        room: msg.room.clone(),
                        offset: sequenced.offset,
                        frames: sequenced.frames.clone(),
                    },
                );
            }
        }
        if let Some(ReplyTo {
            core,
            conn,
            request,
        }) = msg.reply_to
        {
            let ack = CoreMsg::PublishAck {
                conn,
                request,
                offset: sequenced.offset,
                duplicate: sequenced.duplicate,
            };
            self.route(core, ack);
        }
    }

    fn reply_to(&self, conn: ConnId, request: RequestId, ack: Ack) {
        let sessions = self.sessions.borrow();
        if let Some(session) = sessions.get(&conn) {
            let frame = frame::reply(session.codec, &Reply::with(request, ack));
            session.outbound.reply(frame, Instant::now().into_std());
        }
    }

    /// Drops expired history and keys, and rooms nobody uses, now and then.
    async fn sweep(self: Rc<Self>) {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.node.shutting_down() {
                return;
            }
            self.home.borrow_mut().sweep(Instant::now().into_std());
        }
    }

    /// The driver: drains this core's inboxes until shutdown completes.
    async fn drive(self: Rc<Self>, inbox: Inbox) {
        let mut drain_started: Option<Instant> = None;
        loop {
            self.postbox.flush();
            let mut handled = 0;
            while handled < DRIVER_BATCH {
                let Ok(msg) = inbox.events.try_recv() else {
                    break;
                };
                self.handle_event(msg);
                handled += 1;
            }
            while handled < 2 * DRIVER_BATCH && !self.postbox.has_overflow() {
                let Ok(msg) = inbox.publishes.try_recv() else {
                    break;
                };
                self.handle_publish(msg);
                handled += 1;
            }
            if handled > 0 {
                self.postbox.release_blocked();
            }
            if self.node.shutting_down() {
                let started = *drain_started.get_or_insert_with(|| {
                    self.begin_drain();
                    Instant::now()
                });
                if self.drained(started) {
                    return;
                }
            }
            if handled >= DRIVER_BATCH {
                tokio::task::yield_now().await;
            } else if drain_started.is_some() {
                // While draining, look again shortly even without mail.
                let _ = tokio::time::timeout(
                    Duration::from_millis(20),
                    self.postbox.own().wake.notified(),
                )
                .await;
            } else {
                self.postbox.own().wake.notified().await;
            }
        }
    }

    /// Stops accepting and schedules every session's close (1012), spread
    /// evenly over `drain_period`.
    fn begin_drain(self: &Rc<Self>) {
        self.stop_accepting.notify_waiters();
        let mut conns: Vec<ConnId> = self.sessions.borrow().keys().copied().collect();
        conns.sort();
        let period = self.node.config.drain_period;
        let count = conns.len().max(1) as u32;
        for (i, conn) in conns.into_iter().enumerate() {
            let core = self.clone();
            let delay = period.mul_f64(f64::from(i as u32) / f64::from(count));
            tokio::task::spawn_local(async move {
                tokio::time::sleep(delay).await;
                if let Some(session) = core.sessions.borrow().get(&conn) {
                    session.outbound.close(Closing {
                        code: crate::limits::close_code::SERVICE_RESTART,
                        reason: "service restart",
                        flush: true,
                    });
                }
            });
        }
    }

    /// Whether this core may stop: no sessions left, or the drain has
    /// overrun its period plus the close timeout by a second.
    fn drained(&self, started: Instant) -> bool {
        let config = &self.node.config;
        let deadline =
            started + config.drain_period + config.close_timeout + Duration::from_secs(1);
        self.sessions.borrow().is_empty() || Instant::now() >= deadline
    }

    async fn accept(self: Rc<Self>, listener: TcpListener) {
        // Backoff after accept errors (out of file descriptors, typically):
        // doubled per failure up to a second, reset by a success.
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.stop_accepting.notified() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(http::serve(stream, peer, self.clone()));
                }
                Err(error) => {
                    if backoff.is_zero() {
                        tracing::warn!(%error, "accept failed; backing off");
                    }
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::time::sleep(backoff).await;
                }
            }
            if self.node.shutting_down() {
                return;
            }
        }
    }
}

/// Runs core `n` on the calling thread until shutdown completes.
pub(super) fn run(
    n: usize,
    node: Arc<Node>,
    mailboxes: Arc<[Mailbox]>,
    inbox: Inbox,
    listener: std::net::TcpListener,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(core = n, %error, "cannot build runtime");
            return;
        }
    };
    let id = CoreId(n);
    let core = Rc::new(Core {
        id,
        postbox: Postbox::new(id, mailboxes),
        shard: RefCell::new(Shard::default()),
        home: RefCell::new(Home::new(
            MemoryEngine::new(EngineConfig::from_config(&node.config)),
            node.config.history_max_page,
        )),
        sessions: RefCell::new(HashMap::new()),
        next_conn: Cell::new(1),
        next_token: Cell::new(1),
        stop_accepting: Notify::new(),
        node,
    });
    let local = LocalSet::new();
    local.block_on(&runtime, async move {
        match TcpListener::from_std(listener) {
            Ok(listener) => {
                tokio::task::spawn_local(core.clone().accept(listener));
                tokio::task::spawn_local(core.clone().sweep());
            }
            Err(error) => tracing::error!(core = n, %error, "cannot register listener"),
        }
        core.drive(inbox).await;
    });
}
