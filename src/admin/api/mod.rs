//! The backend HTTP API, under `/api/` on the admin listener: a backend
//! publishes, broadcasts, reads history and presence, and disconnects or
//! unsubscribes a user, with the same router path, error codes and
//! idempotency keys as a WebSocket client. docs/API.md is its manual and
//! docs/openapi.json its schema (served at `/api/openapi.json`).
//!
//! One request, top to bottom ([`serve`]):
//! 1. `api_key` empty: 404, the API is off (never open).
//! 2. `X-API-Key` compared with the key in constant time: 401 if wrong.
//! 3. The path and method pick an [`Endpoint`]: 404, or 405 with `Allow`.
//! 4. While the node drains: 503 (error 105).
//! 5. A body is read within `api_max_body_bytes` (413) and decoded as its
//!    `Content-Type` says (415 for neither JSON nor MessagePack), then
//!    checked whole (400 with error 101 or 102, 413 for a payload over
//!    `max_message_size`): bad input does nothing.
//! 6. The operation goes through the [`Backend`] handle to the router and
//!    is answered once the room's home (and its engine) answered, within
//!    [`API_ANSWER_TIMEOUT`] (504).
//!
//! [`API_ANSWER_TIMEOUT`]: crate::limits::API_ANSWER_TIMEOUT

mod body;
mod error;
mod ops;

use std::rc::Rc;

use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde::de::DeserializeOwned;

use crate::admin::{json, respond, AdminResponse};
use crate::router::backend::Backend;
use crate::router::driver::Core;

use body::{BodyFormat, Query};
use error::ApiError;
use ops::Bounds;

/// The OpenAPI 3 document of this API, as kept in the repository.
const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// The header a backend sends its key in.
const KEY_HEADER: &str = "x-api-key";

/// Every endpoint the API serves. The OpenAPI document describes exactly
/// these (a test below holds the two together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Publish,
    Broadcast,
    Batch,
    History,
    Presence,
    PresenceStats,
    Disconnect,
    Unsubscribe,
    Info,
    OpenApi,
}

impl Endpoint {
    pub(crate) const ALL: [Endpoint; 10] = [
        Endpoint::Publish,
        Endpoint::Broadcast,
        Endpoint::Batch,
        Endpoint::History,
        Endpoint::Presence,
        Endpoint::PresenceStats,
        Endpoint::Disconnect,
        Endpoint::Unsubscribe,
        Endpoint::Info,
        Endpoint::OpenApi,
    ];

    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Publish => "/api/publish",
            Endpoint::Broadcast => "/api/broadcast",
            Endpoint::Batch => "/api/batch",
            Endpoint::History => "/api/history",
            Endpoint::Presence => "/api/presence",
            Endpoint::PresenceStats => "/api/presence_stats",
            Endpoint::Disconnect => "/api/disconnect",
            Endpoint::Unsubscribe => "/api/unsubscribe",
            Endpoint::Info => "/api/info",
            Endpoint::OpenApi => "/api/openapi.json",
        }
    }

    /// Writes take a body (POST); reads take a query string (GET).
    pub(crate) fn method(self) -> Method {
        match self {
            Endpoint::Publish
            | Endpoint::Broadcast
            | Endpoint::Batch
            | Endpoint::Disconnect
            | Endpoint::Unsubscribe => Method::POST,
            Endpoint::History
            | Endpoint::Presence
            | Endpoint::PresenceStats
            | Endpoint::Info
            | Endpoint::OpenApi => Method::GET,
        }
    }

    /// The endpoint `method` and `path` name: 404 for no such path, 405
    /// for a path served with another method.
    fn find(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
        let Some(endpoint) = Endpoint::ALL.into_iter().find(|e| e.path() == path) else {
            return Err(ApiError::NotFound {
                method: method.to_string(),
                path: path.to_owned(),
            });
        };
        if *method != endpoint.method() {
            return Err(ApiError::MethodNotAllowed {
                path: path.to_owned(),
                allow: match endpoint.method() {
                    Method::POST => "POST",
                    _ => "GET",
                },
            });
        }
        Ok(endpoint)
    }
}

/// Whether `path` is the API's (everything under `/api/`).
pub(crate) fn owns(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Answers one API request.
pub(crate) async fn handle(req: Request<Incoming>, core: Rc<Core>) -> AdminResponse {
    match serve(req, core).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, status = error.status().as_u16(), "API request refused");
            error.response()
        }
    }
}

/// Whether `given` is `key`, in time that depends on the key's length
/// only: every byte of the key is looked at whatever `given` holds, so the
/// time of a refusal says nothing of how much of the key was guessed.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut differ = u8::from(given.len() != key.len());
    for (i, k) in key.iter().enumerate() {
        differ |= given.get(i).copied().unwrap_or(0) ^ k;
    }
    std::hint::black_box(differ) == 0
}

/// 401 unless the request carries the configured key.
fn authorize(headers: &HeaderMap, key: &str) -> Result<(), ApiError> {
    match headers.get(KEY_HEADER) {
        Some(given) if same_key(given.as_bytes(), key.as_bytes()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

async fn serve(req: Request<Incoming>, core: Rc<Core>) -> Result<AdminResponse, ApiError> {
    let node = core.node().clone();
    let config = &node.config;
    if config.api_key.is_empty() {
        return Err(ApiError::Off);
    }
    authorize(req.headers(), &config.api_key.0)?;
    let endpoint = Endpoint::find(req.method(), req.uri().path())?;
    if endpoint != Endpoint::OpenApi && node.shutting_down() {
        return Err(ApiError::ShuttingDown);
    }
    let bounds = Bounds {
        max_data: node.limits.max_message_size,
    };
    let backend = Backend::new(core.clone());
    let response = match endpoint {
        Endpoint::Publish => {
            let publish = read::<ops::PublishBody>(req, &core).await?.check(bounds)?;
            json(StatusCode::OK, &ops::publish(&backend, publish).await?)
        }
        Endpoint::Broadcast => {
            let broadcast = read::<ops::BroadcastBody>(req, &core)
                .await?
                .check(bounds)?;
            json(StatusCode::OK, &ops::broadcast(&backend, broadcast).await)
        }
        Endpoint::Batch => {
            let (format, bytes) = read_bytes(req, &core).await?;
            body::decode::<ops::BatchNames>(format, &bytes)?.check()?;
            let operations = body::decode::<ops::BatchBody>(format, &bytes)?.check(bounds)?;
            json(StatusCode::OK, &ops::batch(&backend, operations).await)
        }
        Endpoint::Disconnect => {
            let members = read::<ops::DisconnectBody>(req, &core).await?.check()?;
            json(StatusCode::OK, &ops::members(&backend, members).await?)
        }
        Endpoint::Unsubscribe => {
            let members = read::<ops::UnsubscribeBody>(req, &core).await?.check()?;
            json(StatusCode::OK, &ops::members(&backend, members).await?)
        }
        Endpoint::History => {
            let (room, query) = ops::history_query(&Query::parse(req.uri().query())?)?;
            json(StatusCode::OK, &ops::history(&backend, room, query).await?)
        }
        Endpoint::Presence => {
            let room = ops::room_query(&Query::parse(req.uri().query())?)?;
            json(StatusCode::OK, &ops::presence(&backend, room).await?)
        }
        Endpoint::PresenceStats => {
            let room = ops::room_query(&Query::parse(req.uri().query())?)?;
            json(StatusCode::OK, &ops::presence_stats(&backend, room).await?)
        }
        Endpoint::Info => json(StatusCode::OK, &info(&core)),
        Endpoint::OpenApi => respond(StatusCode::OK, "application/json", OPENAPI),
    };
    Ok(response)
}

/// Reads and decodes a request's body.
async fn read<T: DeserializeOwned>(req: Request<Incoming>, core: &Core) -> Result<T, ApiError> {
    let (format, bytes) = read_bytes(req, core).await?;
    body::decode(format, &bytes)
}

/// Reads a request's body (within `api_max_body_bytes`, arriving within
/// `handshake_timeout`) and the format its `Content-Type` names.
async fn read_bytes(
    req: Request<Incoming>,
    core: &Core,
) -> Result<(BodyFormat, bytes::Bytes), ApiError> {
    let config = &core.node().config;
    let (parts, incoming) = req.into_parts();
    let format = BodyFormat::of(&parts.headers)?;
    let bytes = body::read(
        &parts.headers,
        incoming,
        config.api_max_body_bytes,
        config.handshake_timeout,
    )
    .await?;
    Ok((format, bytes))
}

/// `GET /api/info`'s answer: the node, its engine and its counts.
#[derive(Debug, serde::Serialize)]
struct Info {
    /// This run's random id: presence's client ids start with it.
    node: String,
    version: &'static str,
    /// `memory`, or `redis` when `redis_url` is set.
    engine: &'static str,
    workers: usize,
    /// WebSocket connections open now.
    connections: u64,
    /// Publications this node sequenced, and deliveries it made.
    publishes: u64,
    deliveries: u64,
}

fn info(core: &Core) -> Info {
    let node = core.node();
    let stats = node.stats.snapshot();
    Info {
        node: node.id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        engine: match node.config.redis_url.is_empty() {
            true => "memory",
            false => "redis",
        },
        workers: node.config.workers,
        connections: stats.connections_open,
        publishes: stats.publishes,
        deliveries: stats.deliveries,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The document is the file (`include_str!`); what can drift is the
    /// list of routes: every endpoint served is in it, with its method,
    /// and it describes no other.
    #[test]
    fn the_openapi_document_describes_exactly_the_endpoints_served() {
        let document: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.")),
            "an OpenAPI 3 document"
        );
        let mut described = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                if method != "parameters" {
                    described.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = Endpoint::ALL
            .into_iter()
            .map(|e| (e.method().to_string(), e.path().to_owned()))
            .collect();
        assert_eq!(described, served);
    }

    #[test]
    fn every_endpoint_is_found_by_its_path_and_method_only() {
        for endpoint in Endpoint::ALL {
            assert_eq!(
                Endpoint::find(&endpoint.method(), endpoint.path()),
                Ok(endpoint)
            );
            let other = match endpoint.method() {
                Method::GET => Method::POST,
                _ => Method::GET,
            };
            let refused = Endpoint::find(&other, endpoint.path()).unwrap_err();
            assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        }
        let missing = Endpoint::find(&Method::GET, "/api/nope").unwrap_err();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_key_must_match_whole() {
        assert!(same_key(b"secret", b"secret"));
        for wrong in [&b""[..], b"secre", b"secret!", b"Secret", b"\0ecret"] {
            assert!(!same_key(wrong, b"secret"), "{wrong:?}");
        }
    }
}
