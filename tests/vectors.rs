//! Test vectors of the wire protocol: every operation as bytes, in both
//! codecs, checked in both directions (our encoder writes exactly these
//! bytes; our decoder reads them back into the expected value).
//!
//! docs/PROTOCOL.md shows the same bytes, and a test below checks that it
//! still does, so a client author in any language can test an encoder and a
//! decoder against them. The hex lives only in the `Vector` consts.

use bytes::Bytes;
use prost::Message as _;
use serde::Serialize;
use serde_json::json;

use roomcast::protocol::proto::pb;
use roomcast::protocol::{
    frame, ClientOp, ClientRequest, Codec, ErrorCode, Offset, Outcome, Reply, RequestError,
    RequestId, RoomName, RoomNameError, ServerEvent,
};

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

// Server -> client.

/// `reply {id: 1, ack {offset: 41}}`: the answer to SUBSCRIBE when the room is at offset 41.
const ACK_SUBSCRIBE: Vector = Vector {
    msgpack: "81 a5 72 65 70 6c 79 82 a2 69 64 01 a3 61 63 6b 81 a6 6f 66 66 73 65 74 29",
    proto: "0a 06 08 01 12 02 08 29",
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

/// `{id: 5, frobnicate: {}}`: a well-formed request with no operation this server knows.
const UNKNOWN_OPERATION: Vector = Vector {
    msgpack: "82 a2 69 64 05 aa 66 72 6f 62 6e 69 63 61 74 65 80",
    proto: "08 05 7a 00",
};

const ALL_VECTORS: [(&str, &Vector); 10] = [
    ("SUBSCRIBE", &SUBSCRIBE),
    ("UNSUBSCRIBE", &UNSUBSCRIBE),
    ("PUBLISH", &PUBLISH),
    ("PUBLISH_NO_REPLY", &PUBLISH_NO_REPLY),
    ("ACK_SUBSCRIBE", &ACK_SUBSCRIBE),
    ("ACK_UNSUBSCRIBE", &ACK_UNSUBSCRIBE),
    ("ERROR_INVALID_ROOM", &ERROR_INVALID_ROOM),
    ("MESSAGE", &MESSAGE),
    ("MESSAGE_FRAME", &MESSAGE_FRAME),
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
        assert_eq!(
            framed[..],
            [&rfc6455_header(envelope.len())[..], &envelope[..]].concat(),
            "{codec}: frame"
        );
        let decoded = codec.decode_server(&vector.bytes(codec));
        assert_eq!(
            decoded,
            Ok(ServerEvent::Reply(reply.clone())),
            "{codec}: decode"
        );
    }
}

/// The header of an unmasked final binary frame, written from RFC 6455 §5.2.
fn rfc6455_header(len: usize) -> Vec<u8> {
    let mut header = vec![0x82];
    if len <= 125 {
        header.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        header.push(126);
        header.extend_from_slice(&short.to_be_bytes());
    } else {
        header.push(127);
        header.extend_from_slice(&(len as u64).to_be_bytes());
    }
    header
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
}

#[test]
fn unsubscribing_from_chat_lobby_with_id_2() {
    assert_request_vector(
        &UNSUBSCRIBE,
        &request(2, ClientOp::Unsubscribe { room: lobby() }),
    );
}

#[test]
fn publishing_hi_to_chat_lobby_with_id_3_asks_for_the_offset() {
    assert_request_vector(&PUBLISH, &request(3, publish_hi()));
}

#[test]
fn publishing_hi_with_id_0_is_fire_and_forget() {
    let fire_and_forget = request(0, publish_hi());
    assert!(!fire_and_forget.id.wants_reply());
    assert_request_vector(&PUBLISH_NO_REPLY, &fire_and_forget);
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
fn subscribe_is_acknowledged_with_the_rooms_current_offset_41() {
    assert_reply_vector(&ACK_SUBSCRIBE, &Reply::ack(RequestId(1), Offset(41)));
}

#[test]
fn unsubscribe_is_acknowledged_with_offset_0_and_a_present_but_empty_ack() {
    assert_reply_vector(&ACK_UNSUBSCRIBE, &Reply::ack(RequestId(2), Offset(0)));
}

#[test]
fn subscribing_to_an_empty_room_name_with_id_9_earns_error_102() {
    let reply = Reply::error(
        RequestId(9),
        ErrorCode::InvalidRoom,
        "invalid room: room name is empty",
    );
    assert_reply_vector(&ERROR_INVALID_ROOM, &reply);
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
            let expected = [rfc6455_header(envelope.len()), envelope.clone()].concat();
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
