//! One-shot completions, per core: a task that asked a home something
//! registers here, names the entry in its [`ReplyTo::Waiter`], and awaits
//! the outcome, which the home's reply completes on this core. This is how
//! a request that has no connection to queue a reply to (an HTTP request)
//! gets its answer, and how a connection's query waits for its own.
//!
//! Bounded by the requests in flight: each waiting task holds one entry,
//! and every entry is completed, because a home answers every step (and
//! every core answers a [`ToHome::Members`] request).
//!
//! What completes an entry is a wire [`Outcome`] by default; a core keeps
//! a second table of counts (`Waiters<usize>`) for the HTTP API's requests
//! to every core, whose answer is how many connections each one touched.
//!
//! [`ReplyTo::Waiter`]: super::ReplyTo::Waiter
//! [`ToHome::Members`]: super::message::ToHome::Members

use std::cell::{Cell, RefCell};

use foldhash::HashMap;
use tokio::sync::oneshot;

use crate::protocol::Outcome;

use super::WaiterId;

/// A core's waiting tasks, each to be completed with one `T`.
pub(crate) struct Waiters<T = Outcome> {
    next: Cell<u64>,
    waiting: RefCell<HashMap<WaiterId, oneshot::Sender<T>>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Waiters<T> {
        Waiters {
            next: Cell::new(0),
            waiting: RefCell::new(HashMap::default()),
        }
    }
}

impl<T> Waiters<T> {
    /// A new entry and the receiver its outcome will arrive on.
    pub(crate) fn register(&self) -> (WaiterId, oneshot::Receiver<T>) {
        let id = WaiterId(self.next.get());
        self.next.set(id.0 + 1);
        let (done, wait) = oneshot::channel();
        self.waiting.borrow_mut().insert(id, done);
        (id, wait)
    }

    /// Completes an entry; an outcome for a task that stopped waiting is
    /// dropped.
    pub(crate) fn complete(&self, id: WaiterId, outcome: T) {
        if let Some(done) = self.waiting.borrow_mut().remove(&id) {
            let _ = done.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ack, ErrorCode, Offset};

    #[test]
    fn each_waiter_gets_its_own_outcome_once() {
        let waiters = Waiters::default();
        let (first, mut first_rx) = waiters.register();
        let (second, mut second_rx) = waiters.register();
        assert_ne!(first, second);
        let ack = Outcome::Ack(Ack {
            offset: Offset(4),
            ..Ack::default()
        });
        waiters.complete(second, ack.clone());
        waiters.complete(first, Outcome::error(ErrorCode::Unavailable, "down"));
        waiters.complete(first, ack.clone());
        assert_eq!(second_rx.try_recv(), Ok(ack));
        assert!(matches!(
            first_rx.try_recv(),
            Ok(Outcome::Error { code: 110, .. })
        ));
    }
}
