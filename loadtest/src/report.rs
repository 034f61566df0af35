//! Results: one JSON object (stdout) and a table for people (stderr).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cli::PublishMode;
use crate::connections::ConnectionsOutcome;
use crate::measure::CpuSnapshot;
use crate::pubsub::PubSubOutcome;

/// Above this share of its threads' CPU the generator is the bottleneck.
const SATURATED: f64 = 0.9;

/// Above this share of the wall time spent waiting for a CPU, a process
/// shared its cores with other work.
const CONTENDED: f64 = 0.1;

/// Parameters of a pub/sub run.
#[derive(Debug, Serialize)]
pub(crate) struct PubSubParameters {
    addr: String,
    path: String,
    codec: &'static str,
    rooms: usize,
    subscribers: usize,
    publishers: usize,
    payload_bytes: usize,
    /// Total open-loop rate asked for (msgs/s), or null for closed loop.
    rate: Option<f64>,
    /// Unacknowledged publishes per publisher, or null for open loop.
    window: Option<usize>,
    warmup_s: f64,
    drain_timeout_s: f64,
    slow_subscribers: usize,
    threads: usize,
}

/// Publish → deliver latency of publications sent in the window.
#[derive(Debug, Serialize)]
pub(crate) struct LatencyUs {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
    samples: u64,
}

/// CPU figures, shared by every scenario.
#[derive(Debug, Serialize)]
pub(crate) struct CpuFigures {
    generator_threads: usize,
    generator_cpu_seconds: f64,
    /// CPU-seconds / wall-seconds / threads.
    generator_cpu_util: f64,
    generator_saturated: bool,
    server_cpu_seconds: Option<f64>,
    /// Server CPU-seconds per wall-second: cores kept busy.
    server_cpu_cores: Option<f64>,
    /// Seconds the generator's threads waited for a CPU (all threads).
    generator_runqueue_wait_s: Option<f64>,
    /// Seconds the server's threads waited for a CPU (all threads).
    server_runqueue_wait_s: Option<f64>,
    /// Whether either side waited for a CPU more than a tenth of the time:
    /// other work shared the cores, and the figures are not comparable.
    cpu_contention: bool,
}

impl CpuFigures {
    fn new(cpu: &(CpuSnapshot, CpuSnapshot), wall: Duration, threads: usize) -> CpuFigures {
        let own = cpu.1.own.saturating_sub(cpu.0.own).as_secs_f64();
        let wall = wall.as_secs_f64().max(1e-9);
        let util = own / wall / threads as f64;
        let server = match (cpu.0.server, cpu.1.server) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
            _ => None,
        };
        let waited = |before: Option<Duration>, after: Option<Duration>| {
            Some(after?.saturating_sub(before?).as_secs_f64())
        };
        let own_wait = waited(cpu.0.own_wait, cpu.1.own_wait);
        let server_wait = waited(cpu.0.server_wait, cpu.1.server_wait);
        let contended =
            |wait: Option<f64>, threads: f64| wait.is_some_and(|w| w / wall / threads > CONTENDED);
        CpuFigures {
            cpu_contention: contended(own_wait, threads as f64) || contended(server_wait, 1.0),
            generator_runqueue_wait_s: own_wait.map(|w| round(w, 3)),
            server_runqueue_wait_s: server_wait.map(|w| round(w, 3)),
            generator_threads: threads,
            generator_cpu_seconds: round(own, 3),
            generator_cpu_util: round(util, 3),
            generator_saturated: util > SATURATED,
            server_cpu_seconds: server.map(|s| round(s, 3)),
            server_cpu_cores: server.map(|s| round(s / wall, 3)),
        }
    }
}

/// The result of a `fanout`, `rooms` or `latency` run.
#[derive(Debug, Serialize)]
pub(crate) struct PubSubReport {
    scenario: &'static str,
    parameters: PubSubParameters,
    /// Length of the measured window.
    duration_s: f64,
    /// Publishes sent in the window.
    publishes: u64,
    publishes_per_s: f64,
    /// Deliveries that arrived in the window.
    deliveries: u64,
    deliveries_per_s: f64,
    /// Publications sent in the window × subscribers of their room.
    expected_deliveries: u64,
    /// Deliveries of those publications received by the end of the drain.
    delivered_of_window: u64,
    /// expected_deliveries − delivered_of_window.
    losses: i64,
    gaps: u64,
    missing_offsets: u64,
    duplicates: u64,
    lossless: bool,
    /// Of `gaps` and `missing_offsets`, what the `--slow-subscribers` saw:
    /// with those alone, a slow reader did not hurt the others.
    slow_subscriber_gaps: u64,
    slow_subscriber_missing_offsets: u64,
    latency_us: Option<LatencyUs>,
    subscribers_connected: u64,
    publishers_connected: u64,
    setup_failures: u64,
    setup_errors: BTreeMap<String, u64>,
    setup_s: f64,
    /// Close codes the server sent, with how many connections got each.
    server_closes: BTreeMap<u16, u64>,
    /// Connections that ended without a close frame.
    dropped_connections: u64,
    drain_s: f64,
    drain_timed_out: bool,
    publish_acks: u64,
    publish_errors: u64,
    error_replies: u64,
    malformed_envelopes: u64,
    protocol_faults: u64,
    #[serde(flatten)]
    cpu: CpuFigures,
    /// Server CPU-seconds per million deliveries (= CPU-µs per delivery).
    server_cpu_s_per_million_deliveries: Option<f64>,
}

impl PubSubReport {
    pub(crate) fn new(outcome: &PubSubOutcome) -> PubSubReport {
        let plan = &outcome.plan;
        let times = outcome.times;
        let window = Duration::from_nanos(times.t1 - times.t0);
        let duration_s = window.as_secs_f64();
        let d = &outcome.deliveries;
        let p = &outcome.publishes;
        let expected: u64 = p
            .in_window_by_room
            .iter()
            .zip(&outcome.setup.subscribed_per_room)
            .map(|(published, subscribers)| published * subscribers)
            .sum();
        let losses = expected as i64 - d.of_window as i64;
        let latency = (!outcome.latency.is_empty()).then(|| {
            let h = &outcome.latency;
            let us = |ns: u64| round(ns as f64 / 1000.0, 1);
            LatencyUs {
                p50: us(h.value_at_quantile(0.50)),
                p90: us(h.value_at_quantile(0.90)),
                p99: us(h.value_at_quantile(0.99)),
                p999: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
                mean: round(h.mean() / 1000.0, 1),
                samples: h.len(),
            }
        });
        let cpu = CpuFigures::new(&outcome.cpu, window, plan.threads);
        let mut closes = d.closes.clone();
        for (code, n) in &p.closes {
            *closes.entry(*code).or_default() += n;
        }
        let deliveries = d.arrived_in_window;
        PubSubReport {
            scenario: plan.scenario.name(),
            parameters: PubSubParameters {
                addr: plan.target.addr.to_string(),
                path: plan.target.path.clone(),
                codec: plan.target.codec.subprotocol(),
                rooms: plan.rooms.len(),
                subscribers: plan.subscribers.len(),
                publishers: plan.publishers.len(),
                payload_bytes: plan.payload,
                rate: plan.rate,
                window: match plan.mode {
                    PublishMode::Window(w) => Some(w),
                    PublishMode::Rate { .. } => None,
                },
                warmup_s: plan.warmup.as_secs_f64(),
                drain_timeout_s: plan.drain_timeout.as_secs_f64(),
                slow_subscribers: plan.subscribers.iter().filter(|s| s.slow).count(),
                threads: plan.threads,
            },
            duration_s: round(duration_s, 3),
            publishes: p.in_window(),
            publishes_per_s: round(p.in_window() as f64 / duration_s, 1),
            deliveries,
            deliveries_per_s: round(deliveries as f64 / duration_s, 1),
            expected_deliveries: expected,
            delivered_of_window: d.of_window,
            losses,
            gaps: d.gaps,
            missing_offsets: d.missing_offsets,
            duplicates: d.duplicates,
            lossless: losses == 0 && d.gaps == 0 && d.duplicates == 0,
            slow_subscriber_gaps: outcome.slow_deliveries.gaps,
            slow_subscriber_missing_offsets: outcome.slow_deliveries.missing_offsets,
            latency_us: latency,
            subscribers_connected: outcome.setup.subscribers(),
            publishers_connected: outcome.setup.publishers(),
            setup_failures: outcome.setup.failures,
            setup_errors: outcome.setup.errors.clone(),
            setup_s: round(outcome.setup_time.as_secs_f64(), 3),
            server_closes: closes,
            dropped_connections: d.dropped + p.dropped,
            drain_s: round(outcome.drained_at.saturating_sub(times.t1) as f64 / 1e9, 3),
            drain_timed_out: outcome.drain_timed_out,
            publish_acks: p.acks,
            publish_errors: p.errors,
            error_replies: d.error_replies,
            malformed_envelopes: d.malformed,
            protocol_faults: d.protocol_faults,
            server_cpu_s_per_million_deliveries: cpu
                .server_cpu_seconds
                .filter(|_| deliveries > 0)
                .map(|s| round(s / (deliveries as f64 / 1e6), 3)),
            cpu,
        }
    }

    /// The table for people.
    pub(crate) fn table(&self) -> String {
        let p = &self.parameters;
        let mut t = String::new();
        let pace = match (p.rate, p.window) {
            (Some(rate), _) => format!("open loop at {} msg/s", group(rate as u64)),
            (None, Some(window)) => format!("closed loop, window {window} per publisher"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            t,
            "roomcast-load {} ({}) against {}: {} room(s), {} subscribers, {} publishers, {} B payload, {pace}",
            self.scenario,
            p.codec,
            p.addr,
            group(p.rooms as u64),
            group(p.subscribers as u64),
            group(p.publishers as u64),
            p.payload_bytes
        );
        let _ = writeln!(
            t,
            "  {:<22} {:.2} s after {:.2} s warm-up",
            "measured", self.duration_s, p.warmup_s
        );
        let _ = writeln!(
            t,
            "  {:<22} {:>14}  {:>14}/s",
            "publishes",
            group(self.publishes),
            group(self.publishes_per_s as u64)
        );
        let _ = writeln!(
            t,
            "  {:<22} {:>14}  {:>14}/s",
            "deliveries",
            group(self.deliveries),
            group(self.deliveries_per_s as u64)
        );
        let _ = writeln!(
            t,
            "  {:<22} {:>14} expected, {} received",
            "deliveries of window",
            group(self.expected_deliveries),
            group(self.delivered_of_window)
        );
        let _ = writeln!(
            t,
            "  {:<22} losses {}, gaps {} ({} offsets), duplicates {} -> {}",
            "loss check",
            self.losses,
            self.gaps,
            self.missing_offsets,
            self.duplicates,
            if self.lossless { "lossless" } else { "LOSSY" }
        );
        if p.slow_subscribers > 0 {
            let _ = writeln!(
                t,
                "  {:<22} gaps {} ({} offsets) of the above at the {} slow subscriber(s)",
                "slow subscribers",
                self.slow_subscriber_gaps,
                self.slow_subscriber_missing_offsets,
                p.slow_subscribers
            );
        }
        if let Some(l) = &self.latency_us {
            let _ = writeln!(
                t,
                "  {:<22} p50 {} p90 {} p99 {} p99.9 {} max {} (µs, {} samples)",
                "latency",
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                group(l.samples)
            );
        }
        if !self.server_closes.is_empty() || self.dropped_connections > 0 {
            let _ = writeln!(
                t,
                "  {:<22} closes {:?}, dropped {}",
                "ended connections", self.server_closes, self.dropped_connections
            );
        }
        if self.setup_failures > 0 {
            let _ = writeln!(
                t,
                "  {:<22} {} {:?}",
                "setup failures", self.setup_failures, self.setup_errors
            );
        }
        let _ = writeln!(
            t,
            "  {:<22} drained in {:.3} s{}",
            "drain",
            self.drain_s,
            if self.drain_timed_out {
                " (timed out)"
            } else {
                ""
            }
        );
        write_cpu(&mut t, &self.cpu);
        if let Some(s) = self.server_cpu_s_per_million_deliveries {
            let _ = writeln!(
                t,
                "  {:<22} {s} CPU-s per million deliveries",
                "server cost"
            );
        }
        t
    }
}

/// The result of a `connections` run.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectionsReport {
    scenario: &'static str,
    parameters: ConnectionsParameters,
    connections_requested: usize,
    connections_open: u64,
    connection_failures: u64,
    connect_errors: BTreeMap<String, u64>,
    connect_s: f64,
    connects_per_s: f64,
    hold_s: f64,
    closed_during_hold: u64,
    open_file_limit: Option<u64>,
    server_rss_before_kib: Option<u64>,
    server_rss_after_kib: Option<u64>,
    server_rss_per_connection_bytes: Option<f64>,
    /// The generator's CPU while connecting, per wall-second and thread:
    /// near 1, the connect rate is the generator's, and servers compare by
    /// `server_cpu_us_per_connect` instead.
    connecting_generator_cpu_util: f64,
    /// The server's CPU while connecting, per connection opened: what a
    /// connect costs it, without the hold.
    server_cpu_us_per_connect: Option<f64>,
    #[serde(flatten)]
    cpu: CpuFigures,
}

/// Parameters of a `connections` run.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectionsParameters {
    addr: String,
    path: String,
    codec: &'static str,
    rooms: usize,
    per_source_ip: usize,
    connect_concurrency: usize,
    threads: usize,
}

impl ConnectionsReport {
    pub(crate) fn new(o: &ConnectionsOutcome) -> ConnectionsReport {
        let plan = &o.plan;
        let failures: u64 = o.errors.values().sum();
        let per_connection = match (o.rss_before_kib, o.rss_after_kib) {
            (Some(before), Some(after)) if o.opened > 0 => Some(round(
                (after as f64 - before as f64) * 1024.0 / o.opened as f64,
                1,
            )),
            _ => None,
        };
        // The same figures as for the whole run, over the connect phase.
        let connecting = CpuFigures::new(&(o.cpu.0, o.cpu_connected), o.connect_time, plan.threads);
        ConnectionsReport {
            scenario: "connections",
            parameters: ConnectionsParameters {
                addr: plan.target.addr.to_string(),
                path: plan.target.path.clone(),
                codec: plan.target.codec.subprotocol(),
                rooms: plan.rooms.len(),
                per_source_ip: plan.per_source_ip,
                connect_concurrency: plan.connect_concurrency,
                threads: plan.threads,
            },
            connections_requested: plan.connections,
            connections_open: o.opened,
            connection_failures: failures,
            connect_errors: o.errors.clone(),
            connect_s: round(o.connect_time.as_secs_f64(), 3),
            connects_per_s: round(o.opened as f64 / o.connect_time.as_secs_f64().max(1e-9), 1),
            hold_s: plan.hold.as_secs_f64(),
            closed_during_hold: o.closed_during_hold,
            open_file_limit: o.open_file_limit,
            server_rss_before_kib: o.rss_before_kib,
            server_rss_after_kib: o.rss_after_kib,
            server_rss_per_connection_bytes: per_connection,
            connecting_generator_cpu_util: connecting.generator_cpu_util,
            server_cpu_us_per_connect: connecting
                .server_cpu_seconds
                .filter(|_| o.opened > 0)
                .map(|s| round(s * 1e6 / o.opened as f64, 1)),
            cpu: CpuFigures::new(&o.cpu, o.wall, plan.threads),
        }
    }

    /// The table for people.
    pub(crate) fn table(&self) -> String {
        let mut t = String::new();
        let p = &self.parameters;
        let _ = writeln!(
            t,
            "roomcast-load connections ({}) against {}: {} requested, {} room(s)",
            p.codec,
            p.addr,
            group(self.connections_requested as u64),
            p.rooms
        );
        let _ = writeln!(
            t,
            "  {:<22} {} open, {} failed, in {:.2} s ({}/s)",
            "connections",
            group(self.connections_open),
            group(self.connection_failures),
            self.connect_s,
            group(self.connects_per_s as u64)
        );
        for (error, n) in &self.connect_errors {
            let _ = writeln!(t, "  {:<22} {} x {error}", "connect error", group(*n));
        }
        let _ = writeln!(
            t,
            "  {:<22} generator {:.0}% busy{}",
            "while connecting",
            self.connecting_generator_cpu_util * 100.0,
            match self.server_cpu_us_per_connect {
                Some(us) => format!(", server {us:.1} µs of CPU per connection"),
                None => String::new(),
            }
        );
        let _ = writeln!(
            t,
            "  {:<22} {:.1} s, {} ended by the server",
            "held", self.hold_s, self.closed_during_hold
        );
        if let Some(limit) = self.open_file_limit {
            let _ = writeln!(t, "  {:<22} {}", "open-file limit", group(limit));
        }
        if let (Some(before), Some(after)) = (self.server_rss_before_kib, self.server_rss_after_kib)
        {
            let _ = writeln!(
                t,
                "  {:<22} {} KiB -> {} KiB: {} B per connection",
                "server RSS",
                group(before),
                group(after),
                self.server_rss_per_connection_bytes
                    .map_or("-".to_owned(), |b| format!("{b:.0}"))
            );
            if self
                .server_rss_per_connection_bytes
                .is_some_and(|b| b < 0.0)
            {
                let _ = writeln!(
                    t,
                    "  {:<22} the server's RSS fell: it kept memory from earlier load; measure on a fresh server",
                    ""
                );
            }
        }
        write_cpu(&mut t, &self.cpu);
        t
    }
}

fn write_cpu(t: &mut String, cpu: &CpuFigures) {
    let _ = writeln!(
        t,
        "  {:<22} {:.2} CPU-s, {:.0}% of {} thread(s){}",
        "generator CPU",
        cpu.generator_cpu_seconds,
        cpu.generator_cpu_util * 100.0,
        cpu.generator_threads,
        if cpu.generator_saturated {
            "  SATURATED"
        } else {
            ""
        }
    );
    if let (Some(s), Some(cores)) = (cpu.server_cpu_seconds, cpu.server_cpu_cores) {
        let _ = writeln!(
            t,
            "  {:<22} {s:.2} CPU-s, {:.0}% of a core",
            "server CPU",
            cores * 100.0
        );
    }
    let _ = writeln!(
        t,
        "  {:<22} generator {} s, server {} s{}",
        "waiting for a CPU",
        cpu.generator_runqueue_wait_s
            .map_or("-".into(), |w| format!("{w:.2}")),
        cpu.server_runqueue_wait_s
            .map_or("-".into(), |w| format!("{w:.2}")),
        if cpu.cpu_contention {
            "  CONTENDED"
        } else {
            ""
        }
    );
}

impl CpuFigures {
    /// Warnings about the run itself: a saturated generator, shared cores.
    fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.generator_saturated {
            warnings.push(format!(
                "roomcast-load: warning: generator saturated ({:.0}% of {} thread(s)): \
                 the numbers may measure the generator, not the server; \
                 compare runs by server CPU per million deliveries",
                self.generator_cpu_util * 100.0,
                self.generator_threads
            ));
        }
        if self.cpu_contention {
            warnings.push(format!(
                "roomcast-load: warning: CPU contention: waited for a CPU {} s (generator) and {} s (server); \
                 other processes share these cores, so throughput and latency are not comparable",
                self.generator_runqueue_wait_s.map_or("-".into(), |w| format!("{w:.2}")),
                self.server_runqueue_wait_s.map_or("-".into(), |w| format!("{w:.2}")),
            ));
        }
        warnings
    }
}

impl PubSubReport {
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.cpu.warnings()
    }
}

impl ConnectionsReport {
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.cpu.warnings()
    }
}

fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

/// 1234567 -> "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn connecting_is_measured_apart_from_the_hold() {
        use crate::cli::{Args, Plan};
        use clap::Parser;
        let args = Args::try_parse_from([
            "roomcast-load",
            "connections",
            "--connections",
            "1000",
            "--threads",
            "2",
        ])
        .unwrap();
        let Ok(Plan::Connections(plan)) = args.plan() else {
            panic!("a connections plan");
        };
        let snapshot = |own_ms, server_ms| CpuSnapshot {
            own: Duration::from_millis(own_ms),
            own_wait: None,
            server: Some(Duration::from_millis(server_ms)),
            server_wait: None,
        };
        let outcome = ConnectionsOutcome {
            plan,
            opened: 1000,
            errors: BTreeMap::new(),
            connect_time: Duration::from_millis(500),
            closed_during_hold: 0,
            rss_before_kib: None,
            rss_after_kib: None,
            // Connecting: 0.8 s of the generator's CPU in 0.5 s on 2 threads,
            // 28 ms of the server's; the hold adds to both.
            cpu: (snapshot(1_000, 10_000), snapshot(2_500, 10_500)),
            cpu_connected: snapshot(1_800, 10_028),
            wall: Duration::from_secs(6),
            open_file_limit: None,
        };
        let report = ConnectionsReport::new(&outcome);
        assert_eq!(report.connecting_generator_cpu_util, 0.8);
        assert_eq!(report.server_cpu_us_per_connect, Some(28.0));
    }

    #[test]
    fn cpu_util_is_per_thread() {
        let before = CpuSnapshot {
            own: Duration::from_secs(1),
            own_wait: Some(Duration::ZERO),
            server: Some(Duration::from_secs(10)),
            server_wait: Some(Duration::from_secs(1)),
        };
        let after = CpuSnapshot {
            own: Duration::from_secs(4),
            own_wait: Some(Duration::from_millis(100)),
            server: Some(Duration::from_secs(12)),
            server_wait: Some(Duration::from_secs(2)),
        };
        let cpu = CpuFigures::new(&(before, after), Duration::from_secs(2), 2);
        assert_eq!(cpu.generator_cpu_util, 0.75);
        assert!(!cpu.generator_saturated);
        assert_eq!(cpu.server_cpu_cores, Some(1.0));
        assert_eq!(cpu.server_runqueue_wait_s, Some(1.0));
        assert!(cpu.cpu_contention, "the server waited half the time");
        assert_eq!(cpu.warnings().len(), 1);
    }
}
