//! The `connections` run: open N WebSocket connections (optionally each
//! subscribed to a room), hold them, and measure what they cost the server.
//!
//! Past `--per-source-ip` connections, each further block binds its sockets
//! to the next 127.0.0.x source address, so that the ephemeral ports of one
//! source address neither run out nor get so full that the kernel's search
//! for a free one becomes the ceiling of the connect rate. The generator's own open-file limit (its
//! soft limit is raised to the hard one) stops it first on most machines:
//! the run then reports how many connections it got and why the rest failed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::{spawn_local, LocalSet};

use crate::cli::ConnectionsPlan;
use crate::conn::{Conn, ConnectOptions, SetupError, SETUP_TIMEOUT};
use crate::measure::{process_rss_kib, CpuSnapshot};
use crate::progress::{Board, Live, Progress};
use crate::ws::{self, Frame, Parsed};

/// Read buffer of a held connection: it only ever gets pings.
const HELD_READ_BUFFER: usize = 512;

/// Time for the server's memory to settle before it is read.
const SETTLE: Duration = Duration::from_millis(500);

/// What one thread opened.
#[derive(Debug, Default)]
struct Opened {
    ok: u64,
    errors: BTreeMap<String, u64>,
}

/// What a `connections` run measured.
pub(crate) struct ConnectionsOutcome {
    pub(crate) plan: ConnectionsPlan,
    pub(crate) opened: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) connect_time: Duration,
    /// Connections the server closed (or dropped) while they were held.
    pub(crate) closed_during_hold: u64,
    pub(crate) rss_before_kib: Option<u64>,
    pub(crate) rss_after_kib: Option<u64>,
    /// CPU at the start of connecting and at the end of the hold.
    pub(crate) cpu: (CpuSnapshot, CpuSnapshot),
    /// CPU once every connection was open (or had failed): with the first
    /// snapshot, what connecting alone cost each side.
    pub(crate) cpu_connected: CpuSnapshot,
    pub(crate) wall: Duration,
    pub(crate) open_file_limit: Option<u64>,
}

/// Runs a `connections` plan.
pub(crate) fn run(
    plan: ConnectionsPlan,
    open_file_limit: Option<u64>,
) -> anyhow::Result<ConnectionsOutcome> {
    let shared_plan = Arc::new(plan.clone());
    let rss_before_kib = plan.server_pid.and_then(|pid| process_rss_kib(pid).ok());
    let cpu_before = CpuSnapshot::take(plan.server_pid);
    let began = Instant::now();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let board = Board::new(plan.threads);
    let mut handles = Vec::with_capacity(plan.threads);
    for index in 0..plan.threads {
        let plan = shared_plan.clone();
        let (ready, stop, live) = (ready_tx.clone(), stop_rx.clone(), board.thread(index));
        let handle = thread::Builder::new()
            .name(format!("load-{index}"))
            .spawn(move || worker(index, plan, ready, stop, live))
            .context("spawning a generator thread")?;
        handles.push(handle);
    }
    drop(ready_tx);

    let mut opened = 0;
    let mut errors = BTreeMap::new();
    let mut progress = Progress::new(board, plan.quiet);
    for _ in 0..plan.threads {
        let report = loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(report) => break report,
                Err(mpsc::RecvTimeoutError::Timeout) => progress.tick("opening"),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(anyhow!("a generator thread died"))
                }
            }
        };
        opened += report.ok;
        for (error, n) in report.errors {
            *errors.entry(error).or_default() += n;
        }
    }
    let connect_time = began.elapsed();
    let cpu_connected = CpuSnapshot::take(plan.server_pid);
    eprintln!(
        "roomcast-load: opened {opened} of {} connections in {:.2} s; holding for {:?}",
        plan.connections,
        connect_time.as_secs_f64(),
        plan.hold
    );
    progress.wait_until(Instant::now() + plan.hold.max(SETTLE), "holding");
    let rss_after_kib = plan.server_pid.and_then(|pid| process_rss_kib(pid).ok());
    let cpu_after = CpuSnapshot::take(plan.server_pid);
    let wall = began.elapsed();
    let _ = stop_tx.send(true);
    let mut closed_during_hold = 0;
    for handle in handles {
        closed_during_hold += handle
            .join()
            .map_err(|_| anyhow!("a generator thread panicked"))??;
    }
    Ok(ConnectionsOutcome {
        plan,
        opened,
        errors,
        connect_time,
        closed_during_hold,
        rss_before_kib,
        rss_after_kib,
        cpu: (cpu_before, cpu_after),
        cpu_connected,
        wall,
        open_file_limit,
    })
}

/// The source address of connection `i`, when sources must rotate.
fn source_address(plan: &ConnectionsPlan, i: usize) -> Option<IpAddr> {
    let IpAddr::V4(server) = plan.target.addr.ip() else {
        return None;
    };
    if !server.is_loopback() || plan.connections <= plan.per_source_ip {
        return None;
    }
    let first = u32::from(Ipv4Addr::new(127, 0, 0, 1));
    let block = u32::try_from(i / plan.per_source_ip).ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(first.checked_add(block)?)))
}

/// One thread: opens its share (every `threads`-th connection), reports,
/// holds until told to stop; returns how many of its connections ended
/// during the hold.
fn worker(
    index: usize,
    plan: Arc<ConnectionsPlan>,
    ready: mpsc::Sender<Opened>,
    stop: watch::Receiver<bool>,
    live: Arc<Live>,
) -> anyhow::Result<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let local = LocalSet::new();
    local.block_on(&runtime, async move {
        let limit = Rc::new(Semaphore::new(
            plan.connect_concurrency.div_ceil(plan.threads).max(1),
        ));
        let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel();
        let mine: Vec<usize> = (index..plan.connections).step_by(plan.threads).collect();
        let holds: Vec<_> = mine
            .iter()
            .map(|&i| {
                let (plan, limit, opened_tx) = (plan.clone(), limit.clone(), opened_tx.clone());
                let mut stop = stop.clone();
                spawn_local(async move {
                    let permit = limit.acquire().await;
                    let options = ConnectOptions {
                        source: source_address(&plan, i),
                        recv_buffer: None,
                        read_capacity: HELD_READ_BUFFER,
                    };
                    let setup = async {
                        let mut conn = Conn::open(&plan.target, i as u64, options).await?;
                        if !plan.rooms.is_empty() {
                            conn.subscribe(&plan.rooms[i % plan.rooms.len()]).await?;
                        }
                        Ok::<_, SetupError>(conn)
                    };
                    let result = tokio::time::timeout(SETUP_TIMEOUT, setup)
                        .await
                        .unwrap_or(Err(SetupError::Timeout));
                    drop(permit);
                    let conn = match result {
                        Ok(conn) => {
                            let _ = opened_tx.send(Ok(()));
                            conn
                        }
                        Err(error) => {
                            let _ = opened_tx.send(Err(error.to_string()));
                            return false;
                        }
                    };
                    hold(conn, &mut stop).await
                })
            })
            .collect();
        drop(opened_tx);
        let mut opened = Opened::default();
        // One report per connection; the held ones keep their senders.
        for _ in 0..mine.len() {
            match opened_rx.recv().await {
                Some(Ok(())) => {
                    opened.ok += 1;
                    Live::add(&live.opened, 1);
                }
                Some(Err(error)) => *opened.errors.entry(error).or_default() += 1,
                None => break,
            }
        }
        let _ = ready.send(opened);
        // The main thread notices a thread that died before reporting only
        // once every other sender is gone.
        drop(ready);
        let mut ended = 0;
        for hold in holds {
            if let Ok(true) = hold.await {
                ended += 1;
            }
        }
        Ok(ended)
    })
}

/// Keeps a connection open, answering pings, until the run stops; returns
/// whether the server ended it first.
async fn hold(mut conn: Conn, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = stop.wait_for(|stop| *stop);
    tokio::pin!(stopped);
    loop {
        let mut pong = None;
        let want = loop {
            match ws::parse_frame(conn.buffer.data()) {
                Ok(Parsed::Frame(frame, used)) => {
                    match frame {
                        Frame::Ping(payload) => pong = Some(conn.pong_frame(payload)),
                        Frame::Close(_) => return true,
                        Frame::Binary(_) | Frame::Pong | Frame::Other(_) => {}
                    }
                    conn.buffer.consume(used);
                }
                Ok(Parsed::Incomplete(need)) => {
                    break need;
                }
                Err(_) => return true,
            }
        };
        if let Some(pong) = pong {
            if conn.stream.write_all(&pong).await.is_err() {
                return true;
            }
        }
        tokio::select! {
            read = conn.buffer.fill(&mut conn.stream, want, usize::MAX) => match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            _ = &mut stopped => break,
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_millis(100),
        conn.stream.write_all(&conn.close_frame()),
    )
    .await;
    false
}
