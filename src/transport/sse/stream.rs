//! The body of a `200 text/event-stream` answer: a [`hyper::body::Body`]
//! that drains its member's outbound queue, the same bounded queue with the
//! same slow-consumer policy as a WebSocket's, turning each frame into an
//! event. hyper polls it on the core's task whenever its write buffer has
//! room, so a reader that stops reading stops the polls, the queue fills,
//! and the policy applies.
//!
//! One timer keeps the heartbeat (a comment after `sse_heartbeat` of
//! silence) and the token's deadline. The stream owns its member: until
//! every room is subscribed, inside the future that subscribes them (polled
//! here, so it needs no task of its own); then directly. Dropping the
//! stream (the stream ended, the client went away, the connection was cut)
//! drops the member, which leaves its rooms.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::admission::IpSlot;
use crate::limits::{close_code, WRITE_BATCH_BYTES, WRITE_BATCH_FRAMES};
use crate::metrics;
use crate::node::ConnectionSlot;
use crate::router::driver::Core;
use crate::router::member::Member;
use crate::router::outbound::{Closing, LocalFrame, Outbound};

use super::events::Encoder;

/// Where the stream's member is.
enum Phase {
    /// Inside the future that subscribes each room in turn, which hands the
    /// member back when done.
    Subscribing(Pin<Box<dyn Future<Output = Member>>>),
    /// Every room answered; the member is kept for its rooms, which it
    /// leaves when dropped.
    Live { _member: Member },
    /// The close event is written: the member is gone (and its rooms left).
    Ended,
}

/// The places a stream holds in the connection budgets, freed when it
/// drops.
pub(super) struct Held {
    pub(super) _slot: ConnectionSlot,
    pub(super) _ip_slot: Option<IpSlot>,
}

/// One Server-Sent Events stream: the response body.
pub(crate) struct Stream {
    phase: Phase,
    outbound: Rc<Outbound>,
    core: Rc<Core>,
    encoder: Encoder,
    /// Frames taken from the queue; kept to reuse its allocation.
    batch: Vec<LocalFrame>,
    /// Queue bytes handed to hyper with the last chunk. hyper polls again
    /// only once its write buffer has room (it holds at most
    /// `max_header_bytes` or 16 chunks), so they are released then: until
    /// written, they count against the queue's bound, as a WebSocket's do.
    handed_over: usize,
    /// Wakes the stream for its heartbeat and its token's expiry.
    timer: Pin<Box<Sleep>>,
    next_heartbeat: Instant,
    /// When the token expires: the stream then closes with 4001.
    expiry: Option<Instant>,
    ended: bool,
    span: tracing::Span,
    _held: Held,
}

impl Stream {
    /// A stream of `outbound`'s frames, whose member is inside
    /// `subscribing` until every room is subscribed.
    pub(super) fn new(
        core: Rc<Core>,
        outbound: Rc<Outbound>,
        subscribing: Pin<Box<dyn Future<Output = Member>>>,
        encoder: Encoder,
        expiry: Option<Instant>,
        held: Held,
        span: tracing::Span,
    ) -> Stream {
        let counters = core.counters();
        metrics::add(&counters.connections_open, 1);
        metrics::add(&counters.connections_accepted, 1);
        metrics::add(&counters.sse_streams_open, 1);
        let next_heartbeat = Instant::now() + core.node().config.sse_heartbeat;
        span.in_scope(|| tracing::debug!("stream opened"));
        Stream {
            phase: Phase::Subscribing(subscribing),
            outbound,
            core,
            encoder,
            batch: Vec::new(),
            handed_over: 0,
            timer: Box::pin(sleep_until(next_heartbeat)),
            next_heartbeat,
            expiry,
            ended: false,
            span,
            _held: held,
        }
    }

    /// Hands `out` to hyper, and puts the heartbeat off.
    fn chunk(&mut self, out: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.next_heartbeat = Instant::now() + self.core.node().config.sse_heartbeat;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }

    /// Writes every queued frame it can as events into `out`; once the
    /// queue is empty and a close was asked for, the close event, and the
    /// member goes.
    fn drain(&mut self, out: &mut Vec<u8>) {
        loop {
            let taken = self
                .outbound
                .take(&mut self.batch, WRITE_BATCH_FRAMES, WRITE_BATCH_BYTES);
            self.handed_over += taken;
            if self.batch.is_empty() {
                break;
            }
            for frame in self.batch.drain(..) {
                self.encoder.frame(&frame, out);
            }
            if !out.is_empty() {
                return;
            }
        }
        if let Some(closing) = self.outbound.closing() {
            self.encoder.close(&closing, out);
            // Leaves the rooms now, rather than when hyper drops the body.
            self.phase = Phase::Ended;
            self.ended = true;
            tracing::debug!(
                code = closing.code,
                reason = closing.reason,
                "stream closed"
            );
        }
    }
}

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let span = this.span.clone();
        let _entered = span.enter();
        this.outbound.written(std::mem::take(&mut this.handed_over));
        if let Phase::Subscribing(subscribing) = &mut this.phase {
            if let Poll::Ready(member) = subscribing.as_mut().poll(cx) {
                this.phase = Phase::Live { _member: member };
            }
        }
        let mut out = Vec::new();
        loop {
            if this.outbound.poll_work(cx).is_ready() {
                this.drain(&mut out);
                if !out.is_empty() {
                    return this.chunk(out);
                }
            }
            let wake_at = this
                .expiry
                .map_or(this.next_heartbeat, |at| at.min(this.next_heartbeat));
            if this.timer.deadline() != wake_at {
                this.timer.as_mut().reset(wake_at);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if this.expiry.is_some_and(|at| at <= now) {
                metrics::add(&this.core.counters().token_expirations, 1);
                this.expiry = None;
                this.outbound.close(Closing {
                    code: close_code::TOKEN_EXPIRED,
                    reason: "token expired",
                    flush: false,
                });
                continue;
            }
            if now >= this.next_heartbeat {
                Encoder::heartbeat(&mut out);
                return this.chunk(out);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let counters = self.core.counters();
        metrics::sub(&counters.connections_open, 1);
        metrics::sub(&counters.sse_streams_open, 1);
        // The member, wherever it is, leaves its rooms as this drops.
        self.span.in_scope(|| tracing::debug!("stream gone"));
    }
}
