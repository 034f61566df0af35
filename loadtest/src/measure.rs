//! Clocks and CPU: the process-wide monotonic clock that send timestamps
//! use, this process's CPU time, and the server's CPU time and memory from
//! /proc.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::time::{clock_gettime, ClockId};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch (the first call). Every thread
/// reads the same monotonic clock, so a timestamp written by a publisher
/// and read by a subscriber on another thread compare directly.
pub(crate) fn now_ns() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_nanos() as u64
}

/// The epoch plus `ns`, as an `Instant` (for sleeping until a timestamp).
pub(crate) fn instant_at(ns: u64) -> Instant {
    *EPOCH.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// CPU time (user + system, all threads) this process has used.
pub(crate) fn own_cpu() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time (utime + stime) of process `pid`, from /proc/PID/stat. Its
/// resolution is one clock tick (10 ms on Linux).
pub(crate) fn process_cpu(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields are
    // counted from the last ')'. utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad_proc(pid, "stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad_proc(pid, "stat"))
    };
    // After ')' come field 3 (state) onwards: field n is at index n - 3.
    let ticks = tick(14 - 3)? + tick(15 - 3)?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// Time the threads of process `pid` (`None`: this process) have spent
/// runnable but waiting for a CPU, summed from /proc/PID/task/*/schedstat
/// (the second field, in ns). Large waits mean other work shares the cores
/// and the run measured the scheduler as much as the program.
pub(crate) fn runqueue_wait(pid: Option<u32>) -> std::io::Result<Duration> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let mut total = 0u64;
    for task in std::fs::read_dir(dir)? {
        let path = task?.path().join("schedstat");
        // A thread may end between listing and reading.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Duration::from_nanos(total))
}

/// Resident memory of process `pid` in KiB (VmRSS of /proc/PID/status).
pub(crate) fn process_rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| bad_proc(pid, "status"))
}

fn bad_proc(pid: u32, file: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("cannot parse /proc/{pid}/{file}"),
    )
}

/// Raises the open-file soft limit to the hard limit; returns the limit now
/// in force (`None`: unlimited or unknown).
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

/// CPU readings at the start and end of the measured window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSnapshot {
    /// This process's CPU time.
    pub(crate) own: Duration,
    /// This process's threads' time waiting for a CPU.
    pub(crate) own_wait: Option<Duration>,
    /// The server's CPU time.
    pub(crate) server: Option<Duration>,
    /// The server's threads' time waiting for a CPU.
    pub(crate) server_wait: Option<Duration>,
}

impl CpuSnapshot {
    pub(crate) fn take(server_pid: Option<u32>) -> CpuSnapshot {
        CpuSnapshot {
            own: own_cpu(),
            own_wait: runqueue_wait(None).ok(),
            server: server_pid.and_then(|pid| process_cpu(pid).ok()),
            server_wait: server_pid.and_then(|pid| runqueue_wait(Some(pid)).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_proc_entries() {
        let pid = std::process::id();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu(pid).unwrap() <= own_cpu() + Duration::from_millis(20));
        assert!(process_rss_kib(pid).unwrap() > 0);
        assert!(runqueue_wait(Some(pid)).is_ok());
    }

    #[test]
    fn the_clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert!(instant_at(b) >= instant_at(a));
    }
}
