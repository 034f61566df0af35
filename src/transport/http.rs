//! The HTTP/1.1 side of a connection: routes, the checks made before an
//! upgrade, subprotocol negotiation, and the upgrade itself.
//!
//! | request                                   | answer |
//! |-------------------------------------------|--------|
//! | `GET /stats`                              | 200, the node's counters as JSON |
//! | any other path than `path`                | 404 |
//! | `path` without a WebSocket upgrade        | 426, a short text |
//! | upgrade while shutting down               | 503 |
//! | only unknown subprotocols offered         | 400, lists the supported ones |
//! | `max_connections` reached                 | 503 |
//! | bad `Sec-WebSocket-Key`/`-Version`        | 400 |
//! | head over `max_header_bytes`/`max_headers`| 431 (hyper) |
//! | head not complete in `handshake_timeout`  | connection dropped |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::metrics;
use crate::protocol::Codec;
use crate::runtime::core::Core;

use super::session;

type HttpResponse = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
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
pub enum Negotiated {
    Default(Codec),
    Offered(Codec),
}

/// Every subprotocol the client offered is one we do not speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no supported subprotocol offered")]
pub struct UnsupportedSubprotocol;

/// Picks the codec from the `Sec-WebSocket-Protocol` offers.
pub fn negotiate(headers: &HeaderMap) -> Result<Negotiated, UnsupportedSubprotocol> {
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
) -> Result<HttpResponse, Infallible> {
    let node = &core.node;
    let path = req.uri().path();
    if path != node.config.path {
        if path == "/stats" && req.method() == Method::GET {
            let json = serde_json::to_vec(&node.stats.snapshot()).unwrap_or_default();
            let mut response = Response::new(Full::new(Bytes::from(json)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(response);
        }
        return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
    }
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
        return reject(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    let negotiated = match negotiate(req.headers()) {
        Ok(n) => n,
        Err(UnsupportedSubprotocol) => return reject(StatusCode::BAD_REQUEST, supported_list()),
    };
    let Some(slot) = node.try_admit() else {
        return reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached\n".into(),
        );
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(error) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("bad upgrade request: {error}\n"),
            )
        }
    };
    let mut response = response.map(|_| Full::new(Bytes::new()));
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
            Ok(ws) => session::run(ws, codec, core, peer, slot).await,
            Err(error) => tracing::debug!(%peer, %error, "upgrade did not complete"),
        }
    });
    Ok(response)
}

/// Serves one accepted TCP connection until it upgrades or ends.
pub async fn serve(stream: TcpStream, peer: SocketAddr, core: Rc<Core>) {
    let config = &core.node.config;
    let timeout = config.handshake_timeout;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(config.max_header_bytes)
        .max_headers(config.max_headers);
    let service_core = core.clone();
    let service = hyper::service::service_fn(move |req| handle(req, service_core.clone(), peer));
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    match tokio::time::timeout(timeout, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%peer, %error, "http connection error"),
        Err(_) => tracing::debug!(%peer, "handshake timed out"),
    }
}
