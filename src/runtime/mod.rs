//! Thread-per-core: one named thread `core-{n}` per worker, each with its own
//! current-thread tokio runtime, its own SO_REUSEPORT listener, its own room
//! shard and home rooms. Nothing is shared between cores but the bounded
//! queues of [`crate::router`], the counters, and the node-wide connection
//! count.

pub mod core;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::admission::Admission;
use crate::auth::{Identity, Verifier, VerifierConfig};
use crate::config::Config;
use crate::limits::Limits;
use crate::metrics::{Stats, StatsSnapshot};
use crate::router::postbox::{self, Mailbox};
use crate::rules::Glob;
use crate::transport::listener;

/// State every core can see.
pub struct Node {
    /// A random id of this node's run; client ids start with it, so they are
    /// unique across a cluster and across restarts.
    pub id: String,
    pub config: Config,
    pub limits: Limits,
    pub stats: Arc<Stats>,
    /// WebSocket connections open on this node (bounded by `max_connections`).
    pub connections: AtomicUsize,
    /// Checks before the upgrade (handshake cap, per-IP limits, origins).
    pub admission: Arc<Admission>,
    /// Set when the node serves `wss://`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// `None`: authentication is off.
    pub verifier: Option<Verifier>,
    anonymous_rooms: Vec<Glob>,
    /// Whether any room rule requires roles.
    pub role_rules: bool,
    shutting_down: AtomicBool,
    mailboxes: Arc<[Mailbox]>,
}

impl Node {
    /// Whether a graceful shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The identity of a connection that brought no token, if it may
    /// connect at all.
    pub fn anonymous(&self) -> Option<Identity> {
        match self.verifier {
            None => Some(Identity::unrestricted()),
            Some(_) if self.config.allow_anonymous => {
                Some(Identity::anonymous(&self.anonymous_rooms))
            }
            Some(_) => None,
        }
    }

    /// Takes a connection slot, if one is free.
    pub fn try_admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let before = self.connections.fetch_add(1, Ordering::AcqRel);
        if before >= self.config.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot { node: self.clone() })
    }
}

/// A held connection slot; dropping it frees the slot.
pub struct ConnectionSlot {
    node: Arc<Node>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.node.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Key(#[from] crate::auth::KeyError),
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
}

/// A running node.
pub struct Server {
    local_addr: SocketAddr,
    node: Arc<Node>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every worker's listener and starts the cores. Returns once the
    /// node accepts connections.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let workers = config.workers;
        let listeners =
            listener::bind_all(config.listen, workers).map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let verifier = Verifier::from_config(&VerifierConfig {
            algorithm: config.jwt_algorithm,
            secret: config.jwt_secret.0.clone(),
            public_key: config.jwt_public_key.clone(),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway: config.jwt_leeway,
        })?;
        let tls = crate::transport::tls::acceptor(&config)?;
        let (mailboxes, inboxes) = postbox::mailboxes(workers, config.core_queue_capacity);
        let node = Arc::new(Node {
            id: format!("{:08x}", crate::protocol::random_u64() as u32),
            limits: Limits::from_config(&config),
            stats: Arc::new(Stats::new(workers)),
            connections: AtomicUsize::new(0),
            admission: Arc::new(Admission::new(&config)),
            verifier,
            anonymous_rooms: config
                .anonymous_rooms
                .0
                .iter()
                .map(|p| Glob::new(p))
                .collect(),
            role_rules: config.rooms.has_role_rules(),
            tls,
            shutting_down: AtomicBool::new(false),
            mailboxes: mailboxes.clone(),
            config,
        });
        let cpus = core_affinity::get_core_ids().unwrap_or_default();
        let mut threads = Vec::with_capacity(workers);
        for (n, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let node = node.clone();
            let mailboxes = mailboxes.clone();
            let cpu = (node.config.pin_cores && !cpus.is_empty()).then(|| cpus[n % cpus.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("core-{n}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        core_affinity::set_for_current(cpu);
                    }
                    core::run(n, node, mailboxes, inbox, listener);
                })
                .map_err(StartError::Thread)?;
            threads.push(thread);
        }
        Ok(Server {
            local_addr,
            node,
            threads,
        })
    }

    /// The address the node listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's counters, now.
    pub fn stats(&self) -> StatsSnapshot {
        self.node.stats.snapshot()
    }

    /// Begins a graceful shutdown: stop accepting, then flush and close every
    /// connection with 1012, spread over `drain_period`.
    pub fn shutdown(&self) {
        self.node.shutting_down.store(true, Ordering::Release);
        for mailbox in self.node.mailboxes.iter() {
            mailbox.wake.notify_one();
        }
    }

    /// Waits until every core has stopped.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Runs a node until `shutdown` resolves, then shuts it down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let server = Server::start(config)?;
    // A plain line on stdout (logs go to stderr), for people and scripts.
    println!(
        "roomcast listening on ws://{}{} with {} workers",
        server.local_addr(),
        server.node.config.path,
        server.node.config.workers
    );
    shutdown.await;
    tracing::info!("shutting down: draining connections");
    server.shutdown();
    // Joining blocks; the cores are other threads, so this thread may block.
    let _ = tokio::task::spawn_blocking(move || server.join()).await;
    tracing::info!("stopped");
    Ok(())
}
