//! A roomcast node as its own process (the binary the tests build), so a
//! test can kill it (SIGKILL) or stall it (SIGSTOP) the way a crash or an
//! overloaded machine would. Killed by pid when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub struct NodeProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Its admin listener (`/stats`, `/metrics`).
    pub admin: SocketAddr,
}

impl NodeProcess {
    /// `roomcast --listen 127.0.0.1:0 --workers 2 --redis-url <url> <extra>`;
    /// returns once it prints where it listens and where its admin
    /// listener is.
    pub fn start(redis_url: &str, extra: &[&str]) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--pin-cores",
                "false",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--redis-url", redis_url])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the roomcast binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a line on stdout");
        let addr = line
            .split("ws://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("roomcast did not start: {line:?}"));
        let mut second = String::new();
        stdout
            .read_line(&mut second)
            .expect("a second line on stdout");
        let admin = second
            .split("http://")
            .nth(1)
            .and_then(|addr| addr.trim().parse().ok())
            .unwrap_or_else(|| panic!("no admin listener: {second:?}"));
        NodeProcess { child, addr, admin }
    }

    /// Kills it at once (SIGKILL): no drain, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stalls it (SIGSTOP) until [`NodeProcess::resume`].
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {which} {pid}");
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        signal_quietly(self.child.id());
        self.kill();
    }
}

/// A stopped process must be continued to die promptly.
fn signal_quietly(pid: u32) {
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
