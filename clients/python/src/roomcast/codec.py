"""Envelopes to bytes and back, in both encodings of PROTOCOL.md.

MessagePack writes maps keyed by the schema's field names, leaving out
fields that hold their default (as the server does); Protocol Buffers is
written by hand from proto/roomcast.proto, which is small enough that a
generated module and its runtime would cost more than these lines. Both
decoders skip what they do not know, as the protocol asks, and raise
`MalformedEnvelope` on anything else, never a bare library exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from .errors import MalformedEnvelope
from .protocol import (
    Ack,
    Change,
    ClientInfo,
    Codec,
    Delivery,
    ErrorReply,
    History,
    HistoryPage,
    Outcome,
    Presence,
    PresenceChange,
    PresenceCounts,
    PresenceStats,
    Publication,
    Publish,
    Refresh,
    Reply,
    Request,
    ServerEnvelope,
    Subscribe,
    Unsubscribe,
)


def encode(codec: Codec, request: Request) -> bytes:
    """One request as the payload of one binary WebSocket message."""
    if codec is Codec.MSGPACK:
        return _encode_msgpack(request)
    return _encode_proto(request)


def decode(codec: Codec, payload: bytes) -> ServerEnvelope:
    """One server envelope; raises `MalformedEnvelope` if it is not one."""
    try:
        if codec is Codec.MSGPACK:
            return _decode_msgpack(payload)
        return _decode_proto(payload)
    except MalformedEnvelope:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise MalformedEnvelope(f"not a {codec.value} envelope: {error}") from error


# MessagePack


def _op_map(request: Request) -> tuple[str, dict[str, Any]]:
    """The operation's key and its fields, defaults left out."""
    op = request.op
    if isinstance(op, Subscribe):
        fields: dict[str, Any] = {"room": op.room}
        if op.recover is not None:
            fields["recover"] = {"epoch": op.recover.epoch, "offset": op.recover.offset}
        if op.join_leave:
            fields["join_leave"] = True
        return "subscribe", fields
    if isinstance(op, Unsubscribe):
        return "unsubscribe", {"room": op.room}
    if isinstance(op, Publish):
        fields = {"room": op.room, "data": bytes(op.data)}
        if op.idempotency_key:
            fields["idempotency_key"] = op.idempotency_key
        return "publish", fields
    if isinstance(op, History):
        fields = {"room": op.room}
        if op.since:
            fields["since"] = op.since
        if op.limit:
            fields["limit"] = op.limit
        if op.reverse:
            fields["reverse"] = True
        return "history", fields
    if isinstance(op, Presence):
        return "presence", {"room": op.room}
    if isinstance(op, PresenceStats):
        return "presence_stats", {"room": op.room}
    if isinstance(op, Refresh):
        return "refresh", {"token": op.token}
    raise TypeError(f"not an operation: {op!r}")


def _encode_msgpack(request: Request) -> bytes:
    name, fields = _op_map(request)
    envelope: dict[str, Any] = {}
    if request.id:
        envelope["id"] = request.id
    envelope[name] = fields
    packed: bytes = msgpack.packb(envelope, use_bin_type=True)
    return packed


def _map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEnvelope(f"{what}: expected a map, got {type(value).__name__}")
    return value


def _uint(fields: dict[str, Any], key: str) -> int:
    value = fields.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedEnvelope(f"{key}: expected an unsigned integer, got {value!r}")
    return value


def _str(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key, "")
    if not isinstance(value, str):
        raise MalformedEnvelope(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _bytes(fields: dict[str, Any], key: str) -> bytes:
    value = fields.get(key, b"")
    if not isinstance(value, bytes):
        raise MalformedEnvelope(f"{key}: expected bytes, got {type(value).__name__}")
    return value


def _bool(fields: dict[str, Any], key: str) -> bool:
    value = fields.get(key, False)
    if not isinstance(value, bool):
        raise MalformedEnvelope(f"{key}: expected a bool, got {value!r}")
    return value


def _client_info(value: Any) -> ClientInfo:
    fields = _map(value, "info")
    return ClientInfo(_str(fields, "client"), _str(fields, "user"), _uint(fields, "joined_at_ms"))


def _decode_msgpack(payload: bytes) -> ServerEnvelope:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=0)
    unpacker.feed(payload)
    # Bytes after the first value are ignored, as the protocol says.
    envelope = _map(next(unpacker), "envelope")
    if "reply" in envelope:
        reply = _map(envelope["reply"], "reply")
        return Reply(_uint(reply, "id"), _msgpack_outcome(reply))
    if "message" in envelope:
        message = _map(envelope["message"], "message")
        return Delivery(_str(message, "room"), _uint(message, "offset"), _bytes(message, "data"))
    for change in Change:
        if change.value in envelope:
            event = _map(envelope[change.value], change.value)
            return PresenceChange(change, _str(event, "room"), _client_info(event.get("info", {})))
    raise MalformedEnvelope(f"no known kind in envelope with keys {sorted(envelope)}")


def _msgpack_outcome(reply: dict[str, Any]) -> Outcome:
    if "ack" in reply:
        ack = _map(reply["ack"], "ack")
        return Ack(_uint(ack, "offset"), _str(ack, "epoch"), _bool(ack, "recovered"), _bool(ack, "duplicate"))
    if "error" in reply:
        error = _map(reply["error"], "error")
        return ErrorReply(_uint(error, "code"), _str(error, "message"))
    if "history" in reply:
        page = _map(reply["history"], "history")
        publications = page.get("publications", [])
        if not isinstance(publications, list):
            raise MalformedEnvelope("publications: expected an array")
        return HistoryPage(
            _str(page, "epoch"),
            _uint(page, "offset"),
            tuple(
                Publication(_uint(fields, "offset"), _bytes(fields, "data"))
                for fields in (_map(entry, "publication") for entry in publications)
            ),
        )
    if "presence" in reply:
        clients = _map(reply["presence"], "presence").get("clients", [])
        if not isinstance(clients, list):
            raise MalformedEnvelope("clients: expected an array")
        return tuple(_client_info(entry) for entry in clients)
    if "presence_stats" in reply:
        counts = _map(reply["presence_stats"], "presence_stats")
        return PresenceCounts(_uint(counts, "clients"), _uint(counts, "users"))
    raise MalformedEnvelope(f"no known outcome in reply with keys {sorted(reply)}")


# Protocol Buffers (proto3 wire format)

_VARINT = 0
_FIXED64 = 1
_LENGTH = 2
_FIXED32 = 5

# ClientMessage's oneof `op`: field numbers.
_OP_FIELDS: dict[type, int] = {
    Subscribe: 2,
    Unsubscribe: 3,
    Publish: 4,
    History: 5,
    Presence: 6,
    PresenceStats: 7,
    Refresh: 8,
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Writer:
    """A message under construction; defaults are left out, as proto3 does."""

    def __init__(self) -> None:
        self.out = bytearray()

    def uint(self, number: int, value: int) -> _Writer:
        if value:
            self.out += _varint(number << 3 | _VARINT) + _varint(value)
        return self

    def flag(self, number: int, value: bool) -> _Writer:
        return self.uint(number, 1 if value else 0)

    def blob(self, number: int, value: bytes, always: bool = False) -> _Writer:
        if value or always:
            self.out += _varint(number << 3 | _LENGTH) + _varint(len(value)) + value
        return self

    def text(self, number: int, value: str) -> _Writer:
        return self.blob(number, value.encode("utf-8"))

    def message(self, number: int, inner: _Writer) -> _Writer:
        # A message field is written even when empty: its presence means something.
        return self.blob(number, bytes(inner.out), always=True)


def _encode_proto(request: Request) -> bytes:
    op = request.op
    body = _Writer()
    if isinstance(op, Subscribe):
        body.text(1, op.room)
        if op.recover is not None:
            body.message(2, _Writer().text(1, op.recover.epoch).uint(2, op.recover.offset))
        body.flag(3, op.join_leave)
    elif isinstance(op, (Unsubscribe, Presence, PresenceStats)):
        body.text(1, op.room)
    elif isinstance(op, Publish):
        body.text(1, op.room).blob(2, bytes(op.data)).text(3, op.idempotency_key or "")
    elif isinstance(op, History):
        body.text(1, op.room).uint(2, op.since).uint(3, op.limit).flag(4, op.reverse)
    elif isinstance(op, Refresh):
        body.text(1, op.token)
    else:
        raise TypeError(f"not an operation: {op!r}")
    return bytes(_Writer().uint(1, request.id).message(_OP_FIELDS[type(op)], body).out)


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Each field as (number, value): an int for varints, bytes for
    length-delimited ones; fixed-width fields (none in our schema) are skipped."""
    position = 0
    end = len(data)

    def varint() -> int:
        nonlocal position
        result = shift = 0
        while True:
            if position >= end:
                raise MalformedEnvelope("truncated varint")
            byte = data[position]
            position += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise MalformedEnvelope("varint longer than 10 bytes")

    while position < end:
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            yield number, varint()
        elif wire_type == _LENGTH:
            size = varint()
            if position + size > end:
                raise MalformedEnvelope("length-delimited field runs past the end")
            yield number, data[position : position + size]
            position += size
        elif wire_type == _FIXED64:
            position += 8
        elif wire_type == _FIXED32:
            position += 4
        else:
            raise MalformedEnvelope(f"unsupported wire type {wire_type}")
    if position > end:
        raise MalformedEnvelope("fixed-width field runs past the end")


def _as_int(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise MalformedEnvelope("expected a varint")
    return value


def _as_bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedEnvelope("expected a length-delimited field")
    return value


def _as_str(value: int | bytes) -> str:
    return _as_bytes(value).decode("utf-8")


def _proto_client_info(data: bytes) -> ClientInfo:
    client = user = ""
    joined = 0
    for number, value in _fields(data):
        if number == 1:
            client = _as_str(value)
        elif number == 2:
            user = _as_str(value)
        elif number == 3:
            joined = _as_int(value)
    return ClientInfo(client, user, joined)


def _proto_outcome(number: int, data: bytes) -> Outcome:
    if number == 2:
        offset, epoch, recovered, duplicate = 0, "", False, False
        for field, value in _fields(data):
            if field == 1:
                offset = _as_int(value)
            elif field == 2:
                epoch = _as_str(value)
            elif field == 3:
                recovered = bool(_as_int(value))
            elif field == 4:
                duplicate = bool(_as_int(value))
        return Ack(offset, epoch, recovered, duplicate)
    if number == 3:
        code, message = 0, ""
        for field, value in _fields(data):
            if field == 1:
                code = _as_int(value)
            elif field == 2:
                message = _as_str(value)
        return ErrorReply(code, message)
    if number == 4:
        epoch, offset, publications = "", 0, []
        for field, value in _fields(data):
            if field == 1:
                epoch = _as_str(value)
            elif field == 2:
                offset = _as_int(value)
            elif field == 3:
                at, payload = 0, b""
                for inner, inner_value in _fields(_as_bytes(value)):
                    if inner == 1:
                        at = _as_int(inner_value)
                    elif inner == 2:
                        payload = _as_bytes(inner_value)
                publications.append(Publication(at, payload))
        return HistoryPage(epoch, offset, tuple(publications))
    if number == 5:
        return tuple(_proto_client_info(_as_bytes(value)) for field, value in _fields(data) if field == 1)
    clients = users = 0
    for field, value in _fields(data):
        if field == 1:
            clients = _as_int(value)
        elif field == 2:
            users = _as_int(value)
    return PresenceCounts(clients, users)


def _decode_proto(payload: bytes) -> ServerEnvelope:
    kind: tuple[int, bytes] | None = None
    for number, value in _fields(payload):
        if number in (1, 2, 3, 4):
            kind = (number, _as_bytes(value))  # the last member of the oneof wins
    if kind is None:
        raise MalformedEnvelope("no known kind in envelope")
    number, data = kind
    if number == 1:
        reply_id = 0
        outcome: tuple[int, bytes] | None = None
        for field, value in _fields(data):
            if field == 1:
                reply_id = _as_int(value)
            elif 2 <= field <= 6:
                outcome = (field, _as_bytes(value))
        if outcome is None:
            raise MalformedEnvelope("reply without an outcome")
        return Reply(reply_id, _proto_outcome(*outcome))
    room, offset, message_data = "", 0, b""
    info = ClientInfo("", "", 0)
    for field, value in _fields(data):
        if field == 1:
            room = _as_str(value)
        elif field == 2 and number == 2:
            offset = _as_int(value)
        elif field == 2:
            info = _proto_client_info(_as_bytes(value))
        elif field == 3 and number == 2:
            message_data = _as_bytes(value)
    if number == 2:
        return Delivery(room, offset, message_data)
    return PresenceChange(Change.JOIN if number == 3 else Change.LEAVE, room, info)
