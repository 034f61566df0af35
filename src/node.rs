//! What every core of a node shares: the settings and bounds, the counters,
//! the connection budget, the checks made at the door, the room policy, and
//! the shutdown flag. Read-mostly: the only writes are the connection count
//! and the shutdown flag (atomics) and each core's own counters.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::admission::Admission;
use crate::auth::{Action, Identity, Verifier, VerifierConfig};
use crate::config::Config;
use crate::limits::Limits;
use crate::metrics::{CoreCounters, Stats};
use crate::router::top_rooms::RoomCount;
use crate::rules::{Glob, RoomPolicy};

/// State every core can see.
pub(crate) struct Node {
    /// A random id of this node's run; client ids start with it, so they are
    /// unique across a cluster and across restarts.
    pub(crate) id: String,
    pub(crate) config: Config,
    pub(crate) limits: Limits,
    /// Decides each room's options (history, presence, join and leave).
    pub(crate) rooms: RoomPolicy,
    pub(crate) stats: Arc<Stats>,
    /// WebSocket connections open on this node (bounded by `max_connections`).
    connections: AtomicUsize,
    /// Checks before the upgrade (handshake cap, per-IP limits, origins).
    pub(crate) admission: Arc<Admission>,
    /// Set when the node serves `wss://`.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// `None`: authentication is off.
    pub(crate) verifier: Option<Verifier>,
    anonymous_rooms: Vec<Glob>,
    /// Whether any room rule requires roles (if none does, no check is needed).
    pub(crate) role_rules: bool,
    shutting_down: AtomicBool,
    /// Each core's busiest rooms over its last sweep interval, for the
    /// dashboard: written by that core once a second, read by the admin
    /// listener; never touched on a message's path.
    top_rooms: Box<[Mutex<Vec<RoomCount>>]>,
}

impl Node {
    /// The node for `config`; `tls` is the acceptor when `wss://` is on.
    pub(crate) fn new(
        config: Config,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Node, crate::auth::KeyError> {
        let verifier = Verifier::from_config(&VerifierConfig {
            algorithm: config.jwt_algorithm,
            secret: config.jwt_secret.0.clone(),
            public_key: config.jwt_public_key.clone(),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway: config.jwt_leeway,
        })?;
        Ok(Node {
            id: format!("{:08x}", crate::protocol::random_u64() as u32),
            limits: config.limits(),
            rooms: config.room_policy(),
            stats: Arc::new(Stats::new(config.workers)),
            connections: AtomicUsize::new(0),
            admission: Arc::new(Admission::new(&config)),
            tls,
            verifier,
            anonymous_rooms: config
                .anonymous_rooms
                .0
                .iter()
                .map(|p| Glob::new(p))
                .collect(),
            role_rules: config.rooms.has_role_rules(),
            shutting_down: AtomicBool::new(false),
            top_rooms: (0..config.workers).map(|_| Mutex::default()).collect(),
            config,
        })
    }

    /// The counters core `core` writes.
    pub(crate) fn counters(&self, core: usize) -> &CoreCounters {
        self.stats.core(core)
    }

    /// Whether a graceful shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the start of a graceful shutdown (the cores then drain).
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// The identity of a connection that brought no token, if it may
    /// connect at all.
    pub(crate) fn anonymous(&self) -> Option<Identity> {
        match self.verifier {
            None => Some(Identity::unrestricted()),
            Some(_) if self.config.allow_anonymous => {
                Some(Identity::anonymous(&self.anonymous_rooms))
            }
            Some(_) => None,
        }
    }

    /// Replaces core `core`'s busiest rooms.
    pub(crate) fn set_top_rooms(&self, core: usize, rooms: Vec<RoomCount>) {
        if let Ok(mut slot) = self.top_rooms[core].lock() {
            *slot = rooms;
        }
    }

    /// Every core's busiest rooms, as last reported.
    pub(crate) fn top_rooms(&self) -> Vec<RoomCount> {
        let mut all = Vec::new();
        for slot in self.top_rooms.iter() {
            if let Ok(rooms) = slot.lock() {
                all.extend(rooms.iter().cloned());
            }
        }
        all
    }

    /// Connection slots held now: open connections, and upgrades admitted
    /// and not yet open. `/ready` compares it with `max_connections`.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Whether `identity` may do `action` in `room`: its token grants it,
    /// and the room's rule (if any) finds one of the roles it requires.
    /// The one answer every front door asks for (the WebSocket session per
    /// operation, the SSE door per room), so that they cannot drift apart.
    pub(crate) fn permits(&self, identity: &Identity, action: Action, room: &str) -> bool {
        if !identity.grants.allows(action, room) {
            return false;
        }
        if !self.role_rules || action == Action::Presence {
            return true;
        }
        match self
            .config
            .rooms
            .required_roles(room, action == Action::Publish)
        {
            Some(roles) => roles.iter().any(|r| identity.has_role(r)),
            None => true,
        }
    }

    /// Takes a connection slot, if one is free.
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let before = self.connections.fetch_add(1, Ordering::AcqRel);
        if before >= self.config.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot { node: self.clone() })
    }
}

/// A held connection slot; dropping it frees the slot.
pub(crate) struct ConnectionSlot {
    node: Arc<Node>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.node.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
