//! Interop: a client nobody here wrote speaks `roomcast.v1.msgpack` to a real
//! broker. `tests/python/interop.py` drives it with Python's `websockets` and
//! `msgpack` (pinned in `tests/python/requirements.txt`, installed by
//! `./scripts/test.sh`) and checks subscribe, publish, ordered delivery,
//! unsubscribe, error 102 and close 1003 from the client's side.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::broker::{rooms_on_both_cores, Broker};
use common::process::run_with_deadline;

/// The whole script takes well under a second; this only catches a hang.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "run ./scripts/test.sh, which installs tests/python/requirements.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_websockets_client_speaks_the_msgpack_protocol() {
    let python_ready = tokio::task::spawn_blocking(|| {
        python(&["-c", "import msgpack, websockets.asyncio.client"])
    })
    .await
    .unwrap();
    match python_ready {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "the Python packages for this test are missing: {INSTALL_HINT}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("cannot run python3 ({error}): {INSTALL_HINT}"),
    }

    let broker = Broker::start();
    let (one, two) = rooms_on_both_cores("py-");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/interop.py");
    let args = [
        script.display().to_string(),
        broker.addr.to_string(),
        one,
        two,
    ];
    let output = tokio::task::spawn_blocking(move || python(&args))
        .await
        .unwrap()
        .expect("python3 runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop.py failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
        output.status
    );
    assert!(
        stdout.starts_with("interop: ok"),
        "interop.py printed no summary:\n{stdout}{stderr}"
    );
    print!("{stdout}");
    broker.shutdown().await;
}

/// Runs `python3 ARGS`, killing it past [`SCRIPT_DEADLINE`]; blocks the thread.
fn python<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::io::Result<Output> {
    let mut command = Command::new("python3");
    command.args(args).env("PYTHONUNBUFFERED", "1");
    run_with_deadline(&mut command, SCRIPT_DEADLINE)
}
