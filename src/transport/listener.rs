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
/// and the others join it.
pub(crate) fn bind_all(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(addr)?);
    }
    Ok(listeners)
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
