"""The envelopes of PROTOCOL.md's worked examples, byte for byte, in both
encodings; each hex string must still be in the document, so the doc and
this client cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomcast import codec
from roomcast.protocol import (
    Ack,
    ClientInfo,
    Codec,
    Delivery,
    Change,
    History,
    HistoryPage,
    PresenceChange,
    PresenceCounts,
    Publication,
    Publish,
    Refresh,
    Reply,
    Request,
    StreamPosition,
    Subscribe,
    Unsubscribe,
)

PROTOCOL = (Path(__file__).resolve().parents[3] / "docs" / "PROTOCOL.md").read_text()
EPOCH = "9f3c2a1b4d5e6f70"
GUEST = ClientInfo("5e1d09a2-1-7", "", 1767225600000)

REQUESTS = [
    (
        Request(1, Subscribe("chat.lobby")),
        "82 a2 69 64 01 a9 73 75 62 73 63 72 69 62 65 81 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79",
        "08 01 12 0c 0a 0a 63 68 61 74 2e 6c 6f 62 62 79",
    ),
    (
        Request(10, Subscribe("chat.lobby", StreamPosition(EPOCH, 40))),
        "82 a2 69 64 0a a9 73 75 62 73 63 72 69 62 65 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a7 72 65 63 6f 76 65 72 82 a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 a6 6f 66 66 73 65 74 28",
        "08 0a 12 22 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 14 0a 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 10 28",
    ),
    (
        Request(11, Publish("chat.lobby", b"hi", "order-17")),
        "82 a2 69 64 0b a7 70 75 62 6c 69 73 68 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 64 61 74 61 c4 02 68 69 af 69 64 65 6d 70 6f 74 65 6e 63 79 5f 6b 65 79 a8 6f 72 64 65 72 2d 31 37",
        "08 0b 22 1a 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 02 68 69 1a 08 6f 72 64 65 72 2d 31 37",
    ),
    (
        Request(12, History("chat.lobby", since=40, limit=2)),
        "82 a2 69 64 0c a7 68 69 73 74 6f 72 79 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a5 73 69 6e 63 65 28 a5 6c 69 6d 69 74 02",
        "08 0c 2a 10 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 10 28 18 02",
    ),
    (
        Request(8, Refresh("t.o.k")),
        "82 a2 69 64 08 a7 72 65 66 72 65 73 68 81 a5 74 6f 6b 65 6e a5 74 2e 6f 2e 6b",
        "08 08 42 07 0a 05 74 2e 6f 2e 6b",
    ),
]

ENVELOPES = [
    (
        Reply(10, Ack(42, EPOCH, recovered=True)),
        "81 a5 72 65 70 6c 79 82 a2 69 64 0a a3 61 63 6b 83 a6 6f 66 66 73 65 74 2a a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 a9 72 65 63 6f 76 65 72 65 64 c3",
        "0a 1a 08 0a 12 16 08 2a 12 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 18 01",
    ),
    (
        Reply(11, Ack(42, duplicate=True)),
        "81 a5 72 65 70 6c 79 82 a2 69 64 0b a3 61 63 6b 82 a6 6f 66 66 73 65 74 2a a9 64 75 70 6c 69 63 61 74 65 c3",
        "0a 08 08 0b 12 04 08 2a 20 01",
    ),
    (
        Reply(2, Ack(0)),
        "81 a5 72 65 70 6c 79 82 a2 69 64 02 a3 61 63 6b 81 a6 6f 66 66 73 65 74 00",
        "0a 04 08 02 12 00",
    ),
    (
        Delivery("chat.lobby", 42, b"hi"),
        "81 a7 6d 65 73 73 61 67 65 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a6 6f 66 66 73 65 74 2a a4 64 61 74 61 c4 02 68 69",
        "12 12 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 10 2a 1a 02 68 69",
    ),
    (
        Reply(12, HistoryPage(EPOCH, 42, (Publication(41, b"yo"), Publication(42, b"hi")))),
        "81 a5 72 65 70 6c 79 82 a2 69 64 0c a7 68 69 73 74 6f 72 79 83 a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 a6 6f 66 66 73 65 74 2a ac 70 75 62 6c 69 63 61 74 69 6f 6e 73 92 82 a6 6f 66 66 73 65 74 29 a4 64 61 74 61 c4 02 79 6f 82 a6 6f 66 66 73 65 74 2a a4 64 61 74 61 c4 02 68 69",
        "0a 28 08 0c 22 24 0a 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 10 2a 1a 06 08 29 12 02 79 6f 1a 06 08 2a 12 02 68 69",
    ),
    (
        Reply(13, (GUEST,)),
        "81 a5 72 65 70 6c 79 82 a2 69 64 0d a8 70 72 65 73 65 6e 63 65 81 a7 63 6c 69 65 6e 74 73 91 83 a6 63 6c 69 65 6e 74 ac 35 65 31 64 30 39 61 32 2d 31 2d 37 a4 75 73 65 72 a0 ac 6a 6f 69 6e 65 64 5f 61 74 5f 6d 73 cf 00 00 01 9b 76 da a8 00",
        "0a 1b 08 0d 2a 17 0a 15 0a 0c 35 65 31 64 30 39 61 32 2d 31 2d 37 18 80 d0 ea b6 b7 33",
    ),
    (
        Reply(14, PresenceCounts(1, 0)),
        "81 a5 72 65 70 6c 79 82 a2 69 64 0e ae 70 72 65 73 65 6e 63 65 5f 73 74 61 74 73 82 a7 63 6c 69 65 6e 74 73 01 a5 75 73 65 72 73 00",
        "0a 06 08 0e 32 02 08 01",
    ),
    (
        PresenceChange(Change.JOIN, "chat.lobby", GUEST),
        "81 a4 6a 6f 69 6e 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 69 6e 66 6f 83 a6 63 6c 69 65 6e 74 ac 35 65 31 64 30 39 61 32 2d 31 2d 37 a4 75 73 65 72 a0 ac 6a 6f 69 6e 65 64 5f 61 74 5f 6d 73 cf 00 00 01 9b 76 da a8 00",
        "1a 23 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 15 0a 0c 35 65 31 64 30 39 61 32 2d 31 2d 37 18 80 d0 ea b6 b7 33",
    ),
]


@pytest.mark.parametrize(("request_", "msgpack_hex", "proto_hex"), REQUESTS)
def test_requests_encode_to_the_documented_bytes(request_, msgpack_hex, proto_hex):
    for hex_bytes in (msgpack_hex, proto_hex):
        assert hex_bytes in PROTOCOL, "the example is no longer in PROTOCOL.md"
    assert codec.encode(Codec.MSGPACK, request_).hex(" ") == msgpack_hex
    assert codec.encode(Codec.PROTO, request_).hex(" ") == proto_hex


@pytest.mark.parametrize(("envelope", "msgpack_hex", "proto_hex"), ENVELOPES)
def test_server_envelopes_decode_from_the_documented_bytes(envelope, msgpack_hex, proto_hex):
    for hex_bytes in (msgpack_hex, proto_hex):
        assert hex_bytes in PROTOCOL, "the example is no longer in PROTOCOL.md"
    assert codec.decode(Codec.MSGPACK, bytes.fromhex(msgpack_hex)) == envelope
    assert codec.decode(Codec.PROTO, bytes.fromhex(proto_hex)) == envelope


def test_garbage_is_a_malformed_envelope_not_a_crash():
    from roomcast import MalformedEnvelope

    for payload in (b"\xc1", b"\x92\x01\x02", b'{"json": 1}', b"\x81\xa5reply\x01"):
        with pytest.raises(MalformedEnvelope):
            codec.decode(Codec.MSGPACK, payload)
    for payload in (b"\x0a\x05\x08", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b""):
        with pytest.raises(MalformedEnvelope):
            codec.decode(Codec.PROTO, payload)
    assert Unsubscribe("x") != Subscribe("x")
