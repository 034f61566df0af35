//! The `roomcast.v1.proto` codec: the protobuf messages of
//! `proto/roomcast.proto`, compiled by `build.rs` with prost.
//!
//! `bytes` fields decode as [`Bytes`] slices of the received message (no
//! copy); `string` fields are copied by prost (room names, at most 255
//! bytes). The hot-path delivery envelope is written by hand with prost's
//! wire helpers and is byte-identical to prost's own encoding (checked by the
//! test vectors).

use bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message as _;

use super::{
    assemble, ClientOp, ClientRequest, MalformedEnvelope, Offset, Outcome, Reply, RequestError,
    RequestId, RoomName, ServerEvent,
};

/// The prost-generated types of `proto/roomcast.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/roomcast.v1.rs"));
}

fn malformed(err: impl std::fmt::Display) -> MalformedEnvelope {
    MalformedEnvelope(err.to_string())
}

/// Decodes a client envelope; the payload is a slice of `payload`.
pub fn decode_request(payload: &Bytes) -> Result<ClientRequest, RequestError> {
    use pb::client_message::Op;
    let wire = pb::ClientMessage::decode(payload.clone()).map_err(malformed)?;
    let id = RequestId(wire.id);
    let (mut subscribe, mut unsubscribe, mut publish) = (None, None, None);
    // A oneof holds at most one operation by construction (the last one on the wire wins).
    match wire.op {
        Some(Op::Subscribe(s)) => subscribe = Some(Bytes::from(s.room)),
        Some(Op::Unsubscribe(u)) => unsubscribe = Some(Bytes::from(u.room)),
        Some(Op::Publish(p)) => publish = Some((Bytes::from(p.room), p.data)),
        None => {}
    }
    assemble(id, subscribe, unsubscribe, publish)
}

/// Encodes a client envelope.
pub fn encode_request(request: &ClientRequest) -> Vec<u8> {
    use pb::client_message::Op;
    let op = match &request.op {
        ClientOp::Subscribe { room } => Op::Subscribe(pb::Subscribe {
            room: room.as_str().to_owned(),
        }),
        ClientOp::Unsubscribe { room } => Op::Unsubscribe(pb::Unsubscribe {
            room: room.as_str().to_owned(),
        }),
        ClientOp::Publish { room, data } => Op::Publish(pb::Publish {
            room: room.as_str().to_owned(),
            data: data.clone(),
        }),
    };
    pb::ClientMessage {
        id: request.id.0,
        op: Some(op),
    }
    .encode_to_vec()
}

/// `ServerMessage.message` is field 2.
const SERVER_MESSAGE_FIELD: u32 = 2;

/// Writes `ServerMessage { message: Message { room, offset, data } }`.
pub fn encode_message(room: &RoomName, offset: Offset, data: &[u8], out: &mut Vec<u8>) {
    let room = room.as_bytes();
    let mut inner = 1 + encoded_len_varint(room.len() as u64) + room.len();
    if offset.0 != 0 {
        inner += 1 + encoded_len_varint(offset.0);
    }
    if !data.is_empty() {
        inner += 1 + encoded_len_varint(data.len() as u64) + data.len();
    }
    out.reserve(1 + encoded_len_varint(inner as u64) + inner);
    encode_key(SERVER_MESSAGE_FIELD, WireType::LengthDelimited, out);
    encode_varint(inner as u64, out);
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(room.len() as u64, out);
    out.extend_from_slice(room);
    if offset.0 != 0 {
        encode_key(2, WireType::Varint, out);
        encode_varint(offset.0, out);
    }
    if !data.is_empty() {
        encode_key(3, WireType::LengthDelimited, out);
        encode_varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }
}

/// Writes `ServerMessage { reply: Reply { .. } }`.
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    use pb::reply::Outcome as Wire;
    let outcome = match &reply.outcome {
        Outcome::Ack { offset } => Wire::Ack(pb::Ack { offset: offset.0 }),
        Outcome::Error { code, message } => Wire::Error(pb::Error {
            code: *code,
            message: message.clone(),
        }),
    };
    let message = pb::ServerMessage {
        kind: Some(pb::server_message::Kind::Reply(pb::Reply {
            id: reply.id.0,
            outcome: Some(outcome),
        })),
    };
    // Encoding into a Vec grows it as needed, so it cannot fail.
    let _ = message.encode(out);
}

/// Decodes a server envelope (client side).
pub fn decode_server(payload: &Bytes) -> Result<ServerEvent, MalformedEnvelope> {
    use pb::reply::Outcome as Wire;
    use pb::server_message::Kind;
    let wire = pb::ServerMessage::decode(payload.clone()).map_err(malformed)?;
    match wire.kind {
        Some(Kind::Reply(reply)) => {
            let outcome = match reply.outcome {
                Some(Wire::Ack(a)) => Outcome::Ack {
                    offset: Offset(a.offset),
                },
                Some(Wire::Error(e)) => Outcome::Error {
                    code: e.code,
                    message: e.message,
                },
                None => return Err(malformed("reply has neither ack nor error")),
            };
            Ok(ServerEvent::Reply(Reply {
                id: RequestId(reply.id),
                outcome,
            }))
        }
        Some(Kind::Message(m)) => Ok(ServerEvent::Message {
            room: m.room,
            offset: Offset(m.offset),
            data: m.data,
        }),
        None => Err(malformed("expected one of reply, message")),
    }
}
