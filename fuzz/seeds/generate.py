#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the protocol's test
vectors (the `Vector` consts of tests/vectors.rs, which docs/PROTOCOL.md
shows byte for byte).

    python3 fuzz/seeds/generate.py      # from the repository root

* msgpack_request, proto_request: every vector of that codec, client and
  server envelopes alike (the decoder targets run both decoders).
* connection: a first byte (bit 0: protobuf, bit 1: half-close after
  writing), then masked WebSocket frames wrapping those envelopes, plus
  pings, pongs, closes, fragments and the protocol violations of
  docs/PROTOCOL.md "Bad input and limits".
"""

import pathlib
import re
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = pathlib.Path(__file__).resolve().parent

VECTOR = re.compile(
    r'const (\w+): Vector = Vector \{\s*msgpack: "([0-9a-f ]+)",\s*proto: "([0-9a-f ]+)",\s*\};'
)
# Client -> server envelopes; the rest are server -> client.
CLIENT = {
    "SUBSCRIBE", "UNSUBSCRIBE", "PUBLISH", "PUBLISH_NO_REPLY", "SUBSCRIBE_RECOVER",
    "PUBLISH_IDEMPOTENT", "HISTORY", "PRESENCE", "PRESENCE_STATS", "UNKNOWN_OPERATION",
    "REFRESH",
}
FRAMES = {"MESSAGE_FRAME"}  # already a WebSocket frame, not an envelope
# Envelopes no vector shows yet: `refresh {id: 15, token: "abc"}`.
EXTRA = {
    "REFRESH": {
        "msgpack": bytes.fromhex("82a269640fa772656672657368 81a5746f6b656ea3616263".replace(" ", "")),
        "proto": bytes.fromhex("080f42050a03616263"),
    },
}
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def vectors():
    text = (ROOT / "tests" / "vectors.rs").read_text()
    found = {}
    for name, msgpack, proto in VECTOR.findall(text):
        found[name] = {
            "msgpack": bytes.fromhex(msgpack.replace(" ", "")),
            "proto": bytes.fromhex(proto.replace(" ", "")),
        }
    assert CLIENT - EXTRA.keys() <= found.keys(), f"missing vectors: {CLIENT - EXTRA.keys() - found.keys()}"
    for name, vector in EXTRA.items():
        found.setdefault(name, vector)
    return found


def frame(first_byte, payload, masked=True, length=None):
    """A client frame; `length` overrides the length in the header."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    out = bytearray([first_byte])
    if n < 126:
        out.append(mask_bit | n)
    elif n <= 0xFFFF:
        out.append(mask_bit | 126)
        out += struct.pack(">H", n)
    else:
        out.append(mask_bit | 127)
        out += struct.pack(">Q", n)
    if masked:
        out += MASK
        out += bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    else:
        out += payload
    return bytes(out)


def binary(payload):
    return frame(0x82, payload)


def close(code, reason=b""):
    return frame(0x88, struct.pack(">H", code) + reason)


def write(target, name, data):
    directory = SEEDS / target
    directory.mkdir(exist_ok=True)
    (directory / name).write_bytes(data)


def main():
    found = vectors()
    for target in ("msgpack_request", "proto_request", "connection"):
        shutil.rmtree(SEEDS / target, ignore_errors=True)

    for name, vector in sorted(found.items()):
        if name in FRAMES:
            continue
        write("msgpack_request", name.lower(), vector["msgpack"])
        write("proto_request", name.lower(), vector["proto"])

    for codec, flag in (("msgpack", 0), ("proto", 1)):
        env = {name: found[name][codec] for name in CLIENT}
        # One request per connection.
        for name in sorted(CLIENT):
            write("connection", f"{codec}_{name.lower()}", bytes([flag]) + binary(env[name]))
        # A whole session, closed properly, and the same cut short.
        session = b"".join(
            binary(env[name])
            for name in ("SUBSCRIBE", "PUBLISH", "PUBLISH_IDEMPOTENT", "PUBLISH_IDEMPOTENT",
                         "HISTORY", "PRESENCE", "PRESENCE_STATS", "SUBSCRIBE_RECOVER",
                         "PUBLISH_NO_REPLY", "REFRESH", "UNSUBSCRIBE", "UNKNOWN_OPERATION")
        )
        write("connection", f"{codec}_session", bytes([flag]) + session + close(1000, b"bye"))
        write("connection", f"{codec}_session_half_closed", bytes([flag | 2]) + session)
        # Fragments: a publish in three frames with a ping between them.
        publish = env["PUBLISH"]
        fragmented = (frame(0x02, publish[:5]) + frame(0x89, b"mid")
                      + frame(0x00, publish[5:9]) + frame(0x80, publish[9:]))
        write("connection", f"{codec}_fragmented_publish", bytes([flag]) + fragmented)
        write("connection", f"{codec}_malformed_envelope", bytes([flag]) + binary(b"\xc1\xff\x00"))

    controls = {
        "ping": frame(0x89, b"are you there"),
        "pong": frame(0x8A, b"unsolicited"),
        "pings": frame(0x89, b"1") + frame(0x89, b"2") + frame(0x89, b"3"),
        "close_normal": close(1000),
        "close_empty": frame(0x88, b""),
        "close_one_byte": frame(0x88, b"\x03"),
        "close_bad_code": close(1005),
        "close_bad_reason": close(1000, b"\xff\xfe"),
        "ping_too_long": frame(0x89, b"x" * 126),
        "ping_fragmented": frame(0x09, b"x"),
        "text": frame(0x81, b"hello"),
        "text_not_utf8": frame(0x81, b"\xff"),
        "unknown_opcode": frame(0x83, b"x"),
        "reserved_bits": frame(0xC2, b"x"),
        "unmasked": frame(0x82, b"\x80", masked=False),
        "continuation_alone": frame(0x80, b"x"),
        "data_inside_fragments": frame(0x02, b"\x82") + frame(0x82, b"\x80"),
        "too_many_fragments": frame(0x02, b"\x80") + frame(0x00, b"") * 70 + frame(0x80, b""),
        "length_2_63": frame(0x82, b"", length=1 << 63),
        "length_over_limit": frame(0x82, b"", length=65537),
        "length_short": frame(0x82, b"abc", length=300),
        "garbage": bytes(range(256)),
    }
    for name, data in controls.items():
        write("connection", name, b"\x00" + data)


if __name__ == "__main__":
    main()
