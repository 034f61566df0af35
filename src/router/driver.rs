//! One core's router: its home rooms, its shard, its engine, its postbox,
//! its members and waiters, and the driver task that drains its inboxes
//! into them. Everything here belongs to one core thread (`Rc`, `RefCell`):
//! no locks. No borrow is held across an `.await` or while a message is
//! dispatched, so handling one message may route another (to this core or
//! elsewhere) without re-entering a borrowed cell.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use foldhash::HashMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::engine::{self, Answer, Engine, EngineError, EngineEvent, Op, Recovery, Ticket};
use crate::limits::{
    close_code, DRAIN_GRACE, DRAIN_POLL, DRIVER_BATCH, SWEEP_INTERVAL, TOP_ROOMS_SHOWN,
};
use crate::metrics::{self, CoreCounters, CoreStats};
use crate::node::Node;
use crate::protocol::{frame, Outcome, Reply, RequestId, RoomName, StreamPosition};

use super::home::{Begun, Home, Outbox, Step};
use super::member::{self, Membership};
use super::message::{Event, FromHome, MemberAction, PublishMsg, ToHome};
use super::outbound::{Closing, Outbound, QueueRules};
use super::postbox::{Inbox, InboxDepths, Mailbox, Postbox};
use super::shard::{LocalInterest, Shard, SubscribeStep, Subscriber};
use super::waiters::Waiters;
use super::{home_core, ConnId, CoreId, Format, RecoveryToken, ReplyTo};

/// A member as its core knows it: where its replies go, and whose it is.
struct MemberEntry {
    format: Format,
    outbound: Rc<Outbound>,
    membership: Rc<Membership>,
}

/// Everything one core routes with.
pub(crate) struct Core {
    id: CoreId,
    node: Arc<Node>,
    shard: RefCell<Shard>,
    home: RefCell<Home>,
    engine: RefCell<Box<dyn Engine>>,
    /// Engine answers and feed items taken and not yet applied.
    answers: RefCell<Vec<EngineEvent>>,
    /// When each operation the engine did not answer at once was started:
    /// its answer's latency is measured from here.
    engine_started: RefCell<HashMap<Ticket, std::time::Instant>>,
    /// An engine operation failed (unavailable, timed out) since the
    /// sweep last checked the engine: it stays unavailable one more check.
    engine_failed: Cell<bool>,
    postbox: Postbox,
    members: RefCell<HashMap<ConnId, MemberEntry>>,
    /// What every member's outbound queue applies, shared by them all.
    queue_rules: Rc<QueueRules>,
    waiters: Waiters,
    /// Tasks waiting for every core's count of the connections a
    /// [`ToHome::Members`] touched (the HTTP API's disconnect and unsubscribe).
    tallies: Waiters<usize>,
    /// Kept between steps so that a step allocates no list of messages.
    scratch: RefCell<Outbox>,
    next_conn: Cell<u64>,
    next_token: Cell<u64>,
    /// Notified when the drain begins (the accept loop stops then).
    draining: Notify,
    /// Notified when engine answers made room in the home.
    engine_room: Notify,
}

/// What [`Core::try_send_publish`] did with a publication.
pub(crate) enum Handed {
    /// Handed to its home (sequenced already when the home is this core).
    Done,
    /// Sequenced here; its deliveries to other cores wait in the overflow,
    /// which the member must see drained before it publishes again.
    DrainOverflow,
    /// The home has no room now: send it with [`Core::send_publish`].
    Full(PublishMsg),
}

impl Core {
    /// Core `id`'s router, with its own engine.
    pub(crate) fn new(
        id: CoreId,
        node: Arc<Node>,
        mailboxes: Arc<[Mailbox]>,
        engine: Box<dyn Engine>,
    ) -> Core {
        let stats = CoreStats::new(node.stats.clone(), id.0);
        let queue_rules = Rc::new(QueueRules {
            limits: node.limits.outbound,
            stats: stats.clone(),
        });
        Core {
            id,
            shard: RefCell::new(Shard::default()),
            home: RefCell::new(Home::new(
                node.rooms.clone(),
                node.config.history_max_page,
                engine.delivery(),
                stats,
            )),
            engine: RefCell::new(engine),
            answers: RefCell::new(Vec::new()),
            engine_started: RefCell::new(HashMap::default()),
            engine_failed: Cell::new(false),
            postbox: Postbox::new(id, mailboxes),
            members: RefCell::new(HashMap::default()),
            queue_rules,
            waiters: Waiters::default(),
            tallies: Waiters::default(),
            scratch: RefCell::new(Vec::new()),
            next_conn: Cell::new(1),
            next_token: Cell::new(1),
            draining: Notify::new(),
            engine_room: Notify::new(),
            node,
        }
    }

    pub(crate) fn id(&self) -> CoreId {
        self.id
    }

    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// This core's counters.
    pub(crate) fn counters(&self) -> &CoreCounters {
        self.node.counters(self.id.0)
    }

    pub(crate) fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// What waits in every core's inboxes now, in core order (for scrapes).
    pub(crate) fn inbox_depths(&self) -> impl Iterator<Item = InboxDepths> + '_ {
        self.postbox.mailboxes().iter().map(Mailbox::depths)
    }

    pub(crate) fn tallies(&self) -> &Waiters<usize> {
        &self.tallies
    }

    /// Resolves once this core begins its drain.
    pub(crate) async fn drain_started(&self) {
        self.draining.notified().await;
    }

    // Members.

    /// Registers a member and gives it an id and an outbound queue.
    pub(crate) fn register(
        &self,
        format: Format,
        membership: Rc<Membership>,
    ) -> (ConnId, Rc<Outbound>) {
        let conn = ConnId(self.next_conn.get());
        self.next_conn.set(conn.0 + 1);
        let outbound = Rc::new(Outbound::under(self.queue_rules.clone()));
        let entry = MemberEntry {
            format,
            outbound: outbound.clone(),
            membership,
        };
        self.members.borrow_mut().insert(conn, entry);
        (conn, outbound)
    }

    pub(crate) fn deregister(&self, conn: ConnId) {
        self.members.borrow_mut().remove(&conn);
    }

    /// Calls `f` with the outbound queue of each of this core's members.
    /// `f` must not register or deregister members.
    pub(crate) fn for_each_outbound(&self, mut f: impl FnMut(&Outbound)) {
        for entry in self.members.borrow().values() {
            f(&entry.outbound);
        }
    }

    /// A token no other recovery on this core has.
    pub(crate) fn recovery_token(&self) -> RecoveryToken {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        RecoveryToken(token)
    }

    /// The cluster-wide id of one of this core's connections, as presence shows it.
    pub(crate) fn client_id(&self, conn: ConnId) -> String {
        format!("{}-{}-{}", self.node.id, self.id.0, conn.0)
    }

    /// The home of `room`.
    pub(crate) fn home_of(&self, room: &RoomName) -> CoreId {
        home_core(room, self.node.config.workers)
    }

    // The local shard, for members.

    pub(crate) fn subscribe_local(
        &self,
        room: &RoomName,
        format: Format,
        subscriber: Subscriber,
        request: RequestId,
        recover: Option<RecoveryToken>,
    ) -> SubscribeStep {
        let now = Instant::now().into_std();
        self.shard
            .borrow_mut()
            .subscribe(room, format, subscriber, request, recover, now)
    }

    pub(crate) fn unsubscribe_local(
        &self,
        room: &RoomName,
        format: Format,
        conn: ConnId,
    ) -> LocalInterest {
        self.shard.borrow_mut().unsubscribe(room, format, conn)
    }

    /// The position a new subscriber of an active room here is told.
    pub(crate) fn current_position(
        &self,
        room: &RoomName,
        format: Format,
    ) -> Option<StreamPosition> {
        self.shard.borrow().current(room, format)
    }

    // Sending.

    /// Sends a message to `room`'s home: handled at once when it is this
    /// core, posted otherwise. Never waits, and keeps the order of every
    /// message this core sends to one destination.
    pub(crate) fn tell_home(&self, home: CoreId, msg: ToHome) {
        if home == self.id {
            self.on_to_home(msg, Instant::now().into_std());
        } else {
            self.postbox.post(home, Event::ToHome(msg));
        }
    }

    /// Sends a message a member asked for, then waits while this core's
    /// overflow holds anything, so a member that pipelines requests adds
    /// at most one message to it.
    pub(crate) async fn ask_home(&self, home: CoreId, msg: ToHome) {
        self.tell_home(home, msg);
        self.overflow_drained().await;
    }

    /// Waits until nothing this core made waits for room in another core's inbox.
    pub(crate) async fn overflow_drained(&self) {
        if self.postbox.has_overflow() {
            self.postbox.overflow_drained().await;
        }
    }

    /// The part of [`Core::send_publish`] that needs no waiting: what
    /// happened, and what is left to wait for. A member awaits the rest in
    /// a box of its own, so that the future of every idle connection keeps
    /// no room for a wait that almost never comes.
    pub(crate) fn try_send_publish(&self, home: CoreId, msg: PublishMsg) -> Handed {
        if home == self.id {
            if !self.home_has_capacity() {
                return Handed::Full(msg);
            }
            self.publish(msg, Instant::now().into_std());
            if self.postbox.has_overflow() {
                return Handed::DrainOverflow;
            }
            return Handed::Done;
        }
        match self.postbox.try_send_publish(home, msg) {
            None => Handed::Done,
            Some(msg) => Handed::Full(msg),
        }
    }

    /// Hands a publication to its home core from a member. On the home core
    /// it is sequenced and fanned out at once; the member then waits until
    /// the deliveries to other cores are all posted, so the overflow stays
    /// bounded by one publication per member. To another core, it waits for
    /// room in that core's publishes inbox.
    pub(crate) async fn send_publish(&self, home: CoreId, msg: PublishMsg) {
        let handed = self.try_send_publish(home, msg);
        self.finish_publish(home, handed).await;
    }

    /// Waits for what [`Core::try_send_publish`] left to wait for.
    pub(crate) async fn finish_publish(&self, home: CoreId, handed: Handed) {
        match handed {
            Handed::Done => {}
            Handed::DrainOverflow => self.overflow_drained().await,
            Handed::Full(msg) if home == self.id => {
                self.home_has_room().await;
                self.publish(msg, Instant::now().into_std());
                self.overflow_drained().await;
            }
            Handed::Full(msg) => self.postbox.send_publish(home, msg).await,
        }
    }

    fn send_from_home(&self, dest: CoreId, msg: FromHome, now: std::time::Instant) {
        if dest == self.id {
            self.on_from_home(msg, now);
        } else {
            self.postbox.post(dest, Event::FromHome(msg));
        }
    }

    // The home side.

    /// Waits while this core's home has as many steps outstanding as it may
    /// hold (`core_queue_capacity`): an engine that answers late must not
    /// let publications pile up without bound.
    async fn home_has_room(&self) {
        // The common case costs one comparison, no registration.
        if self.home_has_capacity() {
            return;
        }
        loop {
            let mut wait = std::pin::pin!(self.engine_room.notified());
            wait.as_mut().enable();
            if self.home_has_capacity() {
                return;
            }
            wait.await;
        }
    }

    fn home_has_capacity(&self) -> bool {
        self.home.borrow().outstanding() < self.node.config.core_queue_capacity
    }

    /// A publication to a room homed here.
    fn publish(&self, msg: PublishMsg, now: std::time::Instant) {
        let step = Step::Publish {
            data: msg.data,
            key: msg.idempotency_key,
            reply_to: msg.reply_to,
        };
        self.run_step(&msg.room, step, now);
    }

    fn on_to_home(&self, msg: ToHome, now: std::time::Instant) {
        let (room, step) = match msg {
            ToHome::Members {
                user,
                action,
                asker,
                waiter,
            } => {
                let affected = self.on_members(&user, &action);
                let tallied = FromHome::Tallied { waiter, affected };
                return self.send_from_home(asker, tallied, now);
            }
            ToHome::Interest { room, format, core } => (room, Step::Interest { format, core }),
            ToHome::Disinterest { room, format, core } => {
                (room, Step::Disinterest { format, core })
            }
            ToHome::Recover {
                room,
                format,
                from,
                core,
                token,
            } => (
                room,
                Step::Recover {
                    format,
                    from,
                    core,
                    token,
                },
            ),
            ToHome::Query {
                room,
                query,
                reply_to,
            } => (room, Step::Query { query, reply_to }),
            ToHome::Presence { room, change, info } => (room, Step::Presence { change, info }),
        };
        self.run_step(&room, step, now);
    }

    /// Begins a step in the home, starts its engine operation, and applies
    /// the answer when the engine has it at once.
    fn run_step(&self, room: &RoomName, step: Step, now: std::time::Instant) {
        let mut out = self.scratch.take();
        {
            let mut home = self.home.borrow_mut();
            let mut engine = self.engine.borrow_mut();
            // A step that asks the engine nothing is answered at once.
            let mut start = |ticket, op: Option<Op>| match op {
                None => Some(Ok(Answer::Nothing)),
                Some(op) => {
                    let outcome = engine.start(ticket, room, op, now);
                    match &outcome {
                        Some(outcome) => self.engine_answered(outcome, Duration::ZERO),
                        None => {
                            self.engine_started.borrow_mut().insert(ticket, now);
                        }
                    }
                    outcome
                }
            };
            match home.begin(room, step) {
                Begun::Idle { ticket, op, then } => match start(ticket, op) {
                    Some(outcome) => home.finish(room, then, outcome, now, &mut out),
                    None => home.wait(room, ticket, then),
                },
                Begun::Queued { ticket, op } => {
                    if let Some(outcome) = start(ticket, op) {
                        home.answer(ticket, outcome, now, &mut out);
                    }
                }
            }
        }
        self.dispatch(out, now);
    }

    /// Applies the engine answers and feed items that arrived, in order.
    fn apply_answers(&self) {
        let mut answers = std::mem::take(&mut *self.answers.borrow_mut());
        if answers.is_empty() {
            return;
        }
        let now = Instant::now().into_std();
        let mut out = self.scratch.take();
        {
            let mut home = self.home.borrow_mut();
            let mut started = self.engine_started.borrow_mut();
            for event in answers.drain(..) {
                match event {
                    EngineEvent::Answer(ticket, outcome) => {
                        if let Some(at) = started.remove(&ticket) {
                            self.engine_answered(&outcome, now.saturating_duration_since(at));
                        }
                        home.answer(ticket, outcome, now, &mut out);
                    }
                    EngineEvent::Feed(room, item) => home.feed(&room, item, now, &mut out),
                }
            }
        }
        // The vector goes back, keeping its capacity, unless more came meanwhile.
        {
            let mut slot = self.answers.borrow_mut();
            if slot.is_empty() {
                *slot = answers;
            }
        }
        self.dispatch(out, now);
        self.engine_room.notify_waiters();
    }

    /// Counts an engine answer `latency` after its operation started; a
    /// failure marks the engine unavailable until the sweep finds it
    /// reachable again with no failure in between (see [`Core::sweep`]).
    fn engine_answered(&self, outcome: &engine::Outcome, latency: Duration) {
        let counters = self.counters();
        counters.engine_latency.observe(latency);
        if let Err(EngineError::Unavailable(_) | EngineError::Timeout) = outcome {
            self.engine_failed.set(true);
            counters.set_engine_available(false);
        }
    }

    /// Sends what the home produced, in order.
    fn dispatch(&self, mut out: Outbox, now: std::time::Instant) {
        for (dest, msg) in out.drain(..) {
            self.send_from_home(dest, msg, now);
        }
        self.scratch.replace(out);
    }

    // The subscriber side.

    fn on_from_home(&self, msg: FromHome, now: std::time::Instant) {
        match msg {
            FromHome::Interested {
                room,
                format,
                position,
            } => {
                let interest = self
                    .shard
                    .borrow_mut()
                    .activate(&room, format, position, now);
                self.on_local_interest(room, format, interest);
            }
            FromHome::Deliver {
                room,
                offset,
                frames,
                sequenced_at,
            } => {
                let fanout = self.shard.borrow_mut().deliver(&room, offset, &frames, now);
                if fanout.delivered > 0 {
                    let counters = self.counters();
                    metrics::add(&counters.deliveries, fanout.delivered);
                    // One observation per core and publication, not per
                    // subscriber: they were all queued at this `now`.
                    let lag = now.saturating_duration_since(sequenced_at);
                    counters.delivery_lag.observe(lag);
                }
            }
            FromHome::Recovered {
                room,
                format,
                token,
                recovery,
            } => {
                let counter = match &recovery {
                    Ok(Recovery::Recovered { .. }) => &self.counters().recoveries,
                    Ok(Recovery::Refused { .. }) | Err(_) => &self.counters().recoveries_refused,
                };
                metrics::add(counter, 1);
                let (fanout, interest) = self
                    .shard
                    .borrow_mut()
                    .finish_recovery(&room, format, token, recovery, now);
                metrics::add(&self.counters().recovered_deliveries, fanout.delivered);
                self.on_local_interest(room, format, interest);
            }
            FromHome::Reply { to, outcome } => self.deliver_reply(to, outcome, now),
            FromHome::Tallied { waiter, affected } => self.tallies.complete(waiter, affected),
            FromHome::PresenceEvent { room, frames } => {
                self.shard
                    .borrow_mut()
                    .deliver_presence(&room, &frames, now);
            }
            FromHome::Lost { room, position } => {
                self.shard.borrow_mut().lose(&room, position);
            }
        }
    }

    /// Does `action` to each of this core's members whose user is `user`;
    /// returns how many it touched. A scan of every member: it serves an
    /// operator's request now and then, not traffic.
    fn on_members(&self, user: &str, action: &MemberAction) -> usize {
        // Collected first: acting routes messages (a leave, a disinterest)
        // that may come back into this core while no table is borrowed.
        let targets: Vec<(ConnId, Format, Rc<Outbound>, Rc<Membership>)> = self
            .members
            .borrow()
            .iter()
            .filter(|(_, entry)| entry.membership.user() == user)
            .map(|(conn, entry)| {
                let (outbound, membership) = (entry.outbound.clone(), entry.membership.clone());
                (*conn, entry.format, outbound, membership)
            })
            .collect();
        targets
            .iter()
            .filter(|(conn, format, outbound, membership)| {
                member::act(self, *conn, *format, outbound, membership, action)
            })
            .count()
    }

    /// Tells the home when this core lost its last subscriber of a room.
    fn on_local_interest(&self, room: RoomName, format: Format, interest: LocalInterest) {
        if interest == LocalInterest::Lost {
            let home = self.home_of(&room);
            let core = self.id;
            self.tell_home(home, ToHome::Disinterest { room, format, core });
        }
    }

    /// Hands a reply to the connection or waiter on this core it is for. An
    /// error sent to a connection is counted here; a waiter's, by whoever
    /// sends it on (a member counts its replies).
    fn deliver_reply(&self, to: ReplyTo, outcome: Outcome, now: std::time::Instant) {
        match to {
            ReplyTo::Connection { conn, request, .. } => {
                if let Outcome::Error { code, .. } = outcome {
                    metrics::error_reply(self.counters(), code);
                }
                let members = self.members.borrow();
                if let Some(member) = members.get(&conn) {
                    let reply = Reply {
                        id: request,
                        outcome,
                    };
                    let frame = frame::reply(member.format.codec(), &reply);
                    member.outbound.reply(frame, now);
                }
            }
            ReplyTo::Waiter { waiter, .. } => self.waiters.complete(waiter, outcome),
        }
    }

    // The driver.

    /// Drops expired history and keys, and rooms nobody uses, now and then;
    /// and checks the engine: it counts as available (`/ready`,
    /// `roomcast_engine_up`) when its store is reachable and none of its
    /// operations failed since the last check.
    pub(crate) async fn sweep(self: Rc<Self>) {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.node.shutting_down() {
                return;
            }
            let mut home = self.home.borrow_mut();
            let in_use = |room: &RoomName| home.in_use(room);
            let mut engine = self.engine.borrow_mut();
            engine.sweep(Instant::now().into_std(), &in_use);
            let available = engine.reachable() && !self.engine_failed.replace(false);
            self.counters().set_engine_available(available);
            let top = home.top_rooms(TOP_ROOMS_SHOWN);
            self.node.set_top_rooms(self.id.0, top);
        }
    }

    /// Takes the engine answers that are in, registering `cx` for more.
    fn poll_engine(&self, cx: &mut Context<'_>) -> std::task::Poll<()> {
        let mut answers = self.answers.borrow_mut();
        self.engine.borrow_mut().poll(cx, &mut answers)
    }

    /// The driver: drains this core's inboxes and its engine's answers
    /// until shutdown completes.
    pub(crate) async fn drive(self: Rc<Self>, inbox: Inbox) {
        let mut drain_started: Option<Instant> = None;
        // The engine is always polled with this task's own waker, so that
        // whatever it registers (a reply on its way, a channel message)
        // wakes the driver, even when the poll comes from here rather
        // than from the wait below.
        let waker = std::future::poll_fn(|cx| std::task::Poll::Ready(cx.waker().clone())).await;
        loop {
            self.postbox.flush();
            let _ = self.poll_engine(&mut Context::from_waker(&waker));
            self.apply_answers();
            let mut handled = 0;
            while handled < DRIVER_BATCH {
                let Ok(event) = inbox.events.try_recv() else {
                    break;
                };
                let now = Instant::now().into_std();
                match event {
                    Event::ToHome(msg) => self.on_to_home(msg, now),
                    Event::FromHome(msg) => self.on_from_home(msg, now),
                }
                handled += 1;
            }
            // No new publication while this core's events wait for room
            // elsewhere, or while its home holds as many steps as it may.
            while handled < 2 * DRIVER_BATCH
                && !self.postbox.has_overflow()
                && self.home_has_capacity()
            {
                let Ok(msg) = inbox.publishes.try_recv() else {
                    break;
                };
                self.publish(msg, Instant::now().into_std());
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
                continue;
            }
            let wake = self.postbox.own().wake.notified();
            let answers = poll_fn(|cx| self.poll_engine(cx));
            let either = async {
                tokio::select! {
                    () = wake => {}
                    () = answers => {}
                }
            };
            if drain_started.is_some() {
                // While draining, look again shortly even without mail.
                let _ = tokio::time::timeout(DRAIN_POLL, either).await;
            } else {
                either.await;
            }
        }
    }

    /// Stops accepting and schedules every member's close (1012), spread
    /// evenly over `drain_period`.
    fn begin_drain(self: &Rc<Self>) {
        self.draining.notify_waiters();
        let mut conns: Vec<ConnId> = self.members.borrow().keys().copied().collect();
        conns.sort();
        let period = self.node.config.drain_period;
        let count = conns.len().max(1) as u32;
        for (i, conn) in conns.into_iter().enumerate() {
            let core = self.clone();
            let delay = period.mul_f64(f64::from(i as u32) / f64::from(count));
            tokio::task::spawn_local(async move {
                tokio::time::sleep(delay).await;
                if let Some(member) = core.members.borrow().get(&conn) {
                    member.outbound.close(Closing {
                        code: close_code::SERVICE_RESTART,
                        reason: "service restart",
                        flush: true,
                    });
                }
            });
        }
    }

    /// Whether this core may stop: no members left, or the drain has
    /// overrun its period plus the close timeout by [`DRAIN_GRACE`].
    fn drained(&self, started: Instant) -> bool {
        let config = &self.node.config;
        let deadline = started + config.drain_period + config.close_timeout + DRAIN_GRACE;
        self.members.borrow().is_empty() || Instant::now() >= deadline
    }
}
