//! `roomcast-load`: a load generator for roomcast that should never be the
//! bottleneck. Raw TCP, a hand-written WebSocket client path, envelopes
//! decoded in place, one current-thread runtime per generator thread.
//!
//! # Layout
//! - [`cli`]: the command line and the plan each scenario resolves into.
//! - [`ws`]: the upgrade, masked client frames, server frames parsed in place.
//! - [`envelope`]: server envelopes read without allocating.
//! - [`conn`]: one connection: connect, upgrade, subscribe, publish template.
//! - [`pubsub`]: `fanout`, `rooms`, `latency`: threads, time line, drain;
//!   [`subscriber`] and [`publisher`] are the two kinds of connection task,
//!   [`tally`] what they count.
//! - [`connections`]: the `connections` scenario.
//! - [`measure`]: clocks, CPU time, the server's /proc figures.
//! - [`report`]: the JSON line and the table; [`progress`]: a line a
//!   second while the run goes on.

mod cli;
mod conn;
mod connections;
mod envelope;
mod measure;
mod progress;
mod publisher;
mod pubsub;
mod report;
mod subscriber;
mod tally;
mod ws;

use std::process::ExitCode;

use clap::Parser;
use mimalloc::MiMalloc;

use crate::cli::{Args, Plan};
use crate::report::{ConnectionsReport, PubSubReport};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("roomcast-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let open_file_limit = measure::raise_open_file_limit();
    match args.plan()? {
        Plan::PubSub(plan) => {
            let needed = (plan.subscribers.len() + plan.publishers.len()) as u64;
            if let Some(limit) = open_file_limit.filter(|limit| needed + 32 > *limit) {
                eprintln!(
                    "roomcast-load: warning: {needed} connections need about as many open files; the limit is {limit}"
                );
            }
            let report = PubSubReport::new(&pubsub::run(plan)?);
            emit(&report, &report.table(), report.warnings())
        }
        Plan::Connections(plan) => {
            let report = ConnectionsReport::new(&connections::run(plan, open_file_limit)?);
            emit(&report, &report.table(), report.warnings())
        }
    }
}

fn emit(report: &impl serde::Serialize, table: &str, warnings: Vec<String>) -> anyhow::Result<()> {
    eprint!("{table}");
    for warning in warnings {
        eprintln!("{warning}");
    }
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}
