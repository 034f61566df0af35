//! A real broker on an ephemeral port, and waiting on a client.

use std::net::SocketAddr;
use std::time::Duration;

use roomcast::client::{Client, Message};
use roomcast::protocol::Codec;
use roomcast::{Config, Server};

/// A broker with test-friendly settings: 2 workers, so rooms are homed on
/// both cores and the cross-core path always runs.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        pin_cores: false,
        drain_period: Duration::from_millis(200),
        admin_listen: "127.0.0.1:0".to_owned(),
        ..Config::default()
    }
}

/// A running broker that shuts down when dropped.
pub struct Broker {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(config())
    }

    pub fn start_with(config: Config) -> Broker {
        Broker::running(Server::start(config).expect("broker starts"))
    }

    /// A broker whose engine answers late and out of order (and can be made
    /// unavailable or timing out), through the test hooks.
    pub fn start_slow(config: Config, slow: roomcast::hooks::SlowEngine) -> Broker {
        let server = roomcast::hooks::start_with_slow_engine(config, slow);
        Broker::running(server.expect("broker starts"))
    }

    fn running(server: Server) -> Broker {
        let addr = server.local_addr();
        Broker {
            server: Some(server),
            addr,
        }
    }

    /// The admin listener's address (on an ephemeral port in tests).
    pub fn admin(&self) -> SocketAddr {
        self.server()
            .admin_addr()
            .expect("the test broker has an admin listener")
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Starts a graceful shutdown and waits for it on a blocking thread.
    pub async fn shutdown(mut self) {
        let server = self.server.take().unwrap();
        server.shutdown();
        tokio::task::spawn_blocking(move || server.join())
            .await
            .unwrap();
    }

    pub async fn client(&self, codec: Codec) -> Client {
        Client::connect(self.addr, codec)
            .await
            .expect("client connects")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            server.join();
        }
    }
}

/// Waits for the next message, failing the test after 10 s.
pub async fn next(client: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(10), client.recv())
        .await
        .expect("a message within 10 s")
        .expect("connection still open")
}

/// Rooms homed on each of the two test workers (so tests can pick both).
pub fn rooms_on_both_cores(prefix: &str) -> (String, String) {
    let mut found: [Option<String>; 2] = [None, None];
    for i in 0.. {
        let name = format!("{prefix}{i}");
        let core = roomcast::hooks::home_core(&name, 2);
        if found[core].is_none() {
            found[core] = Some(name);
        }
        if let [Some(a), Some(b)] = &found {
            return (a.clone(), b.clone());
        }
    }
    unreachable!()
}
