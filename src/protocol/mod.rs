//! The wire protocol: envelope types shared by both codecs, room names, error
//! codes, and the codec dispatch.
//!
//! Decoding is zero-copy: a decoded request's payload (and, in MessagePack,
//! its room name) is a [`Bytes`] slice of the received WebSocket message, so
//! a publish crosses cores without its payload being copied. The only copy of a payload is into
//! the outgoing frame, once per publication and codec ([`frame`]).

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
    /// Every codec, in the order of [`Codec::index`].
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

    /// A dense index, so per-codec state can live in `[T; 2]` arrays.
    pub fn index(self) -> usize {
        match self {
            Codec::MsgPack => 0,
            Codec::Proto => 1,
        }
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
    Subscribe { room: RoomName },
    Unsubscribe { room: RoomName },
    Publish { room: RoomName, data: Bytes },
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
}

impl ErrorCode {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::UnknownOperation => 100,
            ErrorCode::InvalidField => 101,
            ErrorCode::InvalidRoom => 102,
            ErrorCode::TooManyRooms => 103,
            ErrorCode::NotSubscribed => 104,
            ErrorCode::ShuttingDown => 105,
        }
    }

    /// The code a number names, if any.
    pub fn from_code(code: u32) -> Option<ErrorCode> {
        [
            ErrorCode::UnknownOperation,
            ErrorCode::InvalidField,
            ErrorCode::InvalidRoom,
            ErrorCode::TooManyRooms,
            ErrorCode::NotSubscribed,
            ErrorCode::ShuttingDown,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

/// The one answer to a request with a non-zero id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: RequestId,
    pub outcome: Outcome,
}

/// Success with an offset, or a coded failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ack { offset: Offset },
    Error { code: u32, message: String },
}

impl Reply {
    /// A success reply.
    pub fn ack(id: RequestId, offset: Offset) -> Reply {
        Reply {
            id,
            outcome: Outcome::Ack { offset },
        }
    }

    /// A failure reply.
    pub fn error(id: RequestId, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply {
            id,
            outcome: Outcome::Error {
                code: code.code(),
                message: message.into(),
            },
        }
    }
}

/// What a server sends: a reply or a delivered publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    Reply(Reply),
    Message {
        room: String,
        offset: Offset,
        data: Bytes,
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

/// Builds a request from the decoded parts shared by both codecs: exactly
/// one operation must be present.
fn assemble(
    id: RequestId,
    subscribe: Option<Bytes>,
    unsubscribe: Option<Bytes>,
    publish: Option<(Bytes, Bytes)>,
) -> Result<ClientRequest, RequestError> {
    let set = usize::from(subscribe.is_some())
        + usize::from(unsubscribe.is_some())
        + usize::from(publish.is_some());
    if set > 1 {
        return Err(RequestError::InvalidField {
            id,
            reason: format!("{set} operations set, exactly one is allowed"),
        });
    }
    let room =
        |bytes| RoomName::parse(bytes).map_err(|reason| RequestError::InvalidRoom { id, reason });
    let op = if let Some(name) = subscribe {
        ClientOp::Subscribe { room: room(name)? }
    } else if let Some(name) = unsubscribe {
        ClientOp::Unsubscribe { room: room(name)? }
    } else if let Some((name, data)) = publish {
        ClientOp::Publish {
            room: room(name)?,
            data,
        }
    } else {
        return Err(RequestError::UnknownOperation { id });
    };
    Ok(ClientRequest { id, op })
}
