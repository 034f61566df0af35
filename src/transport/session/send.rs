//! The write half of a plain TCP connection: `send` and `sendmsg` rather
//! than the `write` and `writev` of tokio's `TcpStream`. Both reach the
//! same TCP send, but `writev` goes there through the file layer first:
//! `vfs_writev` and `fdget_pos` were 5.7% of the server's CPU in perf of
//! the fan-out scenario (1 room × 1,000 subscribers), where the
//! socket calls go straight to the socket. Small frames are gathered into
//! one buffer first ([`coalescible`]), so the kernel copies one buffer in
//! rather than dozens of small segments.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncWrite, Interest};
use tokio::net::tcp::WriteHalf;

use crate::limits::{SEND_COALESCE_BYTES, SEND_COALESCE_FRAME_MAX};

thread_local! {
    /// Where small frames are gathered for one `send`: one per core
    /// thread, at most `SEND_COALESCE_BYTES`, never one per connection.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How many leading slices to gather into one buffer: those of at most
/// `SEND_COALESCE_FRAME_MAX` bytes, while they add up to no more than
/// `SEND_COALESCE_BYTES`. Gathering pays off for small frames, where the
/// kernel's per-segment cost of a vectored write (an iovec to import, a
/// user copy to start for each) outweighs a copy of the bytes here; a large
/// frame gains nothing from it, so it goes out vectored.
fn coalescible(bufs: &[IoSlice<'_>]) -> usize {
    let mut total = 0;
    bufs.iter()
        .take_while(|buf| {
            total += buf.len();
            buf.len() <= SEND_COALESCE_FRAME_MAX && total <= SEND_COALESCE_BYTES
        })
        .count()
}

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
        // Small frames first: copied into one buffer, then one `send`. A
        // short write is fine: the caller counts what was sent.
        let small = coalescible(bufs);
        if small >= 2 {
            return self.poll_send(cx, |socket| {
                SCRATCH.with_borrow_mut(|scratch| {
                    scratch.clear();
                    for buf in &bufs[..small] {
                        scratch.extend_from_slice(buf);
                    }
                    socket.send_with_flags(scratch, SEND_FLAGS)
                })
            });
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

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use bytes::Bytes;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::router::outbound::LocalFrame;

    fn slices(lens: &[usize]) -> Vec<Vec<u8>> {
        lens.iter().map(|&n| vec![0; n]).collect()
    }

    fn gathered(lens: &[usize]) -> usize {
        let bufs = slices(lens);
        let bufs: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        coalescible(&bufs)
    }

    #[test]
    fn small_frames_are_gathered_up_to_the_byte_bound_and_a_large_one_stops_them() {
        assert_eq!(gathered(&[150; 64]), 64);
        let per_send = SEND_COALESCE_BYTES / 1000;
        assert_eq!(gathered(&[1000; 100]), per_send);
        assert_eq!(gathered(&[100, 100, SEND_COALESCE_FRAME_MAX + 1, 100]), 2);
        assert_eq!(gathered(&[SEND_COALESCE_FRAME_MAX + 1, 100, 100]), 0);
        assert_eq!(
            gathered(&[SEND_COALESCE_FRAME_MAX, SEND_COALESCE_FRAME_MAX]),
            2
        );
    }

    /// Thousands of small frames with large ones among them, written while
    /// the reader reads slowly, so that sends come back short: every byte
    /// arrives once and in order, however a send was cut.
    #[tokio::test]
    async fn gathered_sends_cut_short_by_a_full_socket_lose_and_repeat_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0; 4096];
            loop {
                let n = peer.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        SockRef::from(&stream).set_send_buffer_size(4096).unwrap();
        let batch: Vec<LocalFrame> = (0..3000u32)
            .map(|i| {
                let len = if i % 500 == 7 {
                    10_000
                } else {
                    1 + (i as usize * 37) % 300
                };
                let byte = (i % 251) as u8;
                Rc::new(Bytes::from(vec![byte; len]))
            })
            .collect();
        let expected: Vec<u8> = batch.iter().flat_map(|f| f.iter().copied()).collect();
        {
            let (_, write) = stream.split();
            let mut half = SendHalf(write);
            crate::transport::session::write_all(&mut half, &batch)
                .await
                .unwrap();
        }
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrived out of order");
    }
}
