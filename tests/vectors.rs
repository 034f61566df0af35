//! Test vectors of the wire protocol: every operation as bytes, in both
//! codecs, checked in both directions (our encoder writes exactly these
//! bytes; our decoder reads them back into the expected value), and checked
//! once more with the libraries alone (rmp-serde and prost read the bytes as
//! the value the schema says, and write that value as the same bytes).
//!
//! docs/PROTOCOL.md shows the same bytes, and a test below checks that it
//! still does, so a client author in any language can test an encoder and a
//! decoder against them. The hex lives only in the `Vector` consts.

mod common;

use bytes::Bytes;
use prost::Message as _;
use serde::Serialize;
use serde_json::json;

use roomcast::protocol::proto::pb;
use roomcast::protocol::{
    frame, Ack, ClientInfo, ClientOp, ClientRequest, Codec, Epoch, ErrorCode, HistoryPage,
    HistoryQuery, IdempotencyKey, Offset, Outcome, PresenceChange, PresenceCounts, Publication,
    Reply, RequestError, RequestId, RoomName, RoomNameError, ServerEvent, StreamPosition,
};

use common::msgpack::{bin, map, text, uint, Mp};
use common::ws::unmasked;

/// One envelope in both codecs, as hex bytes separated by spaces.
struct Vector {
    msgpack: &'static str,
    proto: &'static str,
}

// Client -> server.

/// `subscribe {id: 1, room: "chat.lobby"}`
const SUBSCRIBE: Vector = Vector {
    msgpack: "82 a2 69 64 01 a9 73 75 62 73 63 72 69 62 65 81 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79",
    proto: "08 01 12 0c 0a 0a 63 68 61 74 2e 6c 6f 62 62 79",
};

/// `unsubscribe {id: 2, room: "chat.lobby"}`
const UNSUBSCRIBE: Vector = Vector {
    msgpack: "82 a2 69 64 02 ab 75 6e 73 75 62 73 63 72 69 62 65 81 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79",
    proto: "08 02 1a 0c 0a 0a 63 68 61 74 2e 6c 6f 62 62 79",
};

/// `publish {id: 3, room: "chat.lobby", data: 68 69}`: the reply carries the offset.
const PUBLISH: Vector = Vector {
    msgpack: "82 a2 69 64 03 a7 70 75 62 6c 69 73 68 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 64 61 74 61 c4 02 68 69",
    proto: "08 03 22 10 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 02 68 69",
};

/// `publish {id: 0, room: "chat.lobby", data: 68 69}`: fire-and-forget, no reply.
/// Protobuf leaves a zero id out; MessagePack writes it.
const PUBLISH_NO_REPLY: Vector = Vector {
    msgpack: "82 a2 69 64 00 a7 70 75 62 6c 69 73 68 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 64 61 74 61 c4 02 68 69",
    proto: "22 10 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 02 68 69",
};

/// `subscribe {id: 10, room: "chat.lobby", recover: {epoch: "9f3c2a1b4d5e6f70", offset: 40}}`:
/// resuming after offset 40, the last message seen before a reconnect.
const SUBSCRIBE_RECOVER: Vector = Vector {
    msgpack: "82 a2 69 64 0a a9 73 75 62 73 63 72 69 62 65 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a7 72 65 63 6f 76 65 72 82 a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 a6 6f 66 66 73 65 74 28",
    proto: "08 0a 12 22 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 14 0a 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 10 28",
};

/// `publish {id: 11, room: "chat.lobby", data: 68 69, idempotency_key: "order-17"}`:
/// safe to retry.
const PUBLISH_IDEMPOTENT: Vector = Vector {
    msgpack: "82 a2 69 64 0b a7 70 75 62 6c 69 73 68 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 64 61 74 61 c4 02 68 69 af 69 64 65 6d 70 6f 74 65 6e 63 79 5f 6b 65 79 a8 6f 72 64 65 72 2d 31 37",
    proto: "08 0b 22 1a 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 02 68 69 1a 08 6f 72 64 65 72 2d 31 37",
};

/// `history {id: 12, room: "chat.lobby", since: 40, limit: 2}`: oldest first,
/// the two publications after offset 40.
const HISTORY: Vector = Vector {
    msgpack: "82 a2 69 64 0c a7 68 69 73 74 6f 72 79 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a5 73 69 6e 63 65 28 a5 6c 69 6d 69 74 02",
    proto: "08 0c 2a 10 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 10 28 18 02",
};

/// `presence {id: 13, room: "chat.lobby"}`: who is in the room.
const PRESENCE: Vector = Vector {
    msgpack: "82 a2 69 64 0d a8 70 72 65 73 65 6e 63 65 81 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79",
    proto: "08 0d 32 0c 0a 0a 63 68 61 74 2e 6c 6f 62 62 79",
};

/// `presence_stats {id: 14, room: "chat.lobby"}`: how many are in the room.
const PRESENCE_STATS: Vector = Vector {
    msgpack: "82 a2 69 64 0e ae 70 72 65 73 65 6e 63 65 5f 73 74 61 74 73 81 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79",
    proto: "08 0e 3a 0c 0a 0a 63 68 61 74 2e 6c 6f 62 62 79",
};

/// `refresh {id: 8, token: "t.o.k"}`: a fresh token for the same user, before
/// the connection's token expires. (A real token is a whole JWT.)
const REFRESH: Vector = Vector {
    msgpack: "82 a2 69 64 08 a7 72 65 66 72 65 73 68 81 a5 74 6f 6b 65 6e a5 74 2e 6f 2e 6b",
    proto: "08 08 42 07 0a 05 74 2e 6f 2e 6b",
};

// Server -> client.

/// `reply {id: 1, ack {offset: 41, epoch: "9f3c2a1b4d5e6f70"}}`: the answer to
/// SUBSCRIBE when the room is at offset 41 of that epoch.
const ACK_SUBSCRIBE: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 01 a3 61 63 6b 82 a6 6f 66 66 73 65 74 29 a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30",
    proto: "0a 18 08 01 12 14 08 29 12 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30",
};

/// `reply {id: 3, ack {offset: 42}}`: the answer to PUBLISH, whose publication
/// was given offset 42. A publish ack carries no epoch.
const ACK_PUBLISH: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 03 a3 61 63 6b 81 a6 6f 66 66 73 65 74 2a",
    proto: "0a 06 08 03 12 02 08 2a",
};

/// `reply {id: 2, ack {offset: 0}}`: the answer to UNSUBSCRIBE. In protobuf the
/// ack is an empty message, present all the same: its presence means success.
const ACK_UNSUBSCRIBE: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 02 a3 61 63 6b 81 a6 6f 66 66 73 65 74 00",
    proto: "0a 04 08 02 12 00",
};

/// `reply {id: 9, error {code: 102, message: "invalid room: room name is empty"}}`:
/// the answer to a subscribe with id 9 and an empty room name.
const ERROR_INVALID_ROOM: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 09 a5 65 72 72 6f 72 82 a4 63 6f 64 65 66 a7 6d 65 73 73 61 67 65 d9 20 69 6e 76 61 6c 69 64 20 72 6f 6f 6d 3a 20 72 6f 6f 6d 20 6e 61 6d 65 20 69 73 20 65 6d 70 74 79",
    proto: "0a 28 08 09 1a 24 08 66 12 20 69 6e 76 61 6c 69 64 20 72 6f 6f 6d 3a 20 72 6f 6f 6d 20 6e 61 6d 65 20 69 73 20 65 6d 70 74 79",
};

/// `message {room: "chat.lobby", offset: 42, data: 68 69}`: a delivered publication.
const MESSAGE: Vector = Vector {
    msgpack: "81 a7 6d 65 73 73 61 67 65 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a6 6f 66 66 73 65 74 2a a4 64 61 74 61 c4 02 68 69",
    proto: "12 12 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 10 2a 1a 02 68 69",
};

/// MESSAGE as it arrives: one unmasked final binary frame (`82`, then the length).
const MESSAGE_FRAME: Vector = Vector {
    msgpack: "82 2b 81 a7 6d 65 73 73 61 67 65 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a6 6f 66 66 73 65 74 2a a4 64 61 74 61 c4 02 68 69",
    proto: "82 14 12 12 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 10 2a 1a 02 68 69",
};

/// `reply {id: 10, ack {offset: 42, epoch: "9f3c2a1b4d5e6f70", recovered: true}}`:
/// the answer to SUBSCRIBE_RECOVER; offsets 41 and 42 follow, then live ones.
const ACK_RECOVERED: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 0a a3 61 63 6b 83 a6 6f 66 66 73 65 74 2a a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 a9 72 65 63 6f 76 65 72 65 64 c3",
    proto: "0a 1a 08 0a 12 16 08 2a 12 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 18 01",
};

/// `reply {id: 11, ack {offset: 42, duplicate: true}}`: the answer to a retry of
/// PUBLISH_IDEMPOTENT whose first attempt was given offset 42.
const ACK_DUPLICATE: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 0b a3 61 63 6b 82 a6 6f 66 66 73 65 74 2a a9 64 75 70 6c 69 63 61 74 65 c3",
    proto: "0a 08 08 0b 12 04 08 2a 20 01",
};

/// `reply {id: 12, history {epoch: "9f3c2a1b4d5e6f70", offset: 42,
/// publications: [{offset: 41, data: 79 6f}, {offset: 42, data: 68 69}]}}`:
/// the answer to HISTORY.
const HISTORY_PAGE: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 0c a7 68 69 73 74 6f 72 79 83 a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 a6 6f 66 66 73 65 74 2a ac 70 75 62 6c 69 63 61 74 69 6f 6e 73 92 82 a6 6f 66 66 73 65 74 29 a4 64 61 74 61 c4 02 79 6f 82 a6 6f 66 66 73 65 74 2a a4 64 61 74 61 c4 02 68 69",
    proto: "0a 28 08 0c 22 24 0a 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 10 2a 1a 06 08 29 12 02 79 6f 1a 06 08 2a 12 02 68 69",
};

/// `reply {id: 13, presence {clients: [{client: "5e1d09a2-1-7", user: "",
/// joined_at_ms: 1767225600000}]}}`: the answer to PRESENCE.
const PRESENCE_LIST: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 0d a8 70 72 65 73 65 6e 63 65 81 a7 63 6c 69 65 6e 74 73 91 83 a6 63 6c 69 65 6e 74 ac 35 65 31 64 30 39 61 32 2d 31 2d 37 a4 75 73 65 72 a0 ac 6a 6f 69 6e 65 64 5f 61 74 5f 6d 73 cf 00 00 01 9b 76 da a8 00",
    proto: "0a 1b 08 0d 2a 17 0a 15 0a 0c 35 65 31 64 30 39 61 32 2d 31 2d 37 18 80 d0 ea b6 b7 33",
};

/// `reply {id: 14, presence_stats {clients: 1, users: 0}}`: the answer to PRESENCE_STATS.
const PRESENCE_COUNTS: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 0e ae 70 72 65 73 65 6e 63 65 5f 73 74 61 74 73 82 a7 63 6c 69 65 6e 74 73 01 a5 75 73 65 72 73 00",
    proto: "0a 06 08 0e 32 02 08 01",
};

/// `join {room: "chat.lobby", info: {client: "5e1d09a2-1-7", user: "",
/// joined_at_ms: 1767225600000}}`: sent to subscribers that asked for join_leave.
const JOIN: Vector = Vector {
    msgpack: "81 a4 6a 6f 69 6e 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 69 6e 66 6f 83 a6 63 6c 69 65 6e 74 ac 35 65 31 64 30 39 61 32 2d 31 2d 37 a4 75 73 65 72 a0 ac 6a 6f 69 6e 65 64 5f 61 74 5f 6d 73 cf 00 00 01 9b 76 da a8 00",
    proto: "1a 23 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 15 0a 0c 35 65 31 64 30 39 61 32 2d 31 2d 37 18 80 d0 ea b6 b7 33",
};

/// `reply {id: 8, ack {offset: 0}}`: the answer to REFRESH when the server
/// took the new token.
const ACK_REFRESH: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 08 a3 61 63 6b 81 a6 6f 66 66 73 65 74 00",
    proto: "0a 04 08 08 12 00",
};

/// `{id: 5, frobnicate: {}}`: a well-formed request with no operation this server knows.
const UNKNOWN_OPERATION: Vector = Vector {
    msgpack: "82 a2 69 64 05 aa 66 72 6f 62 6e 69 63 61 74 65 80",
    proto: "08 05 7a 00",
};

const ALL_VECTORS: [(&str, &Vector); 24] = [
    ("SUBSCRIBE", &SUBSCRIBE),
    ("UNSUBSCRIBE", &UNSUBSCRIBE),
    ("PUBLISH", &PUBLISH),
    ("PUBLISH_NO_REPLY", &PUBLISH_NO_REPLY),
    ("SUBSCRIBE_RECOVER", &SUBSCRIBE_RECOVER),
    ("PUBLISH_IDEMPOTENT", &PUBLISH_IDEMPOTENT),
    ("HISTORY", &HISTORY),
    ("PRESENCE", &PRESENCE),
    ("PRESENCE_STATS", &PRESENCE_STATS),
    ("REFRESH", &REFRESH),
    ("ACK_SUBSCRIBE", &ACK_SUBSCRIBE),
    ("ACK_PUBLISH", &ACK_PUBLISH),
    ("ACK_UNSUBSCRIBE", &ACK_UNSUBSCRIBE),
    ("ERROR_INVALID_ROOM", &ERROR_INVALID_ROOM),
    ("MESSAGE", &MESSAGE),
    ("MESSAGE_FRAME", &MESSAGE_FRAME),
    ("ACK_RECOVERED", &ACK_RECOVERED),
    ("ACK_DUPLICATE", &ACK_DUPLICATE),
    ("HISTORY_PAGE", &HISTORY_PAGE),
    ("PRESENCE_LIST", &PRESENCE_LIST),
    ("PRESENCE_COUNTS", &PRESENCE_COUNTS),
    ("JOIN", &JOIN),
    ("ACK_REFRESH", &ACK_REFRESH),
    ("UNKNOWN_OPERATION", &UNKNOWN_OPERATION),
];

const PROTOCOL_MD: &str = include_str!("../docs/PROTOCOL.md");

impl Vector {
    fn hex(&self, codec: Codec) -> &'static str {
        match codec {
            Codec::MsgPack => self.msgpack,
            Codec::Proto => self.proto,
        }
    }

    fn bytes(&self, codec: Codec) -> Bytes {
        Bytes::from(hex::decode(self.hex(codec).replace(' ', "")).expect("a vector is hex"))
    }
}

/// Bytes as the vectors write them: lowercase hex pairs separated by spaces.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn lobby() -> RoomName {
    RoomName::new("chat.lobby").expect("a valid room name")
}

fn request(id: u64, op: ClientOp) -> ClientRequest {
    ClientRequest {
        id: RequestId(id),
        op,
    }
}

fn publish_hi() -> ClientOp {
    ClientOp::publish(lobby(), Bytes::from_static(b"hi"))
}

/// Decodes `vector` into `expected` and encodes `expected` into `vector`, in both codecs.
fn assert_request_vector(vector: &Vector, expected: &ClientRequest) {
    for codec in Codec::ALL {
        assert_eq!(
            codec.decode_request(&vector.bytes(codec)),
            Ok(expected.clone()),
            "{codec}: decode"
        );
        assert_eq!(
            hex(&codec.encode_request(expected)),
            vector.hex(codec),
            "{codec}: encode"
        );
    }
}

/// Encodes `request` and decodes it back, in both codecs.
fn assert_round_trip(request: &ClientRequest) {
    for codec in Codec::ALL {
        let bytes = Bytes::from(codec.encode_request(request));
        assert_eq!(codec.decode_request(&bytes), Ok(request.clone()), "{codec}");
    }
}

/// Encodes `reply` into `vector` (bare and framed) and decodes `vector` back, in both codecs.
fn assert_reply_vector(vector: &Vector, reply: &Reply) {
    for codec in Codec::ALL {
        let mut envelope = Vec::new();
        codec.encode_reply(reply, &mut envelope);
        assert_eq!(hex(&envelope), vector.hex(codec), "{codec}: encode");
        let framed = frame::reply(codec, reply);
        assert_eq!(framed[..], unmasked(0x82, &envelope), "{codec}: frame");
        let decoded = codec.decode_server(&vector.bytes(codec));
        assert_eq!(
            decoded,
            Ok(ServerEvent::Reply(reply.clone())),
            "{codec}: decode"
        );
    }
}

/// A MessagePack envelope built by hand, for requests our encoder would never write.
fn msgpack(value: &serde_json::Value) -> Bytes {
    Bytes::from(rmp_serde::to_vec(value).expect("a JSON value serializes"))
}

/// A protobuf `ClientMessage` with any room string, valid or not.
fn proto_request(id: u64, op: pb::client_message::Op) -> Bytes {
    Bytes::from(pb::ClientMessage { id, op: Some(op) }.encode_to_vec())
}

fn error_code(error: &RequestError) -> Option<u32> {
    match error.reply()?.outcome {
        Outcome::Error { code, .. } => Some(code),
        _ => None,
    }
}

/// The epoch of `chat.lobby` in the examples.
const EPOCH: &str = "9f3c2a1b4d5e6f70";

fn epoch() -> Epoch {
    Epoch(EPOCH.to_owned())
}

/// The one subscriber of `chat.lobby` in the presence examples: connection 7
/// of core 1 on node `5e1d09a2`, anonymous, joined at 2026-01-01T00:00:00Z.
fn visitor() -> ClientInfo {
    ClientInfo {
        client: "5e1d09a2-1-7".to_owned(),
        user: String::new(),
        joined_at_ms: 1_767_225_600_000,
    }
}

/// `{"client": .., "user": .., "joined_at_ms": ..}` of [`visitor`].
fn visitor_tree() -> Mp {
    map([
        ("client", text("5e1d09a2-1-7")),
        ("user", text("")),
        ("joined_at_ms", uint(1_767_225_600_000)),
    ])
}

fn visitor_pb() -> pb::ClientInfo {
    pb::ClientInfo {
        client: "5e1d09a2-1-7".to_owned(),
        user: String::new(),
        joined_at_ms: 1_767_225_600_000,
    }
}

/// What prost should read from a vector's protobuf bytes.
enum Prost {
    Client(pb::ClientMessage),
    Server(pb::ServerMessage),
}

fn pb_request(id: u64, op: pb::client_message::Op) -> Prost {
    Prost::Client(pb::ClientMessage { id, op: Some(op) })
}

fn pb_reply(id: u64, outcome: pb::reply::Outcome) -> Prost {
    let reply = pb::Reply {
        id,
        outcome: Some(outcome),
    };
    Prost::Server(pb::ServerMessage {
        kind: Some(pb::server_message::Kind::Reply(reply)),
    })
}

/// Checks a vector with the libraries alone, not our codec: rmp-serde reads
/// the MessagePack bytes as `tree`, whose shortest form is those bytes; prost
/// reads the protobuf bytes as `message` and writes `message` as those bytes.
fn assert_libraries_read(vector: &Vector, tree: Mp, message: Prost) {
    let read: Mp =
        rmp_serde::from_slice(&vector.bytes(Codec::MsgPack)).expect("rmp-serde reads it");
    assert_eq!(read, tree, "rmp-serde");
    assert_eq!(hex(&tree.to_bytes()), vector.msgpack, "rmp: shortest form");
    let bytes = vector.bytes(Codec::Proto);
    let written = match message {
        Prost::Client(expected) => {
            let read = pb::ClientMessage::decode(bytes).expect("prost reads it");
            assert_eq!(read, expected, "prost");
            expected.encode_to_vec()
        }
        Prost::Server(expected) => {
            let read = pb::ServerMessage::decode(bytes).expect("prost reads it");
            assert_eq!(read, expected, "prost");
            expected.encode_to_vec()
        }
    };
    assert_eq!(hex(&written), vector.proto, "prost: encode");
}

// The document and the tests show the same bytes.

#[test]
fn the_protocol_document_shows_every_vector_byte_for_byte() {
    for (name, vector) in ALL_VECTORS {
        for codec in Codec::ALL {
            // Each vector is a whole line of a code block, labelled with its codec.
            let label = match codec {
                Codec::MsgPack => "msgpack  ",
                Codec::Proto => "proto    ",
            };
            let line = format!("\n{label}{}\n", vector.hex(codec));
            assert!(
                PROTOCOL_MD.contains(&line),
                "docs/PROTOCOL.md lacks {name} in {codec}: {}",
                vector.hex(codec)
            );
        }
    }
}

/// The numbers in the first column of the table under `heading` in
/// docs/PROTOCOL.md, in the order of the rows.
fn documented_codes(heading: &str) -> Vec<u32> {
    let section = PROTOCOL_MD
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md lacks {heading:?}"));
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|line| {
            line.strip_prefix("| ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn the_protocol_document_lists_every_error_code_and_no_other() {
    let known: Vec<u32> = (0..=u32::from(u16::MAX))
        .filter(|&n| ErrorCode::from_code(n).is_some())
        .collect();
    assert_eq!(known, (100..=110).collect::<Vec<_>>());
    assert_eq!(documented_codes("\n## Error codes\n"), known);
}

#[test]
fn the_protocol_document_lists_every_close_code_the_server_sends() {
    use roomcast::protocol::close_code as c;
    let mut sent = vec![
        c::NORMAL,
        c::PROTOCOL_ERROR,
        c::UNSUPPORTED_DATA,
        c::INVALID_PAYLOAD,
        c::POLICY_VIOLATION,
        c::MESSAGE_TOO_BIG,
        c::SERVICE_RESTART,
        c::TRY_AGAIN_LATER,
        c::HEARTBEAT_TIMEOUT,
        c::TOKEN_EXPIRED,
        c::ROOM_STATE_LOST,
        c::DISCONNECTED,
    ];
    sent.sort_unstable();
    let documented = documented_codes("\n## Close codes\n");
    assert_eq!(
        documented,
        sent.into_iter().map(u32::from).collect::<Vec<_>>()
    );
}

#[test]
fn the_subprotocol_names_pick_the_codecs() {
    assert_eq!(
        Codec::from_subprotocol("roomcast.v1.msgpack"),
        Some(Codec::MsgPack)
    );
    assert_eq!(
        Codec::from_subprotocol("roomcast.v1.proto"),
        Some(Codec::Proto)
    );
    assert_eq!(Codec::from_subprotocol("roomcast.v2.proto"), None);
}

// Client -> server: a client subscribes, publishes with and without a reply, and leaves.

#[test]
fn subscribing_to_chat_lobby_with_id_1() {
    assert_request_vector(&SUBSCRIBE, &request(1, ClientOp::subscribe(lobby())));
    assert_libraries_read(
        &SUBSCRIBE,
        map([
            ("id", uint(1)),
            ("subscribe", map([("room", text("chat.lobby"))])),
        ]),
        pb_request(
            1,
            pb::client_message::Op::Subscribe(pb::Subscribe {
                room: "chat.lobby".to_owned(),
                ..Default::default()
            }),
        ),
    );
}

#[test]
fn unsubscribing_from_chat_lobby_with_id_2() {
    assert_request_vector(
        &UNSUBSCRIBE,
        &request(2, ClientOp::Unsubscribe { room: lobby() }),
    );
    assert_libraries_read(
        &UNSUBSCRIBE,
        map([
            ("id", uint(2)),
            ("unsubscribe", map([("room", text("chat.lobby"))])),
        ]),
        pb_request(
            2,
            pb::client_message::Op::Unsubscribe(pb::Unsubscribe {
                room: "chat.lobby".to_owned(),
            }),
        ),
    );
}

fn publish_hi_tree(id: u64) -> Mp {
    map([
        ("id", uint(id)),
        (
            "publish",
            map([("room", text("chat.lobby")), ("data", bin(b"hi"))]),
        ),
    ])
}

fn publish_hi_pb(id: u64) -> Prost {
    pb_request(
        id,
        pb::client_message::Op::Publish(pb::Publish {
            room: "chat.lobby".to_owned(),
            data: Bytes::from_static(b"hi"),
            ..Default::default()
        }),
    )
}

#[test]
fn publishing_hi_to_chat_lobby_with_id_3_asks_for_the_offset() {
    assert_request_vector(&PUBLISH, &request(3, publish_hi()));
    assert_libraries_read(&PUBLISH, publish_hi_tree(3), publish_hi_pb(3));
}

#[test]
fn publishing_hi_with_id_0_is_fire_and_forget() {
    let fire_and_forget = request(0, publish_hi());
    assert!(!fire_and_forget.id.wants_reply());
    assert_request_vector(&PUBLISH_NO_REPLY, &fire_and_forget);
    assert_libraries_read(&PUBLISH_NO_REPLY, publish_hi_tree(0), publish_hi_pb(0));
}

#[test]
fn a_msgpack_request_without_an_id_key_has_id_0() {
    // PUBLISH_NO_REPLY with its `"id": 0` entry left out: a map of one entry.
    let without_id = format!(
        "81 {}",
        &PUBLISH_NO_REPLY.msgpack["82 a2 69 64 00 ".len()..]
    );
    let bytes = Bytes::from(hex::decode(without_id.replace(' ', "")).expect("hex"));
    assert_eq!(
        Codec::MsgPack.decode_request(&bytes),
        Ok(request(0, publish_hi()))
    );
}

// Server -> client: the replies to those requests, an error, and a delivery.

#[test]
fn subscribe_is_acknowledged_with_the_rooms_epoch_and_current_offset_41() {
    let ack = Ack {
        offset: Offset(41),
        epoch: epoch(),
        ..Ack::default()
    };
    assert_reply_vector(&ACK_SUBSCRIBE, &Reply::with(RequestId(1), ack));
    assert_libraries_read(
        &ACK_SUBSCRIBE,
        map([(
            "reply",
            map([
                ("id", uint(1)),
                ("ack", map([("offset", uint(41)), ("epoch", text(EPOCH))])),
            ]),
        )]),
        pb_reply(
            1,
            pb::reply::Outcome::Ack(pb::Ack {
                offset: 41,
                epoch: EPOCH.to_owned(),
                ..Default::default()
            }),
        ),
    );
}

#[test]
fn publish_is_acknowledged_with_the_offset_42_it_was_given() {
    assert_reply_vector(&ACK_PUBLISH, &Reply::ack(RequestId(3), Offset(42)));
    assert_libraries_read(
        &ACK_PUBLISH,
        map([(
            "reply",
            map([("id", uint(3)), ("ack", map([("offset", uint(42))]))]),
        )]),
        pb_reply(
            3,
            pb::reply::Outcome::Ack(pb::Ack {
                offset: 42,
                ..Default::default()
            }),
        ),
    );
}

#[test]
fn unsubscribe_is_acknowledged_with_offset_0_and_a_present_but_empty_ack() {
    assert_reply_vector(&ACK_UNSUBSCRIBE, &Reply::ack(RequestId(2), Offset(0)));
    assert_libraries_read(
        &ACK_UNSUBSCRIBE,
        map([(
            "reply",
            map([("id", uint(2)), ("ack", map([("offset", uint(0))]))]),
        )]),
        pb_reply(2, pb::reply::Outcome::Ack(pb::Ack::default())),
    );
}

#[test]
fn subscribing_to_an_empty_room_name_with_id_9_earns_error_102() {
    let reply = Reply::error(
        RequestId(9),
        ErrorCode::InvalidRoom,
        "invalid room: room name is empty",
    );
    assert_reply_vector(&ERROR_INVALID_ROOM, &reply);
    assert_libraries_read(
        &ERROR_INVALID_ROOM,
        map([(
            "reply",
            map([
                ("id", uint(9)),
                (
                    "error",
                    map([
                        ("code", uint(102)),
                        ("message", text("invalid room: room name is empty")),
                    ]),
                ),
            ]),
        )]),
        pb_reply(
            9,
            pb::reply::Outcome::Error(pb::Error {
                code: 102,
                message: "invalid room: room name is empty".to_owned(),
            }),
        ),
    );
    // The vector is exactly what the server answers such a request with.
    for codec in Codec::ALL {
        let request = match codec {
            Codec::MsgPack => msgpack(&json!({"id": 9, "subscribe": {"room": ""}})),
            Codec::Proto => proto_request(
                9,
                pb::client_message::Op::Subscribe(pb::Subscribe::default()),
            ),
        };
        let error = codec
            .decode_request(&request)
            .expect_err("an empty room name is refused");
        assert_eq!(error.reply(), Some(reply.clone()), "{codec}");
    }
}

#[test]
fn a_subscriber_receives_hi_at_offset_42() {
    for codec in Codec::ALL {
        let mut envelope = Vec::new();
        codec.encode_message(&lobby(), Offset(42), b"hi", &mut envelope);
        assert_eq!(hex(&envelope), MESSAGE.hex(codec), "{codec}: encode");
        let delivered = ServerEvent::Message {
            room: "chat.lobby".to_owned(),
            offset: Offset(42),
            data: Bytes::from_static(b"hi"),
        };
        assert_eq!(
            codec.decode_server(&MESSAGE.bytes(codec)),
            Ok(delivered),
            "{codec}: decode"
        );
        let framed = frame::message(codec, &lobby(), Offset(42), b"hi");
        assert_eq!(hex(&framed), MESSAGE_FRAME.hex(codec), "{codec}: frame");
    }
    assert_libraries_read(
        &MESSAGE,
        map([(
            "message",
            map([
                ("room", text("chat.lobby")),
                ("offset", uint(42)),
                ("data", bin(b"hi")),
            ]),
        )]),
        Prost::Server(pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Message(pb::Message {
                room: "chat.lobby".to_owned(),
                offset: 42,
                data: Bytes::from_static(b"hi"),
            })),
        }),
    );
}

// Resuming: a client that saw offset 40 of the room's epoch reconnects and
// is acknowledged `recovered` at 42 (41 and 42 follow as messages).

#[test]
fn resuming_chat_lobby_after_offset_40_of_its_epoch_with_id_10() {
    let from = StreamPosition {
        epoch: epoch(),
        offset: Offset(40),
    };
    let resume = ClientOp::Subscribe {
        room: lobby(),
        recover: Some(from),
        join_leave: false,
    };
    assert_request_vector(&SUBSCRIBE_RECOVER, &request(10, resume));
    assert_libraries_read(
        &SUBSCRIBE_RECOVER,
        map([
            ("id", uint(10)),
            (
                "subscribe",
                map([
                    ("room", text("chat.lobby")),
                    (
                        "recover",
                        map([("epoch", text(EPOCH)), ("offset", uint(40))]),
                    ),
                ]),
            ),
        ]),
        pb_request(
            10,
            pb::client_message::Op::Subscribe(pb::Subscribe {
                room: "chat.lobby".to_owned(),
                recover: Some(pb::Recover {
                    epoch: EPOCH.to_owned(),
                    offset: 40,
                }),
                join_leave: false,
            }),
        ),
    );
}

#[test]
fn the_resumed_subscribe_is_acknowledged_recovered_at_42() {
    let ack = Ack {
        offset: Offset(42),
        epoch: epoch(),
        recovered: true,
        duplicate: false,
    };
    assert_reply_vector(&ACK_RECOVERED, &Reply::with(RequestId(10), ack));
    assert_libraries_read(
        &ACK_RECOVERED,
        map([(
            "reply",
            map([
                ("id", uint(10)),
                (
                    "ack",
                    map([
                        ("offset", uint(42)),
                        ("epoch", text(EPOCH)),
                        ("recovered", Mp::Bool(true)),
                    ]),
                ),
            ]),
        )]),
        pb_reply(
            10,
            pb::reply::Outcome::Ack(pb::Ack {
                offset: 42,
                epoch: EPOCH.to_owned(),
                recovered: true,
                duplicate: false,
            }),
        ),
    );
}

// Idempotent publishing: a publish with a key, and the answer to its retry.

#[test]
fn publishing_hi_with_the_idempotency_key_order_17_and_id_11() {
    let publish = ClientOp::Publish {
        room: lobby(),
        data: Bytes::from_static(b"hi"),
        idempotency_key: Some(IdempotencyKey::new("order-17")),
    };
    assert_request_vector(&PUBLISH_IDEMPOTENT, &request(11, publish));
    assert_libraries_read(
        &PUBLISH_IDEMPOTENT,
        map([
            ("id", uint(11)),
            (
                "publish",
                map([
                    ("room", text("chat.lobby")),
                    ("data", bin(b"hi")),
                    ("idempotency_key", text("order-17")),
                ]),
            ),
        ]),
        pb_request(
            11,
            pb::client_message::Op::Publish(pb::Publish {
                room: "chat.lobby".to_owned(),
                data: Bytes::from_static(b"hi"),
                idempotency_key: "order-17".to_owned(),
            }),
        ),
    );
}

#[test]
fn a_retry_is_acknowledged_as_a_duplicate_of_offset_42() {
    let ack = Ack {
        offset: Offset(42),
        duplicate: true,
        ..Ack::default()
    };
    assert_reply_vector(&ACK_DUPLICATE, &Reply::with(RequestId(11), ack));
    assert_libraries_read(
        &ACK_DUPLICATE,
        map([(
            "reply",
            map([
                ("id", uint(11)),
                (
                    "ack",
                    map([("offset", uint(42)), ("duplicate", Mp::Bool(true))]),
                ),
            ]),
        )]),
        pb_reply(
            11,
            pb::reply::Outcome::Ack(pb::Ack {
                offset: 42,
                duplicate: true,
                ..Default::default()
            }),
        ),
    );
}

// History: two publications after offset 40, oldest first.

#[test]
fn asking_for_two_publications_after_offset_40_with_id_12() {
    let query = HistoryQuery {
        since: Offset(40),
        limit: 2,
        reverse: false,
    };
    let history = ClientOp::History {
        room: lobby(),
        query,
    };
    assert_request_vector(&HISTORY, &request(12, history));
    assert_libraries_read(
        &HISTORY,
        map([
            ("id", uint(12)),
            (
                "history",
                map([
                    ("room", text("chat.lobby")),
                    ("since", uint(40)),
                    ("limit", uint(2)),
                ]),
            ),
        ]),
        pb_request(
            12,
            pb::client_message::Op::History(pb::History {
                room: "chat.lobby".to_owned(),
                since: 40,
                limit: 2,
                reverse: false,
            }),
        ),
    );
}

#[test]
fn the_history_page_holds_41_yo_and_42_hi_with_the_rooms_position() {
    let page = HistoryPage {
        position: StreamPosition {
            epoch: epoch(),
            offset: Offset(42),
        },
        publications: vec![
            Publication {
                offset: Offset(41),
                data: Bytes::from_static(b"yo"),
            },
            Publication {
                offset: Offset(42),
                data: Bytes::from_static(b"hi"),
            },
        ],
    };
    let reply = Reply {
        id: RequestId(12),
        outcome: Outcome::History(page),
    };
    assert_reply_vector(&HISTORY_PAGE, &reply);
    let publication = |offset, data: &[u8]| map([("offset", uint(offset)), ("data", bin(data))]);
    assert_libraries_read(
        &HISTORY_PAGE,
        map([(
            "reply",
            map([
                ("id", uint(12)),
                (
                    "history",
                    map([
                        ("epoch", text(EPOCH)),
                        ("offset", uint(42)),
                        (
                            "publications",
                            Mp::Array(vec![publication(41, b"yo"), publication(42, b"hi")]),
                        ),
                    ]),
                ),
            ]),
        )]),
        pb_reply(
            12,
            pb::reply::Outcome::History(pb::HistoryPage {
                epoch: EPOCH.to_owned(),
                offset: 42,
                publications: vec![
                    pb::Publication {
                        offset: 41,
                        data: Bytes::from_static(b"yo"),
                    },
                    pb::Publication {
                        offset: 42,
                        data: Bytes::from_static(b"hi"),
                    },
                ],
            }),
        ),
    );
}

// Presence: who is in the room, how many, and a join event.

#[test]
fn asking_who_is_in_chat_lobby_with_id_13() {
    assert_request_vector(
        &PRESENCE,
        &request(13, ClientOp::Presence { room: lobby() }),
    );
    assert_libraries_read(
        &PRESENCE,
        map([
            ("id", uint(13)),
            ("presence", map([("room", text("chat.lobby"))])),
        ]),
        pb_request(
            13,
            pb::client_message::Op::Presence(pb::Presence {
                room: "chat.lobby".to_owned(),
            }),
        ),
    );
}

#[test]
fn the_presence_list_names_one_anonymous_client() {
    let reply = Reply {
        id: RequestId(13),
        outcome: Outcome::Presence(vec![visitor()]),
    };
    assert_reply_vector(&PRESENCE_LIST, &reply);
    assert_libraries_read(
        &PRESENCE_LIST,
        map([(
            "reply",
            map([
                ("id", uint(13)),
                (
                    "presence",
                    map([("clients", Mp::Array(vec![visitor_tree()]))]),
                ),
            ]),
        )]),
        pb_reply(
            13,
            pb::reply::Outcome::Presence(pb::PresenceList {
                clients: vec![visitor_pb()],
            }),
        ),
    );
}

#[test]
fn asking_how_many_are_in_chat_lobby_with_id_14() {
    let stats = ClientOp::PresenceStats { room: lobby() };
    assert_request_vector(&PRESENCE_STATS, &request(14, stats));
    assert_libraries_read(
        &PRESENCE_STATS,
        map([
            ("id", uint(14)),
            ("presence_stats", map([("room", text("chat.lobby"))])),
        ]),
        pb_request(
            14,
            pb::client_message::Op::PresenceStats(pb::PresenceStats {
                room: "chat.lobby".to_owned(),
            }),
        ),
    );
}

#[test]
fn the_presence_counts_are_one_client_and_no_user() {
    let counts = PresenceCounts {
        clients: 1,
        users: 0,
    };
    let reply = Reply {
        id: RequestId(14),
        outcome: Outcome::PresenceStats(counts),
    };
    assert_reply_vector(&PRESENCE_COUNTS, &reply);
    assert_libraries_read(
        &PRESENCE_COUNTS,
        map([(
            "reply",
            map([
                ("id", uint(14)),
                (
                    "presence_stats",
                    map([("clients", uint(1)), ("users", uint(0))]),
                ),
            ]),
        )]),
        pb_reply(
            14,
            pb::reply::Outcome::PresenceStats(pb::PresenceCounts {
                clients: 1,
                users: 0,
            }),
        ),
    );
}

#[test]
fn a_join_event_tells_who_joined_chat_lobby() {
    for codec in Codec::ALL {
        let mut envelope = Vec::new();
        codec.encode_presence(PresenceChange::Join, &lobby(), &visitor(), &mut envelope);
        assert_eq!(hex(&envelope), JOIN.hex(codec), "{codec}: encode");
        let framed = frame::presence(codec, PresenceChange::Join, &lobby(), &visitor());
        assert_eq!(framed[..], unmasked(0x82, &envelope), "{codec}: frame");
        let joined = ServerEvent::Presence {
            change: PresenceChange::Join,
            room: "chat.lobby".to_owned(),
            info: visitor(),
        };
        assert_eq!(
            codec.decode_server(&JOIN.bytes(codec)),
            Ok(joined),
            "{codec}: decode"
        );
    }
    assert_libraries_read(
        &JOIN,
        map([(
            "join",
            map([("room", text("chat.lobby")), ("info", visitor_tree())]),
        )]),
        Prost::Server(pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Join(pb::Join {
                room: "chat.lobby".to_owned(),
                info: Some(visitor_pb()),
            })),
        }),
    );
}

#[test]
fn a_leave_event_is_a_join_event_under_the_key_leave() {
    // MessagePack: the same map with "leave" (a5 6c 65 61 76 65) for "join"
    // (a4 6a 6f 69 6e); protobuf: ServerMessage field 4 instead of 3.
    let msgpack = JOIN
        .msgpack
        .replacen("a4 6a 6f 69 6e", "a5 6c 65 61 76 65", 1);
    let proto = format!("22{}", &JOIN.proto["1a".len()..]);
    let left = ServerEvent::Presence {
        change: PresenceChange::Leave,
        room: "chat.lobby".to_owned(),
        info: visitor(),
    };
    for (codec, hex_bytes) in [(Codec::MsgPack, msgpack), (Codec::Proto, proto)] {
        let mut envelope = Vec::new();
        codec.encode_presence(PresenceChange::Leave, &lobby(), &visitor(), &mut envelope);
        assert_eq!(hex(&envelope), hex_bytes, "{codec}: encode");
        let bytes = Bytes::from(hex::decode(hex_bytes.replace(' ', "")).expect("hex"));
        assert_eq!(
            codec.decode_server(&bytes),
            Ok(left.clone()),
            "{codec}: decode"
        );
    }
}

// Refresh: a new token for the same user, and its acknowledgement.

#[test]
fn refreshing_the_token_with_id_8() {
    assert_request_vector(
        &REFRESH,
        &request(
            8,
            ClientOp::Refresh {
                token: "t.o.k".to_owned(),
            },
        ),
    );
    assert_libraries_read(
        &REFRESH,
        map([
            ("id", uint(8)),
            ("refresh", map([("token", text("t.o.k"))])),
        ]),
        pb_request(
            8,
            pb::client_message::Op::Refresh(pb::Refresh {
                token: "t.o.k".to_owned(),
            }),
        ),
    );
}

#[test]
fn a_refresh_is_acknowledged_with_offset_0() {
    assert_reply_vector(&ACK_REFRESH, &Reply::ack(RequestId(8), Offset(0)));
    assert_libraries_read(
        &ACK_REFRESH,
        map([(
            "reply",
            map([("id", uint(8)), ("ack", map([("offset", uint(0))]))]),
        )]),
        pb_reply(8, pb::reply::Outcome::Ack(pb::Ack::default())),
    );
}

#[test]
fn a_refresh_without_a_token_still_decodes_and_is_refused_by_the_server() {
    // The token is checked by the session (error 108), not by the decoder.
    let empty = request(
        8,
        ClientOp::Refresh {
            token: String::new(),
        },
    );
    assert_round_trip(&empty);
    assert_eq!(
        Codec::MsgPack.decode_request(&msgpack(&json!({"id": 8, "refresh": {}}))),
        Ok(empty)
    );
}

// The hand-written hot-path delivery encoders agree with the libraries.

/// Rooms, offsets and payload sizes that cross every length-prefix boundary
/// of both encodings (fixstr/str8, varint widths, bin8/bin16/bin32).
fn delivery_cases() -> Vec<(RoomName, u64, usize)> {
    let rooms = [
        "a",
        "chat.lobby",
        &"r".repeat(31),
        &"r".repeat(32),
        &"r".repeat(255),
        "café.☕",
    ];
    let offsets = [
        0,
        1,
        41,
        127,
        128,
        255,
        256,
        16_383,
        16_384,
        65_535,
        65_536,
        u64::from(u32::MAX),
        1 << 32,
        u64::MAX,
    ];
    let sizes = [
        0, 1, 2, 127, 128, 255, 256, 300, 16_384, 65_535, 65_536, 70_000,
    ];
    let mut cases = Vec::new();
    for room in rooms {
        for offset in offsets {
            for size in sizes {
                cases.push((
                    RoomName::new(room).expect("a valid room name"),
                    offset,
                    size,
                ));
            }
        }
    }
    cases
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

#[test]
fn the_hand_written_protobuf_delivery_is_byte_identical_to_prost() {
    for (room, offset, size) in delivery_cases() {
        let data = payload(size);
        let mut ours = Vec::new();
        Codec::Proto.encode_message(&room, Offset(offset), &data, &mut ours);
        let prost = pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Message(pb::Message {
                room: room.as_str().to_owned(),
                offset,
                data: Bytes::from(data),
            })),
        }
        .encode_to_vec();
        assert!(
            ours == prost,
            "room {room:?}, offset {offset}, {size} bytes of data"
        );
    }
}

#[test]
fn the_hand_written_msgpack_delivery_is_byte_identical_to_rmp_serde() {
    #[derive(Serialize)]
    struct Envelope<'a> {
        message: Delivery<'a>,
    }
    #[derive(Serialize)]
    struct Delivery<'a> {
        room: &'a str,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
    }
    for (room, offset, size) in delivery_cases() {
        let data = payload(size);
        let mut ours = Vec::new();
        Codec::MsgPack.encode_message(&room, Offset(offset), &data, &mut ours);
        let message = Delivery {
            room: room.as_str(),
            offset,
            data: &data,
        };
        let serde = rmp_serde::to_vec_named(&Envelope { message }).expect("serializes");
        assert!(
            ours == serde,
            "room {room:?}, offset {offset}, {size} bytes of data"
        );
    }
}

#[test]
fn every_delivery_decodes_back_to_what_was_published() {
    for codec in Codec::ALL {
        for (room, offset, size) in delivery_cases() {
            let data = payload(size);
            let mut envelope = Vec::new();
            codec.encode_message(&room, Offset(offset), &data, &mut envelope);
            let expected = ServerEvent::Message {
                room: room.as_str().to_owned(),
                offset: Offset(offset),
                data: Bytes::from(data),
            };
            assert!(
                codec.decode_server(&Bytes::from(envelope)) == Ok(expected),
                "{codec}: room {room:?}, offset {offset}, {size} bytes of data"
            );
        }
    }
}

// Delivery frames: an unmasked WebSocket header, then the envelope.

#[test]
fn delivery_frames_use_the_2_4_and_10_byte_length_forms() {
    for codec in Codec::ALL {
        for (size, header_len, length_code) in
            [(2, 2, None), (300, 4, Some(126)), (70_000, 10, Some(127))]
        {
            let data = payload(size);
            let mut envelope = Vec::new();
            codec.encode_message(&lobby(), Offset(42), &data, &mut envelope);
            let framed = frame::message(codec, &lobby(), Offset(42), &data);
            assert_eq!(
                framed[0], 0x82,
                "{codec}: FIN and opcode 2 (binary), no reserved bits"
            );
            assert_eq!(framed[1] & 0x80, 0, "{codec}: a server frame is not masked");
            let length = match length_code {
                None => usize::from(framed[1]),
                Some(code) => {
                    assert_eq!(framed[1], code, "{codec}, {size} bytes");
                    let bytes = &framed[2..header_len];
                    bytes.iter().fold(0, |n, b| n << 8 | usize::from(*b))
                }
            };
            assert_eq!(length, envelope.len(), "{codec}, {size} bytes");
            assert!(
                framed[header_len..] == envelope[..],
                "{codec}, {size} bytes: the envelope follows the header"
            );
        }
    }
}

#[test]
fn delivery_frames_switch_length_form_exactly_at_126_and_65536_bytes() {
    for codec in Codec::ALL {
        let mut seen = Vec::new();
        for size in (60..=130).chain(65_470..=65_530) {
            let data = payload(size);
            let mut envelope = Vec::new();
            codec.encode_message(&lobby(), Offset(42), &data, &mut envelope);
            let framed = frame::message(codec, &lobby(), Offset(42), &data);
            let expected = unmasked(0x82, &envelope);
            assert!(
                framed[..] == expected[..],
                "{codec}: envelope of {} bytes",
                envelope.len()
            );
            seen.push(envelope.len());
        }
        for boundary in [125, 126, 65_535, 65_536] {
            assert!(
                seen.contains(&boundary),
                "{codec}: no envelope of {boundary} bytes was tried"
            );
        }
    }
}

// Bad input: what each mistake earns. Malformed closes the connection with
// 1007; the other errors are replies and the connection stays open.

#[test]
fn garbage_is_a_malformed_envelope_that_closes_the_connection() {
    let truncated = |vector: &Vector, codec| {
        let bytes = vector.bytes(codec);
        bytes.slice(..bytes.len() - 1)
    };
    let msgpack_garbage = [
        Bytes::new(),
        Bytes::from_static(&[0xc1]),       // never used
        Bytes::from_static(&[0x2a]),       // an integer, not a map
        Bytes::from_static(b"\xa3abc"),    // a string, not a map
        Bytes::from_static(b"\x82\xa2id"), // a map cut short
        Bytes::from_static(b"{\"id\":1}"), // JSON is not MessagePack
        truncated(&SUBSCRIBE, Codec::MsgPack),
    ];
    let proto_garbage = [
        Bytes::from_static(&[0xff, 0xff, 0xff]), // a key varint that never ends
        Bytes::from_static(&[0x08]),             // id with no value
        Bytes::from_static(&[0x0a, 0x05, 0x01]), // id with the wrong wire type
        Bytes::from_static(&[0x12, 0x0c, 0x0a]), // subscribe longer than the message
        truncated(&SUBSCRIBE, Codec::Proto),
    ];
    for (codec, garbage) in [
        (Codec::MsgPack, &msgpack_garbage[..]),
        (Codec::Proto, &proto_garbage[..]),
    ] {
        for bytes in garbage {
            let error = codec.decode_request(bytes).expect_err("garbage is refused");
            assert!(
                matches!(error, RequestError::Malformed(_)),
                "{codec} [{}]: {error:?}",
                hex(bytes)
            );
            assert_eq!(
                error.reply(),
                None,
                "{codec}: malformed envelopes get a close, not a reply"
            );
        }
    }
}

#[test]
fn an_empty_protobuf_message_is_a_request_without_an_operation() {
    // Every protobuf field is optional, so zero bytes are a valid ClientMessage.
    let error = Codec::Proto.decode_request(&Bytes::new());
    assert_eq!(
        error,
        Err(RequestError::UnknownOperation { id: RequestId(0) })
    );
}

#[test]
fn an_unknown_operation_earns_error_100_with_the_requests_id() {
    for codec in Codec::ALL {
        let error = codec
            .decode_request(&UNKNOWN_OPERATION.bytes(codec))
            .expect_err("no known operation");
        assert_eq!(
            error,
            RequestError::UnknownOperation { id: RequestId(5) },
            "{codec}"
        );
        let reply = Reply::error(
            RequestId(5),
            ErrorCode::UnknownOperation,
            "unknown operation",
        );
        assert_eq!(error.reply(), Some(reply), "{codec}");
        assert_eq!(error_code(&error), Some(100));
    }
    // Key order does not matter: this map has `frobnicate` first.
    let frobnicate = msgpack(&json!({"id": 5, "frobnicate": {}}));
    assert_ne!(frobnicate, UNKNOWN_OPERATION.bytes(Codec::MsgPack));
    let error = Codec::MsgPack.decode_request(&frobnicate);
    assert_eq!(
        error,
        Err(RequestError::UnknownOperation { id: RequestId(5) })
    );
}

#[test]
fn two_operations_in_one_msgpack_request_earn_error_101() {
    let both = json!({"id": 6, "subscribe": {"room": "a"}, "unsubscribe": {"room": "a"}});
    let error = Codec::MsgPack
        .decode_request(&msgpack(&both))
        .expect_err("two operations");
    assert_eq!(
        error,
        RequestError::InvalidField {
            id: RequestId(6),
            reason: "2 operations set, exactly one is allowed".to_owned()
        }
    );
    assert_eq!(error_code(&error), Some(101));
}

#[test]
fn in_protobuf_the_last_operation_on_the_wire_wins() {
    // subscribe {room: "a"} then unsubscribe {room: "b"}: a oneof keeps the last.
    let both = Bytes::from_static(&[
        0x08, 0x01, 0x12, 0x03, 0x0a, 0x01, b'a', 0x1a, 0x03, 0x0a, 0x01, b'b',
    ]);
    let unsubscribe_b = request(
        1,
        ClientOp::Unsubscribe {
            room: RoomName::new("b").expect("valid"),
        },
    );
    assert_eq!(Codec::Proto.decode_request(&both), Ok(unsubscribe_b));
}

#[test]
fn bad_room_names_earn_error_102_in_every_operation_and_both_codecs() {
    use pb::client_message::Op;
    let too_long = "a".repeat(256);
    let cases = [
        ("", RoomNameError::Empty),
        (too_long.as_str(), RoomNameError::TooLong(256)),
        ("chat lobby", RoomNameError::ForbiddenChar(' ')),
        ("chat\tlobby", RoomNameError::ForbiddenChar('\t')),
        ("chat.*", RoomNameError::ForbiddenChar('*')),
        ("chat.?", RoomNameError::ForbiddenChar('?')),
        ("chat.>", RoomNameError::ForbiddenChar('>')),
        ("chat\u{7}", RoomNameError::ForbiddenChar('\u{7}')),
        ("chat\u{7f}", RoomNameError::ForbiddenChar('\u{7f}')),
        ("café\u{85}", RoomNameError::ForbiddenChar('\u{85}')),
        ("café\u{a0}lobby", RoomNameError::ForbiddenChar('\u{a0}')),
        ("café\u{2028}", RoomNameError::ForbiddenChar('\u{2028}')),
    ];
    for (name, reason) in cases {
        let envelopes = [
            (
                Codec::MsgPack,
                msgpack(&json!({"id": 7, "subscribe": {"room": name}})),
            ),
            (
                Codec::MsgPack,
                msgpack(&json!({"id": 7, "unsubscribe": {"room": name}})),
            ),
            (
                Codec::MsgPack,
                msgpack(&json!({"id": 7, "publish": {"room": name}})),
            ),
            (
                Codec::Proto,
                proto_request(
                    7,
                    Op::Subscribe(pb::Subscribe {
                        room: name.into(),
                        ..Default::default()
                    }),
                ),
            ),
            (
                Codec::Proto,
                proto_request(7, Op::Unsubscribe(pb::Unsubscribe { room: name.into() })),
            ),
            (
                Codec::Proto,
                proto_request(
                    7,
                    Op::Publish(pb::Publish {
                        room: name.into(),
                        data: Bytes::from_static(b"hi"),
                        ..Default::default()
                    }),
                ),
            ),
        ];
        for (codec, envelope) in envelopes {
            let error = codec
                .decode_request(&envelope)
                .expect_err("a bad room name is refused");
            let expected = RequestError::InvalidRoom {
                id: RequestId(7),
                reason: reason.clone(),
            };
            assert_eq!(error, expected, "{codec}: room {name:?}");
            assert_eq!(error_code(&error), Some(102), "{codec}: room {name:?}");
        }
    }
}

#[test]
fn a_missing_room_is_an_empty_room() {
    let error = Codec::MsgPack.decode_request(&msgpack(&json!({"id": 1, "subscribe": {}})));
    assert_eq!(
        error,
        Err(RequestError::InvalidRoom {
            id: RequestId(1),
            reason: RoomNameError::Empty
        })
    );
}

#[test]
fn room_names_of_1_to_255_bytes_of_visible_text_are_accepted() {
    let longest = "a".repeat(255);
    for name in [
        "a",
        "chat.lobby",
        "a-b_c.d/e:f@g#h",
        "café",
        "日本.チャット",
        "☕",
        longest.as_str(),
    ] {
        let room = RoomName::new(name).expect("a valid room name");
        assert_round_trip(&request(1, ClientOp::subscribe(room)));
    }
}

#[test]
fn a_room_name_that_is_not_utf8_is_a_malformed_envelope_not_error_102() {
    // Both decoders check strings before the room name rules run, so invalid
    // UTF-8 closes the connection with 1007 rather than earning error 102.
    let proto = Bytes::from_static(&[0x08, 0x07, 0x12, 0x04, 0x0a, 0x02, 0xff, 0xfe]);
    let msgpack = Bytes::from_static(b"\x82\xa2id\x07\xa9subscribe\x81\xa4room\xa2\xff\xfe");
    for (codec, envelope) in [(Codec::Proto, proto), (Codec::MsgPack, msgpack)] {
        let error = codec.decode_request(&envelope).expect_err("not UTF-8");
        assert!(
            matches!(error, RequestError::Malformed(_)),
            "{codec}: {error:?}"
        );
    }
}

#[test]
fn a_msgpack_field_of_the_wrong_type_is_malformed() {
    for wrong in [
        json!({"id": 1, "subscribe": {"room": 7}}),
        json!({"id": 1, "subscribe": "chat.lobby"}),
        json!({"id": -1, "subscribe": {"room": "chat.lobby"}}),
        json!({"id": "1", "subscribe": {"room": "chat.lobby"}}),
        json!({"id": 1.0, "subscribe": {"room": "chat.lobby"}}),
    ] {
        let error = Codec::MsgPack.decode_request(&msgpack(&wrong));
        assert!(
            matches!(error, Err(RequestError::Malformed(_))),
            "{wrong}: {error:?}"
        );
    }
}

#[test]
fn unknown_keys_and_fields_are_ignored_in_both_codecs() {
    let subscribe = request(1, ClientOp::subscribe(lobby()));
    let extra = json!({"id": 1, "subscribe": {"room": "chat.lobby", "since": 3}, "trace": "abc"});
    assert_eq!(
        Codec::MsgPack.decode_request(&msgpack(&extra)),
        Ok(subscribe.clone())
    );
    // SUBSCRIBE plus field 9 (varint 3) inside Subscribe and field 15 (empty bytes) outside.
    let extra = hex::decode("0801120e0a0a636861742e6c6f62627948037a00").expect("hex");
    assert_eq!(
        Codec::Proto.decode_request(&Bytes::from(extra)),
        Ok(subscribe)
    );
}

#[test]
fn bytes_after_the_first_msgpack_value_are_ignored() {
    let mut bytes = SUBSCRIBE.bytes(Codec::MsgPack).to_vec();
    bytes.extend_from_slice(&[0xc1, 0xff, 0x00]);
    let decoded = Codec::MsgPack.decode_request(&Bytes::from(bytes));
    assert_eq!(decoded, Ok(request(1, ClientOp::subscribe(lobby()))));
}

#[test]
fn msgpack_nested_more_than_15_levels_deep_is_malformed() {
    let nested = |levels: usize| {
        // The envelope is one level; `trace` adds `levels - 1` arrays.
        let mut value = json!(1);
        for _ in 1..levels {
            value = json!([value]);
        }
        msgpack(&json!({"id": 1, "subscribe": {"room": "chat.lobby"}, "trace": value}))
    };
    assert!(Codec::MsgPack.decode_request(&nested(15)).is_ok());
    assert!(matches!(
        Codec::MsgPack.decode_request(&nested(16)),
        Err(RequestError::Malformed(_))
    ));
}

#[test]
fn errors_for_requests_without_an_id_are_still_reported_with_id_0() {
    let error = Codec::MsgPack
        .decode_request(&msgpack(&json!({"subscribe": {"room": "chat lobby"}})))
        .expect_err("a space is forbidden");
    let reply = error.reply().expect("an error reply");
    assert_eq!(reply.id, RequestId(0));
    assert_eq!(error_code(&error), Some(102));
}
