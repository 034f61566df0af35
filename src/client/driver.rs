//! The background task behind a [`Client`](super::Client). It alone owns
//! the connection and every room and request, so nothing is locked; it
//! reconnects with backoff, subscribes every room again from its position,
//! then sends again the publishes whose ack was lost.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fastwebsockets::{Frame, Payload};
use tokio::sync::mpsc;
use tokio::time::Sleep;

use super::backoff::backoff_delay;
use super::command::{Command, KeyChoice, PublishReply, Responder, Shared};
use super::connection::{Connection, Dial, Incoming};
use super::error::unexpected;
use super::link::{link_event, Link, LinkEvent};
use super::requests::{InFlight, Publication, Waiting};
use super::rooms::RoomState;
use super::{
    ClientError, ClientOptions, DisconnectCause, Event, Message, PublishAck, SubscribeInfo,
    SubscribeOptions, CLOSE_TIMEOUT,
};
use crate::protocol::{
    random_u64, ClientOp, ClientRequest, IdempotencyKey, Outcome, Reply, RequestId, RoomName,
    ServerEvent, StreamPosition,
};

/// The background task that owns the connection and all client state.
pub(super) struct Driver {
    dial: Dial,
    options: ClientOptions,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Events the application has no room for yet; while any wait here the
    /// connection is not read, so this holds at most what one envelope or
    /// one reconnect produces.
    outbox: VecDeque<Event>,
    link: Link,
    /// Set once our close frame is sent: give up waiting for the echo then.
    close_deadline: Option<Pin<Box<Sleep>>>,
    /// The application called `close`: no reconnect.
    closing: bool,
    /// Failed connection attempts since the connection dropped.
    failed_attempts: u32,
    rooms: HashMap<String, RoomState>,
    in_flight: HashMap<u64, InFlight>,
    /// Requests held until connected and resubscribed, in call order.
    waiting: VecDeque<Waiting>,
    /// Publications in `waiting`, checked against `max_queued_publishes`.
    queued_publishes: usize,
    /// Resubscribes sent after a reconnect and not yet answered.
    resubscribing: usize,
    /// Requests whose ack is to be discarded as if lost (a `test-hooks` seam).
    losing_acks: HashSet<u64>,
    /// Request ids increase for the life of the client, so a reply can never
    /// be taken for an answer to a request of another connection.
    next_id: u64,
    next_generation: u64,
    key_prefix: String,
    next_key: u64,
}

impl Driver {
    /// A driver on the first connection, which [`Client::connect_with`]
    /// opened itself so that a bad address fails the call.
    ///
    /// [`Client::connect_with`]: super::Client::connect_with
    pub(super) fn new(
        dial: Dial,
        options: ClientOptions,
        connection: Connection,
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Driver {
        Driver {
            dial,
            options,
            shared,
            commands,
            events,
            outbox: VecDeque::new(),
            link: Link::Up(connection),
            close_deadline: None,
            closing: false,
            failed_attempts: 0,
            rooms: HashMap::new(),
            in_flight: HashMap::new(),
            losing_acks: HashSet::new(),
            waiting: VecDeque::new(),
            queued_publishes: 0,
            resubscribing: 0,
            next_id: 1,
            next_generation: 0,
            key_prefix: format!("{:016x}", random_u64()),
            next_key: 0,
        }
    }

    pub(super) async fn run(mut self) {
        self.drive().await;
        if let Link::Up(connection) = &self.link {
            connection.abort();
        }
    }

    async fn drive(&mut self) {
        loop {
            if matches!(self.link, Link::Down) && self.outbox.is_empty() {
                return;
            }
            let read = self.outbox.is_empty();
            tokio::select! {
                biased;
                delivered = deliver(&self.events, &mut self.outbox), if !read => {
                    if !delivered {
                        return;
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    // The Client is gone.
                    None => return,
                },
                () = self.shared.drop_connection.notified() => {
                    if let Link::Up(connection) = &self.link {
                        connection.abort();
                        self.lost(DisconnectCause::Lost("dropped for a test".to_owned()));
                    }
                }
                event = link_event(&mut self.link, read, &mut self.close_deadline) => {
                    self.link_event(event).await;
                }
            }
        }
    }

    /// Queues an event for the application, passing it on at once when there is room.
    fn emit(&mut self, event: Event) {
        self.outbox.push_back(event);
        while let Some(event) = self.outbox.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.outbox.push_front(event);
                    break;
                }
                // The application is gone; the command channel closes next.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.outbox.clear();
                    break;
                }
            }
        }
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.shared.close_reason())
    }

    fn is_up(&self) -> bool {
        matches!(self.link, Link::Up(_)) && !self.closing
    }

    fn is_down(&self) -> bool {
        matches!(self.link, Link::Down) || self.closing
    }

    /// Publications go out directly only when nothing queued is ahead of them.
    fn sends_publishes_now(&self) -> bool {
        self.is_up() && self.resubscribing == 0 && self.waiting.is_empty()
    }

    /// Sends a request on the current connection. A failed send needs no
    /// handling here: the connection's tasks report the loss, and the
    /// request is then retried or failed with the others in flight.
    async fn send(&mut self, id: u64, op: ClientOp) {
        let Link::Up(connection) = &self.link else {
            return;
        };
        let envelope = self.dial.codec.encode_request(&ClientRequest {
            id: RequestId(id),
            op,
        });
        let _ = connection
            .frames
            .send(Frame::binary(Payload::Owned(envelope)))
            .await;
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                room,
                options,
                reply,
            } => self.subscribe(room, options, reply).await,
            Command::Unsubscribe { room, reply } => self.unsubscribe(room, reply).await,
            Command::Publish {
                room,
                data,
                key,
                reply,
            } => {
                let key = match key {
                    KeyChoice::None => None,
                    KeyChoice::Given(key) => Some(key),
                    KeyChoice::Automatic => {
                        self.next_key += 1;
                        let key = format!("{}-{}", self.key_prefix, self.next_key);
                        Some(IdempotencyKey::new(&key))
                    }
                };
                let (ack, accepted) = match reply {
                    PublishReply::Ack(reply) => (Some(reply), None),
                    PublishReply::Accepted(reply) => (None, Some(reply)),
                };
                let publication = Publication {
                    room,
                    data,
                    key,
                    ack,
                };
                let outcome = self.publish(publication).await;
                if let Some(accepted) = accepted {
                    let _ = accepted.send(outcome);
                }
            }
            Command::Query { op, reply } => {
                if self.is_down() {
                    let _ = reply.send(Err(self.closed_error()));
                } else if self.is_up() {
                    let id = self.take_id();
                    self.in_flight.insert(id, InFlight::Query(reply));
                    self.send(id, op).await;
                } else {
                    let _ = reply.send(Err(ClientError::Disconnected));
                }
            }
            Command::Close { reply } => {
                if !self.closing {
                    self.closing = true;
                    match &self.link {
                        Link::Up(connection) => {
                            let _ = connection.frames.send(Frame::close(1000, b"bye")).await;
                            self.close_deadline = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
                        }
                        _ => self.shut_down(),
                    }
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn subscribe(
        &mut self,
        room: RoomName,
        options: SubscribeOptions,
        reply: Responder<SubscribeInfo>,
    ) {
        if self.is_down() {
            let _ = reply.send(Err(self.closed_error()));
            return;
        }
        let up = self.is_up();
        let name = room.as_str().to_owned();
        if !self.rooms.contains_key(&name) {
            let generation = self.next_generation;
            self.next_generation += 1;
            let state = RoomState {
                name: room.detached(),
                generation,
                join_leave: options.join_leave,
                position: None,
                active: false,
                in_flight: false,
                confirmed: false,
                waiters: Vec::new(),
            };
            self.rooms.insert(name.clone(), state);
        }
        let Some(state) = self.rooms.get_mut(&name) else {
            return;
        };
        state.waiters.push(reply);
        if !state.active {
            // Not subscribed yet: these options are what the next subscribe
            // of the room, this one or the one after a reconnect, carries.
            state.join_leave = options.join_leave;
            if options.recover.is_some() {
                state.position = options.recover.clone();
            }
        }
        // A subscribe already on its way answers this caller too, unless
        // the room is live and this one changes something.
        let changes = options.recover.is_some() || options.join_leave != state.join_leave;
        let needed = !state.in_flight || (state.active && changes);
        if !up || !needed {
            return;
        }
        let recover = if state.active {
            options.recover
        } else {
            state.position.clone()
        };
        state.in_flight = true;
        let in_flight = InFlight::Subscribe {
            room: name,
            generation: state.generation,
            join_leave: options.join_leave,
            recover: recover.clone(),
            resubscribe: false,
        };
        let op = ClientOp::Subscribe {
            room,
            recover,
            join_leave: options.join_leave,
        };
        let id = self.take_id();
        self.in_flight.insert(id, in_flight);
        self.send(id, op).await;
    }

    async fn unsubscribe(&mut self, room: RoomName, reply: Responder<()>) {
        if self.is_down() {
            let _ = reply.send(Err(self.closed_error()));
            return;
        }
        match self.rooms.remove(room.as_str()) {
            Some(state) => {
                for waiter in state.waiters {
                    let _ = waiter.send(Err(ClientError::Unsubscribed));
                }
                if self.is_up() && (state.active || state.in_flight) {
                    let id = self.take_id();
                    self.in_flight.insert(id, InFlight::Unsubscribe(reply));
                    self.send(id, ClientOp::Unsubscribe { room }).await;
                } else {
                    // Not subscribed on any connection, and never will be again.
                    let _ = reply.send(Ok(()));
                }
            }
            None if self.is_up() => {
                let id = self.take_id();
                self.in_flight.insert(id, InFlight::Unsubscribe(reply));
                self.send(id, ClientOp::Unsubscribe { room }).await;
            }
            None => self.waiting.push_back(Waiting::Unsubscribe { room, reply }),
        }
    }

    /// Sends or queues a publication; the error is for a fire-and-forget
    /// caller (an acknowledged one has been answered already).
    async fn publish(&mut self, publication: Publication) -> Result<(), ClientError> {
        let refuse = |publication: Publication, error: ClientError| {
            if let Some(ack) = publication.ack {
                let _ = ack.send(Err(error.clone()));
            }
            Err(error)
        };
        if self.is_down() {
            return refuse(publication, self.closed_error());
        }
        if self.sends_publishes_now() {
            self.send_publication(publication).await;
            return Ok(());
        }
        if self.queued_publishes >= self.options.max_queued_publishes {
            return refuse(publication, ClientError::QueueFull);
        }
        self.queued_publishes += 1;
        self.waiting.push_back(Waiting::Publish(publication));
        Ok(())
    }

    async fn send_publication(&mut self, publication: Publication) {
        let op = publication.op();
        if publication.ack.is_some() {
            let id = self.take_id();
            if self
                .shared
                .lose_publish_acks
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                self.losing_acks.insert(id);
            }
            self.in_flight.insert(id, InFlight::Publish(publication));
            self.send(id, op).await;
        } else {
            self.send(0, op).await;
        }
    }

    /// Sends what waited for the connection, in order.
    async fn flush_waiting(&mut self) {
        while self.is_up() {
            let Some(waiting) = self.waiting.pop_front() else {
                return;
            };
            match waiting {
                Waiting::Publish(publication) => {
                    self.queued_publishes -= 1;
                    self.send_publication(publication).await;
                }
                Waiting::Unsubscribe { room, reply } => {
                    let id = self.take_id();
                    self.in_flight.insert(id, InFlight::Unsubscribe(reply));
                    self.send(id, ClientOp::Unsubscribe { room }).await;
                }
            }
        }
    }

    async fn link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Incoming(Incoming::Envelope(envelope)) => self.envelope(envelope).await,
            LinkEvent::Incoming(Incoming::Closed { code, reason }) => {
                self.shared.set_close_reason(code, &reason);
                self.lost(DisconnectCause::Closed { code, reason });
            }
            LinkEvent::Incoming(Incoming::Lost(error)) => {
                if let Link::Up(connection) = &self.link {
                    connection.abort();
                }
                self.lost(DisconnectCause::Lost(error));
            }
            LinkEvent::CloseTimedOut => {
                if let Link::Up(connection) = &self.link {
                    connection.abort();
                }
                self.shut_down();
            }
            LinkEvent::BackoffOver => {
                self.link = Link::Connecting(Box::pin(self.dial.clone().open()));
            }
            LinkEvent::Connected(Ok(connection)) => {
                self.link = Link::Up(connection);
                let attempts = self.failed_attempts + 1;
                self.failed_attempts = 0;
                tracing::debug!(attempts, "roomcast client reconnected");
                self.emit(Event::Reconnected { attempts });
                self.resubscribe_all().await;
            }
            LinkEvent::Connected(Err(error)) => {
                self.failed_attempts += 1;
                let attempt = self.failed_attempts;
                tracing::debug!(attempt, %error, "roomcast client reconnect failed");
                if self
                    .options
                    .max_reconnect_attempts
                    .is_some_and(|max| self.failed_attempts >= max)
                {
                    self.shut_down();
                } else {
                    self.back_off();
                }
            }
        }
    }

    fn back_off(&mut self) {
        let delay = backoff_delay(
            self.failed_attempts,
            self.options.backoff_base,
            self.options.backoff_max,
            random_u64(),
        );
        self.link = Link::Backoff(Box::pin(tokio::time::sleep(delay)));
    }

    /// The connection is gone: settle what was in flight on it, then
    /// reconnect or give up.
    fn lost(&mut self, cause: DisconnectCause) {
        self.link = Link::Down;
        self.resubscribing = 0;
        self.losing_acks.clear();
        for state in self.rooms.values_mut() {
            state.active = false;
            state.in_flight = false;
        }
        let mut unacknowledged = Vec::new();
        for (id, request) in self.in_flight.drain() {
            match request {
                // The room stays, with its waiters, for the next connection.
                InFlight::Subscribe { .. } => {}
                // The next connection is not subscribed to it either.
                InFlight::Unsubscribe(reply) => {
                    let _ = reply.send(Ok(()));
                }
                InFlight::Publish(publication) => unacknowledged.push((id, publication)),
                InFlight::Query(reply) => {
                    let _ = reply.send(Err(ClientError::Disconnected));
                }
            }
        }
        // Sent before anything still waiting: they go first, in their order.
        unacknowledged.sort_by_key(|(id, _)| *id);
        for (_, publication) in unacknowledged.into_iter().rev() {
            self.queued_publishes += 1;
            self.waiting.push_front(Waiting::Publish(publication));
        }
        let reconnecting = !self.closing
            && cause.allows_reconnect()
            && self.options.max_reconnect_attempts != Some(0);
        tracing::debug!(?cause, reconnecting, "roomcast client disconnected");
        self.emit(Event::Disconnected {
            cause,
            reconnecting,
        });
        if reconnecting {
            self.failed_attempts = 0;
            self.back_off();
        } else {
            self.shut_down();
        }
    }

    /// Closed for good: every caller still waiting gets the reason.
    fn shut_down(&mut self) {
        self.link = Link::Down;
        self.close_deadline = None;
        let error = self.closed_error();
        for (_, state) in self.rooms.drain() {
            for waiter in state.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        for (_, request) in self.in_flight.drain() {
            match request {
                InFlight::Subscribe { .. } => {}
                InFlight::Unsubscribe(reply) => {
                    let _ = reply.send(Err(error.clone()));
                }
                InFlight::Publish(publication) => {
                    if let Some(ack) = publication.ack {
                        let _ = ack.send(Err(error.clone()));
                    }
                }
                InFlight::Query(reply) => {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        for waiting in self.waiting.drain(..) {
            match waiting {
                Waiting::Publish(publication) => {
                    if let Some(ack) = publication.ack {
                        let _ = ack.send(Err(error.clone()));
                    }
                }
                Waiting::Unsubscribe { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        self.queued_publishes = 0;
    }

    /// Subscribes every known room on the new connection, each from its
    /// position; queued requests follow once all are answered.
    async fn resubscribe_all(&mut self) {
        let mut batch = Vec::with_capacity(self.rooms.len());
        for (name, state) in &mut self.rooms {
            state.in_flight = true;
            batch.push((
                name.clone(),
                state.generation,
                state.name.clone(),
                state.join_leave,
                state.position.clone(),
            ));
        }
        for (name, generation, room, join_leave, recover) in batch {
            let id = self.take_id();
            self.in_flight.insert(
                id,
                InFlight::Subscribe {
                    room: name,
                    generation,
                    join_leave,
                    recover: recover.clone(),
                    resubscribe: true,
                },
            );
            self.resubscribing += 1;
            self.send(
                id,
                ClientOp::Subscribe {
                    room,
                    recover,
                    join_leave,
                },
            )
            .await;
        }
        if self.resubscribing == 0 {
            self.flush_waiting().await;
        }
    }

    async fn envelope(&mut self, envelope: ServerEvent) {
        match envelope {
            ServerEvent::Reply(reply) => self.reply(reply).await,
            ServerEvent::Message { room, offset, data } => {
                let Some(state) = self.rooms.get_mut(&room) else {
                    tracing::trace!(room, "message of a room left behind");
                    return;
                };
                if state.accept(offset) {
                    self.emit(Event::Message(Message { room, offset, data }));
                } else {
                    tracing::trace!(room, offset = offset.0, "replayed message skipped");
                }
            }
            ServerEvent::Presence { change, room, info } => {
                if self.rooms.contains_key(&room) {
                    self.emit(Event::Presence { change, room, info });
                }
            }
        }
    }

    async fn reply(&mut self, reply: Reply) {
        let Some(request) = self.in_flight.remove(&reply.id.0) else {
            if let Outcome::Error { code, message } = reply.outcome {
                tracing::debug!(code, message, "error reply to a fire-and-forget request");
            }
            return;
        };
        match request {
            InFlight::Subscribe {
                room,
                generation,
                join_leave,
                recover,
                resubscribe,
            } => {
                self.subscribe_reply(&room, generation, join_leave, recover, reply.outcome);
                if resubscribe {
                    self.resubscribing = self.resubscribing.saturating_sub(1);
                    if self.resubscribing == 0 {
                        // Held back until every room is live again.
                        self.flush_waiting().await;
                    }
                }
            }
            InFlight::Unsubscribe(responder) => {
                let _ = responder.send(match reply.outcome {
                    Outcome::Ack(_) => Ok(()),
                    Outcome::Error { code, message } => Err(ClientError::Server { code, message }),
                    other => Err(unexpected("unsubscribe", &other)),
                });
            }
            InFlight::Publish(publication) => {
                if self.losing_acks.remove(&reply.id.0) {
                    // Test hook: as if this ack never arrived.
                    self.in_flight
                        .insert(reply.id.0, InFlight::Publish(publication));
                    return;
                }
                if let Some(ack) = publication.ack {
                    let _ = ack.send(match reply.outcome {
                        Outcome::Ack(ack) => Ok(PublishAck {
                            offset: ack.offset,
                            duplicate: ack.duplicate,
                        }),
                        Outcome::Error { code, message } => {
                            Err(ClientError::Server { code, message })
                        }
                        other => Err(unexpected("publish", &other)),
                    });
                }
            }
            InFlight::Query(responder) => {
                let _ = responder.send(match reply.outcome {
                    Outcome::Error { code, message } => Err(ClientError::Server { code, message }),
                    outcome => Ok(outcome),
                });
            }
        }
    }

    fn subscribe_reply(
        &mut self,
        room: &str,
        generation: u64,
        join_leave: bool,
        recover: Option<StreamPosition>,
        outcome: Outcome,
    ) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if state.generation != generation {
            return;
        }
        state.in_flight = false;
        match outcome {
            Outcome::Ack(ack) => {
                let was_active = state.active;
                let was_confirmed = state.confirmed;
                state.acknowledge(recover, was_active, &ack.epoch, ack.offset, ack.recovered);
                state.active = true;
                state.confirmed = true;
                state.join_leave = join_leave;
                let info = SubscribeInfo {
                    epoch: ack.epoch.clone(),
                    offset: ack.offset,
                    recovered: ack.recovered,
                };
                for waiter in state.waiters.drain(..) {
                    let _ = waiter.send(Ok(info.clone()));
                }
                if was_confirmed && !was_active {
                    self.emit(Event::Resubscribed {
                        room: room.to_owned(),
                        recovered: ack.recovered,
                        position: StreamPosition {
                            epoch: ack.epoch,
                            offset: ack.offset,
                        },
                    });
                }
            }
            outcome => {
                let error = match outcome {
                    Outcome::Error { code, message } => ClientError::Server { code, message },
                    other => unexpected("subscribe", &other),
                };
                for waiter in state.waiters.drain(..) {
                    let _ = waiter.send(Err(error.clone()));
                }
                // A live subscription stays as it was; a node shutting down
                // (105) closes us soon, and the next connection tries again.
                let keep = state.active
                    || (state.confirmed && matches!(error, ClientError::Server { code: 105, .. }));
                if !keep {
                    let confirmed = state.confirmed;
                    self.rooms.remove(room);
                    if confirmed {
                        self.emit(Event::SubscriptionLost {
                            room: room.to_owned(),
                            error,
                        });
                    }
                }
            }
        }
    }
}

/// Hands the oldest waiting event to the application once it has room;
/// false when the application is gone.
async fn deliver(events: &mpsc::Sender<Event>, outbox: &mut VecDeque<Event>) -> bool {
    let Ok(permit) = events.reserve().await else {
        return false;
    };
    if let Some(event) = outbox.pop_front() {
        permit.send(event);
    }
    true
}
