//! A line a second on stderr while a run goes on, so a long run is not a
//! silent one: which phase it is in and the rates since the last line.
//! `--quiet` turns it off; the summary table and the JSON line stay.
//!
//! Connection tasks count into [`Live`], one per generator thread on a
//! cache line of its own, with one relaxed add per read or write batch (not
//! per message): the generator must stay cheaper than the server it
//! measures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one generator thread has done so far.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Live {
    /// Deliveries read by its subscribers.
    pub(crate) delivered: AtomicU64,
    /// Publications written by its publishers.
    pub(crate) published: AtomicU64,
    /// Connections it opened (the `connections` scenario).
    pub(crate) opened: AtomicU64,
}

impl Live {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Every thread's [`Live`], summed when a line is printed.
#[derive(Debug, Clone)]
pub(crate) struct Board {
    threads: Arc<[Arc<Live>]>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    delivered: u64,
    published: u64,
    opened: u64,
}

impl Board {
    pub(crate) fn new(threads: usize) -> Board {
        Board {
            threads: (0..threads).map(|_| Arc::new(Live::default())).collect(),
        }
    }

    /// Thread `n`'s counters.
    pub(crate) fn thread(&self, n: usize) -> Arc<Live> {
        self.threads[n].clone()
    }

    fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for live in self.threads.iter() {
            totals.delivered += live.delivered.load(Ordering::Relaxed);
            totals.published += live.published.load(Ordering::Relaxed);
            totals.opened += live.opened.load(Ordering::Relaxed);
        }
        totals
    }
}

/// Prints the progress lines of one run.
pub(crate) struct Progress {
    board: Board,
    quiet: bool,
    began: Instant,
    last: (Instant, Totals),
}

/// Interval between progress lines.
const EVERY: Duration = Duration::from_secs(1);

impl Progress {
    pub(crate) fn new(board: Board, quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            board,
            quiet,
            began: now,
            last: (now, Totals::default()),
        }
    }

    /// Sleeps until `until`, printing a line each second, labelled `phase`,
    /// on the way; returns at once when `until` has passed.
    pub(crate) fn wait_until(&mut self, until: Instant, phase: &str) {
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let next = (self.last.0 + EVERY).min(until);
            if next > now {
                std::thread::sleep(next - now);
            }
            self.tick(phase);
        }
    }

    /// Prints a line if a second has passed since the last one.
    pub(crate) fn tick(&mut self, phase: &str) {
        if Instant::now() >= self.last.0 + EVERY {
            self.line(phase);
        }
    }

    /// Prints one line now (unless quiet): the phase, the time since the
    /// run began, and the rates since the previous line.
    pub(crate) fn line(&mut self, phase: &str) {
        let now = Instant::now();
        let totals = self.board.totals();
        let (then, before) = self.last;
        self.last = (now, totals);
        if self.quiet {
            return;
        }
        let seconds = (now - then).as_secs_f64().max(1e-9);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
        let mut line = format!(
            "roomcast-load: {:>5.1} s {phase:<9}",
            (now - self.began).as_secs_f64()
        );
        if totals.opened > 0 {
            line += &format!(
                " {} connections open ({}/s)",
                totals.opened,
                si(rate(totals.opened, before.opened))
            );
        }
        if totals.published > 0 || totals.delivered > 0 {
            line += &format!(
                " {} publishes/s, {} deliveries/s",
                si(rate(totals.published, before.published)),
                si(rate(totals.delivered, before.delivered)),
            );
        }
        eprintln!("{line}");
    }
}

/// `1234567.0` as `1.23 M`.
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_a_person_would_say_them() {
        assert_eq!(si(5_130_000.0), "5.13 M");
        assert_eq!(si(64_500.0), "64.5 k");
        assert_eq!(si(12.4), "12");
    }

    #[test]
    fn every_thread_counts_into_the_totals() {
        let board = Board::new(3);
        Live::add(&board.thread(0).delivered, 5);
        Live::add(&board.thread(2).delivered, 7);
        Live::add(&board.thread(1).published, 2);
        let totals = board.totals();
        assert_eq!((totals.delivered, totals.published), (12, 2));
    }
}
