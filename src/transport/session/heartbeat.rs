//! Every WebSocket connection's heartbeat and token expiry, kept by one
//! task per core instead of a timer per connection.
//!
//! A timer per connection cost each one 112 bytes for its whole life,
//! idle or not (tokio's `Sleep`), and with it a wake-up of its own.
//! Here the core walks its members once a tick. For each it reads a few
//! cells beside its outbound queue ([`Liveness`]): it queues a ping when
//! one is due, closes with 4000 "heartbeat timeout" when a ping got no
//! frame of any kind back within `pong_timeout`, and closes with 4001
//! when the token has expired. The reader only marks the peer heard on
//! each frame.
//!
//! The tick is a quarter of the shorter of `ping_interval` and
//! `pong_timeout`, between 10 ms and 1 s (`HEARTBEAT_TICK_MIN`,
//! `HEARTBEAT_TICK_MAX`): with the defaults (25 s, 20 s),
//! a walk a second, and every deadline acted on at most a second late.
//! A walk costs a few nanoseconds per connection (about 0.2 ms a second
//! for 19,000 connections on one core).

use std::rc::Rc;
use std::time::Duration;

use tokio::time::{interval, Instant, MissedTickBehavior};

use crate::limits::{close_code, Limits, HEARTBEAT_TICK_MAX, HEARTBEAT_TICK_MIN};
use crate::metrics::{self, CoreCounters};
use crate::router::driver::Core;
use crate::router::outbound::{Closing, Liveness, Outbound};

/// Keeps the heartbeat of every connection of `core`, for the core's life.
pub(crate) async fn keep(core: Rc<Core>) {
    let limits = &core.node().limits;
    let mut ticks = interval(tick(limits));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        core.for_each_outbound(|outbound| beat(outbound, now, limits, core.counters()));
    }
}

/// How often the core walks its connections.
fn tick(limits: &Limits) -> Duration {
    (limits.ping_interval.min(limits.pong_timeout) / 4)
        .clamp(HEARTBEAT_TICK_MIN, HEARTBEAT_TICK_MAX)
}

/// Starts the heartbeat of a connection that has just been upgraded: the
/// first ping is due after `ping_interval`.
pub(super) fn start(liveness: &Liveness, limits: &Limits, expiry: Option<Instant>) {
    liveness.heard.set(true);
    liveness.awaiting.set(false);
    liveness
        .next
        .set(Some(Instant::now() + limits.ping_interval));
    liveness.expiry.set(expiry);
}

/// What one connection's heartbeat does at `now`.
fn beat(outbound: &Outbound, now: Instant, limits: &Limits, counters: &CoreCounters) {
    let liveness = outbound.liveness();
    if liveness.expiry.get().is_some_and(|at| at <= now) {
        metrics::add(&counters.token_expirations, 1);
        liveness.expiry.set(None);
        outbound.close(Closing {
            code: close_code::TOKEN_EXPIRED,
            reason: "token expired",
            flush: false,
        });
        return;
    }
    let Some(mut next) = liveness.next.get() else {
        return;
    };
    if now < next {
        return;
    }
    if liveness.awaiting.get() {
        if !liveness.heard.get() {
            metrics::add(&counters.heartbeat_timeouts, 1);
            liveness.next.set(None);
            outbound.close(Closing {
                code: close_code::HEARTBEAT_TIMEOUT,
                reason: "heartbeat timeout",
                flush: false,
            });
            return;
        }
        // Answered: the next ping is due `ping_interval` after this one.
        let pinged = next - limits.pong_timeout;
        next = pinged + limits.ping_interval;
        liveness.awaiting.set(false);
        liveness.next.set(Some(next));
        if now < next {
            return;
        }
    }
    // One ping outstanding at a time: the next is sent once this one is
    // answered (or the connection is closed for not answering).
    outbound.ping(b"");
    liveness.heard.set(false);
    liveness.awaiting.set(true);
    liveness.next.set(Some(now + limits.pong_timeout));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CoreStats;
    use crate::Config;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Peer {
        outbound: Outbound,
        stats: CoreStats,
        limits: Limits,
    }

    impl Peer {
        fn connected(expiry: Option<Instant>) -> Peer {
            let mut limits = Config::default().limits();
            limits.ping_interval = Duration::from_secs(25);
            limits.pong_timeout = Duration::from_secs(20);
            let outbound = Outbound::new(limits.outbound, CoreStats::detached());
            start(outbound.liveness(), &limits, expiry);
            Peer {
                outbound,
                stats: CoreStats::detached(),
                limits,
            }
        }

        fn beat_at(&self, now: Instant) {
            beat(&self.outbound, now, &self.limits, self.stats.counters());
        }

        /// Whether a ping is queued (and takes what is queued).
        fn pinged(&self) -> bool {
            let mut batch = Vec::new();
            self.outbound.take(&mut batch, 16, usize::MAX);
            batch.iter().any(|frame| frame.first() == Some(&0x89))
        }

        /// A counter of the core's, as the heartbeat left it.
        fn count(&self, counter: impl Fn(&CoreCounters) -> &AtomicU64) -> u64 {
            counter(self.stats.counters()).load(Ordering::Relaxed)
        }

        fn closed_with(&self) -> Option<u16> {
            self.outbound.closing().map(|closing| closing.code)
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_peer_that_answers_is_pinged_every_interval_and_kept() {
        let t0 = Instant::now();
        let peer = Peer::connected(None);
        peer.beat_at(t0 + 24 * SECOND);
        assert!(!peer.pinged(), "no ping before ping_interval");
        peer.beat_at(t0 + 26 * SECOND);
        assert!(peer.pinged());
        // The pong (any frame) comes back; the reader marks the peer heard.
        peer.outbound.liveness().heard.set(true);
        peer.beat_at(t0 + 47 * SECOND);
        assert_eq!(peer.closed_with(), None);
        assert!(!peer.pinged(), "the next ping waits for its interval");
        peer.beat_at(t0 + 52 * SECOND);
        assert!(peer.pinged(), "pinged again one interval after the last");
        assert_eq!(peer.count(|c| &c.heartbeat_timeouts), 0);
    }

    #[test]
    fn a_peer_silent_after_a_ping_is_closed_with_4000_once_pong_timeout_passed() {
        let t0 = Instant::now();
        let peer = Peer::connected(None);
        peer.beat_at(t0 + 26 * SECOND);
        assert!(peer.pinged());
        peer.beat_at(t0 + 45 * SECOND);
        assert_eq!(peer.closed_with(), None, "pong_timeout has not passed");
        peer.beat_at(t0 + 47 * SECOND);
        assert_eq!(peer.closed_with(), Some(close_code::HEARTBEAT_TIMEOUT));
        assert_eq!(peer.count(|c| &c.heartbeat_timeouts), 1);
    }

    #[test]
    fn an_expired_token_closes_with_4001_and_a_refresh_moves_the_deadline() {
        let t0 = Instant::now();
        let peer = Peer::connected(Some(t0 + 10 * SECOND));
        // A refresh moved the expiry before it came.
        peer.outbound.liveness().expiry.set(Some(t0 + 60 * SECOND));
        peer.beat_at(t0 + 11 * SECOND);
        assert_eq!(peer.closed_with(), None);
        peer.outbound.liveness().heard.set(true);
        peer.beat_at(t0 + 61 * SECOND);
        assert_eq!(peer.closed_with(), Some(close_code::TOKEN_EXPIRED));
        assert_eq!(peer.count(|c| &c.token_expirations), 1);
    }

    #[test]
    fn a_member_without_a_heartbeat_is_never_pinged() {
        // A stream of server-sent events keeps its own heartbeat.
        let limits = Config::default().limits();
        let outbound = Outbound::new(limits.outbound, CoreStats::detached());
        let stats = CoreStats::detached();
        beat(
            &outbound,
            Instant::now() + 3600 * SECOND,
            &limits,
            stats.counters(),
        );
        let mut batch = Vec::new();
        outbound.take(&mut batch, 16, usize::MAX);
        assert!(batch.is_empty());
        assert!(outbound.closing().is_none());
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shorter_deadline_between_10_ms_and_a_second() {
        let mut limits = Config::default().limits();
        assert_eq!(tick(&limits), SECOND, "the defaults, 25 s and 20 s");
        limits.ping_interval = Duration::from_millis(100);
        limits.pong_timeout = Duration::from_millis(200);
        assert_eq!(tick(&limits), Duration::from_millis(25));
        limits.ping_interval = Duration::from_millis(1);
        assert_eq!(tick(&limits), Duration::from_millis(10));
    }
}
