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
    assemble, Ack, ClientInfo, ClientOp, ClientRequest, Epoch, HistoryPage, HistoryQuery,
    IdempotencyKey, MalformedEnvelope, Offset, Outcome, PresenceChange, PresenceCounts,
    Publication, RawOp, Reply, RequestError, RequestId, RoomName, ServerEvent, StreamPosition,
};

use crate::limits::MAX_ENVELOPE_DEPTH as MAX_DEPTH;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Deserialize, Serialize, Default)]
struct WireRequest<'a> {
    #[serde(default)]
    id: u64,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    subscribe: Option<WireSubscribe<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<WireRoom<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    publish: Option<WirePublish<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    history: Option<WireHistory<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    presence: Option<WireRoom<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    presence_stats: Option<WireRoom<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    refresh: Option<WireRefresh<'a>>,
}

#[derive(Deserialize, Serialize)]
struct WireRefresh<'a> {
    #[serde(borrow, default)]
    token: &'a str,
}

#[derive(Deserialize, Serialize)]
struct WireRoom<'a> {
    #[serde(borrow, default)]
    room: &'a str,
}

#[derive(Deserialize, Serialize)]
struct WireSubscribe<'a> {
    #[serde(borrow, default)]
    room: &'a str,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    recover: Option<WireRecover<'a>>,
    #[serde(default, skip_serializing_if = "is_false")]
    join_leave: bool,
}

#[derive(Deserialize, Serialize)]
struct WireRecover<'a> {
    #[serde(borrow, default)]
    epoch: &'a str,
    #[serde(default)]
    offset: u64,
}

#[derive(Deserialize, Serialize)]
struct WirePublish<'a> {
    #[serde(borrow, default)]
    room: &'a str,
    #[serde(borrow, default, with = "serde_bytes")]
    data: &'a [u8],
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    idempotency_key: &'a str,
}

#[derive(Deserialize, Serialize)]
struct WireHistory<'a> {
    #[serde(borrow, default)]
    room: &'a str,
    #[serde(default, skip_serializing_if = "is_zero")]
    since: u64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    limit: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    reverse: bool,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn malformed(err: impl std::fmt::Display) -> MalformedEnvelope {
    MalformedEnvelope(err.to_string())
}

/// Decodes a client envelope; room and payload are slices of `payload`.
pub fn decode_request(payload: &Bytes) -> Result<ClientRequest, RequestError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(&payload[..]);
    de.set_max_depth(MAX_DEPTH);
    let wire = WireRequest::deserialize(&mut de).map_err(malformed)?;
    let slice = |s: &str| payload.slice_ref(s.as_bytes());
    let mut ops = Vec::with_capacity(1);
    if let Some(s) = wire.subscribe {
        ops.push(RawOp::Subscribe {
            room: slice(s.room),
            recover: s.recover.map(|r| StreamPosition {
                epoch: Epoch(r.epoch.to_owned()),
                offset: Offset(r.offset),
            }),
            join_leave: s.join_leave,
        });
    }
    if let Some(u) = wire.unsubscribe {
        ops.push(RawOp::Unsubscribe(slice(u.room)));
    }
    if let Some(p) = wire.publish {
        ops.push(RawOp::Publish {
            room: slice(p.room),
            data: payload.slice_ref(p.data),
            key: slice(p.idempotency_key),
        });
    }
    if let Some(h) = wire.history {
        let query = HistoryQuery {
            since: Offset(h.since),
            limit: h.limit,
            reverse: h.reverse,
        };
        ops.push(RawOp::History(slice(h.room), query));
    }
    if let Some(p) = wire.presence {
        ops.push(RawOp::Presence(slice(p.room)));
    }
    if let Some(p) = wire.presence_stats {
        ops.push(RawOp::PresenceStats(slice(p.room)));
    }
    if let Some(r) = wire.refresh {
        ops.push(RawOp::Refresh(r.token.to_owned()));
    }
    assemble(RequestId(wire.id), ops)
}

/// Encodes a client envelope.
pub fn encode_request(request: &ClientRequest) -> Vec<u8> {
    let mut wire = WireRequest {
        id: request.id.0,
        ..WireRequest::default()
    };
    match &request.op {
        ClientOp::Subscribe {
            room,
            recover,
            join_leave,
        } => {
            wire.subscribe = Some(WireSubscribe {
                room: room.as_str(),
                recover: recover.as_ref().map(|r| WireRecover {
                    epoch: &r.epoch.0,
                    offset: r.offset.0,
                }),
                join_leave: *join_leave,
            })
        }
        ClientOp::Unsubscribe { room: r } => wire.unsubscribe = Some(wire_room(r)),
        ClientOp::Publish {
            room,
            data,
            idempotency_key,
        } => {
            wire.publish = Some(WirePublish {
                room: room.as_str(),
                data,
                idempotency_key: idempotency_key
                    .as_ref()
                    .map(IdempotencyKey::as_str)
                    .unwrap_or_default(),
            })
        }
        ClientOp::History { room, query } => {
            wire.history = Some(WireHistory {
                room: room.as_str(),
                since: query.since.0,
                limit: query.limit,
                reverse: query.reverse,
            })
        }
        ClientOp::Presence { room: r } => wire.presence = Some(wire_room(r)),
        ClientOp::PresenceStats { room: r } => wire.presence_stats = Some(wire_room(r)),
        ClientOp::Refresh { token } => wire.refresh = Some(WireRefresh { token }),
    }
    to_vec(&wire)
}

fn wire_room(room: &RoomName) -> WireRoom<'_> {
    WireRoom {
        room: room.as_str(),
    }
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
struct WireAck<'a> {
    #[serde(default)]
    offset: u64,
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    epoch: &'a str,
    #[serde(default, skip_serializing_if = "is_false")]
    recovered: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    duplicate: bool,
}

#[derive(Serialize, Deserialize)]
struct WireError<'a> {
    #[serde(default)]
    code: u32,
    #[serde(borrow, default)]
    message: &'a str,
}

#[derive(Serialize, Deserialize)]
struct WirePublication<'a> {
    #[serde(default)]
    offset: u64,
    #[serde(borrow, default, with = "serde_bytes")]
    data: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct WireHistoryPage<'a> {
    #[serde(borrow, default)]
    epoch: &'a str,
    #[serde(default)]
    offset: u64,
    #[serde(borrow, default, deserialize_with = "grown_as_read")]
    publications: Vec<WirePublication<'a>>,
}

/// A list read element by element, never sized from its length prefix:
/// serde's default reserves up to 1 MiB from a prefix the peer chose, before
/// a single element is read.
fn grown_as_read<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Elements<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Elements<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(element) = seq.next_element()? {
                out.push(element);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Elements(std::marker::PhantomData))
}

#[derive(Serialize, Deserialize, Default)]
struct WireClientInfo<'a> {
    #[serde(borrow, default)]
    client: &'a str,
    #[serde(borrow, default)]
    user: &'a str,
    #[serde(default)]
    joined_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct WirePresenceList<'a> {
    #[serde(borrow, default, deserialize_with = "grown_as_read")]
    clients: Vec<WireClientInfo<'a>>,
}

#[derive(Serialize, Deserialize)]
struct WireCounts {
    #[serde(default)]
    clients: u32,
    #[serde(default)]
    users: u32,
}

#[derive(Serialize, Deserialize)]
struct WireReply<'a> {
    #[serde(default)]
    id: u64,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    ack: Option<WireAck<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    error: Option<WireError<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    history: Option<WireHistoryPage<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    presence: Option<WirePresenceList<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presence_stats: Option<WireCounts>,
}

#[derive(Serialize, Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow, default)]
    room: &'a str,
    #[serde(borrow, default)]
    info: WireClientInfo<'a>,
}

#[derive(Serialize, Deserialize)]
struct WireServer<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    reply: Option<WireReply<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    message: Option<WireMessage<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    join: Option<WireEvent<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    leave: Option<WireEvent<'a>>,
}

#[derive(Serialize, Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow, default)]
    room: &'a str,
    #[serde(default)]
    offset: u64,
    #[serde(borrow, default, with = "serde_bytes")]
    data: &'a [u8],
}

fn wire_info(info: &ClientInfo) -> WireClientInfo<'_> {
    WireClientInfo {
        client: &info.client,
        user: &info.user,
        joined_at_ms: info.joined_at_ms,
    }
}

fn info_from(wire: &WireClientInfo<'_>) -> ClientInfo {
    ClientInfo {
        client: wire.client.to_owned(),
        user: wire.user.to_owned(),
        joined_at_ms: wire.joined_at_ms,
    }
}

/// Writes `{"reply": {"id": .., <outcome>: {..}}}`.
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    let mut wire = WireReply {
        id: reply.id.0,
        ack: None,
        error: None,
        history: None,
        presence: None,
        presence_stats: None,
    };
    match &reply.outcome {
        Outcome::Ack(ack) => {
            wire.ack = Some(WireAck {
                offset: ack.offset.0,
                epoch: &ack.epoch.0,
                recovered: ack.recovered,
                duplicate: ack.duplicate,
            })
        }
        Outcome::Error { code, message } => {
            wire.error = Some(WireError {
                code: *code,
                message,
            })
        }
        Outcome::History(page) => {
            wire.history = Some(WireHistoryPage {
                epoch: &page.position.epoch.0,
                offset: page.position.offset.0,
                publications: page
                    .publications
                    .iter()
                    .map(|p| WirePublication {
                        offset: p.offset.0,
                        data: &p.data,
                    })
                    .collect(),
            })
        }
        Outcome::Presence(clients) => {
            wire.presence = Some(WirePresenceList {
                clients: clients.iter().map(wire_info).collect(),
            })
        }
        Outcome::PresenceStats(counts) => {
            wire.presence_stats = Some(WireCounts {
                clients: counts.clients,
                users: counts.users,
            })
        }
    }
    write_into(
        &WireServer {
            reply: Some(wire),
            message: None,
            join: None,
            leave: None,
        },
        out,
    );
}

/// Writes `{"join": {"room": .., "info": {..}}}` or the same under `"leave"`.
pub fn encode_presence(
    change: PresenceChange,
    room: &RoomName,
    info: &ClientInfo,
    out: &mut Vec<u8>,
) {
    let event = WireEvent {
        room: room.as_str(),
        info: wire_info(info),
    };
    let (join, leave) = match change {
        PresenceChange::Join => (Some(event), None),
        PresenceChange::Leave => (None, Some(event)),
    };
    write_into(
        &WireServer {
            reply: None,
            message: None,
            join,
            leave,
        },
        out,
    );
}

fn decode_reply(reply: WireReply<'_>, payload: &Bytes) -> Result<Reply, MalformedEnvelope> {
    let outcome = if let Some(e) = reply.error {
        Outcome::Error {
            code: e.code,
            message: e.message.to_owned(),
        }
    } else if let Some(a) = reply.ack {
        Outcome::Ack(Ack {
            offset: Offset(a.offset),
            epoch: Epoch(a.epoch.to_owned()),
            recovered: a.recovered,
            duplicate: a.duplicate,
        })
    } else if let Some(h) = reply.history {
        Outcome::History(HistoryPage {
            position: StreamPosition {
                epoch: Epoch(h.epoch.to_owned()),
                offset: Offset(h.offset),
            },
            publications: h
                .publications
                .iter()
                .map(|p| Publication {
                    offset: Offset(p.offset),
                    data: payload.slice_ref(p.data),
                })
                .collect(),
        })
    } else if let Some(p) = reply.presence {
        Outcome::Presence(p.clients.iter().map(info_from).collect())
    } else if let Some(c) = reply.presence_stats {
        Outcome::PresenceStats(PresenceCounts {
            clients: c.clients,
            users: c.users,
        })
    } else {
        return Err(malformed("reply has no outcome"));
    };
    Ok(Reply {
        id: RequestId(reply.id),
        outcome,
    })
}

/// Decodes a server envelope (client side).
pub fn decode_server(payload: &Bytes) -> Result<ServerEvent, MalformedEnvelope> {
    let mut de = rmp_serde::Deserializer::from_read_ref(&payload[..]);
    de.set_max_depth(MAX_DEPTH);
    let wire = WireServer::deserialize(&mut de).map_err(malformed)?;
    let presence = |change, e: WireEvent<'_>| ServerEvent::Presence {
        change,
        room: e.room.to_owned(),
        info: info_from(&e.info),
    };
    match (wire.reply, wire.message, wire.join, wire.leave) {
        (Some(reply), None, None, None) => Ok(ServerEvent::Reply(decode_reply(reply, payload)?)),
        (None, Some(m), None, None) => Ok(ServerEvent::Message {
            room: m.room.to_owned(),
            offset: Offset(m.offset),
            data: payload.slice_ref(m.data),
        }),
        (None, None, Some(e), None) => Ok(presence(PresenceChange::Join, e)),
        (None, None, None, Some(e)) => Ok(presence(PresenceChange::Leave, e)),
        _ => Err(malformed(
            "expected exactly one of reply, message, join, leave",
        )),
    }
}
