//! A member: one client's membership on its core. It owns the client's
//! format, outbound queue and rooms, and turns the client's requests into
//! the messages of the routing protocol: which core is a room's home, when
//! the home must hear of interest, recovery and presence, and what to wait
//! for. A front door (the WebSocket session, a Server-Sent Events stream;
//! an HTTP request next) reads and checks requests, then calls its member;
//! it never speaks to a home itself.
//!
//! Requests of one member are handled one at a time: each call returns once
//! its request is handed on (and, for a subscribe, once the subscriber is
//! live or refused), which bounds what one member can have in flight.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;
use tokio::time::Instant;

use crate::metrics;
use crate::protocol::{
    frame, Ack, ClientInfo, ErrorCode, IdempotencyKey, Offset, Outcome, PresenceChange, Reply,
    RequestId, RoomName, StreamPosition,
};

use super::driver::{Core, Handed};
use super::message::{MemberAction, PublishMsg, ToHome};
use super::outbound::{Closing, Outbound};
use super::shard::{LocalInterest, SubscribeStep, Subscriber};
use super::{ConnId, Format, Query, ReplyTo};

/// One client's membership.
pub(crate) struct Member {
    core: Rc<Core>,
    conn: ConnId,
    format: Format,
    outbound: Rc<Outbound>,
    /// Whose member this is and its rooms, shared with the core.
    membership: Rc<Membership>,
}

/// What a member shares with its core's members table: whose connection it
/// is and the rooms it is in. Shared so that the core can act on every
/// connection of a user (the HTTP API's disconnect and unsubscribe,
/// [`MemberAction`]) while their sessions wait on their sockets. Borrowed
/// only within one call, never across an `.await`.
pub(crate) struct Membership {
    /// The user presence shows for this member ("" when anonymous).
    user: String,
    /// Rooms this member is subscribed to, and whether each tracks presence
    /// (so leaving it must be announced). Keys are detached from any
    /// received message.
    rooms: RefCell<HashMap<RoomName, bool>>,
}

impl Membership {
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    fn in_room(&self, room: &RoomName) -> bool {
        self.rooms.borrow().contains_key(room)
    }

    fn remove(&self, room: &RoomName) -> Option<bool> {
        self.rooms.borrow_mut().remove(room)
    }
}

impl Member {
    /// A new member of `core`, receiving frames in `format`.
    pub(crate) fn new(core: Rc<Core>, format: Format, user: String) -> Member {
        let membership = Rc::new(Membership {
            user,
            rooms: RefCell::new(HashMap::new()),
        });
        let (conn, outbound) = core.register(format, membership.clone());
        Member {
            core,
            conn,
            format,
            outbound,
            membership,
        }
    }

    pub(crate) fn conn(&self) -> ConnId {
        self.conn
    }

    /// The core this member belongs to.
    pub(crate) fn core(&self) -> &Rc<Core> {
        &self.core
    }

    /// The queue the member's transport drains.
    pub(crate) fn outbound(&self) -> &Rc<Outbound> {
        &self.outbound
    }

    /// Queues a reply to the member's own request: an error always, a
    /// success only when the request has an id.
    pub(crate) fn reply(&self, reply: Reply) {
        if let Outcome::Error { code, .. } = reply.outcome {
            metrics::error_reply(self.core.counters(), code);
        } else if !reply.id.wants_reply() {
            return;
        }
        let frame = frame::reply(self.format.codec(), &reply);
        self.outbound.reply(frame, Instant::now().into_std());
    }

    /// Subscribes to `room`; with `recover`, resumes after that position
    /// (the missed publications, then live ones). Returns once the
    /// subscriber is live (acknowledged ahead of any delivery) or refused.
    pub(crate) async fn subscribe(
        &mut self,
        id: RequestId,
        room: RoomName,
        recover: Option<StreamPosition>,
        join_leave: bool,
    ) {
        let core = self.core.clone();
        if self.membership.in_room(&room) {
            // Already in this room: nothing more is sent. Whatever it missed
            // before was already answered by the first subscribe.
            let position = core
                .current_position(&room, self.format)
                .unwrap_or_default();
            let recovered = recover.is_some_and(|from| from.epoch == position.epoch);
            let ack = Ack {
                offset: position.offset,
                epoch: position.epoch,
                recovered,
                ..Ack::default()
            };
            return self.reply(Reply::with(id, ack));
        }
        let node = core.node();
        let max = node.limits.max_rooms_per_connection;
        if self.membership.rooms.borrow().len() >= max {
            return self.reply(Reply::error(
                id,
                ErrorCode::TooManyRooms,
                format!("already subscribed to {max} rooms, the limit"),
            ));
        }
        if node.shutting_down() {
            return self.reply(Reply::error(
                id,
                ErrorCode::ShuttingDown,
                "node is shutting down",
            ));
        }
        let options = node.rooms.options(room.as_str());
        if join_leave && !options.join_leave {
            return self.reply(Reply::error(
                id,
                ErrorCode::NotEnabled,
                format!("room {room} has no join and leave events"),
            ));
        }
        let token = recover.as_ref().map(|_| core.recovery_token());
        let subscriber = Subscriber {
            conn: self.conn,
            outbound: self.outbound.clone(),
            join_leave,
        };
        // The shard queues the acknowledgement itself, ahead of any delivery
        // (after the home's answer, when recovering).
        let step = core.subscribe_local(&room, self.format, subscriber, id, token);
        // Recorded before any wait, so that a member dropped while waiting
        // still leaves the room. Detached: a MessagePack room name is a
        // slice of the received message, which would stay pinned for as
        // long as the subscription lasts.
        self.membership
            .rooms
            .borrow_mut()
            .insert(room.detached(), options.presence);
        let home = core.home_of(&room);
        let settled = match step {
            SubscribeStep::Live => None,
            SubscribeStep::Wait { ask_home, settled } => {
                if ask_home {
                    let (format, core_id) = (self.format, core.id());
                    let interest = ToHome::Interest {
                        room: room.clone(),
                        format,
                        core: core_id,
                    };
                    core.ask_home(home, interest).await;
                }
                Some(settled)
            }
        };
        // Sent after any `Interest`, on the same ordered path to the home, so
        // the home answers it after acknowledging the interest.
        if let (Some(from), Some(token)) = (recover, token) {
            let ask = ToHome::Recover {
                room: room.clone(),
                format: self.format,
                from,
                core: core.id(),
                token,
            };
            core.ask_home(home, ask).await;
        }
        // Unless the HTTP API took the member out of the room meanwhile
        // (its leave would then come before this join).
        if options.presence && self.membership.in_room(&room) {
            let join = self.presence(&room, PresenceChange::Join);
            core.ask_home(home, join).await;
        }
        let Some(settled) = settled else {
            return;
        };
        let refusal = match settled.await {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => Reply {
                id,
                outcome: error.outcome(),
            },
            // The shard let the waiting subscriber go: the HTTP API took it
            // out of the room, or the node is stopping.
            Err(_) if !self.membership.in_room(&room) => Reply::error(
                id,
                ErrorCode::NotSubscribed,
                format!("taken out of {room} by the server while subscribing"),
            ),
            Err(_) => Reply::error(id, ErrorCode::ShuttingDown, "node is shutting down"),
        };
        // Refused: the shard has already let it go.
        if self.membership.remove(&room) == Some(true) {
            let leave = self.presence(&room, PresenceChange::Leave);
            core.tell_home(home, leave);
        }
        self.reply(refusal);
    }

    /// Leaves `room`.
    pub(crate) async fn unsubscribe(&mut self, id: RequestId, room: RoomName) {
        let Some(presence) = self.membership.remove(&room) else {
            return self.reply(Reply::error(
                id,
                ErrorCode::NotSubscribed,
                format!("not subscribed to {room}"),
            ));
        };
        leave(
            &self.core,
            self.conn,
            self.format,
            &self.membership,
            room,
            presence,
        );
        self.reply(Reply::ack(id, Offset(0)));
        self.core.overflow_drained().await;
    }

    /// Hands a publication to its room's home; the ack (or the error) comes
    /// back into this member's queue. What is returned, if anything, is the
    /// wait the member must see through before it publishes again (room in
    /// the home's inbox, or this core's overflow drained): the caller boxes
    /// it, so that a connection's future keeps no room for it all its life.
    pub(crate) fn publish(
        &self,
        id: RequestId,
        room: RoomName,
        data: Bytes,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Option<impl Future<Output = ()> + '_> {
        let core = &self.core;
        let home = core.home_of(&room);
        let reply_to = ReplyTo::Connection {
            core: core.id(),
            conn: self.conn,
            request: id,
        };
        let msg = PublishMsg {
            room,
            data,
            idempotency_key,
            reply_to,
        };
        match core.try_send_publish(home, msg) {
            Handed::Done => None,
            waiting => Some(core.finish_publish(home, waiting)),
        }
    }

    /// Asks the room's home for history or presence and queues its answer.
    pub(crate) async fn query(&self, id: RequestId, room: RoomName, query: Query) {
        if !id.wants_reply() {
            // Nobody would read the answer.
            return;
        }
        let outcome = ask(&self.core, room, query).await;
        self.reply(Reply { id, outcome });
    }

    /// What tells the room's home that this member joined or left it.
    fn presence(&self, room: &RoomName, change: PresenceChange) -> ToHome {
        presence(&self.core, self.conn, &self.membership.user, room, change)
    }

    /// Leaves every room (the member's client is gone).
    pub(crate) fn leave_all(&mut self) {
        let rooms = std::mem::take(&mut *self.membership.rooms.borrow_mut());
        for (room, presence) in rooms {
            leave(
                &self.core,
                self.conn,
                self.format,
                &self.membership,
                room,
                presence,
            );
        }
    }
}

/// Asks `room`'s home, from `core`, for history or presence, and waits for
/// its answer in one of `core`'s waiters. A connection's query and the HTTP
/// API's both come this way.
pub(crate) async fn ask(core: &Core, room: RoomName, query: Query) -> Outcome {
    let (waiter, answer) = core.waiters().register();
    let reply_to = ReplyTo::Waiter {
        core: core.id(),
        waiter,
    };
    let home = core.home_of(&room);
    let ask = ToHome::Query {
        room,
        query,
        reply_to,
    };
    core.ask_home(home, ask).await;
    match answer.await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::error(ErrorCode::ShuttingDown, "node is shutting down"),
    }
}

/// What tells a room's home that a member joined or left it.
fn presence(
    core: &Core,
    conn: ConnId,
    user: &str,
    room: &RoomName,
    change: PresenceChange,
) -> ToHome {
    let info = ClientInfo {
        client: core.client_id(conn),
        user: user.to_owned(),
        joined_at_ms: unix_millis(),
    };
    ToHome::Presence {
        room: room.clone(),
        change,
        info,
    }
}

/// Removes a member (already taken out of its `rooms`) from a room's local
/// subscribers, then announces the leave (so, wherever the home is, the
/// leaver never hears its own leave) and tells the home when it was the
/// last one here.
fn leave(
    core: &Core,
    conn: ConnId,
    format: Format,
    membership: &Membership,
    room: RoomName,
    presence_on: bool,
) {
    let interest = core.unsubscribe_local(&room, format, conn);
    let home = core.home_of(&room);
    if presence_on {
        let change = presence(core, conn, &membership.user, &room, PresenceChange::Leave);
        core.tell_home(home, change);
    }
    if interest == LocalInterest::Lost {
        let core_id = core.id();
        core.tell_home(
            home,
            ToHome::Disinterest {
                room,
                format,
                core: core_id,
            },
        );
    }
}

/// Does a [`MemberAction`] to one of `core`'s members, for the HTTP API's
/// request to every core. Returns whether it touched the member: it was in
/// the room, or it was not closing already. Called by the core's driver
/// with no borrow of its tables held.
pub(crate) fn act(
    core: &Core,
    conn: ConnId,
    format: Format,
    outbound: &Outbound,
    membership: &Membership,
    action: &MemberAction,
) -> bool {
    match action {
        MemberAction::Disconnect { code } => {
            if outbound.closing().is_some() {
                return false;
            }
            outbound.close(Closing {
                code: *code,
                reason: "disconnected by the server",
                flush: false,
            });
            true
        }
        MemberAction::Unsubscribe { room } => {
            let Some(presence_on) = membership.remove(room) else {
                return false;
            };
            leave(core, conn, format, membership, room.clone(), presence_on);
            true
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.leave_all();
        self.core.deregister(self.conn);
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
