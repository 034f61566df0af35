//! The `fanout`, `rooms` and `latency` runs: generator threads, each with
//! its own current-thread runtime, set up their share of the connections;
//! then the main thread starts the clock, measures CPU at the edges of the
//! window, waits for the drain and stops everyone.
//!
//! Time line: setup (connect, upgrade, subscribe) → `start`: publishing
//! begins → `t0`: the measured window opens (after --warmup) → `t1`: it
//! closes and publishers send their end markers → drain: subscribers read
//! until they have seen every end marker of their room, or --drain-timeout.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};
use tokio::task::{spawn_local, LocalSet};

use crate::cli::PubSubPlan;
use crate::conn::{ConnectOptions, SetupError, SETUP_TIMEOUT};
use crate::measure::{instant_at, now_ns, CpuSnapshot};
use crate::progress::{Board, Live, Progress};
use crate::subscriber::{SubscriberJob, SLOW_RECV_BUFFER};
use crate::tally::{new_histogram, DeliveryTally, PublishTally, Times};
use crate::{conn::Conn, publisher, subscriber};

/// Initial read buffer of a subscriber: many deliveries per `read`.
const SUBSCRIBER_READ_BUFFER: usize = 16 * 1024;

/// Initial read buffer of a publisher (acks are small).
const PUBLISHER_READ_BUFFER: usize = 8 * 1024;

/// Connection numbers of publishers start here (they pick masking keys).
const PUBLISHER_NUMBERS: u64 = 1 << 32;

/// What every task of one generator thread shares.
pub(crate) struct Shared {
    pub(crate) plan: Arc<PubSubPlan>,
    pub(crate) times: Times,
    /// End markers each subscriber waits for, per room: the publishers of
    /// the room that connected.
    pub(crate) publishers_per_room: Arc<Vec<u64>>,
    /// This thread's publish → deliver latencies (ns).
    pub(crate) latency: RefCell<Histogram<u64>>,
    /// Becomes true when the run is over (drained or timed out).
    pub(crate) stop: watch::Receiver<bool>,
    /// Subscribers that have finished, over all threads.
    pub(crate) subscribers_done: Arc<AtomicUsize>,
    /// This thread's running counts, for the progress lines.
    pub(crate) live: Arc<Live>,
}

/// What one thread managed to set up.
#[derive(Debug, Default)]
pub(crate) struct SetupReport {
    pub(crate) subscribed_per_room: Vec<u64>,
    pub(crate) publishers_per_room: Vec<u64>,
    pub(crate) failures: u64,
    /// Distinct setup errors and how often each happened.
    pub(crate) errors: BTreeMap<String, u64>,
}

impl SetupReport {
    fn new(rooms: usize) -> SetupReport {
        SetupReport {
            subscribed_per_room: vec![0; rooms],
            publishers_per_room: vec![0; rooms],
            ..SetupReport::default()
        }
    }

    fn fail(&mut self, error: String) {
        self.failures += 1;
        *self.errors.entry(error).or_default() += 1;
    }

    fn add(&mut self, other: SetupReport) {
        for (a, b) in self
            .subscribed_per_room
            .iter_mut()
            .zip(other.subscribed_per_room)
        {
            *a += b;
        }
        for (a, b) in self
            .publishers_per_room
            .iter_mut()
            .zip(other.publishers_per_room)
        {
            *a += b;
        }
        self.failures += other.failures;
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
    }

    pub(crate) fn subscribers(&self) -> u64 {
        self.subscribed_per_room.iter().sum()
    }

    pub(crate) fn publishers(&self) -> u64 {
        self.publishers_per_room.iter().sum()
    }
}

/// The go signal: when to publish, and how many end markers to expect.
struct Go {
    times: Times,
    publishers_per_room: Arc<Vec<u64>>,
}

/// What one thread measured.
struct WorkerReport {
    deliveries: DeliveryTally,
    /// The part of `deliveries` the slow subscribers saw.
    slow_deliveries: DeliveryTally,
    publishes: PublishTally,
    latency: Histogram<u64>,
}

/// Everything a pub/sub run measured.
pub(crate) struct PubSubOutcome {
    pub(crate) plan: Arc<PubSubPlan>,
    pub(crate) setup: SetupReport,
    pub(crate) setup_time: Duration,
    pub(crate) times: Times,
    pub(crate) deliveries: DeliveryTally,
    /// The part of `deliveries` the slow subscribers saw.
    pub(crate) slow_deliveries: DeliveryTally,
    pub(crate) publishes: PublishTally,
    pub(crate) latency: Histogram<u64>,
    /// CPU at t0 and t1.
    pub(crate) cpu: (CpuSnapshot, CpuSnapshot),
    /// When the drain ended.
    pub(crate) drained_at: u64,
    pub(crate) drain_timed_out: bool,
}

/// Runs a `fanout`, `rooms` or `latency` plan.
pub(crate) fn run(plan: PubSubPlan) -> anyhow::Result<PubSubOutcome> {
    let plan = Arc::new(plan);
    now_ns(); // start the process clock
    let threads = plan.threads;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = watch::channel::<Option<Arc<Go>>>(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let done = Arc::new(AtomicUsize::new(0));
    let board = Board::new(threads);

    let setup_began = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let subscribers: Vec<usize> = (index..plan.subscribers.len()).step_by(threads).collect();
        let publishers: Vec<usize> = (index..plan.publishers.len()).step_by(threads).collect();
        let worker = Worker {
            plan: plan.clone(),
            subscribers,
            publishers,
            ready: ready_tx.clone(),
            go: go_rx.clone(),
            stop: stop_rx.clone(),
            done: done.clone(),
            live: board.thread(index),
        };
        let handle = thread::Builder::new()
            .name(format!("load-{index}"))
            .spawn(move || worker.run())
            .context("spawning a generator thread")?;
        handles.push(handle);
    }
    drop(ready_tx);

    let mut setup = SetupReport::new(plan.rooms.len());
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(report)) => setup.add(report),
            Ok(Err(error)) => return abort(&stop_tx, handles, anyhow!(error)),
            Err(_) => return abort(&stop_tx, handles, anyhow!("a generator thread died")),
        }
    }
    let setup_time = setup_began.elapsed();
    eprintln!(
        "roomcast-load: set up {} of {} subscribers and {} of {} publishers in {:.2} s{}",
        setup.subscribers(),
        plan.subscribers.len(),
        setup.publishers(),
        plan.publishers.len(),
        setup_time.as_secs_f64(),
        main_error(&setup.errors)
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default(),
    );
    if setup.publishers() == 0 {
        let error = anyhow!(
            "no publisher could connect to {}: {}",
            plan.target.addr,
            main_error(&setup.errors).unwrap_or("no error recorded")
        );
        return abort(&stop_tx, handles, error);
    }

    let start = now_ns();
    let warmup = plan.warmup.as_nanos() as u64;
    let times = Times {
        start,
        t0: start + warmup,
        t1: start + warmup + plan.duration.as_nanos() as u64,
    };
    let subscribers = setup.subscribers() as usize;
    let _ = go_tx.send(Some(Arc::new(Go {
        times,
        publishers_per_room: Arc::new(setup.publishers_per_room.clone()),
    })));
    let mut progress = Progress::new(board, plan.quiet);
    progress.wait_until(instant_at(times.t0), "warm-up");
    let cpu_t0 = CpuSnapshot::take(plan.server_pid);
    progress.wait_until(instant_at(times.t1), "measuring");
    let cpu_t1 = CpuSnapshot::take(plan.server_pid);
    let deadline = times.t1 + plan.drain_timeout.as_nanos() as u64;
    while done.load(Ordering::Acquire) < subscribers && now_ns() < deadline {
        thread::sleep(Duration::from_millis(2));
        progress.tick("draining");
    }
    let drain_timed_out = done.load(Ordering::Acquire) < subscribers;
    let drained_at = now_ns();
    let _ = stop_tx.send(true);

    let mut deliveries = DeliveryTally::default();
    let mut slow_deliveries = DeliveryTally::default();
    let mut publishes = PublishTally::new(plan.rooms.len());
    let mut latency = new_histogram();
    for handle in handles {
        let report = handle
            .join()
            .map_err(|_| anyhow!("a generator thread panicked"))??;
        deliveries.add(&report.deliveries);
        slow_deliveries.add(&report.slow_deliveries);
        publishes.add(&report.publishes);
        latency
            .add(&report.latency)
            .context("merging latency histograms")?;
    }
    Ok(PubSubOutcome {
        plan,
        setup,
        setup_time,
        times,
        deliveries,
        slow_deliveries,
        publishes,
        latency,
        cpu: (cpu_t0, cpu_t1),
        drained_at,
        drain_timed_out,
    })
}

/// The most frequent setup error.
pub(crate) fn main_error(errors: &BTreeMap<String, u64>) -> Option<&str> {
    errors
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(e, _)| e.as_str())
}

/// Stops the threads and returns `error`.
fn abort<T>(
    stop: &watch::Sender<bool>,
    handles: Vec<thread::JoinHandle<anyhow::Result<WorkerReport>>>,
    error: anyhow::Error,
) -> anyhow::Result<T> {
    let _ = stop.send(true);
    for handle in handles {
        let _ = handle.join();
    }
    Err(error)
}

/// One generator thread and its share of the connections.
struct Worker {
    plan: Arc<PubSubPlan>,
    /// Indices into the plan's subscribers.
    subscribers: Vec<usize>,
    /// Indices into the plan's publishers.
    publishers: Vec<usize>,
    ready: mpsc::Sender<Result<SetupReport, String>>,
    go: watch::Receiver<Option<Arc<Go>>>,
    stop: watch::Receiver<bool>,
    done: Arc<AtomicUsize>,
    live: Arc<Live>,
}

impl Worker {
    fn run(self) -> anyhow::Result<WorkerReport> {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = self
                    .ready
                    .send(Err(format!("cannot start a runtime: {error}")));
                return Err(error.into());
            }
        };
        let local = LocalSet::new();
        Ok(local.block_on(&runtime, self.main()))
    }

    async fn main(self) -> WorkerReport {
        let plan = self.plan.clone();
        let limit = Rc::new(Semaphore::new(
            plan.connect_concurrency.div_ceil(plan.threads).max(1),
        ));
        let subscriber_setups: Vec<_> = self
            .subscribers
            .iter()
            .map(|&i| {
                let (plan, limit) = (plan.clone(), limit.clone());
                spawn_local(async move {
                    let _permit = limit.acquire().await;
                    let spec = plan.subscribers[i];
                    let options = ConnectOptions {
                        source: None,
                        recv_buffer: spec.slow.then_some(SLOW_RECV_BUFFER),
                        read_capacity: SUBSCRIBER_READ_BUFFER,
                    };
                    let setup = async {
                        let mut conn =
                            Conn::open(plan.subscriber_target(i), i as u64, options).await?;
                        let offset = conn.subscribe(&plan.rooms[spec.room]).await?;
                        Ok::<_, SetupError>((conn, offset))
                    };
                    let result = tokio::time::timeout(SETUP_TIMEOUT, setup)
                        .await
                        .unwrap_or(Err(SetupError::Timeout));
                    (i, result)
                })
            })
            .collect();
        let publisher_setups: Vec<_> = self
            .publishers
            .iter()
            .map(|&i| {
                let (plan, limit) = (plan.clone(), limit.clone());
                spawn_local(async move {
                    let _permit = limit.acquire().await;
                    let options = ConnectOptions {
                        read_capacity: PUBLISHER_READ_BUFFER,
                        ..ConnectOptions::default()
                    };
                    let number = PUBLISHER_NUMBERS + i as u64;
                    let result = tokio::time::timeout(
                        SETUP_TIMEOUT,
                        Conn::open(&plan.target, number, options),
                    )
                    .await
                    .unwrap_or(Err(SetupError::Timeout));
                    (i, result)
                })
            })
            .collect();

        let mut setup = SetupReport::new(plan.rooms.len());
        let mut subscribers = Vec::new();
        for handle in subscriber_setups {
            match handle.await {
                Ok((i, Ok((conn, start_offset)))) => {
                    let spec = plan.subscribers[i];
                    setup.subscribed_per_room[spec.room] += 1;
                    subscribers.push(SubscriberJob {
                        conn,
                        room: spec.room,
                        start_offset,
                        slow: spec.slow.then_some(plan.slow_read_delay),
                    });
                }
                Ok((_, Err(error))) => setup.fail(format!("subscriber: {error}")),
                Err(error) => setup.fail(format!("subscriber setup task: {error}")),
            }
        }
        let mut publishers = Vec::new();
        for handle in publisher_setups {
            match handle.await {
                Ok((i, Ok(conn))) => {
                    let room = plan.publishers[i];
                    setup.publishers_per_room[room] += 1;
                    publishers.push((conn, room));
                }
                Ok((_, Err(error))) => setup.fail(format!("publisher: {error}")),
                Err(error) => setup.fail(format!("publisher setup task: {error}")),
            }
        }
        let _ = self.ready.send(Ok(setup));
        // The main thread notices a thread that died before reporting only
        // once every other sender is gone.
        drop(self.ready);

        let mut report = WorkerReport {
            deliveries: DeliveryTally::default(),
            slow_deliveries: DeliveryTally::default(),
            publishes: PublishTally::new(plan.rooms.len()),
            latency: new_histogram(),
        };
        let (mut go, mut stop) = (self.go.clone(), self.stop.clone());
        let go = tokio::select! {
            go = go.wait_for(Option::is_some) => match go {
                Ok(go) => go.clone(),
                Err(_) => None,
            },
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let Some(go) = go else {
            return report;
        };
        let shared = Rc::new(Shared {
            plan: plan.clone(),
            times: go.times,
            publishers_per_room: go.publishers_per_room.clone(),
            latency: RefCell::new(new_histogram()),
            stop: self.stop.clone(),
            subscribers_done: self.done.clone(),
            live: self.live.clone(),
        });
        let subscriber_runs: Vec<_> = subscribers
            .into_iter()
            .map(|job| {
                let slow = job.slow.is_some();
                (slow, spawn_local(subscriber::run(job, shared.clone())))
            })
            .collect();
        let publisher_runs: Vec<_> = publishers
            .into_iter()
            .map(|(conn, room)| spawn_local(publisher::run(conn, room, shared.clone())))
            .collect();
        for (slow, run) in subscriber_runs {
            if let Ok(tally) = run.await {
                report.deliveries.add(&tally);
                if slow {
                    report.slow_deliveries.add(&tally);
                }
            }
        }
        for run in publisher_runs {
            if let Ok(tally) = run.await {
                report.publishes.add(&tally);
            }
        }
        report.latency = shared.latency.replace(new_histogram());
        report
    }
}
