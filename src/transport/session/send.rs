//! The write half of a plain TCP connection: `send` and `sendmsg` rather
//! than the `write` and `writev` of tokio's `TcpStream`. Both reach the
//! same TCP send, but `writev` goes there through the file layer first:
//! `vfs_writev` and `fdget_pos` were 5.7% of the server's CPU in perf of
//! the fan-out scenario (1 room × 1,000 subscribers), where the
//! socket calls go straight to the socket. (Small frames reach it already
//! gathered into one buffer by the writer.)

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncWrite, Interest};
use tokio::net::tcp::WriteHalf;

/// Writes to a socket its reader reads at the same time (both borrow it).
pub(super) struct SendHalf<'a>(pub(super) WriteHalf<'a>);

/// Flags of every send: a peer that has gone is an error of the write,
/// never a signal to the process.
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;

impl SendHalf<'_> {
    /// Sends once the socket takes bytes.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        send: impl Fn(&SockRef<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let stream = self.0.as_ref();
        let socket = SockRef::from(stream);
        loop {
            ready!(stream.poll_write_ready(cx))?;
            // A `WouldBlock` clears the readiness, so the next poll waits.
            match stream.try_io(Interest::WRITABLE, || send(&socket)) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for SendHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |socket| socket.send_with_flags(buf, SEND_FLAGS))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One slice (a lone frame, the common case at low rates): `send`,
        // which copies no `msghdr` and no iovec in.
        if let [one] = bufs {
            return self.poll_send(cx, |socket| socket.send_with_flags(one, SEND_FLAGS));
        }
        self.poll_send(cx, |socket| {
            socket.send_vectored_with_flags(bufs, SEND_FLAGS)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Nothing is buffered here.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends our FIN; the read side stays open for the peer's answer.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(SockRef::from(self.0.as_ref()).shutdown(Shutdown::Write))
    }
}
