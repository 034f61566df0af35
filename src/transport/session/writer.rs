//! The writer half of a connection: drains the member's outbound queue into
//! the socket in vectored writes, and keeps the heartbeat and the token's
//! deadline with one timer. It never waits on the reader: a slow socket
//! write never stops reads, and a publisher waiting for queue room never
//! stops writes.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout, Instant};

use crate::limits::{close_code, WRITE_BATCH_BYTES, WRITE_BATCH_FRAMES};
use crate::metrics::{self, CoreCounters};
use crate::node::Node;
use crate::protocol::frame;
use crate::router::outbound::{Closing, LocalFrame, Outbound};

/// What the writer watches besides its queue, set by the reader.
pub(super) struct Clocks {
    /// When the peer last sent anything: the heartbeat's proof of life.
    pub(super) last_seen: Cell<Instant>,
    /// When the connection's token expires (4001 then); a refresh moves it.
    pub(super) expiry: Cell<Option<Instant>>,
}

/// Drains the outbound queue into the socket and keeps the heartbeat, until
/// a close has been written or the socket fails. (Not an `async fn`, which
/// would keep its arguments twice: see `Connection::run`.)
#[allow(clippy::manual_async_fn)]
pub(super) fn write_loop<'a, W: AsyncWrite + Unpin>(
    socket: &'a mut W,
    outbound: &'a Outbound,
    clocks: &'a Clocks,
    node: &'a Node,
    counters: &'a CoreCounters,
) -> impl Future<Output = ()> + 'a {
    async move {
        let Clocks { last_seen, expiry } = clocks;
        let limits = &node.limits;
        // Grows on first use: an idle connection keeps no batch.
        let mut batch: Vec<LocalFrame> = Vec::new();
        let mut next_ping = Instant::now() + limits.ping_interval;
        let mut ping_sent: Option<Instant> = None;
        // One timer for the connection's life, moved only when its deadline
        // changes: re-arming a timer per write cost more than the write's bookkeeping.
        let mut heartbeat = pin!(sleep_until(next_ping));
        loop {
            // One ping outstanding at a time: the next is sent once it is answered
            // (or the connection is closed for not answering).
            let beat_at = match ping_sent {
                Some(sent) => sent + limits.pong_timeout,
                None => next_ping,
            };
            // The same timer also ends the connection when its token expires.
            let wake_at = expiry.get().map_or(beat_at, |at| at.min(beat_at));
            if heartbeat.deadline() != wake_at {
                heartbeat.as_mut().reset(wake_at);
            }
            tokio::select! {
                biased;
                () = poll_fn(|cx| outbound.poll_work(cx)) => {}
                () = &mut heartbeat => {
                    let now = Instant::now();
                    if expiry.get().is_some_and(|at| at <= now) {
                        metrics::add(&counters.token_expirations, 1);
                        expiry.set(None);
                        outbound.close(Closing {
                            code: close_code::TOKEN_EXPIRED,
                            reason: "token expired",
                            flush: false,
                        });
                        continue;
                    }
                    if now < beat_at {
                        continue;
                    }
                    match ping_sent.take() {
                        Some(sent) if last_seen.get() < sent => {
                            metrics::add(&counters.heartbeat_timeouts, 1);
                            outbound.close(Closing {
                                code: close_code::HEARTBEAT_TIMEOUT,
                                reason: "heartbeat timeout",
                                flush: false,
                            });
                        }
                        Some(_) => {}
                        None => {
                            outbound.ping(b"");
                            ping_sent = Some(now);
                            next_ping = now + limits.ping_interval;
                        }
                    }
                    continue;
                }
            }
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
#[cfg(feature = "test-hooks")]
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
        let slices: Vec<IoSlice<'_>> = std::iter::once(&batch[progress.first][progress.offset..])
            .chain(batch[progress.first + 1..].iter().map(|frame| &frame[..]))
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
