"""Schemathesis hooks for the HTTP API's run (tests/http_api.rs): a
MessagePack serializer, so the request bodies the schema declares as
`application/msgpack` are sent too, not skipped."""

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
