//! One WebSocket connection, from upgrade to close. The read side lives
//! here: it reads frames ([`frames`]: our own reader, which keeps no
//! buffer while the connection is idle and refuses unmasked client
//! frames), reassembles messages
//! ([`reassembly`]), decodes each envelope, checks it against the
//! connection's identity and publish limits ([`limiter`]), and hands it to
//! the connection's [`Member`], which does the routing. Beside it in the
//! same task, the [`writer`] drains the member's outbound queue.

mod frames;
pub(crate) mod heartbeat;
mod limiter;
mod reassembly;
mod send;
mod writer;

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;

use bytes::Bytes;
use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use crate::admission::IpSlot;
use crate::auth::{Action, Identity, TokenError};
use crate::limits::close_code;
use crate::metrics;
use crate::node::ConnectionSlot;
use crate::protocol::frame::{self, Opcode};
use crate::protocol::{
    ClientOp, Codec, ErrorCode, Offset, Reply, RequestError, RequestId, RoomName,
};
use crate::router::driver::Core;
use crate::router::member::Member;
use crate::router::outbound::Closing;
use crate::router::Query;

use frames::{Frame, FrameReader, OpCode, ReadError};
use limiter::PublishLimiter;
use reassembly::{violation, DataFrame, Reassembly, Violation};
use writer::write_loop;

#[cfg(any(test, feature = "test-hooks"))]
pub(crate) use writer::write_all;

/// How the read side ended.
#[derive(Debug)]
enum ReadEnd {
    /// The peer sent a valid close frame; echo its code.
    PeerClosed(u16),
    /// The peer broke the protocol or sent bad input: close with this code.
    Violation(Violation),
    /// The socket ended or failed: nothing more can be sent.
    Gone,
}

impl From<Violation> for ReadEnd {
    fn from(v: Violation) -> ReadEnd {
        ReadEnd::Violation(v)
    }
}

/// What the handshake established: the held slots and who is connecting.
pub(crate) struct Admitted {
    pub(crate) slot: ConnectionSlot,
    pub(crate) ip_slot: Option<IpSlot>,
    pub(crate) identity: Identity,
}

/// What a connection's messages mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The broker protocol (`path`).
    Broker,
    /// Every message is sent back as it came, text or binary (`echo_path`,
    /// for conformance suites): the same reader, writer, limits and close
    /// handling, with no envelope.
    Echo,
}

/// Starts the task that runs one upgraded connection to its end, and
/// returns. Everything the connection keeps is built here, before the task
/// starts, into one [`Connection`]: the task's future borrows from it and
/// holds nothing else for long. (Awaiting the connection in the upgrade's
/// task kept that task's state, the upgraded socket and the handshake's
/// identity, allocated beside it for the connection's life: 1.6 KB an idle
/// connection.)
pub(crate) fn start(
    ws: WebSocket<TokioIo<Upgraded>>,
    codec: Codec,
    core: Rc<Core>,
    peer: SocketAddr,
    admitted: Admitted,
    mode: Mode,
) {
    let link = Link {
        codec,
        core,
        peer,
        admitted,
        mode,
    };
    let upgraded = ws.into_inner().into_inner();
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            spawn(Connection::new(parts.io.into_inner(), parts.read_buf, link));
            return;
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => {
            let halves = tokio::io::split(parts.io.into_inner());
            spawn(Connection::new(halves, parts.read_buf, link));
        }
        Err(_) => tracing::error!("upgraded connection is neither TCP nor TLS over TCP"),
    }
}

/// A task per transport: each pays only for its own future. The
/// connection's span (40 bytes in every connection's future) is kept only
/// where debug logging is on.
fn spawn<T: Transport + 'static>((connection, span): (Connection<T>, tracing::Span)) {
    if span.is_disabled() {
        tokio::task::spawn_local(connection.run());
    } else {
        tokio::task::spawn_local(connection.run().instrument(span));
    }
}

/// A connection's socket, which its reader and writer use at once.
trait Transport {
    fn halves(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_);
}

/// Split by borrowing: both halves are the same socket, and splitting into
/// owned halves would cost an allocation (an `Arc`) per connection.
impl Transport for TcpStream {
    fn halves(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_) {
        let (read, write) = self.split();
        (read, send::SendHalf(write))
    }
}

/// TLS state cannot be shared by borrowing: owned halves, split once.
impl<S: AsyncRead + AsyncWrite> Transport for (ReadHalf<S>, WriteHalf<S>) {
    fn halves(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_) {
        (&mut self.0, &mut self.1)
    }
}

/// An upgraded connection's parameters, whatever its transport.
struct Link {
    codec: Codec,
    core: Rc<Core>,
    peer: SocketAddr,
    admitted: Admitted,
    mode: Mode,
}

/// What one connection keeps for its life, built before its task starts.
/// `run` takes it whole and only borrows its parts, so each is stored once:
/// an async function keeps its arguments for its whole life, and a part
/// moved out into a local of its own would be stored twice.
struct Connection<T> {
    session: Session,
    frames: FrameReader,
    transport: T,
    /// Held until the connection ends: they count it against the node's
    /// and its address's limits.
    slots: (ConnectionSlot, Option<IpSlot>),
}

impl<T: Transport> Connection<T> {
    /// `early` is what the client sent right behind its handshake, read by
    /// hyper already: copied (it is usually empty), because the slice would
    /// keep hyper's whole 8 KiB handshake buffer alive for the connection's
    /// life.
    fn new(transport: T, early: Bytes, link: Link) -> (Self, tracing::Span) {
        let Link {
            codec,
            core,
            peer,
            admitted,
            mode,
        } = link;
        let Admitted {
            slot,
            ip_slot,
            identity,
        } = admitted;
        let node = core.node();
        let limits = &node.limits;
        // Frames of this size or more are refused before they are buffered.
        let frames = FrameReader::new(
            Bytes::copy_from_slice(&early),
            limits.max_message_size.saturating_add(1),
        );
        let member = Member::new(core.clone(), codec.into(), identity.user.clone());
        if node.shutting_down() {
            // Upgraded after the drain listed this core's members: close at once.
            member.outbound().close(Closing {
                code: close_code::SERVICE_RESTART,
                reason: "service restart",
                flush: true,
            });
        }
        let counters = core.counters();
        metrics::add(&counters.connections_open, 1);
        metrics::add(&counters.connections_accepted, 1);
        metrics::add(&counters.bytes_received, early.len() as u64);
        let span = tracing::debug_span!("conn", conn_id = member.conn().0, core = core.id().0, %peer, %codec);
        heartbeat::start(member.outbound().liveness(), limits, deadline_of(&identity));
        let session = Session {
            codec,
            member,
            reassembly: Reassembly::new(
                limits.max_message_size,
                limits.max_fragments,
                mode == Mode::Echo,
            ),
            mode,
            limiter: PublishLimiter::new(&node.config),
            identity,
        };
        let connection = Connection {
            session,
            frames,
            transport,
            slots: (slot, ip_slot),
        };
        (connection, span)
    }

    /// Reads and writes until both sides are done, then leaves the rooms
    /// and gives the slots back. Not an `async fn`: one moves its arguments
    /// into locals of its body, so the future would hold the connection
    /// twice (once as the argument, once as the local). The block uses the
    /// captured connection in place.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl Future<Output = ()> {
        async move {
            tracing::debug!("connected");
            let core = self.session.member.core().clone();
            self.both_sides(&core).await;
            // The member leaves its rooms as it goes.
            drop(self.session);
            tracing::debug!("disconnected");
            metrics::sub(&core.counters().connections_open, 1);
            drop(self.slots);
        }
    }

    /// Runs the reader and the writer side by side until the connection is
    /// closed: by the peer, by a violation, or by us.
    async fn both_sides(&mut self, core: &Core) {
        let limits = &core.node().limits;
        let counters = core.counters();
        let outbound = self.session.member.outbound().clone();
        let (mut read_half, mut write_half) = self.transport.halves();
        let mut writer = pin!(write_loop(
            &mut write_half,
            &outbound,
            core.node(),
            counters
        ));
        let mut reader = pin!(self.session.read_loop(&mut self.frames, &mut read_half));
        let end = tokio::select! {
            end = &mut reader => Some(end),
            () = &mut writer => {
                // We closed (slow consumer, shutdown, heartbeat) or the write failed:
                // give the peer a moment to answer our close.
                let _ = Box::pin(timeout(limits.close_timeout, &mut reader)).await;
                None
            }
        };
        if let Some(end) = end {
            tracing::debug!(?end, "read side ended");
            let closing = match end {
                ReadEnd::PeerClosed(code) => Some(Closing {
                    code,
                    reason: "",
                    flush: false,
                }),
                ReadEnd::Violation(Violation { code, reason }) => {
                    metrics::add(&counters.protocol_closes, 1);
                    Some(Closing {
                        code,
                        reason,
                        flush: false,
                    })
                }
                ReadEnd::Gone => None,
            };
            if let Some(closing) = closing {
                outbound.close(closing);
                let _ = Box::pin(timeout(limits.close_timeout, &mut writer)).await;
            }
        }
    }
}

/// When the connection must end for its token, on the runtime's clock.
fn deadline_of(identity: &Identity) -> Option<Instant> {
    identity.expires_in().map(|left| Instant::now() + left)
}

/// Work a message started that has to wait: for room in a home core's
/// inbox, for the engine, for another core's answer. Each is awaited in a
/// box of its own, and only when it has to wait: inline, the largest of
/// them would keep room in every connection's future for its whole life,
/// idle or not. A publish handed on at once starts none.
type Waiting<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The read side of a connection.
struct Session {
    codec: Codec,
    member: Member,
    reassembly: Reassembly,
    mode: Mode,
    identity: Identity,
    limiter: PublishLimiter,
}

fn read_error(error: ReadError) -> ReadEnd {
    match error {
        ReadError::TooBig => violation(close_code::MESSAGE_TOO_BIG, "message too big").into(),
        ReadError::Protocol(reason) => violation(close_code::PROTOCOL_ERROR, reason).into(),
        ReadError::Gone => ReadEnd::Gone,
    }
}

/// Close codes a peer may send (RFC 6455 §7.4, plus the registered 1012-1014).
fn peer_close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The answer to a peer's close frame (at most 125 bytes: the frame
/// reader refuses a longer one).
fn close_frame(payload: &[u8]) -> ReadEnd {
    match payload.len() {
        0 => ReadEnd::PeerClosed(close_code::NORMAL),
        1 => violation(close_code::PROTOCOL_ERROR, "close frame of one byte").into(),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !peer_close_code_allowed(code) {
                return violation(close_code::PROTOCOL_ERROR, "invalid close code").into();
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return violation(close_code::INVALID_PAYLOAD, "close reason is not UTF-8").into();
            }
            ReadEnd::PeerClosed(code)
        }
    }
}

impl Session {
    /// Reads frames and acts on them until the read side ends. (Not an
    /// `async fn`, which would keep its arguments twice: see
    /// `Connection::run`.)
    #[allow(clippy::manual_async_fn)]
    fn read_loop<'a, R: AsyncRead + Unpin>(
        &'a mut self,
        frames: &'a mut FrameReader,
        socket: &'a mut R,
    ) -> impl Future<Output = ReadEnd> + 'a {
        async move {
            loop {
                let received = &self.member.core().counters().bytes_received;
                let frame = match poll_fn(|cx| frames.poll_next(cx, socket, received)).await {
                    Ok(frame) => frame,
                    Err(error) => return read_error(error),
                };
                self.member.outbound().liveness().heard.set(true);
                match self.on_frame(frame) {
                    Ok(None) => {}
                    Ok(Some(waiting)) => waiting.await,
                    Err(end) => return end,
                }
                if self.limiter.strikes >= self.member.core().node().config.rate_limit_close_after {
                    metrics::add(&self.member.core().counters().rate_limit_closes, 1);
                    return violation(close_code::POLICY_VIOLATION, "publish rate limit exceeded")
                        .into();
                }
                // Frames already in the read buffer cost no socket read, so nothing
                // else would make this loop yield: without this, one publisher's
                // burst could fan out thousands of messages before any writer runs.
                tokio::task::coop::consume_budget().await;
            }
        }
    }

    /// One frame: answered at once, or with the work it started that has to
    /// wait (see [`Waiting`]).
    fn on_frame(&mut self, frame: Frame) -> Result<Option<Waiting<'_>>, ReadEnd> {
        let kind = match frame.opcode {
            OpCode::Binary => DataFrame::Binary,
            // A whole text message that is not UTF-8 is refused as such
            // (1007) before anything else is said of it.
            OpCode::Text if frame.fin && std::str::from_utf8(&frame.payload).is_err() => {
                return Err(violation(close_code::INVALID_PAYLOAD, "invalid UTF-8").into());
            }
            OpCode::Text => DataFrame::Text,
            OpCode::Continuation => DataFrame::Continuation,
            // Control frames come whole and at most 125 bytes long: the
            // frame reader refuses any other from its header.
            OpCode::Ping => {
                self.member.outbound().pong(&frame.payload);
                return Ok(None);
            }
            OpCode::Pong => return Ok(None),
            OpCode::Close => return Err(close_frame(&frame.payload)),
        };
        match self.reassembly.frame(kind, frame.fin, frame.payload)? {
            Some(message) => self.on_message(message.payload, message.text),
            None => Ok(None),
        }
    }

    /// One complete message: one envelope (or, in echo mode, the message
    /// to send back).
    fn on_message(&mut self, payload: Bytes, text: bool) -> Result<Option<Waiting<'_>>, ReadEnd> {
        metrics::add(&self.member.core().counters().messages_received, 1);
        let outbound = self.member.outbound();
        if outbound.closing().is_some() {
            // We are closing: no new work.
            return Ok(None);
        }
        if self.mode == Mode::Echo {
            if text && std::str::from_utf8(&payload).is_err() {
                return Err(violation(close_code::INVALID_PAYLOAD, "invalid UTF-8").into());
            }
            let opcode = if text { Opcode::Text } else { Opcode::Binary };
            outbound.push(frame::data(opcode, &payload), Instant::now().into_std());
            return Ok(None);
        }
        let request = match self.codec.decode_request(&payload) {
            Ok(request) => request,
            Err(RequestError::Malformed(error)) => {
                // The decoder's message may quote the envelope's strings
                // (a token among them): only its length is logged.
                tracing::trace!(detail_len = error.to_string().len(), "malformed envelope");
                return Err(violation(close_code::INVALID_PAYLOAD, "malformed envelope").into());
            }
            Err(error) => {
                if let Some(reply) = error.reply() {
                    self.member.reply(reply);
                }
                return Ok(None);
            }
        };
        let id = request.id;
        let waiting: Option<Waiting<'_>> = match request.op {
            ClientOp::Subscribe {
                room,
                recover,
                join_leave,
            } => self
                .permitted(id, Action::Subscribe, &room)
                .then(|| Box::pin(self.member.subscribe(id, room, recover, join_leave)) as _),
            ClientOp::Unsubscribe { room } => Some(Box::pin(self.member.unsubscribe(id, room))),
            ClientOp::Publish {
                room,
                data,
                idempotency_key,
            } => {
                if self.permitted(id, Action::Publish, &room) && self.within_rate(id, data.len()) {
                    self.member
                        .publish(id, room, data, idempotency_key)
                        .map(|wait| Box::pin(wait) as _)
                } else {
                    None
                }
            }
            ClientOp::History { room, query } => self.query(id, room, Query::History(query)),
            ClientOp::Presence { room } => self.query(id, room, Query::Presence),
            ClientOp::PresenceStats { room } => self.query(id, room, Query::PresenceStats),
            ClientOp::Refresh { token } => {
                self.refresh(id, &token);
                None
            }
        };
        Ok(waiting)
    }

    /// History needs the right to subscribe; presence its own right.
    fn query(&self, id: RequestId, room: RoomName, query: Query) -> Option<Waiting<'_>> {
        let action = match query {
            Query::History(_) => Action::Subscribe,
            Query::Presence | Query::PresenceStats => Action::Presence,
        };
        (id.wants_reply() && self.permitted(id, action, &room))
            .then(|| Box::pin(self.member.query(id, room, query)) as _)
    }

    /// Whether this connection may do `action` in `room`: its token grants
    /// it, and the room's rule (if any) finds one of the roles it requires.
    /// A refusal is answered with error 107 here.
    fn permitted(&self, id: RequestId, action: Action, room: &RoomName) -> bool {
        let allowed = self
            .member
            .core()
            .node()
            .permits(&self.identity, action, room.as_str());
        if !allowed {
            metrics::add(&self.member.core().counters().permission_denials, 1);
            self.member.reply(Reply::error(
                id,
                ErrorCode::PermissionDenied,
                format!("not allowed to {} in {room}", action.name()),
            ));
        }
        allowed
    }

    /// Whether a publish of `len` payload bytes is within the connection's
    /// rate; a refusal is answered with error 109 here.
    fn within_rate(&mut self, id: RequestId, len: usize) -> bool {
        if self.limiter.allow(len) {
            return true;
        }
        metrics::add(&self.member.core().counters().rate_limited_publishes, 1);
        self.member.reply(Reply::error(
            id,
            ErrorCode::RateLimited,
            "publish rate limit exceeded; slow down",
        ));
        false
    }

    /// A new token for the same user moves the connection's expiry.
    /// Refreshes count against the publish message rate: each costs a
    /// signature check.
    fn refresh(&mut self, id: RequestId, token: &str) {
        if !self.limiter.allow(0) {
            metrics::add(&self.member.core().counters().rate_limited_publishes, 1);
            return self.member.reply(Reply::error(
                id,
                ErrorCode::RateLimited,
                "refresh rate limit exceeded; slow down",
            ));
        }
        let Some(verifier) = &self.member.core().node().verifier else {
            return self.member.reply(Reply::error(
                id,
                ErrorCode::NotEnabled,
                "authentication is off: nothing to refresh",
            ));
        };
        let fresh = verifier.verify(token).and_then(|fresh| {
            if fresh.user == self.identity.user {
                Ok(fresh)
            } else {
                Err(TokenError::OtherUser)
            }
        });
        match fresh {
            Ok(fresh) => {
                self.member
                    .outbound()
                    .liveness()
                    .expiry
                    .set(deadline_of(&fresh));
                self.identity = fresh;
                self.member.reply(Reply::ack(id, Offset(0)));
            }
            Err(error) => self.member.reply(Reply::error(
                id,
                ErrorCode::InvalidToken,
                format!("refresh refused: {error}"),
            )),
        }
    }
}
