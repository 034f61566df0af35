//! The writer half of a connection: drains the member's outbound queue into
//! the socket, small frames gathered into one buffer per write, larger ones
//! in vectored writes. It never waits on the reader: a slow
//! socket write never stops reads, and a publisher waiting for queue room
//! never stops writes.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::limits::{
    WRITE_BATCH_BYTES, WRITE_BATCH_FRAMES, WRITE_GATHER_BYTES, WRITE_GATHER_FRAME_MAX,
};
use crate::metrics::{self, CoreCounters};
use crate::node::Node;
use crate::protocol::frame;
use crate::router::outbound::{LocalFrame, Outbound};

/// Drains the outbound queue into the socket until a close has been
/// written or the socket fails. (Not an `async fn`, which would keep its
/// arguments twice: see `Connection::run`.) It keeps no timer: pings and
/// the closes for a missed pong or an expired token are queued by the
/// core's heartbeat (`heartbeat`).
#[allow(clippy::manual_async_fn)]
pub(super) fn write_loop<'a, W: AsyncWrite + Unpin>(
    socket: &'a mut W,
    outbound: &'a Outbound,
    node: &'a Node,
    counters: &'a CoreCounters,
) -> impl Future<Output = ()> + 'a {
    async move {
        let limits = &node.limits;
        // Grows on first use: an idle connection keeps no batch.
        let mut batch: Vec<LocalFrame> = Vec::new();
        loop {
            poll_fn(|cx| outbound.poll_work(cx)).await;
            let data_bytes = outbound.take(&mut batch, WRITE_BATCH_FRAMES, WRITE_BATCH_BYTES);
            if !batch.is_empty() {
                // A write keeps no future of its own, only where it stands.
                let mut written_up_to = Progress::default();
                let written = tokio::select! {
                    result = poll_fn(|cx| poll_write_batch(cx, socket, &batch, &mut written_up_to)) => result,
                    () = poll_fn(|cx| outbound.poll_closing(cx)) => {
                        // A close was asked for while we write: finish this write
                        // (the close frame must not cut a frame in half), briefly.
                        // Boxed, as every rare wait here: the connection's future
                        // keeps no room for it.
                        let rest = poll_fn(|cx| poll_write_batch(cx, socket, &batch, &mut written_up_to));
                        Box::pin(timeout(limits.close_timeout, rest)).await.unwrap_or(Err(std::io::ErrorKind::TimedOut.into()))
                    }
                };
                outbound.written(data_bytes);
                if written.is_err() {
                    return;
                }
                metrics::add(&counters.messages_sent, batch.len() as u64);
                let bytes: usize = batch.iter().map(|frame| frame.len()).sum();
                metrics::add(&counters.bytes_sent, bytes as u64);
                batch.clear();
                continue;
            }
            if let Some(closing) = outbound.closing() {
                let close = frame::close(closing.code, closing.reason);
                Box::pin(async {
                    let _ = timeout(limits.close_timeout, socket.write_all(&close)).await;
                    let _ = socket.shutdown().await;
                })
                .await;
                return;
            }
        }
    }
}

/// Writes every frame of `batch` with as few vectored writes as the socket
/// allows. (The test hooks' way in to the writer's vectored write.)
#[cfg(any(test, feature = "test-hooks"))]
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    socket: &mut W,
    batch: &[LocalFrame],
) -> io::Result<()> {
    let mut progress = Progress::default();
    poll_fn(|cx| poll_write_batch(cx, socket, batch, &mut progress)).await
}

/// How much of a batch is written: the frames before `first` wholly, and
/// `offset` bytes of `first`.
#[derive(Default)]
struct Progress {
    first: usize,
    offset: usize,
}

/// Writes what the socket takes of the rest of `batch` until all of it is
/// written (ready) or the socket is full (pending, with `progress` telling
/// where to go on from). Small frames are gathered into one buffer and
/// written at once; the rest go out in vectored writes.
fn poll_write_batch<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    socket: &mut W,
    batch: &[LocalFrame],
    progress: &mut Progress,
) -> Poll<io::Result<()>> {
    while progress.first < batch.len() {
        let written = {
            // What is left of the batch, from where the last write stopped.
            let rest = || {
                std::iter::once(&batch[progress.first][progress.offset..])
                    .chain(batch[progress.first + 1..].iter().map(|frame| &frame[..]))
            };
            let small = gatherable(rest());
            if small >= 2 {
                SCRATCH.with_borrow_mut(|scratch| {
                    scratch.clear();
                    rest()
                        .take(small)
                        .for_each(|part| scratch.extend_from_slice(part));
                    Pin::new(&mut *socket).poll_write(cx, scratch)
                })
            } else {
                // At most a batch's worth of slices per write: a longer list
                // than `IOV_MAX` fails the whole write (EMSGSIZE).
                let slices: Vec<IoSlice<'_>> =
                    rest().take(WRITE_BATCH_FRAMES).map(IoSlice::new).collect();
                Pin::new(&mut *socket).poll_write_vectored(cx, &slices)
            }
        };
        let mut n = ready!(written)?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        while n > 0 && progress.first < batch.len() {
            let left = batch[progress.first].len() - progress.offset;
            if n >= left {
                n -= left;
                progress.first += 1;
                progress.offset = 0;
            } else {
                progress.offset += n;
                n = 0;
            }
        }
    }
    Poll::Ready(Ok(()))
}

thread_local! {
    /// Where small frames are gathered for one write: one per core thread,
    /// at most `WRITE_GATHER_BYTES`, never one per connection.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How many leading parts to gather into one buffer: those of at most
/// `WRITE_GATHER_FRAME_MAX` bytes, while they add up to no more than
/// `WRITE_GATHER_BYTES`. Gathering pays off for small frames, where the
/// kernel's per-segment cost of a vectored write (an iovec to import, a
/// user copy to start for each) outweighs a copy of the bytes here; a
/// large frame gains nothing from it, so it goes out vectored.
fn gatherable<'b>(parts: impl Iterator<Item = &'b [u8]>) -> usize {
    let mut total = 0;
    parts
        .take_while(|part| {
            total += part.len();
            part.len() <= WRITE_GATHER_FRAME_MAX && total <= WRITE_GATHER_BYTES
        })
        .count()
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use bytes::Bytes;
    use socket2::SockRef;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn slices(lens: &[usize]) -> Vec<Vec<u8>> {
        lens.iter().map(|&n| vec![0; n]).collect()
    }

    fn gathered(lens: &[usize]) -> usize {
        let parts = slices(lens);
        gatherable(parts.iter().map(|part| &part[..]))
    }

    #[test]
    fn small_frames_are_gathered_up_to_the_byte_bound_and_a_large_one_stops_them() {
        assert_eq!(gathered(&[150; 64]), 64);
        let per_send = WRITE_GATHER_BYTES / 1000;
        assert_eq!(gathered(&[1000; 100]), per_send);
        assert_eq!(gathered(&[100, 100, WRITE_GATHER_FRAME_MAX + 1, 100]), 2);
        assert_eq!(gathered(&[WRITE_GATHER_FRAME_MAX + 1, 100, 100]), 0);
        assert_eq!(
            gathered(&[WRITE_GATHER_FRAME_MAX, WRITE_GATHER_FRAME_MAX]),
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
        // Through the plain-TCP write half the sessions use.
        {
            let (_, mut write) = crate::transport::session::Transport::halves(&mut stream);
            write_all(&mut write, &batch).await.unwrap();
        }
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrived out of order");
    }
}
