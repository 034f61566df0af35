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

/// The test configuration, listening on `port` with `workers` cores.
fn on_port(port: u16, workers: usize) -> Config {
    Config {
        listen: format!("127.0.0.1:{port}").parse().expect("an address"),
        workers,
        ..config()
    }
}

/// A core that cannot start (its runtime or listener fails) used to be only
/// logged: the node ran on without it, and publications to rooms homed
/// there vanished with no reply. Now the start fails, naming the core, and
/// the cores already running are stopped: their listeners are closed, so
/// the port is free again.
#[test]
fn a_node_whose_core_cannot_start_does_not_start_at_all() {
    let port = free_port();
    let started = roomcast::hooks::start_failing_core(on_port(port, 2), 1);
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

/// Every core listens with `SO_REUSEPORT`, which lets any socket of the
/// same user join the port. A second node started on a port the first one
/// serves (a stale process, a typo in a deploy) used to start without a
/// word and take a share of the first one's connections. Now it refuses to
/// start and says the address is in use; the first node goes on serving.
#[test]
fn a_second_node_on_a_port_in_use_refuses_to_start() {
    let port = free_port();
    let first = roomcast::Server::start(on_port(port, 2)).expect("the first node starts");
    let second = roomcast::Server::start(on_port(port, 2));
    match second {
        Err(StartError::Bind { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            assert!(
                source.to_string().contains("another process listens on it"),
                "the error says why: {source}"
            );
        }
        Err(other) => panic!("failed for another reason: {other}"),
        Ok(server) => {
            server.shutdown();
            server.join();
            first.shutdown();
            first.join();
            panic!("a second node started on port {port}, which the first one serves");
        }
    }
    let still_serving = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(still_serving.is_ok(), "the first node still accepts");
    first.shutdown();
    first.join();
}

/// A node stopped a moment ago leaves its port free for the next one: the
/// check for a port in use does not mistake the old node's closed
/// connections (in `TIME_WAIT`) for a listener.
#[test]
fn a_node_can_restart_on_the_port_it_just_left() {
    let port = free_port();
    let first = roomcast::Server::start(on_port(port, 1)).expect("the first node starts");
    // A connection the server's side closes first leaves that side in
    // TIME_WAIT, on the node's port, once the client closes too. An answered
    // request makes sure the node has accepted it (a connection still in
    // the listen queue would be reset instead).
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("a read timeout");
    std::io::Write::write_all(&mut client, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send a request");
    let mut answer = [0u8; 512];
    let read = std::io::Read::read(&mut client, &mut answer);
    assert!(matches!(read, Ok(n) if n > 0), "an answer: {read:?}");
    first.shutdown();
    first.join();
    let mut rest = Vec::new();
    let read = std::io::Read::read_to_end(&mut client, &mut rest);
    assert!(read.is_ok(), "the node closed its side first: {read:?}");
    drop(client);
    let again =
        roomcast::Server::start(on_port(port, 1)).expect("a node starts on the port just left");
    again.shutdown();
    again.join();
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
