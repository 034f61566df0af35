//! Counters, gauges and histograms, one set per core: each core writes
//! only its own, with relaxed atomics, on a cache line of its own (no
//! contention, no shared atomic on the hot path). They are summed when
//! read: by `GET /stats` and [`crate::Server::stats`] (the counters, as a
//! [`StatsSnapshot`]) and by `GET /metrics` (everything, as a [`Scrape`]).
//! A sum read while the cores count may be a few increments behind; each
//! counter on its own never goes backwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// One core's counters, gauges and histograms.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub(crate) struct CoreCounters {
            $( $(#[doc = $doc])+ pub(crate) $name: AtomicU64, )+
            /// Error replies by wire code: slot `code - FIRST_ERROR_CODE`.
            /// Counted with [`error_reply`], beside `error_replies`.
            error_replies_by_code: [AtomicU64; ERROR_CODE_SLOTS],
            /// Set while this core's engine is thought unavailable (see
            /// [`CoreCounters::engine_available`]). A flag rather than a
            /// gauge at 1 so that the default, a new core, reads available.
            engine_unavailable: AtomicBool,
            /// How long this core's engine took to answer its operations.
            pub(crate) engine_latency: Histogram,
            /// From a publication's sequencing on its home core to its
            /// queueing for this core's subscribers.
            pub(crate) delivery_lag: Histogram,
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
    /// WebSocket frames written to clients (deliveries, replies, pings and
    /// pongs; close frames not included).
    messages_sent,
    /// WebSocket bytes read from clients after the upgrade (frame headers
    /// included).
    bytes_received,
    /// WebSocket bytes written to clients (frame headers included, close
    /// frames not).
    bytes_sent,
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
    /// Handshakes answered 503 because `max_connections` connections are open.
    connection_limit_rejections,
    /// Handshakes answered 503 because the node is shutting down.
    shutdown_rejections,
    /// Handshakes answered 400: no subprotocol we speak, a bad
    /// `Sec-WebSocket-Key` or `Sec-WebSocket-Version`, or a bad upgrade.
    bad_handshakes,
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

/// The lowest wire error code (`protocol::ErrorCode`); codes are counted
/// per code from here.
pub(crate) const FIRST_ERROR_CODE: u32 = 100;

/// How many wire error codes there are (100 to 110).
pub(crate) const ERROR_CODE_SLOTS: usize = 11;

/// Counts one error reply with its wire code: in `error_replies`, and by
/// code (a code outside the known range is counted in the total only).
pub(crate) fn error_reply(counters: &CoreCounters, code: u32) {
    add(&counters.error_replies, 1);
    let slot = code.checked_sub(FIRST_ERROR_CODE).map(|s| s as usize);
    if let Some(counter) = slot.and_then(|s| counters.error_replies_by_code.get(s)) {
        add(counter, 1);
    }
}

impl CoreCounters {
    /// Whether this core's engine is thought available: no operation
    /// failed with "unavailable" or "timeout" since the last check, and
    /// the last check found its store reachable. Read by `/ready` and
    /// `roomcast_engine_up`.
    pub(crate) fn engine_available(&self) -> bool {
        !self.engine_unavailable.load(Ordering::Relaxed)
    }

    /// Records what this core knows of its engine (written by this core only).
    pub(crate) fn set_engine_available(&self, available: bool) {
        // Written only on a change: the common case reads the line it owns.
        if self.engine_available() != available {
            self.engine_unavailable.store(!available, Ordering::Relaxed);
        }
    }
}

/// Upper bounds of every histogram's buckets, in seconds (Prometheus's
/// base unit): 10 µs to 10 s, then `+Inf`. One set for both histograms,
/// from a delivery on the home core itself (0) to an engine at its command
/// timeout.
pub(crate) const BUCKET_BOUNDS: [f64; BUCKETS] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How many finite buckets a histogram has.
pub(crate) const BUCKETS: usize = 19;

/// [`BUCKET_BOUNDS`] in nanoseconds, what an observation is compared with.
const BUCKET_BOUNDS_NANOS: [u64; BUCKETS] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A histogram of durations with fixed buckets, written by one core:
/// an observation is two relaxed additions (its bucket and the sum).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket, not cumulative; the last slot is past every
    /// bound (`+Inf`). The count is their sum, so a scrape's `_count`
    /// always equals its `+Inf` bucket.
    buckets: [AtomicU64; BUCKETS + 1],
    /// The sum of every observation, in nanoseconds (wraps after 584
    /// years of observed time).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = BUCKET_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        add(&self.buckets[slot], 1);
        if nanos > 0 {
            self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    fn add_to(&self, total: &mut HistogramSnapshot) {
        for (sum, bucket) in total.buckets.iter_mut().zip(&self.buckets) {
            *sum += bucket.load(Ordering::Relaxed);
        }
        total.sum_nanos = total
            .sum_nanos
            .wrapping_add(self.sum_nanos.load(Ordering::Relaxed));
    }
}

/// A histogram summed over cores.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HistogramSnapshot {
    /// Observations per bucket, not cumulative, `+Inf` last.
    pub(crate) buckets: [u64; BUCKETS + 1],
    pub(crate) sum_nanos: u64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of the observations, in seconds.
    pub(crate) fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// What was observed after `before` (an earlier snapshot of the same
    /// histogram): the dashboard's view of the last interval.
    pub(crate) fn since(&self, before: &HistogramSnapshot) -> HistogramSnapshot {
        let mut delta = HistogramSnapshot {
            sum_nanos: self.sum_nanos.wrapping_sub(before.sum_nanos),
            ..HistogramSnapshot::default()
        };
        for ((d, now), then) in delta
            .buckets
            .iter_mut()
            .zip(&self.buckets)
            .zip(&before.buckets)
        {
            *d = now.saturating_sub(*then);
        }
        delta
    }

    /// The upper bound, in seconds, of the bucket that holds quantile `q`
    /// (0 to 1): the quantile is at most that. `None` with no observation,
    /// infinity when it lies past the last bound.
    pub(crate) fn quantile_bound_seconds(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (slot, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    BUCKET_BOUNDS_NANOS
                        .get(slot)
                        .map_or(f64::INFINITY, |&bound| bound as f64 / 1e9),
                );
            }
        }
        Some(f64::INFINITY)
    }
}

/// Everything `GET /metrics` reads from the cores' counters, at once.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scrape {
    pub(crate) totals: StatsSnapshot,
    /// Error replies by code: slot `code - FIRST_ERROR_CODE`.
    pub(crate) error_replies_by_code: [u64; ERROR_CODE_SLOTS],
    pub(crate) engine_latency: HistogramSnapshot,
    pub(crate) delivery_lag: HistogramSnapshot,
    /// Per core, in core order: whether its engine is thought available.
    pub(crate) engine_available: Vec<bool>,
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

    /// Every counter, gauge and histogram, summed over cores where that
    /// makes sense (the engines' availability stays per core).
    pub(crate) fn scrape(&self) -> Scrape {
        let mut scrape = Scrape::default();
        for core in self.cores.iter() {
            scrape.totals.add(core);
            for (sum, counter) in scrape
                .error_replies_by_code
                .iter_mut()
                .zip(&core.error_replies_by_code)
            {
                *sum += counter.load(Ordering::Relaxed);
            }
            core.engine_latency.add_to(&mut scrape.engine_latency);
            core.delivery_lag.add_to(&mut scrape.delivery_lag);
            scrape.engine_available.push(core.engine_available());
        }
        scrape
    }

    /// Whether every core's engine is thought available.
    pub(crate) fn engines_available(&self) -> bool {
        self.cores.iter().all(CoreCounters::engine_available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn the_last_interval_s_p99_is_read_from_the_difference_of_two_snapshots() {
        let histogram = Histogram::default();
        let mut before = HistogramSnapshot::default();
        for _ in 0..1_000 {
            histogram.observe(Duration::from_secs(2));
        }
        histogram.add_to(&mut before);
        for _ in 0..99 {
            histogram.observe(Duration::from_micros(30));
        }
        histogram.observe(Duration::from_millis(3));
        let mut now = HistogramSnapshot::default();
        histogram.add_to(&mut now);
        let last = now.since(&before);
        assert_eq!(last.count(), 100, "the earlier seconds are gone");
        assert_eq!(last.quantile_bound_seconds(0.5), Some(50e-6));
        assert_eq!(last.quantile_bound_seconds(0.99), Some(50e-6));
        assert_eq!(last.quantile_bound_seconds(1.0), Some(5e-3));
        assert_eq!(
            HistogramSnapshot::default().quantile_bound_seconds(0.99),
            None
        );
    }

    #[test]
    fn every_wire_error_code_has_a_slot_of_its_own() {
        let codes = FIRST_ERROR_CODE..FIRST_ERROR_CODE + ERROR_CODE_SLOTS as u32;
        for code in codes.clone() {
            assert!(ErrorCode::from_code(code).is_some(), "{code} is no code");
        }
        assert!(ErrorCode::from_code(codes.start - 1).is_none());
        assert!(ErrorCode::from_code(codes.end).is_none());
        let stats = Stats::new(2);
        error_reply(stats.core(0), 107);
        error_reply(stats.core(1), 107);
        error_reply(stats.core(1), 110);
        error_reply(stats.core(1), 999);
        let scrape = stats.scrape();
        assert_eq!(scrape.totals.error_replies, 4);
        assert_eq!(scrape.error_replies_by_code[7], 2);
        assert_eq!(scrape.error_replies_by_code[10], 1);
        assert_eq!(scrape.error_replies_by_code.iter().sum::<u64>(), 3);
    }

    #[test]
    fn a_histogram_puts_each_duration_in_the_first_bucket_that_holds_it() {
        assert_eq!(BUCKET_BOUNDS.len(), BUCKET_BOUNDS_NANOS.len());
        for (seconds, nanos) in BUCKET_BOUNDS.iter().zip(BUCKET_BOUNDS_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
        let stats = Stats::new(2);
        let lag = |core: usize| &stats.core(core).delivery_lag;
        lag(0).observe(Duration::ZERO);
        lag(0).observe(Duration::from_micros(10)); // on the bound: in its bucket
        lag(1).observe(Duration::from_micros(11));
        lag(1).observe(Duration::from_secs(60));
        let scrape = stats.scrape();
        let lag = &scrape.delivery_lag;
        assert_eq!(lag.buckets[0], 2);
        assert_eq!(lag.buckets[1], 1);
        assert_eq!(lag.buckets[BUCKETS], 1, "past every bound: +Inf");
        assert_eq!(lag.count(), 4);
        assert_eq!(lag.sum_nanos, 60_000_021_000);
        assert_eq!(scrape.engine_latency.count(), 0);
    }

    #[test]
    fn an_engine_reads_available_until_its_core_says_otherwise() {
        let stats = Stats::new(2);
        assert!(stats.engines_available());
        stats.core(1).set_engine_available(false);
        assert!(!stats.engines_available());
        assert_eq!(stats.scrape().engine_available, vec![true, false]);
        stats.core(1).set_engine_available(true);
        assert!(stats.engines_available());
    }
}
