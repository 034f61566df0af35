//! A deliberately slow engine, for the project's own tests (feature
//! `test-hooks`): the memory engine behind random delays, so that answers
//! come back late and out of order, across rooms and within one, the way a
//! store behind a network may answer; and behind a switch that makes it
//! unavailable. Operations still take effect in the order they are started
//! (the memory engine does them at once), which is all the engine contract
//! promises.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::{Engine, EngineError, EngineEvent, MemoryEngine, Op, Outcome, Ticket};
use crate::protocol::RoomName;

/// How slow, and whether available.
#[derive(Debug, Clone, Default)]
pub struct SlowOptions {
    /// Each answer is held for a random time up to this.
    pub max_delay: Duration,
    /// Seeds the delays, so a failing run can be repeated.
    pub seed: u64,
    /// While set, every operation fails with `Unavailable` (error 110) and
    /// takes no effect.
    pub unavailable: Arc<AtomicBool>,
    /// While set, every operation takes effect but is answered `Timeout`
    /// (error 110): the ambiguous failure of a store that went quiet.
    pub timing_out: Arc<AtomicBool>,
}

/// The memory engine, slowed down.
pub(crate) struct SlowEngine {
    inner: MemoryEngine,
    options: SlowOptions,
    rng: u64,
    /// Answers not yet due.
    held: Vec<(Instant, Ticket, Outcome)>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl SlowEngine {
    pub(crate) fn new(inner: MemoryEngine, options: &SlowOptions) -> SlowEngine {
        SlowEngine {
            inner,
            rng: options.seed | 1,
            options: options.clone(),
            held: Vec::new(),
            timer: None,
        }
    }

    /// xorshift64: a new pseudo-random number.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

impl Engine for SlowEngine {
    fn start(
        &mut self,
        ticket: Ticket,
        room: &RoomName,
        op: Op,
        now: std::time::Instant,
    ) -> Option<Outcome> {
        let outcome = if self.options.unavailable.load(Ordering::Acquire) {
            Err(EngineError::Unavailable("switched off by the test".into()))
        } else {
            let outcome = self.inner.start(ticket, room, op, now)?;
            match self.options.timing_out.load(Ordering::Acquire) {
                true => Err(EngineError::Timeout),
                false => outcome,
            }
        };
        let max = self.options.max_delay.as_micros() as u64;
        let delay = Duration::from_micros(self.next_random() % (max + 1));
        self.held.push((Instant::now() + delay, ticket, outcome));
        None
    }

    fn poll(&mut self, cx: &mut Context<'_>, out: &mut Vec<EngineEvent>) -> Poll<()> {
        loop {
            let now = Instant::now();
            let before = out.len();
            let mut i = 0;
            while i < self.held.len() {
                if self.held[i].0 <= now {
                    let (_, ticket, outcome) = self.held.swap_remove(i);
                    out.push(EngineEvent::Answer(ticket, outcome));
                } else {
                    i += 1;
                }
            }
            if out.len() > before {
                return Poll::Ready(());
            }
            let Some(next) = self.held.iter().map(|h| h.0).min() else {
                self.timer = None;
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn sweep(&mut self, now: std::time::Instant, in_use: &dyn Fn(&RoomName) -> bool) {
        self.inner.sweep(now, in_use);
    }

    fn reachable(&self) -> bool {
        !self.options.unavailable.load(Ordering::Acquire)
    }
}
