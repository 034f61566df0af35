"""Schemathesis hooks for the HTTP API's run (tests/http_api.rs): a
MessagePack serializer, so the request bodies the schema declares as
`application/msgpack` are sent too, not skipped; and filters that drop the
cases JSON Schema cannot judge (a string within its maxLength in characters
but over its bound in bytes)."""

import msgpack
import schemathesis

# MessagePack integers: a generated integer out of their range (a negative
# test's) is sent as a float, which is just as wrong for any field here (a
# string could be right: `user` takes one).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _packable(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return value
        return float("inf") if value > 0 else float("-inf")
    if isinstance(value, dict):
        return {str(k): _packable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_packable(v) for v in value]
    return value


@schemathesis.serializer("application/msgpack")
def to_msgpack(ctx, value):
    return msgpack.packb(_packable(value), use_bin_type=True)


# Bounds in bytes of UTF-8 that the schema can only give in characters.
_BYTE_BOUNDS = {"room": 255, "rooms": 255, "idempotency_key": 128}


def _ambiguous(value):
    """Whether a value holds a string the schema calls valid (within its
    maxLength in characters) and the server must refuse (over its bound in
    bytes): such a case tests JSON Schema, not the API."""
    if isinstance(value, dict):
        for key, item in value.items():
            bound = _BYTE_BOUNDS.get(key)
            names = item if isinstance(item, list) else [item]
            if bound is not None and any(
                isinstance(n, str) and len(n) <= bound < len(n.encode("utf-8", "surrogatepass"))
                for n in names
            ):
                return True
            if _ambiguous(item):
                return True
    elif isinstance(value, list):
        return any(_ambiguous(item) for item in value)
    return False


@schemathesis.hook
def filter_body(ctx, body):
    return not _ambiguous(body)


@schemathesis.hook
def filter_query(ctx, query):
    return not _ambiguous(query)
