//! Protocol conformance proven by a suite nobody here wrote: the
//! Autobahn|Testsuite cases 1-7, 9 and 10, run by kosoku (Autobahn's own
//! case files, PyPI) against the echo endpoint, which goes through the same
//! reader, writer, limits and close handling as `/ws`. Every case must be
//! OK, NON-STRICT or INFORMATIONAL; tests/autobahn/expected.json records
//! the verdicts (rewrite it with `run.py URL expected.json --write`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::broker::{config, Broker};
use common::process::run_with_deadline;
use roomcast::Config;

#[test]
fn the_autobahn_cases_pass_against_the_echo_endpoint() {
    // Case 9 sends messages of up to 16 MiB, some in 64-byte fragments, and
    // case 2 floods pings: the limits are raised to what the suite needs.
    let broker = Broker::start_with(Config {
        echo_path: "/echo".into(),
        workers: 1,
        max_message_size: 16 * 1024 * 1024,
        max_fragments: 1_000_000,
        outbound_max_bytes: 64 * 1024 * 1024,
        ..config()
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/autobahn");
    let output = run_with_deadline(
        Command::new("python3")
            .arg(format!("{dir}/run.py"))
            .arg(format!("ws://{}/echo", broker.addr))
            .arg(format!("{dir}/expected.json")),
        Duration::from_secs(600),
    )
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "Autobahn cases failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
