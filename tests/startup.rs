//! Starting a node: it starts whole or not at all, and says truthfully
//! where clients connect.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};

use common::broker::config;
use roomcast::{Config, StartError};

/// A port nothing listens on now.
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("its address").port()
}

/// A core that cannot start (its runtime or listener fails) used to be only
/// logged: the node ran on without it, and publications to rooms homed
/// there vanished with no reply. Now the start fails, naming the core, and
/// the cores already running are stopped: their listeners are closed, so
/// the port is free again.
#[test]
fn a_node_whose_core_cannot_start_does_not_start_at_all() {
    let port = free_port();
    let config = Config {
        listen: format!("127.0.0.1:{port}").parse().expect("an address"),
        workers: 2,
        ..config()
    };
    let started = roomcast::hooks::start_failing_core(config, 1);
    match started {
        Err(StartError::Core { core: 1, reason }) => {
            assert!(!reason.is_empty(), "the error says why");
        }
        Err(other) => panic!("failed for another reason: {other}"),
        Ok(server) => {
            let addr = server.local_addr();
            server.shutdown();
            server.join();
            panic!("started on {addr} with a core that could not start");
        }
    }
    // A plain bind (no SO_REUSEPORT) succeeds only if no listener of the
    // failed node is left open.
    TcpListener::bind(("127.0.0.1", port)).expect("every core's listener was closed");
}

/// The line the binary prints for people and scripts names the scheme it
/// serves: `wss://` with TLS on.
#[test]
fn the_binary_prints_wss_when_it_serves_tls() {
    let dir = std::env::temp_dir().join(format!("roomcast-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let (cert, key) = common::tls::self_signed(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--tls-cert", &cert, "--tls-key", &key])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("its stdout");
    let line = BufReader::new(stdout).lines().next();
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a line").expect("readable");
    assert!(
        line.starts_with("roomcast listening on wss://127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("/ws with 1 workers"), "{line}");
}
