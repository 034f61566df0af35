//! Counters, one set per core (each core writes only its own, with relaxed
//! atomics: no contention), summed when read by `GET /stats` or
//! [`crate::Server::stats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// One core's counters.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub(crate) struct CoreCounters {
            $( $(#[doc = $doc])+ pub(crate) $name: AtomicU64, )+
        }

        /// The node's counters, summed over cores.
        #[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        impl StatsSnapshot {
            fn add(&mut self, core: &CoreCounters) {
                $( self.$name += core.$name.load(Ordering::Relaxed); )+
            }
        }
    };
}

counters! {
    /// WebSocket connections open now.
    connections_open,
    /// WebSocket connections accepted since start.
    connections_accepted,
    /// Handshakes refused before the upgrade (limits, bad requests, shutdown).
    handshakes_rejected,
    /// Client messages received (complete, after reassembly).
    messages_received,
    /// Publications sequenced by this node.
    publishes,
    /// Frames queued to subscribers.
    deliveries,
    /// Publish retries recognised by their idempotency key (not published again).
    duplicate_publishes,
    /// Subscribes with `recover` answered `recovered = true`.
    recoveries,
    /// Subscribes with `recover` answered `recovered = false`.
    recoveries_refused,
    /// Missed publications replayed to recovering subscribers.
    recovered_deliveries,
    /// Error replies sent.
    error_replies,
    /// Connections closed by the server for a protocol violation or bad input.
    protocol_closes,
    /// Subscribers closed with 1013 under `slow_consumer = "close"`.
    slow_consumer_closes,
    /// Messages dropped under `slow_consumer = "drop-oldest"`.
    slow_consumer_dropped,
    /// Connections closed for a missing pong.
    heartbeat_timeouts,
    /// Handshakes answered 401: missing, invalid or expired token.
    auth_failures,
    /// Handshakes answered 403: origin not allowed.
    origin_rejections,
    /// Handshakes answered 429: per-IP connection cap or handshake rate.
    ip_limit_rejections,
    /// Connections answered 503 before their request was read: too many handshakes in progress.
    handshakes_over_capacity,
    /// Operations refused with error 107.
    permission_denials,
    /// Publishes refused with error 109.
    rate_limited_publishes,
    /// Connections closed with 1008 for sustained rate-limit abuse.
    rate_limit_closes,
    /// Connections closed with 4001: token expired.
    token_expirations,
    /// Engine operations that failed (unavailable or timed out; error 110
    /// to whoever asked). Presence joins and leaves have no asker: this
    /// counter is the only trace of theirs.
    engine_failures,
    /// Rooms whose order the engine lost (Redis lost their history or a gap
    /// it no longer holds): their subscribers were closed with 4002.
    rooms_lost,
    /// Gaps in a room's feed from Redis filled from its history.
    redis_gap_fills,
    /// Times the Redis engine subscribed its rooms again and checked their
    /// positions (a reconnect, a lagged receiver, a cluster change).
    redis_resyncs,
    /// Server-Sent Events streams open now (also in `connections_open`).
    sse_streams_open,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Subtracts `n` from a gauge.
pub(crate) fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Ordering::Relaxed);
}

/// One core's counters, as a handle per-connection state can keep.
#[derive(Debug, Clone)]
pub(crate) struct CoreStats {
    stats: Arc<Stats>,
    core: usize,
}

impl CoreStats {
    pub(crate) fn new(stats: Arc<Stats>, core: usize) -> CoreStats {
        CoreStats { stats, core }
    }

    /// Counters of their own, for tests of a single queue.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn detached() -> CoreStats {
        CoreStats::new(Arc::new(Stats::new(1)), 0)
    }

    pub(crate) fn counters(&self) -> &CoreCounters {
        self.stats.core(self.core)
    }
}

/// Every core's counters.
#[derive(Debug)]
pub(crate) struct Stats {
    cores: Box<[CoreCounters]>,
}

impl Stats {
    pub(crate) fn new(workers: usize) -> Stats {
        Stats {
            cores: (0..workers).map(|_| CoreCounters::default()).collect(),
        }
    }

    /// The counters core `n` writes.
    pub(crate) fn core(&self, n: usize) -> &CoreCounters {
        &self.cores[n]
    }

    /// The sum over all cores, now.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for core in self.cores.iter() {
            total.add(core);
        }
        total
    }
}
