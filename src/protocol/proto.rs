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
    assemble, Ack, ClientInfo, ClientOp, ClientRequest, Epoch, HistoryPage, HistoryQuery,
    MalformedEnvelope, Offset, Outcome, PresenceChange, PresenceCounts, Publication, RawOp, Reply,
    RequestError, RequestId, RoomName, ServerEvent, StreamPosition,
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
    // A oneof holds at most one operation by construction (the last one on the wire wins).
    let op = match wire.op {
        Some(Op::Subscribe(s)) => Some(RawOp::Subscribe {
            room: Bytes::from(s.room),
            recover: s.recover.map(|r| StreamPosition {
                epoch: Epoch(r.epoch),
                offset: Offset(r.offset),
            }),
            join_leave: s.join_leave,
        }),
        Some(Op::Unsubscribe(u)) => Some(RawOp::Unsubscribe(Bytes::from(u.room))),
        Some(Op::Publish(p)) => Some(RawOp::Publish {
            room: Bytes::from(p.room),
            data: p.data,
            key: Bytes::from(p.idempotency_key),
        }),
        Some(Op::History(h)) => Some(RawOp::History(
            Bytes::from(h.room),
            HistoryQuery {
                since: Offset(h.since),
                limit: h.limit,
                reverse: h.reverse,
            },
        )),
        Some(Op::Presence(p)) => Some(RawOp::Presence(Bytes::from(p.room))),
        Some(Op::PresenceStats(p)) => Some(RawOp::PresenceStats(Bytes::from(p.room))),
        Some(Op::Refresh(r)) => Some(RawOp::Refresh(r.token)),
        None => None,
    };
    assemble(id, op.into_iter().collect())
}

/// Encodes a client envelope.
pub fn encode_request(request: &ClientRequest) -> Vec<u8> {
    use pb::client_message::Op;
    let name = |room: &RoomName| room.as_str().to_owned();
    let op = match &request.op {
        ClientOp::Subscribe {
            room,
            recover,
            join_leave,
        } => Op::Subscribe(pb::Subscribe {
            room: name(room),
            recover: recover.as_ref().map(|r| pb::Recover {
                epoch: r.epoch.0.clone(),
                offset: r.offset.0,
            }),
            join_leave: *join_leave,
        }),
        ClientOp::Unsubscribe { room } => Op::Unsubscribe(pb::Unsubscribe { room: name(room) }),
        ClientOp::Publish {
            room,
            data,
            idempotency_key,
        } => Op::Publish(pb::Publish {
            room: name(room),
            data: data.clone(),
            idempotency_key: idempotency_key
                .as_ref()
                .map(|k| k.as_str().to_owned())
                .unwrap_or_default(),
        }),
        ClientOp::History { room, query } => Op::History(pb::History {
            room: name(room),
            since: query.since.0,
            limit: query.limit,
            reverse: query.reverse,
        }),
        ClientOp::Presence { room } => Op::Presence(pb::Presence { room: name(room) }),
        ClientOp::PresenceStats { room } => {
            Op::PresenceStats(pb::PresenceStats { room: name(room) })
        }
        ClientOp::Refresh { token } => Op::Refresh(pb::Refresh {
            token: token.clone(),
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

fn wire_info(info: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        client: info.client.clone(),
        user: info.user.clone(),
        joined_at_ms: info.joined_at_ms,
    }
}

fn info_from(wire: pb::ClientInfo) -> ClientInfo {
    ClientInfo {
        client: wire.client,
        user: wire.user,
        joined_at_ms: wire.joined_at_ms,
    }
}

/// Writes `ServerMessage { reply: Reply { .. } }`.
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    use pb::reply::Outcome as Wire;
    let outcome = match &reply.outcome {
        Outcome::Ack(ack) => Wire::Ack(pb::Ack {
            offset: ack.offset.0,
            epoch: ack.epoch.0.clone(),
            recovered: ack.recovered,
            duplicate: ack.duplicate,
        }),
        Outcome::Error { code, message } => Wire::Error(pb::Error {
            code: *code,
            message: message.clone(),
        }),
        Outcome::History(page) => Wire::History(pb::HistoryPage {
            epoch: page.position.epoch.0.clone(),
            offset: page.position.offset.0,
            publications: page
                .publications
                .iter()
                .map(|p| pb::Publication {
                    offset: p.offset.0,
                    data: p.data.clone(),
                })
                .collect(),
        }),
        Outcome::Presence(clients) => Wire::Presence(pb::PresenceList {
            clients: clients.iter().map(wire_info).collect(),
        }),
        Outcome::PresenceStats(counts) => Wire::PresenceStats(pb::PresenceCounts {
            clients: counts.clients,
            users: counts.users,
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

/// Writes `ServerMessage { join | leave: { room, info } }`.
pub fn encode_presence(
    change: PresenceChange,
    room: &RoomName,
    info: &ClientInfo,
    out: &mut Vec<u8>,
) {
    use pb::server_message::Kind;
    let room = room.as_str().to_owned();
    let info = Some(wire_info(info));
    let kind = match change {
        PresenceChange::Join => Kind::Join(pb::Join { room, info }),
        PresenceChange::Leave => Kind::Leave(pb::Leave { room, info }),
    };
    let _ = pb::ServerMessage { kind: Some(kind) }.encode(out);
}

/// Decodes a server envelope (client side).
pub fn decode_server(payload: &Bytes) -> Result<ServerEvent, MalformedEnvelope> {
    use pb::reply::Outcome as Wire;
    use pb::server_message::Kind;
    let wire = pb::ServerMessage::decode(payload.clone()).map_err(malformed)?;
    match wire.kind {
        Some(Kind::Reply(reply)) => {
            let outcome = match reply.outcome {
                Some(Wire::Ack(a)) => Outcome::Ack(Ack {
                    offset: Offset(a.offset),
                    epoch: Epoch(a.epoch),
                    recovered: a.recovered,
                    duplicate: a.duplicate,
                }),
                Some(Wire::Error(e)) => Outcome::Error {
                    code: e.code,
                    message: e.message,
                },
                Some(Wire::History(h)) => Outcome::History(HistoryPage {
                    position: StreamPosition {
                        epoch: Epoch(h.epoch),
                        offset: Offset(h.offset),
                    },
                    publications: h
                        .publications
                        .into_iter()
                        .map(|p| Publication {
                            offset: Offset(p.offset),
                            data: p.data,
                        })
                        .collect(),
                }),
                Some(Wire::Presence(p)) => {
                    Outcome::Presence(p.clients.into_iter().map(info_from).collect())
                }
                Some(Wire::PresenceStats(c)) => Outcome::PresenceStats(PresenceCounts {
                    clients: c.clients,
                    users: c.users,
                }),
                None => return Err(malformed("reply has no outcome")),
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
        Some(Kind::Join(e)) => Ok(ServerEvent::Presence {
            change: PresenceChange::Join,
            room: e.room,
            info: e.info.map(info_from).unwrap_or_default(),
        }),
        Some(Kind::Leave(e)) => Ok(ServerEvent::Presence {
            change: PresenceChange::Leave,
            room: e.room,
            info: e.info.map(info_from).unwrap_or_default(),
        }),
        None => Err(malformed("expected one of reply, message, join, leave")),
    }
}
