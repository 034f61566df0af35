"""Interop check: roomcast spoken by a client nobody here wrote.

Python's `websockets` (asyncio API) and `msgpack` drive a running broker
through the `roomcast.v1.msgpack` subprotocol, the way a third-party client
would, and check every answer against proto/roomcast.proto:

1. two clients connect to ws://ADDR/ws and the server echoes the subprotocol;
2. A subscribes to two rooms; each ack carries the room's current offset;
3. B publishes 100 messages into each room, some acked, some fire-and-forget;
   the acks carry consecutive offsets;
4. A receives every message once, in offset order, with the payload B sent;
5. an invalid room name gets error 102 and the connection stays usable;
6. A unsubscribes from one room and then receives only the other's messages;
7. a text frame gets the connection closed with 1003.

Usage: python3 tests/python/interop.py HOST:PORT [ROOM_ONE ROOM_TWO]
(tests/interop_python.rs passes rooms homed on different cores.) Exits 0
with a one-line summary, or 1 with what did not match.
"""

import asyncio
import sys

try:
    import msgpack
    import websockets
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
except ImportError as missing:
    sys.exit(
        f"interop: {missing}: install tests/python/requirements.txt (./scripts/test.sh does)"
    )

USAGE = "usage: python3 tests/python/interop.py HOST:PORT [ROOM_ONE ROOM_TWO]"
SUBPROTOCOL = "roomcast.v1.msgpack"
PER_ROOM = 100
ERROR_INVALID_ROOM = 102
CLOSE_UNSUPPORTED_DATA = 1003
TIMEOUT = 10.0
# Time in which a message that should not come would have come.
QUIET = 0.5


class Mismatch(Exception):
    """The server said something the protocol does not allow here."""


def check(condition, message):
    if not condition:
        raise Mismatch(message)


def expect_keys(what, value, keys):
    check(isinstance(value, dict), f"{what}: expected a map, got {value!r}")
    check(set(value) == set(keys), f"{what}: expected keys {sorted(keys)}, got {value!r}")


def payload(room, index):
    """Distinct bytes per message: empty, binary, and near the 64 KiB limit."""
    if index == 0:
        return b""
    if index == 1:
        return bytes(range(256)) * 234  # 59,904 bytes: a 16-bit frame length
    return f"{room}#{index}:".encode() + bytes((index * 7 + k) % 256 for k in range(index))


class Client:
    """One connection: a reader task sorts replies (by id) from messages."""

    def __init__(self, name, ws):
        self.name = name
        self.ws = ws
        self.next_id = 1
        self.pending = {}
        self.messages = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self.read())

    @classmethod
    async def connect(cls, name, addr):
        ws = await connect(
            f"ws://{addr}/ws", subprotocols=[SUBPROTOCOL], proxy=None, open_timeout=TIMEOUT
        )
        check(
            ws.subprotocol == SUBPROTOCOL,
            f"{name}: server chose subprotocol {ws.subprotocol!r}, expected {SUBPROTOCOL!r}",
        )
        return cls(name, ws)

    async def read(self):
        try:
            async for frame in self.ws:
                self.dispatch(frame)
        except ConnectionClosed:
            pass
        except Exception as error:  # noqa: BLE001 - reported by whoever waits next
            self.fail(error)
        if not self.closed.done():
            self.closed.set_result(self.ws.close_code)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(
                    Mismatch(f"{self.name}: connection closed ({self.ws.close_code}) before the reply")
                )

    def fail(self, error):
        for future in [*self.pending.values(), self.closed]:
            if not future.done():
                future.set_exception(error)
        self.messages.put_nowait(error)

    def dispatch(self, frame):
        check(isinstance(frame, bytes), f"{self.name}: got a text frame {frame!r}")
        envelope = msgpack.unpackb(frame, raw=False)
        check(
            isinstance(envelope, dict) and len(envelope) == 1,
            f"{self.name}: envelope must be a map with one key, got {envelope!r}",
        )
        if "reply" in envelope:
            reply = envelope["reply"]
            check(
                isinstance(reply, dict) and "id" in reply,
                f"{self.name}: reply without id: {envelope!r}",
            )
            expect_keys(f"{self.name} reply", reply, {"id", "ack"} if "ack" in reply else {"id", "error"})
            future = self.pending.pop(reply["id"], None)
            check(
                future is not None,
                f"{self.name}: reply to unknown or already answered id {reply['id']}: {reply!r}",
            )
            future.set_result(reply)
        elif "message" in envelope:
            message = envelope["message"]
            expect_keys(f"{self.name} message", message, {"room", "offset", "data"})
            check(
                isinstance(message["data"], bytes),
                f"{self.name}: data must be MessagePack bin, got {type(message['data']).__name__}",
            )
            self.messages.put_nowait(message)
        else:
            raise Mismatch(f"{self.name}: envelope is neither reply nor message: {envelope!r}")

    async def send(self, op, body, reply=True):
        """Sends one request; returns a future for its reply, or None for id 0."""
        request_id = 0
        future = None
        if reply:
            request_id = self.next_id
            self.next_id += 1
            future = asyncio.get_running_loop().create_future()
            self.pending[request_id] = future
        await self.ws.send(msgpack.packb({"id": request_id, op: body}, use_bin_type=True))
        return request_id, future

    async def request(self, op, body):
        """Sends one request and waits for its reply."""
        request_id, future = await self.send(op, body)
        reply = await wait(future, f"{self.name}: reply to {op} {body!r}")
        check(reply["id"] == request_id, f"{self.name}: reply id {reply['id']}, expected {request_id}")
        return reply

    async def next_message(self, what):
        item = await wait(self.messages.get(), f"{self.name}: {what}")
        if isinstance(item, Exception):
            raise item
        return item

    async def expect_no_message(self, what):
        try:
            item = await asyncio.wait_for(self.messages.get(), QUIET)
        except asyncio.TimeoutError:
            return
        raise Mismatch(f"{self.name}: {what}, got {item!r}")


async def wait(awaitable, what):
    try:
        return await asyncio.wait_for(awaitable, TIMEOUT)
    except asyncio.TimeoutError:
        raise Mismatch(f"{what}: nothing within {TIMEOUT:.0f} s") from None


def expect_ack(reply, what, keys=frozenset({"offset"})):
    check("ack" in reply, f"{what}: expected an ack, got {reply!r}")
    ack = reply["ack"]
    expect_keys(f"{what} ack", ack, keys)
    check(isinstance(ack["offset"], int), f"{what}: offset must be an integer, got {ack!r}")
    if "epoch" in keys:
        check(isinstance(ack["epoch"], str) and ack["epoch"], f"{what}: epoch must be a non-empty string, got {ack!r}")
    return ack["offset"]


def expect_error(reply, code, what):
    check("error" in reply, f"{what}: expected error {code}, got {reply!r}")
    error = reply["error"]
    expect_keys(f"{what} error", error, {"code", "message"})
    check(error["code"] == code, f"{what}: expected error code {code}, got {error!r}")
    check(isinstance(error["message"], str) and error["message"], f"{what}: error without a message: {error!r}")


async def publish(client, room, data, reply=True):
    return await client.send("publish", {"room": room, "data": data}, reply)


async def run(addr, rooms):
    one, two = rooms
    a = await Client.connect("A", addr)
    b = await Client.connect("B", addr)

    # A room that already has publications: the subscribe ack carries its offset.
    before = []
    for index in range(3):
        _, future = await publish(b, one, b"before A subscribed %d" % index)
        before.append(expect_ack(await wait(future, "B: reply to an early publish"), "early publish"))
    check(before == [before[0], before[0] + 1, before[0] + 2], f"early publish offsets not consecutive: {before}")

    start = {}
    for room in rooms:
        reply = await a.request("subscribe", {"room": room})
        start[room] = expect_ack(reply, f"A: subscribe {room}", {"offset", "epoch"})
    check(start[one] == before[-1], f"subscribe {one}: ack offset {start[one]}, expected the current {before[-1]}")

    # B publishes, interleaving the rooms; every third publication is fire-and-forget.
    sent = {room: [] for room in rooms}
    acks = []
    for index in range(PER_ROOM):
        for room in rooms:
            data = payload(room, index)
            sent[room].append(data)
            _, future = await publish(b, room, data, reply=index % 3 != 0)
            if future is not None:
                acks.append((room, index, future))
    for room, index, future in acks:
        offset = expect_ack(await wait(future, f"B: reply to publish {room} #{index}"), f"publish {room} #{index}")
        expected = start[room] + 1 + index
        check(offset == expected, f"publish {room} #{index}: ack offset {offset}, expected {expected}")

    # A receives each publication once, in order per room.
    last = dict(start)
    received = {room: 0 for room in rooms}
    for _ in range(PER_ROOM * len(rooms)):
        message = await a.next_message(f"message {sum(received.values()) + 1} of {PER_ROOM * len(rooms)}")
        room = message["room"]
        check(room in rooms, f"A: message for a room it never joined: {message!r}")
        check(
            message["offset"] == last[room] + 1,
            f"A: {room} offset {message['offset']} after {last[room]} (gap, repeat or reorder)",
        )
        index = message["offset"] - start[room] - 1
        check(
            message["data"] == sent[room][index],
            f"A: {room} offset {message['offset']} carries {len(message['data'])} bytes that differ from what B sent",
        )
        last[room] = message["offset"]
        received[room] += 1
    await a.expect_no_message("no message after all 200 were received")

    # An invalid room gets error 102 on both sides; both connections stay usable.
    reply = await a.request("subscribe", {"room": "has space"})
    expect_error(reply, ERROR_INVALID_ROOM, "A: subscribe 'has space'")
    _, future = await publish(b, "has space", b"nowhere")
    expect_error(await wait(future, "B: reply to publish 'has space'"), ERROR_INVALID_ROOM, "B: publish 'has space'")

    # After unsubscribing from one room, A hears only the other.
    reply = await a.request("unsubscribe", {"room": one})
    offset = expect_ack(reply, f"A: unsubscribe {one}")
    check(offset == 0, f"A: unsubscribe ack offset {offset}, expected 0")
    for room in rooms:
        _, future = await publish(b, room, b"after unsubscribe")
        offset = expect_ack(await wait(future, f"B: reply to publish {room} after unsubscribe"), "publish")
        check(offset == last[room] + 1, f"publish {room} after unsubscribe: offset {offset}, expected {last[room] + 1}")
    message = await a.next_message(f"the {two} message after unsubscribing from {one}")
    check(
        message == {"room": two, "offset": last[two] + 1, "data": b"after unsubscribe"},
        f"A: expected only the {two} message at offset {last[two] + 1}, got {message!r}",
    )
    await a.expect_no_message(f"nothing from {one} after unsubscribing")

    # A text frame closes the connection with 1003.
    await b.ws.send("text is not part of the protocol")
    code = await wait(b.closed, "B: close after a text frame")
    check(code == CLOSE_UNSUPPORTED_DATA, f"B: text frame: close code {code}, expected {CLOSE_UNSUPPORTED_DATA}")

    await a.ws.close()
    await a.reader
    check(a.ws.close_code == 1000, f"A: normal close answered with {a.ws.close_code}, expected 1000")
    return received


def main():
    if len(sys.argv) not in (2, 4):
        print(USAGE, file=sys.stderr)
        return 2
    addr = sys.argv[1]
    rooms = tuple(sys.argv[2:4]) if len(sys.argv) == 4 else ("interop-one", "interop-two")
    try:
        received = asyncio.run(run(addr, rooms))
    except Mismatch as mismatch:
        print(f"interop: FAILED: {mismatch}", file=sys.stderr)
        return 1
    except (OSError, ConnectionClosed) as error:
        print(f"interop: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    total = sum(received.values())
    print(
        f"interop: ok: websockets {websockets.__version__}, msgpack {'.'.join(map(str, msgpack.version))}: "
        f"{total} messages over {len(rooms)} rooms in order, error 102, unsubscribe, close 1003"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
