//! The live dashboard: `GET /dashboard` is one static page (its charts are
//! drawn by the page's own script: nothing to build, nothing fetched from
//! elsewhere), and `GET /dashboard/events` is a Server-Sent Events stream
//! of one sample a second that the page draws.
//!
//! One sampler per node (on core 0, beside the admin listener) reads the
//! counters, each core's CPU time and inbox depths, and each core's
//! busiest rooms, and hands one encoded sample to every viewer through a
//! `watch` channel: a thousand viewers cost one sample a second, not a
//! thousand polls of `/stats`, and a viewer that falls behind simply gets
//! the latest sample next.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::watch;

use crate::limits::{DASHBOARD_INTERVAL, SWEEP_INTERVAL, TOP_ROOMS_SHOWN};
use crate::metrics::{HistogramSnapshot, Scrape};
use crate::router::driver::Core;

use super::{respond, AdminResponse};

/// The page: markup, style and script in one file.
const PAGE: &str = include_str!("dashboard.html");

/// `GET /dashboard`.
pub(crate) fn page() -> AdminResponse {
    let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /dashboard/events`: the latest sample at once, then each new one.
pub(crate) fn events(samples: &watch::Receiver<Bytes>) -> AdminResponse {
    let mut samples = samples.clone();
    samples.mark_changed();
    let stream = futures_util::stream::unfold(samples, |mut samples| async move {
        samples.changed().await.ok()?;
        let event = samples.borrow_and_update().clone();
        Some((Ok::<_, Infallible>(Frame::data(event)), samples))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Starts the sampler on this core; viewers subscribe to what it sends.
pub(crate) fn start(core: Rc<Core>) -> watch::Receiver<Bytes> {
    let (tx, rx) = watch::channel(Bytes::from_static(b": no sample yet\n\n"));
    tokio::task::spawn_local(sample(core, tx));
    rx
}

/// One sample, as the page reads it.
#[derive(Debug, Serialize)]
struct Sample {
    /// Milliseconds since the Unix epoch.
    time_ms: u64,
    /// Seconds the rates below are averaged over.
    interval_s: f64,
    engine: &'static str,
    connections: u64,
    /// Per second over the interval.
    rates: Rates,
    cores: Vec<CoreSample>,
    /// Over the interval: engine operations' latency, and publication to
    /// queueing on a subscriber's core (the histograms of `/metrics`).
    engine_latency: Latency,
    delivery_lag: Latency,
    /// Every core's engine is available (as `roomcast_engine_up` says).
    engine_up: bool,
    top_rooms: Vec<RoomRate>,
}

/// A histogram's last interval, in milliseconds; `None` with no observation.
/// The p99 is the upper bound of the bucket that holds it.
#[derive(Debug, Serialize)]
struct Latency {
    count: u64,
    mean_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Latency {
    fn of(now: &HistogramSnapshot, before: &HistogramSnapshot) -> Latency {
        let last = now.since(before);
        let count = last.count();
        Latency {
            count,
            mean_ms: (count > 0).then(|| last.sum_seconds() * 1e3 / count as f64),
            // JSON has no infinity: past the last bound reads as null too.
            p99_ms: last
                .quantile_bound_seconds(0.99)
                .filter(|s| s.is_finite())
                .map(|s| s * 1e3),
        }
    }
}

#[derive(Debug, Serialize)]
struct Rates {
    messages_in: f64,
    deliveries: f64,
    publishes: f64,
    slow_consumer_closes: f64,
    slow_consumer_dropped: f64,
    error_replies: f64,
    engine_failures: f64,
}

#[derive(Debug, Serialize)]
struct CoreSample {
    core: usize,
    /// Share of one CPU the core's thread used over the interval (0 to 1).
    cpu: f64,
    publish_queue: usize,
    event_queue: usize,
}

#[derive(Debug, Serialize)]
struct RoomRate {
    room: String,
    /// Estimated publications per second (sampled: see `router::top_rooms`).
    publications_per_s: f64,
}

/// Runs until the core stops, sending a sample every [`DASHBOARD_INTERVAL`].
async fn sample(core: Rc<Core>, tx: watch::Sender<Bytes>) {
    let node = core.node().clone();
    let engine = if node.config.redis_url.is_empty() {
        "memory"
    } else {
        "redis"
    };
    let mut ticks = tokio::time::interval(DASHBOARD_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(Instant, Scrape, Vec<u64>)> = None;
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let scrape = node.stats.scrape();
        let cpu = core_cpu_ticks(node.config.workers);
        let Some((then, earlier, cpu_before)) = last.replace((now, scrape.clone(), cpu.clone()))
        else {
            continue;
        };
        let (stats, before) = (&scrape.totals, &earlier.totals);
        let seconds = (now - then).as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
        let cores = core
            .inbox_depths()
            .enumerate()
            .map(|(n, depth)| CoreSample {
                core: n,
                cpu: rate(cpu[n], cpu_before[n]) / CLOCK_TICKS_PER_SECOND,
                publish_queue: depth.publishes,
                event_queue: depth.events,
            })
            .collect();
        let mut top = node.top_rooms();
        top.sort_unstable_by_key(|r| std::cmp::Reverse(r.publications));
        top.truncate(TOP_ROOMS_SHOWN);
        let window = SWEEP_INTERVAL.as_secs_f64();
        let sample = Sample {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            interval_s: seconds,
            engine,
            connections: stats.connections_open,
            rates: Rates {
                messages_in: rate(stats.messages_received, before.messages_received),
                deliveries: rate(stats.deliveries, before.deliveries),
                publishes: rate(stats.publishes, before.publishes),
                slow_consumer_closes: rate(stats.slow_consumer_closes, before.slow_consumer_closes),
                slow_consumer_dropped: rate(
                    stats.slow_consumer_dropped,
                    before.slow_consumer_dropped,
                ),
                error_replies: rate(stats.error_replies, before.error_replies),
                engine_failures: rate(stats.engine_failures, before.engine_failures),
            },
            cores,
            engine_latency: Latency::of(&scrape.engine_latency, &earlier.engine_latency),
            delivery_lag: Latency::of(&scrape.delivery_lag, &earlier.delivery_lag),
            engine_up: scrape.engine_available.iter().all(|up| *up),
            top_rooms: top
                .into_iter()
                .map(|r| RoomRate {
                    room: r.room.as_str().to_owned(),
                    publications_per_s: r.publications as f64 / window,
                })
                .collect(),
        };
        let Ok(json) = serde_json::to_string(&sample) else {
            continue;
        };
        if tx.send(Bytes::from(format!("data: {json}\n\n"))).is_err() {
            // Nobody watches now; the channel stays open for the next viewer.
            continue;
        }
    }
}

/// Linux's `USER_HZ`, the unit of the CPU times in `/proc/*/stat`: 100 on
/// every architecture Linux runs on (it is part of the kernel's ABI).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU ticks of each core's thread (`core-{n}`), read
/// from `/proc/self/task`; 0 for a core whose thread cannot be read (or
/// where there is no `/proc`).
fn core_cpu_ticks(workers: usize) -> Vec<u64> {
    let mut ticks = vec![0; workers];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return ticks;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((core, cpu)) = parse_core_stat(&stat) {
            if let Some(slot) = ticks.get_mut(core) {
                *slot = cpu;
            }
        }
    }
    ticks
}

/// The core number and utime + stime of a `/proc/<pid>/task/<tid>/stat`
/// line, if the thread is a core (`(core-3)`).
fn parse_core_stat(stat: &str) -> Option<(usize, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let core = stat
        .get(open + 1..close)?
        .strip_prefix("core-")?
        .parse()
        .ok()?;
    // After the name: state is field 3; utime and stime are fields 14, 15.
    let mut fields = stat.get(close + 2..)?.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((core, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_thread_s_cpu_time_is_read_from_its_stat_line() {
        let line = "4242 (core-3) S 1 4240 4240 0 -1 4194368 120 0 0 0 731 212 0 0 20 0 3 0 1 0 0";
        assert_eq!(parse_core_stat(line), Some((3, 943)));
    }

    #[test]
    fn other_threads_are_not_cores() {
        let line = "4243 (tokio-rt) S 1 4240 4240 0 -1 4194368 120 0 0 0 731 212 0 0 20 0 3 0 1";
        assert_eq!(parse_core_stat(line), None);
        assert_eq!(parse_core_stat("garbage"), None);
    }
}
