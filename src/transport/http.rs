//! The HTTP/1.1 side of a connection: routes, the checks made before an
//! upgrade, subprotocol negotiation, and the upgrade itself.
//!
//! | request                                   | answer |
//! |-------------------------------------------|--------|
//! | more than `max_handshakes_in_progress`    | 503, before the request is read |
//! | over `handshake_rate_per_ip`              | 429, before the request is read |
//! | `GET /stats` with `stats_on_public`       | 200, the node's counters as JSON (always on the admin listener) |
//! | `sse_path` (`/sse`)                       | Server-Sent Events: [`super::sse::open`] makes the checks below that apply, then streams |
//! | any other path than `path` (or `echo_path`)| 404 |
//! | `path` without a WebSocket upgrade        | 426, a short text |
//! | upgrade while shutting down               | 503 |
//! | only unknown subprotocols offered         | 400, lists the supported ones |
//! | `Origin` not in `allowed_origins`         | 403 |
//! | missing, invalid or expired token         | 401, says which (never echoes the token) |
//! | over `max_connections_per_ip`             | 429 |
//! | `max_connections` reached                 | 503 |
//! | bad `Sec-WebSocket-Key`                   | 400 |
//! | `Sec-WebSocket-Version` other than 13     | 400, with `Sec-WebSocket-Version: 13` |
//! | head over `max_header_bytes`/`max_headers`| 431 (hyper) |
//! | TLS and head not complete in `handshake_timeout` | connection dropped |

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::{pending, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::ORIGIN;
use hyper::header::{
    HeaderMap, HeaderValue, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};

use crate::admission::{HandshakeSlot, Refusal};
use crate::auth::token_from_request;
use crate::config::Config;
use crate::limits::REFUSAL_WRITE_TIMEOUT;
use crate::metrics;
use crate::protocol::Codec;
use crate::router::driver::Core;
use crate::router::outbound::Outbound;

use super::session::{self, Admitted, Mode};
use super::sse;

/// A response body: whole, or a Server-Sent Events stream.
pub(crate) type Body = Either<Full<Bytes>, sse::Stream>;

pub(crate) type HttpResponse = Response<Body>;

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Either::Left(Full::new(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The codec a client asked for: no offer means MessagePack; otherwise the
/// first offered subprotocol we speak, echoed back in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiated {
    Default(Codec),
    Offered(Codec),
}

/// Every subprotocol the client offered is one we do not speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no supported subprotocol offered")]
pub(crate) struct UnsupportedSubprotocol;

/// Picks the codec from the `Sec-WebSocket-Protocol` offers.
pub(crate) fn negotiate(headers: &HeaderMap) -> Result<Negotiated, UnsupportedSubprotocol> {
    let mut offered = false;
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        offered = true;
        let Ok(value) = value.to_str() else { continue };
        if let Some(codec) = value
            .split(',')
            .find_map(|token| Codec::from_subprotocol(token.trim()))
        {
            return Ok(Negotiated::Offered(codec));
        }
    }
    if offered {
        Err(UnsupportedSubprotocol)
    } else {
        Ok(Negotiated::Default(Codec::MsgPack))
    }
}

/// RFC 6455 §4.1: the key is 16 random bytes in base64, i.e. 22 base64
/// characters then `==`, the last of the 22 carrying only 2 bits (A, Q, g
/// or w). fastwebsockets only checks that the header is there.
fn valid_websocket_key(headers: &HeaderMap) -> bool {
    let Some(key) = headers.get("sec-websocket-key") else {
        return false;
    };
    let key = key.as_bytes();
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
}

/// The one WebSocket version there is (RFC 6455 §4.1).
const WEBSOCKET_VERSION: &str = "13";

/// Whether the client speaks [`WEBSOCKET_VERSION`]. fastwebsockets checks
/// it too, but its refusal cannot say which version we speak, and RFC 6455
/// §4.2.2 wants the answer to name it so the client can retry: see
/// [`unsupported_version`].
fn supported_websocket_version(headers: &HeaderMap) -> bool {
    headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == WEBSOCKET_VERSION.as_bytes())
}

/// The 400 for another (or no) `Sec-WebSocket-Version`, naming ours.
fn unsupported_version() -> HttpResponse {
    let mut response = text(
        StatusCode::BAD_REQUEST,
        format!("unsupported Sec-WebSocket-Version; this server speaks {WEBSOCKET_VERSION}\n"),
    );
    response.headers_mut().insert(
        SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static(WEBSOCKET_VERSION),
    );
    response
}

fn supported_list() -> String {
    let names: Vec<&str> = Codec::ALL.iter().map(|c| c.subprotocol()).collect();
    format!(
        "unsupported subprotocol; this server speaks: {}\n",
        names.join(", ")
    )
}

async fn handle(
    mut req: Request<Incoming>,
    core: Rc<Core>,
    peer: SocketAddr,
    life: Rc<Lifetime>,
) -> Result<HttpResponse, Infallible> {
    let node = core.node();
    let path = req.uri().path();
    let config = &node.config;
    if !config.sse_path.is_empty() && path == config.sse_path {
        return Ok(sse::open(&req, &core, peer, &life));
    }
    let mode = if path == config.path {
        Mode::Broker
    } else if !config.echo_path.is_empty() && path == config.echo_path {
        Mode::Echo
    } else {
        if config.stats_on_public && path == "/stats" && req.method() == Method::GET {
            let json = serde_json::to_vec(&node.stats.snapshot()).unwrap_or_default();
            let mut response = Response::new(Either::Left(Full::new(Bytes::from(json))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(response);
        }
        return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
    };
    let reject = |status, body: String| {
        metrics::add(&core.counters().handshakes_rejected, 1);
        Ok(text(status, body))
    };
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket only: connect with a WebSocket client (subprotocol roomcast.v1.msgpack or roomcast.v1.proto)\n",
        );
        response
            .headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return Ok(response);
    }
    if node.shutting_down() {
        metrics::add(&core.counters().shutdown_rejections, 1);
        return reject(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    let negotiated = match negotiate(req.headers()) {
        Ok(n) => n,
        Err(UnsupportedSubprotocol) => {
            metrics::add(&core.counters().bad_handshakes, 1);
            return reject(StatusCode::BAD_REQUEST, supported_list());
        }
    };
    let origin = req
        .headers()
        .get(ORIGIN)
        .map(|o| o.to_str().unwrap_or("\u{fffd}"));
    if !node.admission.origin_allowed(origin) {
        metrics::add(&core.counters().origin_rejections, 1);
        return reject(StatusCode::FORBIDDEN, "origin not allowed\n".into());
    }
    let identity = match (&node.verifier, token_from_request(&req)) {
        (Some(verifier), Some(token)) => verifier.verify(&token),
        (_, _) => node.anonymous().ok_or(crate::auth::TokenError::Missing),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(error) => {
            metrics::add(&core.counters().auth_failures, 1);
            let mut response = text(StatusCode::UNAUTHORIZED, format!("{error}\n"));
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            metrics::add(&core.counters().handshakes_rejected, 1);
            return Ok(response);
        }
    };
    let ip_slot = match node.admission.admit_ip(peer.ip()) {
        Ok(slot) => slot,
        Err(refusal) => {
            metrics::add(&core.counters().ip_limit_rejections, 1);
            return reject(StatusCode::TOO_MANY_REQUESTS, format!("{refusal}\n"));
        }
    };
    if !valid_websocket_key(req.headers()) {
        metrics::add(&core.counters().bad_handshakes, 1);
        return reject(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes in base64\n".into(),
        );
    }
    let Some(slot) = node.try_admit() else {
        metrics::add(&core.counters().connection_limit_rejections, 1);
        return reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached\n".into(),
        );
    };
    if !supported_websocket_version(req.headers()) {
        metrics::add(&core.counters().bad_handshakes, 1);
        metrics::add(&core.counters().handshakes_rejected, 1);
        return Ok(unsupported_version());
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(error) => {
            metrics::add(&core.counters().bad_handshakes, 1);
            return reject(
                StatusCode::BAD_REQUEST,
                format!("bad upgrade request: {error}\n"),
            );
        }
    };
    let mut response = response.map(|_| Either::Left(Full::new(Bytes::new())));
    let codec = match negotiated {
        Negotiated::Default(codec) => codec,
        Negotiated::Offered(codec) => {
            response.headers_mut().insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(codec.subprotocol()),
            );
            codec
        }
    };
    tokio::task::spawn_local(async move {
        match upgrade.await {
            Ok(ws) => {
                let admitted = Admitted {
                    slot,
                    ip_slot,
                    identity,
                };
                // The connection runs in a task of its own, and this one
                // ends: nothing of the upgrade's state stays allocated for
                // the connection's life (an idle connection's memory).
                session::start(ws, codec, core, peer, admitted, mode);
            }
            Err(error) => tracing::debug!(%peer, %error, "upgrade did not complete"),
        }
    });
    Ok(response)
}

/// Answers a connection turned away before its request is read, in plain
/// HTTP (never over TLS: the refusal must stay cheaper than a handshake).
async fn refuse_early(mut stream: TcpStream, refusal: Refusal, core: &Core) {
    let (status, counter) = match refusal {
        Refusal::Busy => (
            "503 Service Unavailable",
            &core.counters().handshakes_over_capacity,
        ),
        _ => (
            "429 Too Many Requests",
            &core.counters().ip_limit_rejections,
        ),
    };
    metrics::add(counter, 1);
    metrics::add(&core.counters().handshakes_rejected, 1);
    let body = format!("{refusal}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ =
        tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, stream.write_all(response.as_bytes())).await;
}

/// Serves one accepted TCP connection until it upgrades or ends: the
/// admission checks, TLS when configured, then HTTP, all within
/// `handshake_timeout` (unless it becomes a Server-Sent Events stream).
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, core: Rc<Core>) {
    let node = core.node().clone();
    let handshake = match node.admission.begin_handshake(peer.ip()) {
        Ok(slot) => slot,
        Err(refusal) => return refuse_early(stream, refusal, &core).await,
    };
    let deadline = Instant::now() + node.config.handshake_timeout;
    let life = Lifetime::new(deadline, handshake);
    match &node.tls {
        None => serve_http(TokioIo::new(stream), peer, core, life).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve_http(TokioIo::new(tls), peer, core, life).await,
            Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

/// What bounds a TCP connection's life, which a Server-Sent Events stream
/// changes. A handshake holds its place under `max_handshakes_in_progress`
/// and ends at `handshake_timeout`. A stream is no handshake: once it
/// begins, its place is freed and it has no deadline, until it starts to
/// close; from then it has `close_timeout` to end. That last bound is kept
/// here, outside the stream, because hyper polls a body only while its
/// write buffer has room: a reader that stopped reading would otherwise
/// hold its connection, and its slots, forever.
pub(crate) struct Lifetime {
    /// The handshake's deadline; `None` once a stream began.
    deadline: Cell<Option<Instant>>,
    handshake: Cell<Option<HandshakeSlot>>,
    /// A stream's queue and `close_timeout`, once it began.
    stream: RefCell<Option<(Rc<Outbound>, Duration)>>,
    /// Tells [`serve_http`] that the bound moved.
    moved: Notify,
}

impl Lifetime {
    fn new(deadline: Instant, handshake: HandshakeSlot) -> Rc<Lifetime> {
        Rc::new(Lifetime {
            deadline: Cell::new(Some(deadline)),
            handshake: Cell::new(Some(handshake)),
            stream: RefCell::new(None),
            moved: Notify::new(),
        })
    }

    /// The connection now carries the stream draining `outbound`.
    pub(crate) fn stream_began(&self, outbound: Rc<Outbound>, close_timeout: Duration) {
        self.handshake.take();
        self.deadline.set(None);
        *self.stream.borrow_mut() = Some((outbound, close_timeout));
        self.moved.notify_one();
    }

    /// Resolves when the connection must be dropped, by the bound in force
    /// when it was called.
    async fn ended(&self) {
        let stream = self.stream.borrow().clone();
        match (stream, self.deadline.get()) {
            (Some((outbound, close_timeout)), _) => {
                poll_fn(|cx| outbound.poll_closing(cx)).await;
                sleep(close_timeout).await;
            }
            (None, Some(deadline)) => sleep_until(deadline).await,
            (None, None) => pending().await,
        }
    }
}

/// An HTTP/1.1 server connection builder with the node's bounds on a
/// request head (`handshake_timeout`, `max_header_bytes`, `max_headers`):
/// the public listener's and the admin listener's alike.
pub(crate) fn http1_builder(config: &Config) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout)
        .max_buf_size(config.max_header_bytes)
        .max_headers(config.max_headers);
    builder
}

async fn serve_http<I>(io: I, peer: SocketAddr, core: Rc<Core>, life: Rc<Lifetime>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let builder = http1_builder(&core.node().config);
    let service_core = core.clone();
    let service_life = life.clone();
    let service = hyper::service::service_fn(move |req| {
        handle(req, service_core.clone(), peer, service_life.clone())
    });
    let mut connection = pin!(builder.serve_connection(io, service).with_upgrades());
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "http connection error");
                }
                return;
            }
            () = life.moved.notified() => {}
            () = life.ended() => {
                tracing::debug!(%peer, "handshake or stream close timed out");
                return;
            }
        }
    }
}
