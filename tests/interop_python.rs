//! Interop: a client nobody here wrote speaks `roomcast.v1.msgpack` to a real
//! broker. `tests/python/interop.py` drives it with Python's `websockets` and
//! `msgpack` (pinned in `tests/python/requirements.txt`, installed by
//! `./scripts/test.sh`) and checks subscribe, publish, ordered delivery,
//! unsubscribe, error 102 and close 1003 from the client's side.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{rooms_on_both_cores, Broker};

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
    let mut child = Command::new("python3")
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drained on their own threads so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (status, killed) = wait_or_kill(&mut child)?;
    let mut stderr = stderr.join().unwrap();
    if killed {
        let note = format!("\n(killed: still running after {SCRIPT_DEADLINE:?})\n");
        stderr.extend_from_slice(note.as_bytes());
    }
    Ok(Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr,
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits for the child; past the deadline kills it. Also says whether it was killed.
fn wait_or_kill(child: &mut Child) -> std::io::Result<(ExitStatus, bool)> {
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            child.kill()?;
            return Ok((child.wait()?, true));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
