//! One listening socket per core on the same address (`SO_REUSEPORT`), so
//! the kernel spreads incoming connections over the cores, and each core's
//! accept loop.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::limits::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, LISTEN_BACKLOG};
use crate::router::driver::Core;

fn bind(addr: SocketAddr, defer_accept: Duration) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    set_defer_accept(&socket, defer_accept)?;
    Ok(socket.into())
}

/// Binds `count` listeners on `addr`. With port 0, the first picks the port
/// and the others join it. A fixed port must be free (see [`ensure_free`]).
/// `defer_accept` is `tcp_defer_accept` for the public listener, zero for
/// the admin one.
pub(crate) fn bind_all(
    addr: SocketAddr,
    count: usize,
    defer_accept: Duration,
) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        ensure_free(addr)?;
    }
    let first = bind(addr, defer_accept)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(addr, defer_accept)?);
    }
    Ok(listeners)
}

/// `TCP_DEFER_ACCEPT`: the kernel completes a connection's handshake but
/// hands it to `accept` only once its first bytes arrive (or, for a silent
/// one, once `defer` has passed). A WebSocket client always speaks first,
/// so the accepting core is woken once per connection, with the request
/// already readable, instead of once for the connection and again for its
/// request. Whole seconds, rounded up; zero turns it off.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
fn set_defer_accept(socket: &Socket, defer: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let seconds = defer.as_secs() + u64::from(defer.subsec_nanos() > 0);
    let value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is `socket`'s, open for the whole call; the
    // option's value is a `c_int` that lives on this stack frame, and its
    // exact size is passed with its address.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Other systems have no `TCP_DEFER_ACCEPT`: every connection is handed
/// to `accept` at once.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_defer_accept(_socket: &Socket, _defer: Duration) -> io::Result<()> {
    Ok(())
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
