//! Running the project's Python scripts (`tests/python/`) against a broker:
//! the packages they need are checked first, so a missing one fails with
//! how to install it rather than with a traceback.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::process::run_with_deadline;

/// A script runs in well under a second; this only catches a hang.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "run ./scripts/test.sh, which installs tests/python/requirements.txt";

/// Runs `tests/python/SCRIPT ARGS` and checks that it exited 0 and that its
/// output starts with `summary` (each script prints one line saying what it
/// checked); returns its stdout.
pub async fn run_script(script: &str, args: Vec<String>, summary: &str) -> String {
    let ready = tokio::task::spawn_blocking(|| {
        python(&["-c", "import msgpack, websockets.asyncio.client"])
    })
    .await
    .expect("the check ran");
    match ready {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "the Python packages for this test are missing: {INSTALL_HINT}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("cannot run python3 ({error}): {INSTALL_HINT}"),
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut argv = vec![path.display().to_string()];
    argv.extend(args);
    let output = tokio::task::spawn_blocking(move || python(&argv))
        .await
        .expect("the script ran")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
        output.status
    );
    assert!(
        stdout.starts_with(summary),
        "{script} printed no summary:\n{stdout}{stderr}"
    );
    stdout
}

/// Runs `python3 ARGS`, killing it past [`SCRIPT_DEADLINE`]; blocks the thread.
fn python<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::io::Result<Output> {
    let mut command = Command::new("python3");
    command.args(args).env("PYTHONUNBUFFERED", "1");
    run_with_deadline(&mut command, SCRIPT_DEADLINE)
}
