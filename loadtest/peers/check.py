#!/usr/bin/env python3
"""Protocol check for a peer that speaks the roomcast.v1.msgpack subset.

Usage: python3 check.py ws://127.0.0.1:9201/ws [--slow]

Needs the `websockets` and `msgpack` Python packages. Checks: subprotocol
echo (and no header when none is offered), subscribe ack with the room's
current offset, publish ack with the assigned offset, delivery to every
subscriber (publisher included when subscribed) with offsets +1 and the data
intact, id-0 publish (no ack, still delivered), unsubscribe (ack 0, nothing
after), a second room with its own offsets. With --slow it also opens a
subscriber that never reads and publishes 32 MiB at it, and reports what
the peer did to it (the peer should close it; roomcast closes with 1013).
"""
import asyncio
import sys

import msgpack
import websockets

PROTO = "roomcast.v1.msgpack"


def enc(obj):
    return msgpack.packb(obj, use_bin_type=True)


async def recv(ws, timeout=2.0):
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, bytes), f"expected a binary message, got {raw!r}"
    return msgpack.unpackb(raw, raw=False)


async def expect_nothing(ws, timeout=0.3):
    try:
        got = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {msgpack.unpackb(got)!r}")


async def main(url, slow):
    room = "chat.lobby"
    a = await websockets.connect(url, subprotocols=[PROTO], max_size=None)
    assert a.subprotocol == PROTO, f"subprotocol echo: {a.subprotocol!r}"
    b = await websockets.connect(url, subprotocols=["nope", PROTO], max_size=None)
    assert b.subprotocol == PROTO, f"subprotocol echo with 2 offers: {b.subprotocol!r}"
    c = await websockets.connect(url, max_size=None)  # no offer at all
    assert c.subprotocol is None, f"no offer must get no header: {c.subprotocol!r}"
    try:
        await websockets.connect(url, subprotocols=["nope"])
        print("note: an offer of only unknown subprotocols was accepted (roomcast answers 400)")
    except Exception:
        pass

    await a.send(enc({"id": 1, "subscribe": {"room": room}}))
    r = await recv(a)
    base = r["reply"]["ack"]["offset"]
    assert r["reply"]["id"] == 1, r
    await b.send(enc({"id": 2, "subscribe": {"room": room}}))
    r = await recv(b)
    assert r == {"reply": {"id": 2, "ack": {"offset": base}}}, r

    # publish with id from c (not subscribed): ack with base+1, a and b get it
    await c.send(enc({"id": 3, "publish": {"room": room, "data": b"hi"}}))
    r = await recv(c)
    assert r == {"reply": {"id": 3, "ack": {"offset": base + 1}}}, r
    want = {"message": {"room": room, "offset": base + 1, "data": b"hi"}}
    for ws in (a, b):
        m = await recv(ws)
        assert m == want, m
    await expect_nothing(c)

    # the exact bytes of docs/PROTOCOL.md's delivery example, offset apart
    await c.send(enc({"id": 0, "publish": {"room": room, "data": b"hi"}}))
    raw = await asyncio.wait_for(a.recv(), 2)
    expect = bytes.fromhex("81a76d657373616765 83 a4726f6f6d aa636861742e6c6f62 6279 a66f6666736574".replace(" ", ""))
    assert raw.startswith(expect), raw.hex()
    assert msgpack.unpackb(raw)["message"]["offset"] == base + 2
    assert (await recv(b))["message"]["offset"] == base + 2
    await expect_nothing(c)  # id 0: no ack

    # publisher subscribed gets its own message; a later subscriber's ack = current offset
    await a.send(enc({"id": 4, "publish": {"room": room, "data": bytes(range(256)) * 40}}))
    got = [await recv(a), await recv(a)]
    kinds = sorted(next(iter(g)) for g in got)
    assert kinds == ["message", "reply"], got
    for g in got:
        if "reply" in g:
            assert g["reply"] == {"id": 4, "ack": {"offset": base + 3}}, g
        else:
            assert g["message"]["offset"] == base + 3 and g["message"]["data"] == bytes(range(256)) * 40
    assert (await recv(b))["message"]["offset"] == base + 3
    await c.send(enc({"id": 5, "subscribe": {"room": room}}))
    assert (await recv(c)) == {"reply": {"id": 5, "ack": {"offset": base + 3}}}

    # unsubscribe: ack 0, then nothing more for b
    await b.send(enc({"id": 6, "unsubscribe": {"room": room}}))
    r = await recv(b)
    assert r == {"reply": {"id": 6, "ack": {"offset": 0}}}, r
    await a.send(enc({"id": 0, "publish": {"room": room, "data": b""}}))
    assert (await recv(a))["message"] == {"room": room, "offset": base + 4, "data": b""}
    assert (await recv(c))["message"]["offset"] == base + 4
    await expect_nothing(b)

    # a second room has its own offsets
    other = "room-" + str(base)
    await b.send(enc({"id": 7, "subscribe": {"room": other}}))
    assert (await recv(b)) == {"reply": {"id": 7, "ack": {"offset": 0}}}
    for i in range(1, 101):
        await c.send(enc({"id": 0, "publish": {"room": other, "data": i.to_bytes(4, "big")}}))
    for i in range(1, 101):
        m = (await recv(b))["message"]
        assert m["room"] == other and m["offset"] == i and m["data"] == i.to_bytes(4, "big"), m
    print(f"ok: {url} (room {room} started at offset {base})")

    if slow:
        s = await websockets.connect(url, subprotocols=[PROTO], max_size=None, max_queue=1)
        await s.send(enc({"id": 1, "subscribe": {"room": "slow"}}))
        await recv(s)
        s.transport.pause_reading()  # stop reading the socket
        payload = b"x" * 32768
        for _ in range(1024):  # 32 MiB, well past the kernel buffers
            await c.send(enc({"id": 0, "publish": {"room": "slow", "data": payload}}))
        await c.send(enc({"id": 99, "subscribe": {"room": "x"}}))
        await recv(c, 10)
        await asyncio.sleep(2.0)
        s.transport.resume_reading()
        got = 0
        try:
            while True:
                await recv(s, 3)
                got += 1
        except websockets.ConnectionClosed as e:
            print(f"slow subscriber: closed after {got} of 1024 messages, code {e.rcvd.code if e.rcvd else None} "
                  f"reason {e.rcvd.reason if e.rcvd else ''!r}")
        except asyncio.TimeoutError:
            print(f"slow subscriber: NOT closed, got {got} of 1024 messages")
    for ws in (a, b, c):
        await ws.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], "--slow" in sys.argv[2:]))
