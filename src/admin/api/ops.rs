//! The API's operations: what each request body says, how it is checked,
//! and what each answer holds. A request is checked whole before anything
//! is done (room names, keys, sizes, codes, bounds), so bad input publishes
//! nothing; then it goes to the router through the [`Backend`] handle.
//!
//! docs/API.md describes each body and answer; docs/openapi.json is the
//! same, as a schema.

use bytes::Bytes;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use crate::limits::{API_ANSWER_TIMEOUT, API_BATCH_MAX_OPERATIONS, API_BROADCAST_MAX_ROOMS};
use crate::protocol::{
    close_code, HistoryQuery, IdempotencyKey, Offset, Outcome, RoomName, MAX_IDEMPOTENCY_KEY_BYTES,
};
use crate::router::backend::Backend;
use crate::router::message::MemberAction;
use crate::router::Query as RouterQuery;

use super::body::{base64, Payload, Query};
use super::error::{outcome_error, ApiError, ErrorFields};

// Request bodies, as they decode. Unknown keys are ignored, as on the wire.

/// An optional field that, when present, must hold a value: `null` (or a
/// MessagePack `nil`) is a wrong type, as on the wire, not "absent".
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `POST /api/publish`, and a batch's `{"op": "publish", ...}`.
#[derive(Debug, Deserialize)]
pub(crate) struct PublishBody {
    room: String,
    /// Absent: an empty payload (as on the wire).
    #[serde(default)]
    data: Payload,
    #[serde(default, deserialize_with = "present")]
    idempotency_key: Option<String>,
}

/// `POST /api/broadcast`: one payload to many rooms.
#[derive(Debug, Deserialize)]
pub(crate) struct BroadcastBody {
    rooms: Vec<String>,
    #[serde(default)]
    data: Payload,
    /// Used in each room: a key belongs to its room.
    #[serde(default, deserialize_with = "present")]
    idempotency_key: Option<String>,
}

/// `POST /api/disconnect`.
#[derive(Debug, Deserialize)]
pub(crate) struct DisconnectBody {
    user: String,
    /// Absent: [`close_code::DISCONNECTED`].
    #[serde(default, deserialize_with = "present")]
    code: Option<u16>,
}

/// `POST /api/unsubscribe`.
#[derive(Debug, Deserialize)]
pub(crate) struct UnsubscribeBody {
    user: String,
    room: String,
}

/// `POST /api/batch`.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchBody {
    operations: Vec<OperationBody>,
}

/// One operation of a batch, named by its `op`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum OperationBody {
    Publish(PublishBody),
    Broadcast(BroadcastBody),
    Disconnect(DisconnectBody),
    Unsubscribe(UnsubscribeBody),
}

/// The operation names a batch knows.
const OPERATIONS: [&str; 4] = ["publish", "broadcast", "disconnect", "unsubscribe"];

/// A batch read only as far as its operations' names, so that an unknown
/// one is told apart (error 100) from a malformed one (101).
#[derive(Debug, Deserialize)]
pub(crate) struct BatchNames {
    operations: Vec<OpName>,
}

#[derive(Debug, Deserialize)]
struct OpName {
    op: String,
}

// Checked requests.

/// A publish, checked.
pub(crate) struct Publish {
    room: RoomName,
    data: Bytes,
    key: Option<IdempotencyKey>,
}

/// A broadcast, checked.
pub(crate) struct Broadcast {
    rooms: Vec<RoomName>,
    data: Bytes,
    key: Option<IdempotencyKey>,
}

/// A request about one user's connections on every core, checked.
pub(crate) struct Members {
    user: String,
    action: MemberAction,
}

/// A batch's operation, checked.
pub(crate) enum Operation {
    Publish(Publish),
    Broadcast(Broadcast),
    Members(Members),
}

/// What the checks need from the node's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// `max_message_size`: no payload may be larger than a WebSocket
    /// client could publish.
    pub(crate) max_data: usize,
}

fn room(name: &str) -> Result<RoomName, ApiError> {
    RoomName::new(name).map_err(|error| ApiError::InvalidRoom(format!("{name:?}: {error}")))
}

fn key(key: Option<String>) -> Result<Option<IdempotencyKey>, ApiError> {
    match key {
        None => Ok(None),
        Some(key) if key.is_empty() => Ok(None),
        Some(key) if key.len() > MAX_IDEMPOTENCY_KEY_BYTES => Err(ApiError::InvalidField(format!(
            "idempotency_key is {} bytes, the limit is {MAX_IDEMPOTENCY_KEY_BYTES}",
            key.len()
        ))),
        Some(key) => Ok(Some(IdempotencyKey::new(&key))),
    }
}

fn data(data: Payload, bounds: Bounds) -> Result<Bytes, ApiError> {
    if data.0.len() > bounds.max_data {
        return Err(ApiError::TooLarge {
            what: "data",
            limit: bounds.max_data,
            unread: false,
        });
    }
    Ok(data.0)
}

fn user(user: String) -> Result<String, ApiError> {
    if user.is_empty() {
        return Err(ApiError::InvalidField(
            "user must not be empty (anonymous connections have no user to name)".into(),
        ));
    }
    Ok(user)
}

/// Whether a backend may close a connection with `code`: 1000 (normal),
/// 1008 (policy violation) or the application range 4000 to 4999. Codes a
/// client may not receive (1005, 1006, 1015) or that mean something else
/// (a protocol error, a restart) are refused.
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000 | 1008 | 4000..=4999)
}

impl PublishBody {
    pub(crate) fn check(self, bounds: Bounds) -> Result<Publish, ApiError> {
        Ok(Publish {
            room: room(&self.room)?,
            data: data(self.data, bounds)?,
            key: key(self.idempotency_key)?,
        })
    }
}

impl BroadcastBody {
    pub(crate) fn check(self, bounds: Bounds) -> Result<Broadcast, ApiError> {
        if self.rooms.is_empty() || self.rooms.len() > API_BROADCAST_MAX_ROOMS {
            return Err(ApiError::InvalidField(format!(
                "rooms holds {} names; a broadcast names 1 to {API_BROADCAST_MAX_ROOMS}",
                self.rooms.len()
            )));
        }
        Ok(Broadcast {
            rooms: self
                .rooms
                .iter()
                .map(|r| room(r))
                .collect::<Result<_, _>>()?,
            data: data(self.data, bounds)?,
            key: key(self.idempotency_key)?,
        })
    }
}

impl DisconnectBody {
    pub(crate) fn check(self) -> Result<Members, ApiError> {
        let code = self.code.unwrap_or(close_code::DISCONNECTED);
        if !close_code_allowed(code) {
            return Err(ApiError::InvalidField(format!(
                "code {code} is not one a backend may close with: 1000, 1008 or 4000 to 4999"
            )));
        }
        Ok(Members {
            user: user(self.user)?,
            action: MemberAction::Disconnect { code },
        })
    }
}

impl UnsubscribeBody {
    pub(crate) fn check(self) -> Result<Members, ApiError> {
        Ok(Members {
            user: user(self.user)?,
            action: MemberAction::Unsubscribe {
                room: room(&self.room)?,
            },
        })
    }
}

impl BatchNames {
    /// Refuses an operation name the batch does not know (error 100).
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        match self
            .operations
            .iter()
            .enumerate()
            .find(|(_, o)| !OPERATIONS.contains(&o.op.as_str()))
        {
            Some((i, o)) => Err(ApiError::UnknownOperation(format!(
                "operations[{i}]: {}; known: {}",
                o.op,
                OPERATIONS.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

impl BatchBody {
    /// Checks every operation; the first bad one refuses the whole batch,
    /// naming its index, and nothing is done.
    pub(crate) fn check(self, bounds: Bounds) -> Result<Vec<Operation>, ApiError> {
        let count = self.operations.len();
        if count == 0 || count > API_BATCH_MAX_OPERATIONS {
            return Err(ApiError::InvalidField(format!(
                "operations holds {count} operations; a batch holds 1 to {API_BATCH_MAX_OPERATIONS}"
            )));
        }
        let at = |i: usize| {
            move |error: ApiError| match error {
                ApiError::InvalidRoom(text) => {
                    ApiError::InvalidRoom(format!("operations[{i}]: {text}"))
                }
                ApiError::InvalidField(text) => {
                    ApiError::InvalidField(format!("operations[{i}]: {text}"))
                }
                other => other,
            }
        };
        self.operations
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                match o {
                    OperationBody::Publish(p) => p.check(bounds).map(Operation::Publish),
                    OperationBody::Broadcast(b) => b.check(bounds).map(Operation::Broadcast),
                    OperationBody::Disconnect(d) => d.check().map(Operation::Members),
                    OperationBody::Unsubscribe(u) => u.check().map(Operation::Members),
                }
                .map_err(at(i))
            })
            .collect()
    }
}

/// `GET /api/history`'s query: `room`, and `since`, `limit`, `reverse` as on
/// the wire.
pub(crate) fn history_query(query: &Query) -> Result<(RoomName, HistoryQuery), ApiError> {
    let room = room(query.required("room")?)?;
    let history = HistoryQuery {
        since: Offset(query.number("since", 0u64)?),
        limit: query.number("limit", 0u32)?,
        reverse: query.flag("reverse")?,
    };
    Ok((room, history))
}

/// `GET /api/presence` and `/api/presence_stats`'s query: `room`.
pub(crate) fn room_query(query: &Query) -> Result<RoomName, ApiError> {
    room(query.required("room")?)
}

// Answers.

/// A publication's answer: sent once the engine stored it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Published {
    offset: u64,
    epoch: String,
    /// The key was seen within the window: nothing was published, and
    /// `offset` is the first publication's.
    duplicate: bool,
}

/// An operation's answer, or why it failed, as one result of a broadcast
/// or a batch.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Attempt<T> {
    Done(T),
    Failed { error: ErrorFields },
}

impl<T> From<Result<T, ApiError>> for Attempt<T> {
    fn from(result: Result<T, ApiError>) -> Attempt<T> {
        match result {
            Ok(answer) => Attempt::Done(answer),
            Err(error) => Attempt::Failed {
                error: ErrorFields::from(&error),
            },
        }
    }
}

/// One room's result in a broadcast.
#[derive(Debug, Serialize)]
pub(crate) struct RoomResult {
    room: String,
    #[serde(flatten)]
    result: Attempt<Published>,
}

/// A broadcast's answer: one result per room, in the order given.
#[derive(Debug, Serialize)]
pub(crate) struct Broadcasted {
    results: Vec<RoomResult>,
}

/// How many connections a disconnect or an unsubscribe touched.
#[derive(Debug, Serialize)]
pub(crate) enum Affected {
    #[serde(rename = "disconnected")]
    Disconnected(usize),
    #[serde(rename = "unsubscribed")]
    Unsubscribed(usize),
}

/// A batch operation's answer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Answer {
    Published(Published),
    Broadcasted(Broadcasted),
    Affected(Affected),
}

/// A batch's answer: one result per operation, in order.
#[derive(Debug, Serialize)]
pub(crate) struct Batched {
    results: Vec<Attempt<Answer>>,
}

/// `GET /api/history`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct History {
    epoch: String,
    offset: u64,
    publications: Vec<StoredPublication>,
}

#[derive(Debug, Serialize)]
struct StoredPublication {
    offset: u64,
    /// Base64.
    data: String,
}

/// `GET /api/presence`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct Presence {
    clients: Vec<PresenceEntry>,
}

#[derive(Debug, Serialize)]
struct PresenceEntry {
    client: String,
    user: String,
    joined_at_ms: u64,
}

/// `GET /api/presence_stats`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct PresenceStats {
    clients: u32,
    users: u32,
}

// Doing it.

/// Waits for the router, within the API's deadline.
async fn answered<T>(work: impl std::future::Future<Output = T>) -> Result<T, ApiError> {
    tokio::time::timeout(API_ANSWER_TIMEOUT, work)
        .await
        .map_err(|_| ApiError::NoAnswer(API_ANSWER_TIMEOUT))
}

/// An outcome that is not the expected kind of answer (a home answers a
/// publish with an ack, a history query with a page, ...): never sent, and
/// a 503 rather than a panic if it ever were.
fn unexpected(outcome: &Outcome) -> ApiError {
    tracing::error!(?outcome, "unexpected answer to an API request");
    ApiError::refused(110, "unexpected answer from the room's home".into())
}

pub(crate) async fn publish(backend: &Backend, publish: Publish) -> Result<Published, ApiError> {
    let outcome = answered(backend.publish(publish.room, publish.data, publish.key)).await?;
    match outcome {
        Outcome::Ack(ack) => Ok(Published {
            offset: ack.offset.0,
            epoch: ack.epoch.0,
            duplicate: ack.duplicate,
        }),
        other => Err(outcome_error(&other).unwrap_or_else(|| unexpected(&other))),
    }
}

/// Publishes to every room at once (each room's home sequences its own).
pub(crate) async fn broadcast(backend: &Backend, broadcast: Broadcast) -> Broadcasted {
    let Broadcast { rooms, data, key } = broadcast;
    let each = rooms.into_iter().map(|room| {
        let name = room.as_str().to_owned();
        let one = Publish {
            room,
            data: data.clone(),
            key: key.clone(),
        };
        async move {
            RoomResult {
                room: name,
                result: publish(backend, one).await.into(),
            }
        }
    });
    Broadcasted {
        results: join_all(each).await,
    }
}

pub(crate) async fn members(backend: &Backend, members: Members) -> Result<Affected, ApiError> {
    let disconnect = matches!(members.action, MemberAction::Disconnect { .. });
    let affected = answered(backend.members(&members.user, members.action))
        .await?
        .ok_or(ApiError::ShuttingDown)?;
    Ok(match disconnect {
        true => Affected::Disconnected(affected),
        false => Affected::Unsubscribed(affected),
    })
}

/// Runs a batch's operations one after the other, in order: each result is
/// its answer or its own error.
pub(crate) async fn batch(backend: &Backend, operations: Vec<Operation>) -> Batched {
    let mut results = Vec::with_capacity(operations.len());
    for operation in operations {
        let result = match operation {
            Operation::Publish(p) => publish(backend, p).await.map(Answer::Published),
            Operation::Broadcast(b) => Ok(Answer::Broadcasted(broadcast(backend, b).await)),
            Operation::Members(m) => members(backend, m).await.map(Answer::Affected),
        };
        results.push(result.into());
    }
    Batched { results }
}

pub(crate) async fn history(
    backend: &Backend,
    room: RoomName,
    query: HistoryQuery,
) -> Result<History, ApiError> {
    match answered(backend.query(room, RouterQuery::History(query))).await? {
        Outcome::History(page) => Ok(History {
            epoch: page.position.epoch.0,
            offset: page.position.offset.0,
            publications: page
                .publications
                .iter()
                .map(|p| StoredPublication {
                    offset: p.offset.0,
                    data: base64(&p.data),
                })
                .collect(),
        }),
        other => Err(outcome_error(&other).unwrap_or_else(|| unexpected(&other))),
    }
}

pub(crate) async fn presence(backend: &Backend, room: RoomName) -> Result<Presence, ApiError> {
    match answered(backend.query(room, RouterQuery::Presence)).await? {
        Outcome::Presence(clients) => Ok(Presence {
            clients: clients
                .into_iter()
                .map(|c| PresenceEntry {
                    client: c.client,
                    user: c.user,
                    joined_at_ms: c.joined_at_ms,
                })
                .collect(),
        }),
        other => Err(outcome_error(&other).unwrap_or_else(|| unexpected(&other))),
    }
}

pub(crate) async fn presence_stats(
    backend: &Backend,
    room: RoomName,
) -> Result<PresenceStats, ApiError> {
    match answered(backend.query(room, RouterQuery::PresenceStats)).await? {
        Outcome::PresenceStats(counts) => Ok(PresenceStats {
            clients: counts.clients,
            users: counts.users,
        }),
        other => Err(outcome_error(&other).unwrap_or_else(|| unexpected(&other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::api::body::{decode, BodyFormat};

    const BOUNDS: Bounds = Bounds { max_data: 16 };

    #[test]
    fn a_batch_with_one_bad_operation_is_refused_whole_naming_it() {
        let body = br#"{"operations":[
            {"op":"publish","room":"a","data":"aGk="},
            {"op":"publish","room":"b c","data":""}
        ]}"#;
        let batch: BatchBody = decode(BodyFormat::Json, body).unwrap();
        let Err(error) = batch.check(BOUNDS) else {
            panic!("a bad room must refuse the batch");
        };
        assert_eq!(error.code(), 102);
        assert!(error.to_string().contains("operations[1]"), "{error}");
    }

    #[test]
    fn an_unknown_operation_is_error_100_and_a_malformed_one_101() {
        let names: BatchNames =
            decode(BodyFormat::Json, br#"{"operations":[{"op":"explode"}]}"#).unwrap();
        assert_eq!(names.check().unwrap_err().code(), 100);
        let error = decode::<BatchBody>(BodyFormat::Json, br#"{"operations":[{"op":"publish"}]}"#)
            .unwrap_err();
        assert_eq!(error.code(), 101);
    }

    #[test]
    fn a_batch_holds_at_least_one_operation_and_at_most_the_bound() {
        let publish = serde_json::json!({"op": "publish", "room": "x"});
        for count in [0, API_BATCH_MAX_OPERATIONS + 1] {
            let body = serde_json::json!({"operations": vec![publish.clone(); count]});
            let batch: BatchBody = decode(BodyFormat::Json, body.to_string().as_bytes()).unwrap();
            assert_eq!(
                batch.check(BOUNDS).err().map(|e| e.code()),
                Some(101),
                "{count}"
            );
        }
        let body = serde_json::json!({"operations": vec![publish; API_BATCH_MAX_OPERATIONS]});
        let batch: BatchBody = decode(BodyFormat::Json, body.to_string().as_bytes()).unwrap();
        assert!(batch.check(BOUNDS).is_ok());
    }

    #[test]
    fn keys_data_users_and_close_codes_are_checked_as_on_the_wire() {
        let long_key = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
        let body = serde_json::json!({"room": "a", "idempotency_key": long_key}).to_string();
        let publish: PublishBody = decode(BodyFormat::Json, body.as_bytes()).unwrap();
        assert_eq!(publish.check(BOUNDS).err().map(|e| e.code()), Some(101));
        let body = br#"{"room":"a","data":"AAAAAAAAAAAAAAAAAAAAAAAA"}"#;
        let publish: PublishBody = decode(BodyFormat::Json, body).unwrap();
        assert_eq!(publish.check(BOUNDS).err().map(|e| e.code()), Some(413));
        for (code, allowed) in [(1000, true), (1008, true), (4000, true), (4999, true)]
            .into_iter()
            .chain([
                (1001, false),
                (1005, false),
                (1012, false),
                (3000, false),
                (5000, false),
            ])
        {
            assert_eq!(close_code_allowed(code), allowed, "{code}");
        }
        let empty: DisconnectBody = decode(BodyFormat::Json, br#"{"user":""}"#).unwrap();
        assert_eq!(empty.check().err().map(|e| e.code()), Some(101));
        for null in [
            &br#"{"user":"u","code":null}"#[..],
            br#"{"room":"a","idempotency_key":null}"#,
            br#"{"room":"a","data":null}"#,
        ] {
            let disconnect = decode::<DisconnectBody>(BodyFormat::Json, null);
            let publish = decode::<PublishBody>(BodyFormat::Json, null);
            assert!(
                disconnect.is_err() || publish.is_err(),
                "null is not absent"
            );
        }
    }
}
