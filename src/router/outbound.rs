//! One connection's outbound queue: bounded in bytes, messages and age, with
//! the slow-consumer policy applied at the moment a frame does not fit.
//!
//! Frames are shared [`Bytes`] (a publication's frame is built once and
//! queued by reference for every subscriber). Bytes that the writer has taken
//! but not yet written still count against the bound, so a connection's
//! memory never exceeds `max_bytes` plus one frame, however slow its reader.
//! Everything here is single-threaded: the queue lives on its connection's
//! core and is filled by that core's shard and member; the transport's
//! writer drains it into the socket.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::limits::{close_code, OutboundLimits, SlowConsumerPolicy, MAX_PENDING_PONGS};
use crate::metrics::{self, CoreStats};
use crate::protocol::frame;

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// `drop-oldest`: this many older frames were dropped to make room.
    DroppedOldest(usize),
    /// `close`: the queue was discarded and a 1013 close is on its way.
    ClosedSlow,
    /// The connection is closing; the frame was not queued.
    Refused,
}

/// Why a connection is being closed by the server, and what to send.
#[derive(Debug, Clone)]
pub(crate) struct Closing {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    /// Send what is queued first (shutdown), or not (slow consumer, errors).
    pub(crate) flush: bool,
}

/// A frame as a core queues it: the shared [`Bytes`] behind a core-local
/// `Rc`, so queueing it to each subscriber is a plain increment; the atomic
/// count of the `Bytes` is touched once per core and publication.
pub(crate) type LocalFrame = Rc<Bytes>;

struct Queued {
    frame: LocalFrame,
    at: Instant,
    /// Deliveries may be dropped under `drop-oldest` (the offset gap shows
    /// it); replies never are (a request gets exactly one reply).
    droppable: bool,
}

struct State {
    frames: VecDeque<Queued>,
    /// When the oldest queued frame passes `max_age`: kept here so that a
    /// push reads no queued frame. With a thousand queues filled in turn,
    /// reading the front one was a cache miss of its own on every push.
    /// `None` with nothing queued (or an age limit beyond the clock's range).
    front_due: Option<Instant>,
    /// Bytes queued plus bytes taken by the writer and not yet written.
    bytes: usize,
    /// Answers to pings, written before data, oldest first. At most
    /// [`MAX_PENDING_PONGS`]: a ping flood replaces the oldest (RFC 6455 lets
    /// a server answer only the latest ping), so it costs no memory.
    pongs: VecDeque<LocalFrame>,
    ping: Option<LocalFrame>,
    closing: Option<Closing>,
}

impl State {
    /// After frames left the front: the new oldest frame's due time.
    fn front_moved(&mut self, max_age: Duration) {
        self.front_due = self.frames.front().and_then(|q| q.at.checked_add(max_age));
    }
}

/// A connection's outbound queue and the writer's wake-up.
pub(crate) struct Outbound {
    state: RefCell<State>,
    rules: Rc<QueueRules>,
    writer: Cell<Option<Waker>>,
    liveness: Liveness,
}

/// What every outbound queue of a core applies, shared by them all (one
/// copy per core, not one per connection: an idle connection's memory).
pub(crate) struct QueueRules {
    pub(crate) limits: OutboundLimits,
    /// Where slow-consumer outcomes are counted, whatever frame caused them.
    pub(crate) stats: CoreStats,
}

/// What a connection's heartbeat knows of it: plain cells, read and moved
/// by the core's one heartbeat task (`transport::session::heartbeat`) and
/// by the connection's reader, with no timer of the connection's own. Kept
/// beside the queue because the core reaches each of its connections
/// through its queue, and the heartbeat acts by queueing (a ping, a close).
#[derive(Default)]
pub(crate) struct Liveness {
    /// The peer sent something since the last ping.
    pub(crate) heard: Cell<bool>,
    /// A ping is outstanding: `next` is when its answer is due.
    pub(crate) awaiting: Cell<bool>,
    /// When the heartbeat next acts: the next ping, or the deadline of the
    /// outstanding one's answer. `None`: no heartbeat (a stream of
    /// server-sent events keeps its own).
    pub(crate) next: Cell<Option<tokio::time::Instant>>,
    /// When the connection's token expires (close 4001 then); a refresh
    /// moves it.
    pub(crate) expiry: Cell<Option<tokio::time::Instant>>,
}

impl Outbound {
    /// A queue with rules of its own (tests, benchmarks); a core shares one
    /// [`QueueRules`] among its queues with [`Outbound::under`].
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn new(limits: OutboundLimits, stats: CoreStats) -> Outbound {
        Outbound::under(Rc::new(QueueRules { limits, stats }))
    }

    pub(crate) fn under(rules: Rc<QueueRules>) -> Outbound {
        Outbound {
            state: RefCell::new(State {
                frames: VecDeque::new(),
                front_due: None,
                bytes: 0,
                pongs: VecDeque::new(),
                ping: None,
                closing: None,
            }),
            rules,
            writer: Cell::new(None),
            liveness: Liveness::default(),
        }
    }

    /// What the heartbeat knows of this connection.
    pub(crate) fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    fn wake(&self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    /// Queues a delivery, applying the slow-consumer policy if it does not fit.
    pub(crate) fn push(&self, frame: impl Into<LocalFrame>, now: Instant) -> Pushed {
        self.enqueue(frame.into(), now, true)
    }

    /// Queues a reply. Under the same bound as deliveries, but `drop-oldest`
    /// never drops a reply: when only replies are left to drop, the
    /// connection is closed as under `close`.
    pub(crate) fn reply(&self, frame: Bytes, now: Instant) -> Pushed {
        self.enqueue(Rc::new(frame), now, false)
    }

    fn enqueue(&self, frame: LocalFrame, now: Instant, droppable: bool) -> Pushed {
        let mut state = self.state.borrow_mut();
        if state.closing.is_some() {
            return Pushed::Refused;
        }
        let limits = &self.rules.limits;
        let over = |s: &State, extra: usize| {
            s.bytes + extra > limits.max_bytes
                || s.frames.len() >= limits.max_messages
                || s.front_due.is_some_and(|due| now > due)
        };
        let mut result = Pushed::Queued;
        if over(&state, frame.len()) {
            let mut dropped = 0;
            if limits.policy == SlowConsumerPolicy::DropOldest {
                while over(&state, frame.len()) {
                    let Some(at) = state.frames.iter().position(|q| q.droppable) else {
                        break;
                    };
                    if let Some(old) = state.frames.remove(at) {
                        state.bytes -= old.frame.len();
                        dropped += 1;
                    }
                    state.front_moved(limits.max_age);
                }
            }
            if dropped > 0 {
                metrics::add(
                    &self.rules.stats.counters().slow_consumer_dropped,
                    dropped as u64,
                );
            }
            // Still over with frames queued: only replies are left, and they
            // may not be dropped. (With nothing queued, the bytes over the
            // bound are in the writer's hands: the frame is admitted.)
            let only_replies_left = !state.frames.is_empty();
            if over(&state, frame.len())
                && (limits.policy == SlowConsumerPolicy::Close || only_replies_left)
            {
                metrics::add(&self.rules.stats.counters().slow_consumer_closes, 1);
                state.bytes -= state.frames.drain(..).map(|q| q.frame.len()).sum::<usize>();
                state.front_due = None;
                state.closing = Some(Closing {
                    code: close_code::TRY_AGAIN_LATER,
                    reason: "slow consumer",
                    flush: false,
                });
                drop(state);
                self.wake();
                return Pushed::ClosedSlow;
            }
            result = Pushed::DroppedOldest(dropped);
        }
        let was_empty = state.frames.is_empty();
        if was_empty {
            state.front_due = now.checked_add(limits.max_age);
        }
        state.bytes += frame.len();
        state.frames.push_back(Queued {
            frame,
            at: now,
            droppable,
        });
        drop(state);
        if was_empty {
            self.wake();
        }
        result
    }

    /// Queues the answer to a ping.
    pub(crate) fn pong(&self, payload: &[u8]) {
        let mut state = self.state.borrow_mut();
        if state.pongs.len() >= MAX_PENDING_PONGS {
            state.pongs.pop_front();
        }
        state
            .pongs
            .push_back(Rc::new(frame::control(frame::Opcode::Pong, payload)));
        drop(state);
        self.wake();
    }

    /// Queues a heartbeat ping.
    pub(crate) fn ping(&self, payload: &[u8]) {
        self.state.borrow_mut().ping = Some(Rc::new(frame::control(frame::Opcode::Ping, payload)));
        self.wake();
    }

    /// Starts closing the connection (the first reason wins).
    pub(crate) fn close(&self, closing: Closing) {
        let mut state = self.state.borrow_mut();
        if state.closing.is_some() {
            return;
        }
        if !closing.flush {
            state.bytes -= state.frames.drain(..).map(|q| q.frame.len()).sum::<usize>();
            state.front_due = None;
        }
        state.closing = Some(closing);
        drop(state);
        self.wake();
    }

    /// The close in progress, if any.
    pub(crate) fn closing(&self) -> Option<Closing> {
        self.state.borrow().closing.clone()
    }

    /// Frames queued and not yet taken by the writer.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.borrow().frames.len()
    }

    /// Bytes queued or in the writer's hands.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.state.borrow().bytes
    }

    /// Ready when there is something to write or a close to send.
    pub(crate) fn poll_work(&self, cx: &mut Context<'_>) -> Poll<()> {
        let state = self.state.borrow();
        if !state.frames.is_empty()
            || !state.pongs.is_empty()
            || state.ping.is_some()
            || state.closing.is_some()
        {
            Poll::Ready(())
        } else {
            self.writer.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    /// Ready once a close has been requested (used while a write is in progress).
    pub(crate) fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.borrow().closing.is_some() {
            Poll::Ready(())
        } else {
            self.writer.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    /// Moves control frames and then data frames into `batch`, up to
    /// `max_frames` frames or about `max_bytes` bytes (at least one frame).
    /// Returns the data bytes taken, to hand back to [`Outbound::written`].
    pub(crate) fn take(
        &self,
        batch: &mut Vec<LocalFrame>,
        max_frames: usize,
        max_bytes: usize,
    ) -> usize {
        let mut state = self.state.borrow_mut();
        batch.extend(state.pongs.drain(..));
        if let Some(ping) = state.ping.take() {
            batch.push(ping);
        }
        let mut taken = 0;
        while batch.len() < max_frames && (taken < max_bytes || batch.is_empty()) {
            let Some(q) = state.frames.pop_front() else {
                break;
            };
            taken += q.frame.len();
            batch.push(q.frame);
        }
        state.front_moved(self.rules.limits.max_age);
        taken
    }

    /// The writer wrote `n` data bytes taken with [`Outbound::take`].
    pub(crate) fn written(&self, n: usize) {
        let mut state = self.state.borrow_mut();
        state.bytes = state.bytes.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CoreStats;
    use std::time::Duration;

    fn limits(policy: SlowConsumerPolicy) -> OutboundLimits {
        OutboundLimits {
            max_bytes: 1000,
            max_messages: 100,
            max_age: Duration::from_secs(10),
            policy,
        }
    }

    fn queue(policy: SlowConsumerPolicy) -> Outbound {
        Outbound::new(limits(policy), CoreStats::detached())
    }

    #[test]
    fn close_policy_discards_the_queue_and_schedules_1013() {
        let out = queue(SlowConsumerPolicy::Close);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(out.push(Bytes::from(vec![0; 100]), now), Pushed::Queued);
        }
        assert_eq!(out.push(Bytes::from(vec![0; 100]), now), Pushed::ClosedSlow);
        assert_eq!(out.bytes(), 0);
        assert_eq!(out.closing().map(|c| c.code), Some(1013));
        assert_eq!(out.push(Bytes::from_static(b"x"), now), Pushed::Refused);
    }

    #[test]
    fn drop_oldest_keeps_the_newest_within_the_bound() {
        let out = queue(SlowConsumerPolicy::DropOldest);
        let now = Instant::now();
        for i in 0..10u8 {
            out.push(Bytes::from(vec![i; 100]), now);
        }
        assert_eq!(
            out.push(Bytes::from(vec![10; 100]), now),
            Pushed::DroppedOldest(1)
        );
        let mut batch = Vec::new();
        out.take(&mut batch, 1000, usize::MAX);
        assert_eq!(batch.len(), 10);
        assert_eq!(batch[0][0], 1);
        assert_eq!(batch[9][0], 10);
    }

    #[test]
    fn taken_bytes_count_until_written() {
        let out = queue(SlowConsumerPolicy::Close);
        let now = Instant::now();
        out.push(Bytes::from(vec![0; 600]), now);
        let mut batch = Vec::new();
        out.take(&mut batch, 10, usize::MAX);
        assert_eq!(out.bytes(), 600);
        assert_eq!(out.push(Bytes::from(vec![0; 600]), now), Pushed::ClosedSlow);
    }

    #[test]
    fn drop_oldest_never_drops_a_reply_and_closes_when_only_replies_are_left() {
        let out = queue(SlowConsumerPolicy::DropOldest);
        let now = Instant::now();
        out.reply(Bytes::from(vec![1; 400]), now);
        out.push(Bytes::from(vec![2; 400]), now);
        assert_eq!(
            out.push(Bytes::from(vec![3; 400]), now),
            Pushed::DroppedOldest(1)
        );
        let mut batch = Vec::new();
        out.take(&mut batch, 10, usize::MAX);
        assert_eq!(
            (batch[0][0], batch[1][0]),
            (1, 3),
            "the reply survives, the oldest delivery goes"
        );
        let out = queue(SlowConsumerPolicy::DropOldest);
        out.reply(Bytes::from(vec![1; 600]), now);
        assert_eq!(
            out.reply(Bytes::from(vec![1; 600]), now),
            Pushed::ClosedSlow
        );
    }

    #[test]
    fn a_message_older_than_max_age_makes_the_queue_full() {
        let out = queue(SlowConsumerPolicy::DropOldest);
        let start = Instant::now();
        out.push(Bytes::from_static(b"old"), start);
        let later = start + Duration::from_secs(11);
        assert_eq!(
            out.push(Bytes::from_static(b"new"), later),
            Pushed::DroppedOldest(1)
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn the_age_limit_follows_the_oldest_frame_still_queued() {
        let out = queue(SlowConsumerPolicy::DropOldest);
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        out.push(Bytes::from_static(b"first"), at(0));
        out.push(Bytes::from_static(b"second"), at(9));
        let mut batch = Vec::new();
        out.take(&mut batch, 1, usize::MAX);
        assert_eq!(
            out.push(Bytes::from_static(b"third"), at(11)),
            Pushed::Queued,
            "the writer took the first frame: the oldest left is 2 s old"
        );
        assert_eq!(
            out.push(Bytes::from_static(b"fourth"), at(20)),
            Pushed::DroppedOldest(1),
            "the second frame is now 11 s old, the third only 9 s"
        );
        batch.clear();
        out.take(&mut batch, 10, usize::MAX);
        let left: Vec<&[u8]> = batch.iter().map(|frame| &frame[..]).collect();
        assert_eq!(left, [&b"third"[..], &b"fourth"[..]]);
    }
}
