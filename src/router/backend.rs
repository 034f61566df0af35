//! The backend's handle: the front door of a request that has no
//! connection (the HTTP API on the admin listener). Like a [`Member`], it
//! turns requests into the messages of the routing protocol and never
//! speaks to a home itself; unlike one, it has no outbound queue and no
//! rooms: every answer comes back to one of its core's waiters, so the
//! caller gets it as a return value, once the room's home (and its engine)
//! has done the work.
//!
//! A publication takes the same path as a WebSocket publish (the home's
//! `publishes` inbox, the engine, the fan-out, idempotency keys); a query
//! the same as a connection's (`member::ask`). A request about a user's
//! connections goes to every core ([`ToHome::Members`]), each of which
//! answers with how many of its connections it touched.
//!
//! [`Member`]: super::member::Member

use std::rc::Rc;

use bytes::Bytes;

use crate::protocol::{ErrorCode, IdempotencyKey, Outcome, RoomName};

use super::driver::Core;
use super::member;
use super::message::{MemberAction, PublishMsg, ToHome};
use super::{CoreId, Query, ReplyTo};

/// Requests of the HTTP API, made from one core.
pub(crate) struct Backend {
    core: Rc<Core>,
}

impl Backend {
    pub(crate) fn new(core: Rc<Core>) -> Backend {
        Backend { core }
    }

    /// Publishes `data` to `room` and waits for the home's answer: an ack
    /// with the offset, the room's epoch and whether the key made it a
    /// duplicate, or the error. The ack comes only once the engine stored
    /// the publication.
    pub(crate) async fn publish(
        &self,
        room: RoomName,
        data: Bytes,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Outcome {
        let core = &self.core;
        let home = core.home_of(&room);
        let (waiter, answer) = core.waiters().register();
        let msg = PublishMsg {
            room,
            data,
            idempotency_key,
            reply_to: ReplyTo::Waiter {
                core: core.id(),
                waiter,
            },
        };
        core.send_publish(home, msg).await;
        match answer.await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::error(ErrorCode::ShuttingDown, "node is shutting down"),
        }
    }

    /// History or presence of `room`, as its home answers it.
    pub(crate) async fn query(&self, room: RoomName, query: Query) -> Outcome {
        member::ask(&self.core, room, query).await
    }

    /// Asks every core (this one too) to do `action` to `user`'s
    /// connections, and waits for the sum of their counts. `None` when a
    /// core's table of counts went away before it answered (the node
    /// stopped). A core that stopped without answering is never heard
    /// from: the caller bounds the wait.
    pub(crate) async fn members(&self, user: &str, action: MemberAction) -> Option<usize> {
        let core = &self.core;
        let workers = core.node().config.workers;
        let mut answers = Vec::with_capacity(workers);
        for dest in (0..workers).map(CoreId) {
            let (waiter, answer) = core.tallies().register();
            answers.push(answer);
            let ask = ToHome::Members {
                user: user.to_owned(),
                action: action.clone(),
                asker: core.id(),
                waiter,
            };
            core.tell_home(dest, ask);
        }
        core.overflow_drained().await;
        let mut affected = 0;
        for answer in answers {
            affected += answer.await.ok()?;
        }
        Some(affected)
    }
}
