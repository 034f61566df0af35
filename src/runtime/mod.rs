//! Thread-per-core: starts one named thread `core-{n}` per worker, each with
//! its own current-thread tokio runtime, listener, router and engine, and
//! stops them. Nothing is shared between cores but the bounded queues of
//! the router, the counters, and the node (settings, connection budget,
//! shutdown flag). A node starts whole or not at all: if any core cannot
//! start, the cores already running are stopped and the start fails.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::LocalSet;

use crate::config::Config;
use crate::engine::EngineKind;
use crate::metrics::StatsSnapshot;
use crate::node::Node;
use crate::router::driver::Core;
use crate::router::postbox::{self, Inbox, Mailbox};
use crate::router::CoreId;
use crate::transport::listener;

mod memory;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on admin_listen={addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    #[error("core {core} could not start: {reason}")]
    Core { core: usize, reason: String },
    #[error(transparent)]
    Key(#[from] crate::auth::KeyError),
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
}

/// What a node starts with besides its configuration: which engine its
/// cores run, and (for the project's own tests) a core made to fail.
#[derive(Debug, Clone, Default)]
pub(crate) struct StartOptions {
    pub(crate) engine: EngineKind,
    /// This core reports a failure instead of starting.
    #[cfg(feature = "test-hooks")]
    pub(crate) fail_core: Option<usize>,
}

/// A running node.
pub struct Server {
    local_addr: SocketAddr,
    /// Where the admin listener listens, when it is on.
    admin_addr: Option<SocketAddr>,
    node: Arc<Node>,
    mailboxes: Arc<[Mailbox]>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every worker's listener and starts the cores. Returns once
    /// every core accepts connections, or fails (with every core stopped)
    /// if one cannot start.
    pub fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, StartOptions::default())
    }

    pub(crate) fn start_with(config: Config, options: StartOptions) -> Result<Server, StartError> {
        let workers = config.workers;
        let bind_error = |source| StartError::Bind {
            addr: config.listen,
            source,
        };
        let listeners = listener::bind_all(config.listen, workers, config.tcp_defer_accept)
            .map_err(bind_error)?;
        let local_addr = listeners[0].local_addr().map_err(bind_error)?;
        let mut admin = match config.admin_addr() {
            Some(addr) => {
                let admin_error = |source| StartError::AdminBind { addr, source };
                let listener = listener::bind_all(addr, 1, Duration::ZERO).map_err(admin_error)?;
                listener.into_iter().next()
            }
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let tls = crate::transport::tls::acceptor(&config)?;
        let (mailboxes, inboxes) = postbox::mailboxes(workers, config.core_queue_capacity);
        let node = Arc::new(Node::new(config, tls)?);
        let mut server = Server {
            local_addr,
            admin_addr,
            node: node.clone(),
            mailboxes: mailboxes.clone(),
            threads: Vec::with_capacity(workers),
        };
        let cpus = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready) = mpsc::channel();
        for (n, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let cpu = (node.config.pin_cores && !cpus.is_empty()).then(|| cpus[n % cpus.len()]);
            let start = CoreStart {
                id: CoreId(n),
                node: node.clone(),
                mailboxes: mailboxes.clone(),
                inbox,
                listener,
                admin: if n == 0 { admin.take() } else { None },
                options: options.clone(),
                ready: ready_tx.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("core-{n}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        core_affinity::set_for_current(cpu);
                    }
                    start.run();
                });
            match thread {
                Ok(thread) => server.threads.push(thread),
                Err(error) => {
                    server.stop();
                    return Err(StartError::Thread(error));
                }
            }
        }
        drop(ready_tx);
        for _ in 0..workers {
            // A core that died without a word closed its sender: a failure too.
            let report = ready.recv().unwrap_or_else(|_| {
                Err(StartError::Core {
                    core: usize::MAX,
                    reason: "a core stopped while starting".into(),
                })
            });
            if let Err(error) = report {
                server.stop();
                return Err(error);
            }
        }
        Ok(server)
    }

    /// The address the node listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the admin listener (`/stats`, `/metrics`, the API),
    /// or `None` when `admin_listen` is `off`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The node's counters, now.
    pub fn stats(&self) -> StatsSnapshot {
        self.node.stats.snapshot()
    }

    /// Begins a graceful shutdown: stop accepting, then flush and close every
    /// connection with 1012, spread over `drain_period`.
    pub fn shutdown(&self) {
        self.node.begin_shutdown();
        for mailbox in self.mailboxes.iter() {
            mailbox.wake.notify_one();
        }
    }

    /// Waits until every core has stopped.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }

    /// Shuts down whatever started and waits for it.
    fn stop(&mut self) {
        self.shutdown();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    /// The URL clients connect to.
    fn url(&self) -> String {
        let scheme = if self.node.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.local_addr, self.node.config.path)
    }
}

/// What one core thread starts from.
struct CoreStart {
    id: CoreId,
    node: Arc<Node>,
    mailboxes: Arc<[Mailbox]>,
    inbox: Inbox,
    listener: std::net::TcpListener,
    /// Core 0 serves the admin listener, when it is on.
    admin: Option<std::net::TcpListener>,
    options: StartOptions,
    ready: mpsc::Sender<Result<(), StartError>>,
}

impl CoreStart {
    /// Runs the core on the calling thread until shutdown completes, after
    /// reporting whether it started.
    fn run(self) {
        let CoreStart {
            id,
            node,
            mailboxes,
            inbox,
            listener,
            admin,
            options,
            ready,
        } = self;
        let started = ready.clone();
        let failed = move |reason: String| {
            let _ = ready.send(Err(StartError::Core { core: id.0, reason }));
        };
        #[cfg(feature = "test-hooks")]
        if options.fail_core == Some(id.0) {
            return failed("made to fail by the test".into());
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => return failed(format!("cannot build its runtime: {error}")),
        };
        let local = LocalSet::new();
        local.block_on(&runtime, async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => return failed(format!("cannot register its listener: {error}")),
            };
            let engine = match options.engine.build(&node, id.0).await {
                Ok(engine) => engine,
                Err(error) => return failed(error.to_string()),
            };
            let admin = match admin.map(TcpListener::from_std).transpose() {
                Ok(admin) => admin,
                Err(error) => {
                    return failed(format!("cannot register the admin listener: {error}"))
                }
            };
            let core = Rc::new(Core::new(id, node, mailboxes, engine));
            tokio::task::spawn_local(listener::accept(listener, core.clone()));
            if let Some(admin) = admin {
                tokio::task::spawn_local(crate::admin::accept(admin, core.clone()));
            }
            tokio::task::spawn_local(core.clone().sweep());
            tokio::task::spawn_local(crate::transport::session::heartbeat::keep(core.clone()));
            tokio::task::spawn_local(memory::return_freed());
            let _ = started.send(Ok(()));
            core.drive(inbox).await;
        });
    }
}

/// Runs a node until `shutdown` resolves, then shuts it down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let server = Server::start(config)?;
    // A plain line on stdout (logs go to stderr), for people and scripts.
    println!(
        "roomcast listening on {} with {} workers",
        server.url(),
        server.node.config.workers
    );
    if let Some(addr) = server.admin_addr() {
        println!("roomcast admin on http://{addr}");
    }
    shutdown.await;
    tracing::info!("shutting down: draining connections");
    server.shutdown();
    // Joining blocks; the cores are other threads, so this thread may block.
    let _ = tokio::task::spawn_blocking(move || server.join()).await;
    tracing::info!("stopped");
    Ok(())
}
