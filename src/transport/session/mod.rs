//! One WebSocket connection, from upgrade to close. The read side lives
//! here: it reads frames ([`frames`]: our own reader, which keeps no
//! buffer while the connection is idle and refuses unmasked client
//! frames), reassembles messages
//! ([`reassembly`]), decodes each envelope, checks it against the
//! connection's identity and publish limits ([`limiter`]), and hands it to
//! the connection's [`Member`], which does the routing. Beside it in the
//! same task, the [`writer`] drains the member's outbound queue.

mod frames;
mod limiter;
mod reassembly;
mod writer;

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;

use bytes::Bytes;
use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
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
use writer::{write_loop, Clocks};

#[cfg(feature = "test-hooks")]
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
/// returns: the task holds the connection's future and nothing else. (Awaiting it here instead kept this function's
/// own state, the upgraded socket and the handshake's identity, allocated
/// beside it for the connection's life: 1.6 KB an idle connection.)
pub(crate) fn start(
    ws: WebSocket<TokioIo<Upgraded>>,
    codec: Codec,
    core: Rc<Core>,
    peer: SocketAddr,
    admitted: Admitted,
    mode: Mode,
) {
    // Bytes the client sent right behind its handshake were read by hyper
    // already. Copied (it is usually empty): the slice would keep hyper's
    // whole handshake buffer alive for the life of the connection.
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
            let early = early_bytes(parts.read_buf);
            let (read_half, write_half) = parts.io.into_inner().into_split();
            // A task per transport: each pays only for its own future.
            tokio::task::spawn_local(connection(read_half, write_half, early, link));
            return;
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => {
            let early = early_bytes(parts.read_buf);
            let (read_half, write_half) = tokio::io::split(parts.io.into_inner());
            tokio::task::spawn_local(connection(read_half, write_half, early, link));
        }
        Err(_) => tracing::error!("upgraded connection is neither TCP nor TLS over TCP"),
    }
}

/// What the client sent after its upgrade request, before the upgrade
/// completed, copied out of hyper's read buffer. The buffer itself (8 KiB)
/// is dropped here: kept (as a field of the parts, alive while the
/// connection is awaited) it doubled an idle connection's memory.
fn early_bytes(read_buf: Bytes) -> Bytes {
    Bytes::copy_from_slice(&read_buf)
}

/// An upgraded connection's parameters, whatever its transport.
struct Link {
    codec: Codec,
    core: Rc<Core>,
    peer: SocketAddr,
    admitted: Admitted,
    mode: Mode,
}

async fn connection<R, W>(read_half: R, write_half: W, early: Bytes, link: Link)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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
    let node = core.node().clone();
    let limits = &node.limits;
    let mut read_half = read_half;
    // Frames of this size or more are refused before they are buffered.
    let early_len = early.len();
    let mut frames = FrameReader::new(early, limits.max_message_size.saturating_add(1));

    let member = Member::new(core.clone(), codec.into(), identity.user.clone());
    let outbound = member.outbound().clone();
    if node.shutting_down() {
        // Upgraded after the drain listed this core's members: close at once.
        outbound.close(Closing {
            code: close_code::SERVICE_RESTART,
            reason: "service restart",
            flush: true,
        });
    }
    let counters = core.counters();
    metrics::add(&counters.connections_open, 1);
    metrics::add(&counters.connections_accepted, 1);
    metrics::add(&counters.bytes_received, early_len as u64);
    let span =
        tracing::debug_span!("conn", conn_id = member.conn().0, core = core.id().0, %peer, %codec);
    let clocks = Clocks {
        last_seen: Rc::new(Cell::new(Instant::now())),
        expiry: Rc::new(Cell::new(deadline_of(&identity))),
    };
    let mut session = Session {
        codec,
        core: core.clone(),
        member,
        last_seen: clocks.last_seen.clone(),
        reassembly: Reassembly::new(
            limits.max_message_size,
            limits.max_fragments,
            mode == Mode::Echo,
        ),
        mode,
        limiter: PublishLimiter::new(&node.config),
        expiry: clocks.expiry.clone(),
        identity,
    };
    async {
        tracing::debug!("connected");
        let writer = write_loop(write_half, outbound.clone(), clocks, &node, counters);
        let mut writer = pin!(writer);
        let end = {
            let mut reader = pin!(session.read_loop(&mut frames, &mut read_half));
            tokio::select! {
                end = &mut reader => Some(end),
                () = &mut writer => {
                    // We closed (slow consumer, shutdown, heartbeat) or the write failed:
                    // give the peer a moment to answer our close.
                    let _ = timeout(limits.close_timeout, &mut reader).await;
                    None
                }
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
                let _ = timeout(limits.close_timeout, &mut writer).await;
            }
        }
        // The member leaves its rooms as it goes.
        drop(session);
        tracing::debug!("disconnected");
    }
    .instrument(span)
    .await;
    metrics::sub(&counters.connections_open, 1);
    drop(slot);
    drop(ip_slot);
}

/// When the connection must end for its token, on the runtime's clock.
fn deadline_of(identity: &Identity) -> Option<Instant> {
    identity.expires_in().map(|left| Instant::now() + left)
}

/// The read side of a connection.
struct Session {
    codec: Codec,
    core: Rc<Core>,
    member: Member,
    /// When the peer last sent anything: the heartbeat's proof of life.
    last_seen: Rc<Cell<Instant>>,
    reassembly: Reassembly,
    mode: Mode,
    identity: Identity,
    limiter: PublishLimiter,
    /// When the token expires; the writer closes with 4001 then, and a
    /// `refresh` moves it.
    expiry: Rc<Cell<Option<Instant>>>,
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

/// The answer to a peer's close frame.
fn close_frame(payload: &[u8]) -> ReadEnd {
    match payload.len() {
        0 => ReadEnd::PeerClosed(close_code::NORMAL),
        1 => violation(close_code::PROTOCOL_ERROR, "close frame of one byte").into(),
        126.. => violation(close_code::PROTOCOL_ERROR, "control frame too long").into(),
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
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        frames: &mut FrameReader,
        socket: &mut R,
    ) -> ReadEnd {
        loop {
            let received = &self.core.counters().bytes_received;
            let frame = match frames.next(socket, received).await {
                Ok(frame) => frame,
                Err(error) => return read_error(error),
            };
            self.last_seen.set(Instant::now());
            if let Err(end) = self.on_frame(frame).await {
                return end;
            }
            // Frames already in the read buffer cost no socket read, so nothing
            // else would make this loop yield: without this, one publisher's
            // burst could fan out thousands of messages before any writer runs.
            tokio::task::coop::consume_budget().await;
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), ReadEnd> {
        let kind = match frame.opcode {
            OpCode::Binary => DataFrame::Binary,
            // A whole text message that is not UTF-8 is refused as such
            // (1007) before anything else is said of it.
            OpCode::Text if frame.fin && std::str::from_utf8(&frame.payload).is_err() => {
                return Err(violation(close_code::INVALID_PAYLOAD, "invalid UTF-8").into());
            }
            OpCode::Text => DataFrame::Text,
            OpCode::Continuation => DataFrame::Continuation,
            OpCode::Ping => {
                if frame.payload.len() > 125 {
                    return Err(
                        violation(close_code::PROTOCOL_ERROR, "control frame too long").into(),
                    );
                }
                self.member.outbound().pong(&frame.payload);
                return Ok(());
            }
            OpCode::Pong => {
                if frame.payload.len() > 125 {
                    return Err(
                        violation(close_code::PROTOCOL_ERROR, "control frame too long").into(),
                    );
                }
                return Ok(());
            }
            OpCode::Close => return Err(close_frame(&frame.payload)),
        };
        match self.reassembly.frame(kind, frame.fin, frame.payload)? {
            Some(message) => self.on_message(message.payload, message.text).await,
            None => Ok(()),
        }
    }

    /// One complete message: one envelope (or, in echo mode, the message
    /// to send back).
    async fn on_message(&mut self, payload: Bytes, text: bool) -> Result<(), ReadEnd> {
        metrics::add(&self.core.counters().messages_received, 1);
        let outbound = self.member.outbound();
        if outbound.closing().is_some() {
            // We are closing: no new work.
            return Ok(());
        }
        if self.mode == Mode::Echo {
            if text && std::str::from_utf8(&payload).is_err() {
                return Err(violation(close_code::INVALID_PAYLOAD, "invalid UTF-8").into());
            }
            let opcode = if text { Opcode::Text } else { Opcode::Binary };
            outbound.push(frame::data(opcode, &payload), Instant::now().into_std());
            return Ok(());
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
                return Ok(());
            }
        };
        let id = request.id;
        // The rare operations (a subscribe, a query) are awaited in boxes of
        // their own: inline, each would keep room in every connection's
        // future for its whole life, idle or not.
        match request.op {
            ClientOp::Subscribe {
                room,
                recover,
                join_leave,
            } => {
                if self.permitted(id, Action::Subscribe, &room) {
                    Box::pin(self.member.subscribe(id, room, recover, join_leave)).await;
                }
            }
            ClientOp::Unsubscribe { room } => Box::pin(self.member.unsubscribe(id, room)).await,
            ClientOp::Publish {
                room,
                data,
                idempotency_key,
            } => {
                if self.permitted(id, Action::Publish, &room) && self.within_rate(id, data.len()) {
                    self.member.publish(id, room, data, idempotency_key).await;
                }
            }
            ClientOp::History { room, query } => {
                Box::pin(self.query(id, room, Query::History(query))).await
            }
            ClientOp::Presence { room } => Box::pin(self.query(id, room, Query::Presence)).await,
            ClientOp::PresenceStats { room } => {
                Box::pin(self.query(id, room, Query::PresenceStats)).await
            }
            ClientOp::Refresh { token } => self.refresh(id, &token),
        }
        if self.limiter.strikes >= self.core.node().config.rate_limit_close_after {
            metrics::add(&self.core.counters().rate_limit_closes, 1);
            return Err(
                violation(close_code::POLICY_VIOLATION, "publish rate limit exceeded").into(),
            );
        }
        Ok(())
    }

    /// History needs the right to subscribe; presence its own right.
    async fn query(&mut self, id: RequestId, room: RoomName, query: Query) {
        let action = match query {
            Query::History(_) => Action::Subscribe,
            Query::Presence | Query::PresenceStats => Action::Presence,
        };
        if id.wants_reply() && self.permitted(id, action, &room) {
            self.member.query(id, room, query).await;
        }
    }

    /// Whether this connection may do `action` in `room`: its token grants
    /// it, and the room's rule (if any) finds one of the roles it requires.
    /// A refusal is answered with error 107 here.
    fn permitted(&self, id: RequestId, action: Action, room: &RoomName) -> bool {
        let allowed = self
            .core
            .node()
            .permits(&self.identity, action, room.as_str());
        if !allowed {
            metrics::add(&self.core.counters().permission_denials, 1);
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
        metrics::add(&self.core.counters().rate_limited_publishes, 1);
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
            metrics::add(&self.core.counters().rate_limited_publishes, 1);
            return self.member.reply(Reply::error(
                id,
                ErrorCode::RateLimited,
                "refresh rate limit exceeded; slow down",
            ));
        }
        let Some(verifier) = &self.core.node().verifier else {
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
                self.expiry.set(deadline_of(&fresh));
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
