//! Running a program with a deadline.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a program to completion, killing it past `deadline` (a note saying
/// so is appended to its stderr). Blocks the thread: call it from
/// `spawn_blocking`. Both pipes are drained on their own threads, so a
/// chatty child never blocks on a full pipe.
pub fn run_with_deadline(command: &mut Command, deadline: Duration) -> std::io::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let until = Instant::now() + deadline;
    let (status, killed) = loop {
        if let Some(status) = child.try_wait()? {
            break (status, false);
        }
        if Instant::now() >= until {
            child.kill()?;
            break (child.wait()?, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = stderr.join().unwrap();
    if killed {
        stderr.extend_from_slice(
            format!("\n(killed: still running after {deadline:?})\n").as_bytes(),
        );
    }
    Ok(Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr,
    })
}
