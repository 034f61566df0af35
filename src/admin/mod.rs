//! The admin listener: a plain HTTP/1.1 port of its own (`admin_listen`,
//! loopback by default), apart from the public WebSocket port, for the
//! people and programs that run the broker rather than use it.
//!
//! | request            | answer |
//! |--------------------|--------|
//! | `GET /stats`       | 200, the node's counters as JSON |
//! | `GET /dashboard`   | 200, the live dashboard (one HTML page) |
//! | `GET /dashboard/events` | 200, the dashboard's samples as Server-Sent Events |
//! | `GET /metrics`     | 200, counters, gauges and histograms in the Prometheus text format ([`prometheus`]) |
//! | `GET /health`      | 200 while the process serves ([`health`]) |
//! | `GET /ready`       | 200 when it takes new connections, else 503 and why ([`health`]) |
//! | `/api/...`         | the backend HTTP API ([`api`], docs/API.md) |
//! | anything else      | 404, a JSON error body |
//!
//! It runs on core 0, beside that core's connections: its traffic is a
//! scrape or an API call now and then, not a stream of frames, and living
//! on a core lets it call the router the way a WebSocket session does
//! (through that core's `Core`), with no lock and no extra thread.

mod health;
mod prometheus;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

mod dashboard;

mod api;

use crate::limits::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};
use crate::router::driver::Core;
use crate::transport::http::http1_builder;

/// Any admin response body: a whole buffer, or a stream (events).
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The answer to one admin request.
pub(crate) type AdminResponse = Response<Body>;

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A response of `status` with `body` of `content_type`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> AdminResponse {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(error) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode the answer: {error}\n"),
        ),
    }
}

/// The JSON error body every admin endpoint answers with: `code` is one of
/// the wire protocol's error codes (docs/PROTOCOL.md) where one applies, so
/// a backend reads one list of errors whichever door it used.
pub(crate) fn error(status: StatusCode, code: u16, message: impl Into<String>) -> AdminResponse {
    #[derive(serde::Serialize)]
    struct ErrorBody {
        error: ErrorFields,
    }
    #[derive(serde::Serialize)]
    struct ErrorFields {
        code: u16,
        message: String,
    }
    json(
        status,
        &ErrorBody {
            error: ErrorFields {
                code,
                message: message.into(),
            },
        },
    )
}

/// Error code for "no such endpoint" (not a wire error: only HTTP has paths).
pub(crate) const NOT_FOUND: u16 = 404;

/// Routes one admin request.
async fn route(
    req: Request<Incoming>,
    core: Rc<Core>,
    samples: watch::Receiver<Bytes>,
) -> AdminResponse {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/stats") => json(StatusCode::OK, &core.node().stats.snapshot()),
        (&Method::GET, "/dashboard") => dashboard::page(),
        (&Method::GET, "/dashboard/events") => dashboard::events(&samples),
        (&Method::GET, "/metrics") => prometheus::metrics(&core),
        (&Method::GET, "/health") => health::health(),
        (&Method::GET, "/ready") => health::ready(&core),
        (_, path) if api::owns(path) => api::handle(req, core).await,
        _ => error(
            StatusCode::NOT_FOUND,
            NOT_FOUND,
            format!("no endpoint {} {path}", req.method()),
        ),
    }
}

/// Accepts admin connections on core 0 for as long as the core runs: past
/// the start of a drain too, so `/ready` can say the node is draining.
pub(crate) async fn accept(listener: tokio::net::TcpListener, core: Rc<Core>) {
    let samples = dashboard::start(core.clone());
    let mut backoff = std::time::Duration::ZERO;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = std::time::Duration::ZERO;
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(serve(stream, peer, core.clone(), samples.clone()));
            }
            Err(error) => {
                if backoff.is_zero() {
                    tracing::warn!(%error, "admin accept failed; backing off");
                }
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Serves one admin connection (keep-alive) until it closes or the core
/// stops.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    core: Rc<Core>,
    samples: watch::Receiver<Bytes>,
) {
    let builder = http1_builder(&core.node().config);
    let service_core = core.clone();
    let service = hyper::service::service_fn(move |req| {
        let (core, samples) = (service_core.clone(), samples.clone());
        async move { Ok::<_, Infallible>(route(req, core, samples).await) }
    });
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, %error, "admin connection error");
    }
}
