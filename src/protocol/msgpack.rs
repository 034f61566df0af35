//! The `roomcast.v1.msgpack` codec: each envelope is a MessagePack map keyed
//! by the field names of `proto/roomcast.proto`.
//!
//! Requests decode with `rmp-serde` into borrowed `&str`/`&[u8]` views of the
//! received message, which become [`Bytes`] slices of it: no copy. Unknown
//! keys are ignored (forward compatibility); a known key with a value of the
//! wrong type makes the envelope malformed. The hot-path delivery envelope is
//! written with `rmp` directly; it is byte-identical to what `rmp-serde`
//! writes for the same map (checked by the test vectors).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    assemble, ClientOp, ClientRequest, MalformedEnvelope, Offset, Outcome, Reply, RequestError,
    RequestId, RoomName, ServerEvent,
};

/// Nesting deeper than this is refused as malformed, before it costs stack.
const MAX_DEPTH: usize = 16;

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(default)]
    id: u64,
    #[serde(borrow, default)]
    subscribe: Option<WireRoom<'a>>,
    #[serde(borrow, default)]
    unsubscribe: Option<WireRoom<'a>>,
    #[serde(borrow, default)]
    publish: Option<WirePublish<'a>>,
}

#[derive(Deserialize, Serialize)]
struct WireRoom<'a> {
    #[serde(borrow, default)]
    room: &'a str,
}

#[derive(Deserialize, Serialize)]
struct WirePublish<'a> {
    #[serde(borrow, default)]
    room: &'a str,
    #[serde(borrow, default, with = "serde_bytes")]
    data: &'a [u8],
}

fn malformed(err: impl std::fmt::Display) -> MalformedEnvelope {
    MalformedEnvelope(err.to_string())
}

/// Decodes a client envelope; room and payload are slices of `payload`.
pub fn decode_request(payload: &Bytes) -> Result<ClientRequest, RequestError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(&payload[..]);
    de.set_max_depth(MAX_DEPTH);
    let wire = WireRequest::deserialize(&mut de).map_err(malformed)?;
    let slice = |s: &[u8]| payload.slice_ref(s);
    assemble(
        RequestId(wire.id),
        wire.subscribe.map(|s| slice(s.room.as_bytes())),
        wire.unsubscribe.map(|s| slice(s.room.as_bytes())),
        wire.publish
            .map(|p| (slice(p.room.as_bytes()), slice(p.data))),
    )
}

#[derive(Serialize)]
struct WireRequestOut<'a> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe: Option<WireRoom<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<WireRoom<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<WirePublish<'a>>,
}

/// Encodes a client envelope.
pub fn encode_request(request: &ClientRequest) -> Vec<u8> {
    let mut wire = WireRequestOut {
        id: request.id.0,
        subscribe: None,
        unsubscribe: None,
        publish: None,
    };
    match &request.op {
        ClientOp::Subscribe { room } => {
            wire.subscribe = Some(WireRoom {
                room: room.as_str(),
            })
        }
        ClientOp::Unsubscribe { room } => {
            wire.unsubscribe = Some(WireRoom {
                room: room.as_str(),
            })
        }
        ClientOp::Publish { room, data } => {
            wire.publish = Some(WirePublish {
                room: room.as_str(),
                data,
            })
        }
    }
    to_vec(&wire)
}

fn to_vec(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    write_into(value, &mut out);
    out
}

fn write_into(value: &impl Serialize, out: &mut Vec<u8>) {
    // Serializing our own plain structs into a Vec cannot fail.
    let _ = value.serialize(&mut rmp_serde::Serializer::new(out).with_struct_map());
}

/// Writes `{"message": {"room": .., "offset": .., "data": ..}}`.
pub fn encode_message(room: &RoomName, offset: Offset, data: &[u8], out: &mut Vec<u8>) {
    use rmp::encode::{write_bin, write_map_len, write_str, write_uint};
    // Writes into a Vec are infallible; the results carry no information.
    let _ = write_map_len(out, 1);
    let _ = write_str(out, "message");
    let _ = write_map_len(out, 3);
    let _ = write_str(out, "room");
    let _ = write_str(out, room.as_str());
    let _ = write_str(out, "offset");
    let _ = write_uint(out, offset.0);
    let _ = write_str(out, "data");
    let _ = write_bin(out, data);
}

#[derive(Serialize, Deserialize)]
struct WireAck {
    #[serde(default)]
    offset: u64,
}

#[derive(Serialize, Deserialize)]
struct WireError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    message: String,
}

#[derive(Serialize, Deserialize)]
struct WireReply {
    #[serde(default)]
    id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack: Option<WireAck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireError>,
}

#[derive(Serialize)]
struct WireReplyEnvelope {
    reply: WireReply,
}

/// Writes `{"reply": {"id": .., "ack": {"offset": ..}}}` or `{"reply": {"id": .., "error": {..}}}`.
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    let mut wire = WireReply {
        id: reply.id.0,
        ack: None,
        error: None,
    };
    match &reply.outcome {
        Outcome::Ack { offset } => wire.ack = Some(WireAck { offset: offset.0 }),
        Outcome::Error { code, message } => {
            wire.error = Some(WireError {
                code: *code,
                message: message.clone(),
            })
        }
    }
    write_into(&WireReplyEnvelope { reply: wire }, out);
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow, default)]
    room: &'a str,
    #[serde(default)]
    offset: u64,
    #[serde(borrow, default, with = "serde_bytes")]
    data: &'a [u8],
}

#[derive(Deserialize)]
struct WireServer<'a> {
    #[serde(default)]
    reply: Option<WireReply>,
    #[serde(borrow, default)]
    message: Option<WireMessage<'a>>,
}

/// Decodes a server envelope (client side).
pub fn decode_server(payload: &Bytes) -> Result<ServerEvent, MalformedEnvelope> {
    let mut de = rmp_serde::Deserializer::from_read_ref(&payload[..]);
    de.set_max_depth(MAX_DEPTH);
    let wire = WireServer::deserialize(&mut de).map_err(malformed)?;
    match (wire.reply, wire.message) {
        (Some(reply), None) => {
            let outcome = match (reply.ack, reply.error) {
                (_, Some(e)) => Outcome::Error {
                    code: e.code,
                    message: e.message,
                },
                (Some(a), None) => Outcome::Ack {
                    offset: Offset(a.offset),
                },
                (None, None) => return Err(malformed("reply has neither ack nor error")),
            };
            Ok(ServerEvent::Reply(Reply {
                id: RequestId(reply.id),
                outcome,
            }))
        }
        (None, Some(m)) => Ok(ServerEvent::Message {
            room: m.room.to_owned(),
            offset: Offset(m.offset),
            data: payload.slice_ref(m.data),
        }),
        _ => Err(malformed("expected exactly one of reply, message")),
    }
}
