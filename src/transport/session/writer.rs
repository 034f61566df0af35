//! The writer half of a connection: drains the member's outbound queue into
//! the socket in vectored writes. It never waits on the reader: a slow
//! socket write never stops reads, and a publisher waiting for queue room
//! never stops writes.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::limits::{WRITE_BATCH_BYTES, WRITE_BATCH_FRAMES};
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

/// Writes what the socket takes of the rest of `batch`, in vectored
/// writes, until all of it is written (ready) or the socket is full
/// (pending, with `progress` telling where to go on from).
fn poll_write_batch<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    socket: &mut W,
    batch: &[LocalFrame],
    progress: &mut Progress,
) -> Poll<io::Result<()>> {
    while progress.first < batch.len() {
        // At most a batch's worth of slices per write: a longer list than
        // `IOV_MAX` fails the whole write (EMSGSIZE).
        let slices: Vec<IoSlice<'_>> = std::iter::once(&batch[progress.first][progress.offset..])
            .chain(batch[progress.first + 1..].iter().map(|frame| &frame[..]))
            .take(WRITE_BATCH_FRAMES)
            .map(IoSlice::new)
            .collect();
        let mut n = ready!(Pin::new(&mut *socket).poll_write_vectored(cx, &slices))?;
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
