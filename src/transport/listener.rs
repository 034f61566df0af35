//! One listening socket per core on the same address (`SO_REUSEPORT`), so
//! the kernel spreads incoming connections over the cores, and each core's
//! accept loop.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::limits::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, LISTEN_BACKLOG};
use crate::router::driver::Core;

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Binds `count` listeners on `addr`. With port 0, the first picks the port
/// and the others join it. A fixed port must be free (see [`ensure_free`]).
pub(crate) fn bind_all(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        ensure_free(addr)?;
    }
    let first = bind(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(addr)?);
    }
    Ok(listeners)
}

/// Fails when anything listens on `addr` already. `SO_REUSEPORT` lets every
/// socket of the same user join a port, so a second node started on the
/// same port (a stale one, a deploy's typo) would otherwise start without
/// an error and take a share of the first one's connections. A bind
/// without `SO_REUSEPORT` conflicts with any listener; with
/// `SO_REUSEADDR`, it does not conflict with connections in `TIME_WAIT`
/// from a node just stopped. The probe is closed before the real
/// listeners bind.
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe
        .bind(&addr.into())
        .map_err(|error| match error.kind() {
            io::ErrorKind::AddrInUse => io::Error::new(
                io::ErrorKind::AddrInUse,
                "address already in use: another process listens on it",
            ),
            _ => error,
        })
}

/// Accepts connections on one core until its drain begins, and serves each
/// (admission, TLS, HTTP, upgrade) in a task of its own.
pub(crate) async fn accept(listener: tokio::net::TcpListener, core: Rc<Core>) {
    // Backoff after accept errors (out of file descriptors, typically):
    // doubled per failure, reset by a success.
    let mut backoff = std::time::Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = core.drain_started() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = std::time::Duration::ZERO;
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(super::http::serve(stream, peer, core.clone()));
            }
            Err(error) => {
                if backoff.is_zero() {
                    tracing::warn!(%error, "accept failed; backing off");
                }
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                tokio::time::sleep(backoff).await;
            }
        }
        if core.node().shutting_down() {
            return;
        }
    }
}
