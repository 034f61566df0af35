//! `GET /metrics`: the node's counters, gauges and histograms in the
//! Prometheus text format (0.0.4), written by hand (a few dozen lines, no
//! dependency).
//!
//! Everything is read at scrape time from state the cores keep anyway:
//! each core's counters and histograms (`metrics::CoreCounters`, written by
//! that core alone with relaxed atomics, summed here), the depth of every
//! core's inboxes (crossbeam counts them with atomics any thread may read)
//! and the connection budget. A scrape adds no work and no shared atomic to
//! the path of a message.
//!
//! Names follow Prometheus's conventions: a `roomcast_` prefix, `_total`
//! on counters, base units (`_seconds`, `_bytes`). Labels have bounded
//! values only (an outcome, an error code, a core, a queue): never a room,
//! a user or an address.

use std::fmt::{Display, Write};

use hyper::StatusCode;

use super::{respond, AdminResponse};
use crate::metrics::{HistogramSnapshot, Scrape, BUCKET_BOUNDS, FIRST_ERROR_CODE};
use crate::router::driver::Core;
use crate::router::postbox::InboxDepths;

/// The text format's content type, version included (Prometheus picks its
/// parser by it).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one scrape reads, gathered first so that rendering is a pure
/// function (and testable without a node).
struct Reading {
    scrape: Scrape,
    /// Per core, in core order.
    depths: Vec<InboxDepths>,
    queue_capacity: usize,
    max_connections: usize,
    /// Which engine the cores run: `memory` or `redis`.
    engine: &'static str,
    draining: bool,
}

/// `GET /metrics`.
pub(crate) fn metrics(core: &Core) -> AdminResponse {
    let node = core.node();
    let reading = Reading {
        scrape: node.stats.scrape(),
        depths: core.inbox_depths().collect(),
        queue_capacity: node.config.core_queue_capacity,
        max_connections: node.config.max_connections,
        engine: if node.config.redis_url.is_empty() {
            "memory"
        } else {
            "redis"
        },
        draining: node.shutting_down(),
    };
    respond(StatusCode::OK, CONTENT_TYPE, render(&reading))
}

/// The exposition of one reading.
fn render(reading: &Reading) -> String {
    let totals = &reading.scrape.totals;
    let mut out = Exposition::default();

    out.gauge(
        "roomcast_connections",
        "WebSocket connections open now.",
        totals.connections_open,
    );
    out.gauge(
        "roomcast_connection_limit",
        "Connections the node admits at most (max_connections); /ready is 503 at it.",
        reading.max_connections,
    );
    out.family(
        "roomcast_handshakes_total",
        "counter",
        "WebSocket handshakes by outcome: accepted, or the refusal's kind.",
    );
    let outcomes = [
        ("accepted", totals.connections_accepted),
        ("unauthorized", totals.auth_failures),
        ("origin_forbidden", totals.origin_rejections),
        ("ip_limited", totals.ip_limit_rejections),
        ("over_capacity", totals.handshakes_over_capacity),
        ("connection_limit", totals.connection_limit_rejections),
        ("shutting_down", totals.shutdown_rejections),
        ("bad_request", totals.bad_handshakes),
    ];
    for (outcome, value) in outcomes {
        out.sample("roomcast_handshakes_total", &[("outcome", outcome)], value);
    }

    let counters = [
        (
            "roomcast_messages_received_total",
            "Client messages received (complete, after reassembly).",
            totals.messages_received,
        ),
        (
            "roomcast_messages_sent_total",
            "WebSocket frames written to clients (deliveries, replies, pings, pongs).",
            totals.messages_sent,
        ),
        (
            "roomcast_received_bytes_total",
            "WebSocket bytes read from clients after the upgrade, frame headers included.",
            totals.bytes_received,
        ),
        (
            "roomcast_sent_bytes_total",
            "WebSocket bytes written to clients, frame headers included (close frames not).",
            totals.bytes_sent,
        ),
        (
            "roomcast_publishes_total",
            "Publications sequenced by this node's home cores.",
            totals.publishes,
        ),
        (
            "roomcast_duplicate_publishes_total",
            "Publish retries recognised by their idempotency key (not published again).",
            totals.duplicate_publishes,
        ),
        (
            "roomcast_deliveries_total",
            "Publications queued to subscribers (one per subscriber and publication).",
            totals.deliveries,
        ),
        (
            "roomcast_recovered_deliveries_total",
            "Missed publications replayed to recovering subscribers.",
            totals.recovered_deliveries,
        ),
        (
            "roomcast_slow_consumer_closes_total",
            "Subscribers closed with 1013 for a full outbound queue (slow_consumer = close).",
            totals.slow_consumer_closes,
        ),
        (
            "roomcast_slow_consumer_drops_total",
            "Deliveries dropped from full outbound queues (slow_consumer = drop-oldest).",
            totals.slow_consumer_dropped,
        ),
        (
            "roomcast_protocol_closes_total",
            "Connections closed by the server for a protocol violation or bad input.",
            totals.protocol_closes,
        ),
        (
            "roomcast_heartbeat_timeouts_total",
            "Connections closed with 4000 for a missing pong.",
            totals.heartbeat_timeouts,
        ),
        (
            "roomcast_token_expirations_total",
            "Connections closed with 4001 when their token expired.",
            totals.token_expirations,
        ),
        (
            "roomcast_permission_denials_total",
            "Operations refused with error 107.",
            totals.permission_denials,
        ),
        (
            "roomcast_rate_limited_publishes_total",
            "Publishes refused with error 109.",
            totals.rate_limited_publishes,
        ),
        (
            "roomcast_rate_limit_closes_total",
            "Connections closed with 1008 for sustained rate-limit abuse.",
            totals.rate_limit_closes,
        ),
        (
            "roomcast_engine_failures_total",
            "Engine operations that failed (unavailable or timed out).",
            totals.engine_failures,
        ),
        (
            "roomcast_rooms_lost_total",
            "Rooms whose order the engine lost (subscribers closed with 4002).",
            totals.rooms_lost,
        ),
        (
            "roomcast_redis_gap_fills_total",
            "Gaps in a room's feed from Redis filled from its history.",
            totals.redis_gap_fills,
        ),
        (
            "roomcast_redis_resyncs_total",
            "Times the Redis engine subscribed its rooms again and checked their positions.",
            totals.redis_resyncs,
        ),
    ];
    for (name, help, value) in counters {
        out.counter(name, help, value);
    }

    out.family(
        "roomcast_recoveries_total",
        "counter",
        "Subscribes with recover, by answer: recovered (every missed publication replayed) or refused.",
    );
    let recoveries = [
        ("recovered", totals.recoveries),
        ("refused", totals.recoveries_refused),
    ];
    for (outcome, value) in recoveries {
        out.sample("roomcast_recoveries_total", &[("outcome", outcome)], value);
    }

    out.family(
        "roomcast_error_replies_total",
        "counter",
        "Error replies sent, by wire error code (docs/PROTOCOL.md).",
    );
    for (slot, value) in reading.scrape.error_replies_by_code.iter().enumerate() {
        let code = (FIRST_ERROR_CODE + slot as u32).to_string();
        out.sample("roomcast_error_replies_total", &[("code", &code)], value);
    }

    out.family(
        "roomcast_core_queue_depth",
        "gauge",
        "Messages waiting in a core's inbox from other cores: publishes, or events (to and from room homes).",
    );
    for (core, depths) in reading.depths.iter().enumerate() {
        let core = core.to_string();
        for (queue, depth) in [("publishes", depths.publishes), ("events", depths.events)] {
            let labels = [("core", core.as_str()), ("queue", queue)];
            out.sample("roomcast_core_queue_depth", &labels, depth);
        }
    }
    out.gauge(
        "roomcast_core_queue_capacity",
        "Messages each core inbox holds at most (core_queue_capacity).",
        reading.queue_capacity,
    );

    out.family(
        "roomcast_engine_up",
        "gauge",
        "1 while a core's engine is available; 0 after an operation failed with error 110 or its store was found unreachable, until a check a second later finds it reachable with no failure in between.",
    );
    for (core, available) in reading.scrape.engine_available.iter().enumerate() {
        let core = core.to_string();
        let labels = [("core", core.as_str()), ("engine", reading.engine)];
        out.sample("roomcast_engine_up", &labels, u8::from(*available));
    }
    out.histogram(
        "roomcast_engine_latency_seconds",
        "Seconds from an engine operation's start to its answer (0 for an answer given at once, as the memory engine's are).",
        &reading.scrape.engine_latency,
    );
    out.histogram(
        "roomcast_publish_delivery_lag_seconds",
        "Seconds from a publication's sequencing on its room's home core (its publish answered by the engine, or its arrival from the Redis feed) to its queueing for the subscribers on one core: one observation per core and publication.",
        &reading.scrape.delivery_lag,
    );
    out.gauge(
        "roomcast_draining",
        "1 once a graceful shutdown has begun.",
        u8::from(reading.draining),
    );
    out.text
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// The `# HELP` and `# TYPE` lines that open a family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample line.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// A histogram: cumulative buckets, `+Inf` last, then sum and count.
    fn histogram(&mut self, name: &str, help: &str, histogram: &HistogramSnapshot) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in BUCKET_BOUNDS.iter().zip(&histogram.buckets) {
            cumulative += count;
            let le = bound.to_string();
            self.sample(&bucket, &[("le", &le)], cumulative);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count());
        self.sample(&format!("{name}_sum"), &[], histogram.sum_seconds());
        self.sample(&format!("{name}_count"), &[], histogram.count());
    }
}

/// A label value as the text format quotes it: backslash, double quote and
/// line feed escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A help text as the text format writes it: backslash and line feed
/// escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Stats, BUCKETS};
    use std::time::Duration;

    fn reading(stats: &Stats) -> Reading {
        Reading {
            scrape: stats.scrape(),
            depths: vec![
                InboxDepths {
                    publishes: 3,
                    events: 0,
                },
                InboxDepths {
                    publishes: 0,
                    events: 7,
                },
            ],
            queue_capacity: 1024,
            max_connections: 10,
            engine: "memory",
            draining: false,
        }
    }

    /// The value of the one sample line that starts with `series` (its
    /// name and labels, as written).
    fn value(text: &str, series: &str) -> String {
        let values: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .collect();
        assert_eq!(values.len(), 1, "{series} in\n{text}");
        values[0].to_owned()
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let stats = Stats::new(2);
        let lag = |core: usize| &stats.core(core).delivery_lag;
        lag(0).observe(Duration::ZERO);
        lag(1).observe(Duration::from_millis(3));
        lag(1).observe(Duration::from_secs(30));
        let text = render(&reading(&stats));
        let name = "roomcast_publish_delivery_lag_seconds";
        assert_eq!(
            value(&text, &format!("{name}_bucket{{le=\"0.00001\"}}")),
            "1"
        );
        assert_eq!(
            value(&text, &format!("{name}_bucket{{le=\"0.0025\"}}")),
            "1"
        );
        assert_eq!(value(&text, &format!("{name}_bucket{{le=\"0.005\"}}")), "2");
        assert_eq!(value(&text, &format!("{name}_bucket{{le=\"10\"}}")), "2");
        assert_eq!(value(&text, &format!("{name}_bucket{{le=\"+Inf\"}}")), "3");
        assert_eq!(value(&text, &format!("{name}_count")), "3");
        assert_eq!(value(&text, &format!("{name}_sum")), "30.003");
        let buckets = text.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(buckets, BUCKETS + 3, "every bound, +Inf, sum and count");
    }

    #[test]
    fn bounded_labels_only_every_code_and_core_present() {
        let stats = Stats::new(2);
        crate::metrics::error_reply(stats.core(1), 103);
        stats.core(1).set_engine_available(false);
        let text = render(&reading(&stats));
        assert_eq!(
            value(&text, "roomcast_error_replies_total{code=\"103\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "roomcast_error_replies_total{code=\"110\"}"),
            "0"
        );
        let codes = text
            .lines()
            .filter(|l| l.starts_with("roomcast_error_replies_total{"))
            .count();
        assert_eq!(codes, 11);
        let depth = "roomcast_core_queue_depth{core=\"1\",queue=\"events\"}";
        assert_eq!(value(&text, depth), "7");
        let up = |core| format!("roomcast_engine_up{{core=\"{core}\",engine=\"memory\"}}");
        assert_eq!(value(&text, &up(0)), "1");
        assert_eq!(value(&text, &up(1)), "0");
    }

    #[test]
    fn every_sample_belongs_to_the_family_typed_before_it() {
        let text = render(&reading(&Stats::new(2)));
        let mut family = String::new();
        let mut kind = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, typ) = rest.split_once(' ').expect("name and type");
                (family, kind) = (name.to_owned(), typ.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().expect("a name");
            let suffixes: &[&str] = match kind.as_str() {
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            assert!(
                suffixes.iter().any(|s| name == format!("{family}{s}")),
                "{name} under {family}"
            );
            assert!(name.starts_with("roomcast_"), "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("one\\two\nthree"), "one\\\\two\\nthree");
        let mut out = Exposition::default();
        out.sample("x", &[("l", "\"")], 1);
        assert_eq!(out.text, "x{l=\"\\\"\"} 1\n");
    }
}
