//! `GET /health` and `GET /ready`: the two questions an orchestrator asks.
//!
//! * **Liveness** (`/health`): 200 for as long as the admin listener
//!   answers at all, draining included. A process that answers is alive;
//!   restarting one that drains would cut the connections it is closing
//!   gently.
//! * **Readiness** (`/ready`): whether new connections should be sent
//!   here. 503 while the node drains, while any core's engine is thought
//!   unavailable (an operation failed with error 110 since the last check,
//!   or the store is unreachable; see `Core::sweep`), or while the
//!   connection budget (`max_connections`) is spent. The JSON body names
//!   every reason that holds, so the one that matters is never hidden
//!   behind another.
//!
//! Both read state every core already keeps (the shutdown flag, each
//! core's engine flag, the connection budget): a probe costs a few
//! atomic loads and asks no other core anything.

use hyper::StatusCode;
use serde::Serialize;

use super::{json, AdminResponse};
use crate::router::driver::Core;

/// The body of `/health`.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

/// Why the node is not ready, as `/ready` words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum NotReady {
    /// A graceful shutdown has begun: connections are being closed.
    Draining,
    /// Some core's engine failed or cannot reach its store: its rooms'
    /// operations fail with error 110.
    EngineUnavailable,
    /// `max_connections` connections are open: an upgrade would get 503.
    ConnectionLimit,
}

/// The body of `/ready`.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// Every reason that holds now; empty when ready.
    reasons: Vec<NotReady>,
    /// Connection slots held now, and the budget they are held against.
    connections: usize,
    max_connections: usize,
}

/// `GET /health`: 200 while the process serves.
pub(crate) fn health() -> AdminResponse {
    json(StatusCode::OK, &Health { status: "ok" })
}

/// `GET /ready`: 200 when the node takes new connections, else 503 with
/// the reasons.
pub(crate) fn ready(core: &Core) -> AdminResponse {
    let node = core.node();
    let connections = node.connections();
    let max_connections = node.config.max_connections;
    let checks = [
        (node.shutting_down(), NotReady::Draining),
        (!node.stats.engines_available(), NotReady::EngineUnavailable),
        (connections >= max_connections, NotReady::ConnectionLimit),
    ];
    let reasons: Vec<NotReady> = checks
        .into_iter()
        .filter_map(|(holds, reason)| holds.then_some(reason))
        .collect();
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: reasons.is_empty(),
        reasons,
        connections,
        max_connections,
    };
    json(status, &body)
}
