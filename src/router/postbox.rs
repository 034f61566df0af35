//! The sending side of the queues between cores, and the wake-ups that go
//! with them.
//!
//! A [`Mailbox`] is a core's address: the senders of its two bounded inboxes
//! and a [`Notify`] that wakes its driver. A core's [`Postbox`] sends to every
//! mailbox and never blocks its thread: sessions *wait* (asynchronously) for
//! room, the driver parks what does not fit in a per-destination overflow.
//! When a receiver drains its inbox it wakes the cores that found it full.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::Notify;

use super::message::{Event, PublishMsg};
use super::CoreId;

/// A core's address, shared by all cores.
pub(crate) struct Mailbox {
    publishes: Sender<PublishMsg>,
    events: Sender<Event>,
    /// Wakes the owning core's driver: new mail, room freed elsewhere, or shutdown.
    pub(crate) wake: Notify,
    /// `blocked[c]`: core `c` found an inbox here full and waits to be woken.
    blocked: Box<[AtomicBool]>,
    any_blocked: AtomicBool,
}

/// A core's own receiving ends.
pub(crate) struct Inbox {
    pub(crate) publishes: Receiver<PublishMsg>,
    pub(crate) events: Receiver<Event>,
}

/// Builds every core's mailbox and inbox; each inbox holds `capacity` messages.
pub(crate) fn mailboxes(workers: usize, capacity: usize) -> (Arc<[Mailbox]>, Vec<Inbox>) {
    let mut boxes = Vec::with_capacity(workers);
    let mut inboxes = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (publishes, publishes_rx) = bounded(capacity);
        let (events, events_rx) = bounded(capacity);
        boxes.push(Mailbox {
            publishes,
            events,
            wake: Notify::new(),
            blocked: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            any_blocked: AtomicBool::new(false),
        });
        inboxes.push(Inbox {
            publishes: publishes_rx,
            events: events_rx,
        });
    }
    (boxes.into(), inboxes)
}

/// How many messages wait in a core's inboxes (read from any thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InboxDepths {
    pub(crate) publishes: usize,
    pub(crate) events: usize,
}

impl Mailbox {
    /// What waits in this core's inboxes now: crossbeam's channels count
    /// their messages with atomics, so any core may look without a lock.
    pub(crate) fn depths(&self) -> InboxDepths {
        InboxDepths {
            publishes: self.publishes.len(),
            events: self.events.len(),
        }
    }

    fn mark_blocked(&self, sender: CoreId) {
        self.blocked[sender.0].store(true, Ordering::SeqCst);
        self.any_blocked.store(true, Ordering::SeqCst);
    }
}

/// What happened to a message handed to a full or closed inbox.
enum Posted<T> {
    Sent,
    Full(T),
    /// The receiving core has stopped (shutdown): the message is dropped.
    Gone,
}

fn try_post<T>(sender: &Sender<T>, msg: T) -> Posted<T> {
    match sender.try_send(msg) {
        Ok(()) => Posted::Sent,
        Err(TrySendError::Full(msg)) => Posted::Full(msg),
        Err(TrySendError::Disconnected(_)) => Posted::Gone,
    }
}

/// A core's sending side (core-local).
pub(crate) struct Postbox {
    me: CoreId,
    mailboxes: Arc<[Mailbox]>,
    /// Driver-made events that found their destination full, in order.
    overflow: RefCell<Vec<VecDeque<Event>>>,
    /// Wakes local sessions waiting for room in some inbox or for the overflow to drain.
    space: Notify,
}

impl Postbox {
    pub(crate) fn new(me: CoreId, mailboxes: Arc<[Mailbox]>) -> Postbox {
        let overflow = (0..mailboxes.len()).map(|_| VecDeque::new()).collect();
        Postbox {
            me,
            mailboxes,
            overflow: RefCell::new(overflow),
            space: Notify::new(),
        }
    }

    /// This core's own mailbox.
    pub(crate) fn own(&self) -> &Mailbox {
        &self.mailboxes[self.me.0]
    }

    /// Every core's mailbox, in core order.
    pub(crate) fn mailboxes(&self) -> &[Mailbox] {
        &self.mailboxes
    }

    /// Sends an event from the driver without waiting: what does not fit is
    /// kept, in order, and sent by [`Postbox::flush`].
    pub(crate) fn post(&self, dest: CoreId, msg: Event) {
        let mut overflow = self.overflow.borrow_mut();
        let queue = &mut overflow[dest.0];
        if !queue.is_empty() {
            queue.push_back(msg);
            return;
        }
        let mailbox = &self.mailboxes[dest.0];
        match try_post(&mailbox.events, msg) {
            Posted::Sent => mailbox.wake.notify_one(),
            Posted::Full(msg) => {
                mailbox.mark_blocked(self.me);
                queue.push_back(msg);
            }
            Posted::Gone => {}
        }
    }

    /// Whether driver-made events are waiting for room somewhere.
    pub(crate) fn has_overflow(&self) -> bool {
        self.overflow.borrow().iter().any(|q| !q.is_empty())
    }

    /// Sends what the overflow holds, as far as there is room, then wakes
    /// local sessions waiting for room. Called whenever the driver wakes.
    pub(crate) fn flush(&self) {
        let mut overflow = self.overflow.borrow_mut();
        for (dest, queue) in overflow.iter_mut().enumerate() {
            let mailbox = &self.mailboxes[dest];
            let mut sent = false;
            while let Some(msg) = queue.pop_front() {
                match try_post(&mailbox.events, msg) {
                    Posted::Sent => sent = true,
                    Posted::Full(msg) => {
                        queue.push_front(msg);
                        mailbox.mark_blocked(self.me);
                        break;
                    }
                    Posted::Gone => queue.clear(),
                }
            }
            if sent {
                mailbox.wake.notify_one();
            }
        }
        drop(overflow);
        self.space.notify_waiters();
    }

    /// Hands a publication to its home core, waiting while that inbox is full.
    /// Hands a publication to core `dest` if its inbox has room now, and
    /// gives it back (`Some`) when the inbox is full: then
    /// [`Postbox::send_publish`] waits for room.
    pub(crate) fn try_send_publish(&self, dest: CoreId, msg: PublishMsg) -> Option<PublishMsg> {
        let mailbox = &self.mailboxes[dest.0];
        match try_post(&mailbox.publishes, msg) {
            Posted::Sent => {
                mailbox.wake.notify_one();
                None
            }
            Posted::Gone => None,
            Posted::Full(msg) => Some(msg),
        }
    }

    pub(crate) async fn send_publish(&self, dest: CoreId, mut msg: PublishMsg) {
        let mailbox = &self.mailboxes[dest.0];
        loop {
            let mut wait = pin!(self.space.notified());
            wait.as_mut().enable();
            match try_post(&mailbox.publishes, msg) {
                Posted::Sent | Posted::Gone => break,
                Posted::Full(back) => msg = back,
            }
            mailbox.mark_blocked(self.me);
            match try_post(&mailbox.publishes, msg) {
                Posted::Sent | Posted::Gone => break,
                Posted::Full(back) => msg = back,
            }
            wait.await;
        }
        mailbox.wake.notify_one();
    }

    /// Waits until the overflow is empty (a session that published on its
    /// home core waits here, so the overflow stays bounded).
    pub(crate) async fn overflow_drained(&self) {
        loop {
            let mut wait = pin!(self.space.notified());
            wait.as_mut().enable();
            if !self.has_overflow() {
                return;
            }
            wait.await;
        }
    }

    /// Wakes the cores that found one of this core's inboxes full. Called by
    /// the driver after it drained some of its inbox.
    pub(crate) fn release_blocked(&self) {
        let own = self.own();
        if !own.any_blocked.swap(false, Ordering::SeqCst) {
            return;
        }
        for (core, flag) in own.blocked.iter().enumerate() {
            if flag.swap(false, Ordering::SeqCst) {
                self.mailboxes[core].wake.notify_one();
            }
        }
    }
}
