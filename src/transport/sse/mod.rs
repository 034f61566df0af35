//! Server-Sent Events on the public listener: `GET /sse?room=a&room=b`
//! (`sse_path`) answers `200 text/event-stream` and streams the rooms'
//! publications as events, for browsers' `EventSource` and plain HTTP
//! clients. docs/PROTOCOL.md ("Server-Sent Events") is the wire format.
//!
//! A stream is one more front door to a [`Member`], like a WebSocket
//! session: the same checks at the door (shutdown, origin, token, then the
//! room grants, the per-IP and node connection budgets), the same
//! subscribe with recover, the same bounded outbound queue and
//! slow-consumer policy. Its member uses the MessagePack format, so a
//! publication is still encoded once per format and shared; the stream
//! reads each queued frame back into an event ([`events`]), and the event
//! ids carry every room's position so that a browser's reconnect
//! (`Last-Event-ID`) resumes them all with nothing kept on the server.
//!
//! - [`request`]: the rooms and resume positions a request asks for.
//! - [`events`]: frames to event text, and the positions the ids carry.
//! - [`stream`]: the response body that drains the queue.

mod events;
mod request;
mod stream;

use std::net::SocketAddr;
use std::rc::Rc;

use http_body_util::Either;
use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ALLOW,
    CACHE_CONTROL, CONNECTION, CONTENT_TYPE, ORIGIN, VARY, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::{token_from_sse_request, Action, TokenError};
use crate::limits::{close_code, SSE_MAX_ROOMS};
use crate::metrics;
use crate::node::Node;
use crate::router::driver::Core;
use crate::router::member::Member;
use crate::router::outbound::Closing;
use crate::router::Format;
use crate::rules::Glob;

use super::http::{text, HttpResponse, Lifetime};

use events::{request_id, Encoder};
use request::Wanted;
use stream::Held;

pub(crate) use stream::Stream;

/// The request header a browser's `EventSource` resends on reconnecting:
/// the id of the last event it received.
const LAST_EVENT_ID: &str = "last-event-id";

/// Answers a request on `sse_path`: a stream, or the refusal of the first
/// check that fails (docs/PROTOCOL.md lists them in this order). `life` is
/// the TCP connection's: a stream lifts its handshake deadline.
pub(crate) fn open<B>(
    req: &Request<B>,
    core: &Rc<Core>,
    peer: SocketAddr,
    life: &Lifetime,
) -> HttpResponse {
    let node = core.node();
    let counters = core.counters();
    let origin = req.headers().get(ORIGIN);
    let allowed = node
        .admission
        .origin_allowed(origin.map(|o| o.to_str().unwrap_or("\u{fffd}")));
    let refuse = |status, body: String| {
        metrics::add(&counters.handshakes_rejected, 1);
        let mut response = text(status, body);
        cors(response.headers_mut(), origin, node);
        response
    };
    match *req.method() {
        Method::GET => {}
        Method::OPTIONS if allowed => return preflight(origin, node),
        Method::OPTIONS => {
            metrics::add(&counters.origin_rejections, 1);
            return text(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
        _ => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "Server-Sent Events: GET only\n",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, OPTIONS"));
            return response;
        }
    }
    if node.shutting_down() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    if !allowed {
        metrics::add(&counters.origin_rejections, 1);
        metrics::add(&counters.handshakes_rejected, 1);
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let identity = match (&node.verifier, token_from_sse_request(req)) {
        (Some(verifier), Some(token)) => verifier.verify(&token),
        (_, _) => node.anonymous().ok_or(TokenError::Missing),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(error) => {
            metrics::add(&counters.auth_failures, 1);
            let mut response = refuse(StatusCode::UNAUTHORIZED, format!("{error}\n"));
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let last_event_id = match req.headers().get(LAST_EVENT_ID).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            let error = request::BadRequest::BadLastEventId;
            return refuse(StatusCode::BAD_REQUEST, format!("{error}\n"));
        }
    };
    let max_rooms = SSE_MAX_ROOMS.min(node.limits.max_rooms_per_connection);
    let wanted = match request::parse(req.uri().query(), last_event_id, max_rooms) {
        Ok(wanted) => wanted,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    if let Some(denied) = wanted
        .iter()
        .find(|w| !node.permits(&identity, Action::Subscribe, w.room.as_str()))
    {
        metrics::add(&counters.permission_denials, 1);
        return refuse(
            StatusCode::FORBIDDEN,
            format!("not allowed to subscribe in {}\n", denied.room),
        );
    }
    let ip_slot = match node.admission.admit_ip(peer.ip()) {
        Ok(slot) => slot,
        Err(refusal) => {
            metrics::add(&counters.ip_limit_rejections, 1);
            return refuse(StatusCode::TOO_MANY_REQUESTS, format!("{refusal}\n"));
        }
    };
    let Some(slot) = node.try_admit() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached\n".into(),
        );
    };

    let text_rooms: Vec<Glob> = node
        .config
        .sse_text_rooms
        .0
        .iter()
        .map(|p| Glob::new(p))
        .collect();
    let encoder = Encoder::new(&wanted, |room| text_rooms.iter().any(|g| g.matches(room)));
    let mut member = Member::new(core.clone(), Format::MsgPack, identity.user.clone());
    let outbound = member.outbound().clone();
    if node.shutting_down() {
        // Admitted after the drain listed this core's members: close at once.
        outbound.close(Closing {
            code: close_code::SERVICE_RESTART,
            reason: "service restart",
            flush: true,
        });
    }
    let span = tracing::debug_span!("sse", conn_id = member.conn().0, core = core.id().0, %peer);
    // One room at a time, as a WebSocket client's subscribes are: each
    // returns once its room is live (its answer queued) or refused.
    let subscribing = Box::pin(
        async move {
            for (i, Wanted { room, from }) in wanted.into_iter().enumerate() {
                member.subscribe(request_id(i), room, from, false).await;
            }
            member
        }
        .instrument(span.clone()),
    );
    let expiry = identity.expires_in().map(|left| Instant::now() + left);
    let held = Held {
        _slot: slot,
        _ip_slot: ip_slot,
    };
    life.stream_began(outbound.clone(), node.config.close_timeout);
    let stream = Stream::new(
        core.clone(),
        outbound,
        subscribing,
        encoder,
        expiry,
        held,
        span,
    );

    let mut response = Response::new(Either::Right(stream));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers proxied responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // The connection ends with the stream: it was no longer bound by the
    // handshake deadline, and must not idle on as keep-alive.
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    cors(headers, origin, node);
    response
}

/// Lets a page of another origin read the answer. Without `allowed_origins`
/// any origin may, without credentials (`*`): a cookie then never carries
/// a token across origins. With it, a listed origin (the only kind that
/// gets this far) may, cookies included.
fn cors(headers: &mut HeaderMap, origin: Option<&HeaderValue>, node: &Node) {
    let Some(origin) = origin else {
        return;
    };
    if node.config.allowed_origins.0.is_empty() {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    } else {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(VARY, HeaderValue::from_static("origin"));
    }
}

/// The answer to a CORS preflight (`OPTIONS`), for clients that send
/// `Last-Event-ID` or `Authorization` themselves across origins.
fn preflight(origin: Option<&HeaderValue>, node: &Node) -> HttpResponse {
    let mut response = text(StatusCode::NO_CONTENT, "");
    let headers = response.headers_mut();
    headers.remove(CONTENT_TYPE);
    cors(headers, origin, node);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET"),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("last-event-id, authorization, cache-control"),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}
