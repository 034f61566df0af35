//! The wire protocol: envelope types shared by both codecs, room names, error
//! codes, and the codec dispatch.
//!
//! Decoding is zero-copy: a decoded request's payload (and, in MessagePack,
//! its room name) is a [`Bytes`] slice of the received WebSocket message, so
//! a publish crosses cores without its payload being copied. The only copy of a payload is into
//! the outgoing frame, once per publication and codec ([`frame`]).

pub use crate::limits::close_code;

pub mod frame;
pub mod msgpack;
pub mod proto;

use std::fmt;

use bytes::Bytes;

/// The encoding of a connection, chosen once by `Sec-WebSocket-Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `roomcast.v1.msgpack`: envelopes are MessagePack maps keyed by the proto field names.
    MsgPack,
    /// `roomcast.v1.proto`: envelopes are the protobuf messages of `proto/roomcast.proto`.
    Proto,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Codec; 2] = [Codec::MsgPack, Codec::Proto];

    /// The subprotocol token a client offers to pick this codec.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::MsgPack => "roomcast.v1.msgpack",
            Codec::Proto => "roomcast.v1.proto",
        }
    }

    /// The codec a subprotocol token names, if we speak it.
    pub fn from_subprotocol(token: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.subprotocol() == token)
    }

    /// Decodes one client envelope (the payload of one binary message).
    pub fn decode_request(self, payload: &Bytes) -> Result<ClientRequest, RequestError> {
        match self {
            Codec::MsgPack => msgpack::decode_request(payload),
            Codec::Proto => proto::decode_request(payload),
        }
    }

    /// Encodes one client envelope (used by the Rust client and the tests).
    pub fn encode_request(self, request: &ClientRequest) -> Vec<u8> {
        match self {
            Codec::MsgPack => msgpack::encode_request(request),
            Codec::Proto => proto::encode_request(request),
        }
    }

    /// Encodes a delivery envelope into `out` (no WebSocket header).
    pub fn encode_message(self, room: &RoomName, offset: Offset, data: &[u8], out: &mut Vec<u8>) {
        match self {
            Codec::MsgPack => msgpack::encode_message(room, offset, data, out),
            Codec::Proto => proto::encode_message(room, offset, data, out),
        }
    }

    /// Encodes a reply envelope into `out` (no WebSocket header).
    pub fn encode_reply(self, reply: &Reply, out: &mut Vec<u8>) {
        match self {
            Codec::MsgPack => msgpack::encode_reply(reply, out),
            Codec::Proto => proto::encode_reply(reply, out),
        }
    }

    /// Encodes a join or leave event into `out` (no WebSocket header).
    pub fn encode_presence(
        self,
        change: PresenceChange,
        room: &RoomName,
        info: &ClientInfo,
        out: &mut Vec<u8>,
    ) {
        match self {
            Codec::MsgPack => msgpack::encode_presence(change, room, info, out),
            Codec::Proto => proto::encode_presence(change, room, info, out),
        }
    }

    /// Decodes one server envelope (used by the Rust client and the tests).
    pub fn decode_server(self, payload: &Bytes) -> Result<ServerEvent, MalformedEnvelope> {
        match self {
            Codec::MsgPack => msgpack::decode_server(payload),
            Codec::Proto => proto::decode_server(payload),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subprotocol())
    }
}

/// A request id chosen by the client. Zero means "no reply wanted".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RequestId(pub u64);

impl RequestId {
    /// Whether the client asked for a reply.
    pub fn wants_reply(self) -> bool {
        self.0 != 0
    }
}

/// A position in a room's total order: the n-th publication has offset n.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset after this one.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

/// The longest room name, in bytes of UTF-8.
pub const MAX_ROOM_NAME_BYTES: usize = 255;

/// A validated room name.
///
/// Holds a slice of the received message when it came off the wire, so
/// routing a publish never copies its room name. Allowed: 1 to 255 bytes of
/// UTF-8 with no whitespace, no control characters, and none of `*`, `?`, `>`
/// (kept free for subscription patterns).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoomName(Bytes);

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is {0} bytes, the limit is 255")]
    TooLong(usize),
    #[error("room name is not valid UTF-8")]
    NotUtf8,
    #[error("room name contains the forbidden character {0:?}")]
    ForbiddenChar(char),
}

impl RoomName {
    /// Validates `bytes` as a room name without copying them.
    pub fn parse(bytes: Bytes) -> Result<RoomName, RoomNameError> {
        if bytes.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if bytes.len() > MAX_ROOM_NAME_BYTES {
            return Err(RoomNameError::TooLong(bytes.len()));
        }
        if bytes.is_ascii() {
            // Fast path: the common case never decodes chars.
            if let Some(&b) = bytes.iter().find(|b| !is_allowed_ascii(**b)) {
                return Err(RoomNameError::ForbiddenChar(char::from(b)));
            }
        } else {
            let text = std::str::from_utf8(&bytes).map_err(|_| RoomNameError::NotUtf8)?;
            if let Some(c) = text.chars().find(|c| !is_allowed_char(*c)) {
                return Err(RoomNameError::ForbiddenChar(c));
            }
        }
        Ok(RoomName(bytes))
    }

    /// A room name from a string, validated (for clients and tests).
    pub fn new(name: &str) -> Result<RoomName, RoomNameError> {
        RoomName::parse(Bytes::copy_from_slice(name.as_bytes()))
    }

    /// The same name in an allocation of its own. A name decoded off the
    /// wire is a slice of the received message; a long-lived map key made
    /// from it would keep that whole buffer alive.
    pub fn detached(&self) -> RoomName {
        RoomName(Bytes::copy_from_slice(&self.0))
    }

    /// The name as UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        // Validated as UTF-8 in `parse`, the only constructor.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn is_allowed_ascii(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'*' | b'?' | b'>')
}

fn is_allowed_char(c: char) -> bool {
    if c.is_ascii() {
        is_allowed_ascii(c as u8)
    } else {
        !c.is_control() && !c.is_whitespace()
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded client envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    pub id: RequestId,
    pub op: ClientOp,
}

/// The operations a client can ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    Subscribe {
        room: RoomName,
        /// Resume after this position, from the room's history.
        recover: Option<StreamPosition>,
        /// Also receive join and leave events.
        join_leave: bool,
    },
    Unsubscribe {
        room: RoomName,
    },
    Publish {
        room: RoomName,
        data: Bytes,
        /// Retries with the same key are not published twice.
        idempotency_key: Option<IdempotencyKey>,
    },
    History {
        room: RoomName,
        query: HistoryQuery,
    },
    Presence {
        room: RoomName,
    },
    PresenceStats {
        room: RoomName,
    },
    Refresh {
        token: String,
    },
}

impl ClientOp {
    /// A plain subscribe: no recovery, no join and leave events.
    pub fn subscribe(room: RoomName) -> ClientOp {
        ClientOp::Subscribe {
            room,
            recover: None,
            join_leave: false,
        }
    }

    /// A publish without an idempotency key.
    pub fn publish(room: RoomName, data: Bytes) -> ClientOp {
        ClientOp::Publish {
            room,
            data,
            idempotency_key: None,
        }
    }
}

/// A room's incarnation: it changes whenever the room's history is lost (a
/// restart of the memory engine, or the room expiring while unused), so a
/// client can tell "nothing missed" from "everything I knew is gone".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Epoch(pub String);

impl Epoch {
    /// A fresh random epoch: 16 hex digits.
    pub fn random() -> Epoch {
        Epoch(format!("{:016x}", random_u64()))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 64 random bits from the standard library's randomly keyed hasher (no
/// extra dependency; the ids it makes need to be unpredictable across
/// restarts, not cryptographically strong).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Where a subscriber is in a room: the epoch and the last offset it saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPosition {
    pub epoch: Epoch,
    pub offset: Offset,
}

/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// A client-chosen key that makes a publish safe to retry.
///
/// Always UTF-8: both wire forms carry it as a string, so a key that could
/// not be sent (and would silently become "no key") cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Bytes);

/// Bytes that are not UTF-8 offered as an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key must be UTF-8 text")]
pub struct KeyNotUtf8;

impl IdempotencyKey {
    /// A key from text.
    pub fn new(key: &str) -> IdempotencyKey {
        IdempotencyKey(Bytes::copy_from_slice(key.as_bytes()))
    }

    /// A key from received bytes, without copying them.
    pub fn from_utf8(bytes: Bytes) -> Result<IdempotencyKey, KeyNotUtf8> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(IdempotencyKey(bytes)),
            Err(_) => Err(KeyNotUtf8),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_else(|_| unreachable!("checked when built"))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Which page of a room's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// Oldest first: offsets after `since`. Newest first: offsets before it
    /// (every offset when 0).
    pub since: Offset,
    /// Publications at most; 0 means the server's page size.
    pub limit: u32,
    /// Newest first.
    pub reverse: bool,
}

/// The numeric codes of error replies; docs/PROTOCOL.md lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The envelope decoded but set no operation this server knows.
    UnknownOperation,
    /// A field has a value the operation cannot accept (e.g. two operations set).
    InvalidField,
    /// The room name is empty, too long or has a forbidden character.
    InvalidRoom,
    /// The connection is already subscribed to `max_rooms_per_connection` rooms.
    TooManyRooms,
    /// Unsubscribe from a room the connection is not subscribed to.
    NotSubscribed,
    /// The node is shutting down and takes no new subscriptions.
    ShuttingDown,
    /// History, presence or join and leave events asked of a room whose
    /// configuration does not keep them (or a refresh where there is no
    /// authentication).
    NotEnabled,
    /// The connection's token does not allow this operation on this room.
    PermissionDenied,
    /// A refresh token that is invalid, expired, or for another user.
    InvalidToken,
    /// Over the connection's publish rate.
    RateLimited,
    /// The room store could not do it now (unreachable, or no answer in
    /// time). A publish answered this way was not acknowledged: retry it
    /// under the same idempotency key.
    Unavailable,
}

impl ErrorCode {
    const ALL: [ErrorCode; 11] = [
        ErrorCode::UnknownOperation,
        ErrorCode::InvalidField,
        ErrorCode::InvalidRoom,
        ErrorCode::TooManyRooms,
        ErrorCode::NotSubscribed,
        ErrorCode::ShuttingDown,
        ErrorCode::NotEnabled,
        ErrorCode::PermissionDenied,
        ErrorCode::InvalidToken,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
    ];

    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::UnknownOperation => 100,
            ErrorCode::InvalidField => 101,
            ErrorCode::InvalidRoom => 102,
            ErrorCode::TooManyRooms => 103,
            ErrorCode::NotSubscribed => 104,
            ErrorCode::ShuttingDown => 105,
            ErrorCode::NotEnabled => 106,
            ErrorCode::PermissionDenied => 107,
            ErrorCode::InvalidToken => 108,
            ErrorCode::RateLimited => 109,
            ErrorCode::Unavailable => 110,
        }
    }

    /// The code a number names, if any.
    pub fn from_code(code: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// The one answer to a request with a non-zero id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: RequestId,
    pub outcome: Outcome,
}

impl Outcome {
    /// A coded failure.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Outcome {
        Outcome::Error {
            code: code.code(),
            message: message.into(),
        }
    }
}

/// A success with its result, or a coded failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ack(Ack),
    Error { code: u32, message: String },
    History(HistoryPage),
    Presence(Vec<ClientInfo>),
    PresenceStats(PresenceCounts),
}

/// A plain success. Fields that do not apply to the operation are left at
/// their defaults (and left out on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    pub offset: Offset,
    /// Subscribe: the room's epoch.
    pub epoch: Epoch,
    /// Subscribe with recover: whether every missed publication follows.
    pub recovered: bool,
    /// Publish with an idempotency key: a retry of an earlier publication.
    pub duplicate: bool,
}

/// One stored publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub offset: Offset,
    pub data: Bytes,
}

/// A page of history, with the room's position when it was read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    pub position: StreamPosition,
    pub publications: Vec<Publication>,
}

/// A connection in a room's presence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// Unique per connection across the cluster.
    pub client: String,
    /// The authenticated user; empty while connections are anonymous.
    pub user: String,
    /// When it subscribed, in milliseconds since the Unix epoch.
    pub joined_at_ms: u64,
}

/// How many are in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceCounts {
    pub clients: u32,
    /// Distinct non-empty user ids.
    pub users: u32,
}

impl Reply {
    /// A success reply with just an offset.
    pub fn ack(id: RequestId, offset: Offset) -> Reply {
        Reply::with(
            id,
            Ack {
                offset,
                ..Ack::default()
            },
        )
    }

    /// A success reply.
    pub fn with(id: RequestId, ack: Ack) -> Reply {
        Reply {
            id,
            outcome: Outcome::Ack(ack),
        }
    }

    /// A failure reply.
    pub fn error(id: RequestId, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply {
            id,
            outcome: Outcome::error(code, message),
        }
    }
}

/// Join or leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    Join,
    Leave,
}

/// What a server sends: a reply, a delivered publication, or a presence event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    Reply(Reply),
    Message {
        room: String,
        offset: Offset,
        data: Bytes,
    },
    Presence {
        change: PresenceChange,
        room: String,
        info: ClientInfo,
    },
}

/// An envelope that does not decode under the schema: the connection is
/// closed with 1007 (invalid payload data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub struct MalformedEnvelope(pub String);

/// Why a client envelope was not turned into a request. Each variant maps to
/// exactly one answer ([`RequestError::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not an envelope at all: close 1007.
    #[error(transparent)]
    Malformed(#[from] MalformedEnvelope),
    /// A well-formed envelope with no known operation: error reply 100.
    #[error("unknown operation")]
    UnknownOperation { id: RequestId },
    /// A field value the operation cannot accept: error reply 101.
    #[error("invalid field: {reason}")]
    InvalidField { id: RequestId, reason: String },
    /// A room name outside the allowed set: error reply 102.
    #[error("invalid room: {reason}")]
    InvalidRoom {
        id: RequestId,
        reason: RoomNameError,
    },
}

impl RequestError {
    /// The error reply this error earns, or `None` when it closes the connection instead.
    pub fn reply(&self) -> Option<Reply> {
        let (id, code) = match self {
            RequestError::Malformed(_) => return None,
            RequestError::UnknownOperation { id } => (*id, ErrorCode::UnknownOperation),
            RequestError::InvalidField { id, .. } => (*id, ErrorCode::InvalidField),
            RequestError::InvalidRoom { id, .. } => (*id, ErrorCode::InvalidRoom),
        };
        Some(Reply::error(id, code, self.to_string()))
    }
}

/// One operation as a decoder found it, before its room name is checked.
enum RawOp {
    Subscribe {
        room: Bytes,
        recover: Option<StreamPosition>,
        join_leave: bool,
    },
    Unsubscribe(Bytes),
    Publish {
        room: Bytes,
        data: Bytes,
        key: Bytes,
    },
    History(Bytes, HistoryQuery),
    Presence(Bytes),
    PresenceStats(Bytes),
    Refresh(String),
}

/// Builds a request from what either decoder found: exactly one operation
/// must be present, with a valid room name.
fn assemble(id: RequestId, ops: Vec<RawOp>) -> Result<ClientRequest, RequestError> {
    if ops.len() > 1 {
        return Err(RequestError::InvalidField {
            id,
            reason: format!("{} operations set, exactly one is allowed", ops.len()),
        });
    }
    let room =
        |bytes| RoomName::parse(bytes).map_err(|reason| RequestError::InvalidRoom { id, reason });
    let Some(raw) = ops.into_iter().next() else {
        return Err(RequestError::UnknownOperation { id });
    };
    let op = match raw {
        RawOp::Subscribe {
            room: name,
            recover,
            join_leave,
        } => ClientOp::Subscribe {
            room: room(name)?,
            recover,
            join_leave,
        },
        RawOp::Unsubscribe(name) => ClientOp::Unsubscribe { room: room(name)? },
        RawOp::Publish {
            room: name,
            data,
            key,
        } => {
            if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(RequestError::InvalidField {
                    id,
                    reason: format!(
                        "idempotency_key is {} bytes, the limit is {MAX_IDEMPOTENCY_KEY_BYTES}",
                        key.len()
                    ),
                });
            }
            ClientOp::Publish {
                room: room(name)?,
                data,
                idempotency_key: match key.is_empty() {
                    true => None,
                    false => Some(IdempotencyKey::from_utf8(key).map_err(|error| {
                        RequestError::InvalidField {
                            id,
                            reason: error.to_string(),
                        }
                    })?),
                },
            }
        }
        RawOp::History(name, query) => ClientOp::History {
            room: room(name)?,
            query,
        },
        RawOp::Presence(name) => ClientOp::Presence { room: room(name)? },
        RawOp::PresenceStats(name) => ClientOp::PresenceStats { room: room(name)? },
        RawOp::Refresh(token) => ClientOp::Refresh { token },
    };
    Ok(ClientRequest { id, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both wire forms carry the key as a string: a key that is not UTF-8
    /// cannot be built, so no encoder can drop it on the way out.
    #[test]
    fn an_idempotency_key_survives_both_encoders_and_bytes_that_are_not_utf8_are_refused() {
        assert_eq!(
            IdempotencyKey::from_utf8(Bytes::from_static(b"\xff\xfe")),
            Err(KeyNotUtf8)
        );
        let key = IdempotencyKey::from_utf8(Bytes::from_static("späť-17".as_bytes())).unwrap();
        for codec in Codec::ALL {
            let request = ClientRequest {
                id: RequestId(3),
                op: ClientOp::Publish {
                    room: RoomName::new("orders").unwrap(),
                    data: Bytes::from_static(b"x"),
                    idempotency_key: Some(key.clone()),
                },
            };
            let wire = Bytes::from(codec.encode_request(&request));
            let decoded = codec.decode_request(&wire).unwrap();
            assert_eq!(decoded, request, "{codec}");
        }
    }
}
