"""Server-Sent Events read by Python's standard library.

`http.client` streams GET /sse?room=...&room=... from a running broker
(docs/PROTOCOL.md, "Server-Sent Events") and parses the events the way the
HTML standard says a browser does; publications are made over a WebSocket
with `websockets` (sync API) and `msgpack`, as in interop.py:

1. the answer is 200 text/event-stream, chunked, with `Cache-Control:
   no-cache` and `X-Accel-Buffering: no`; each room's subscribe is answered
   by a `subscribed` event;
2. publications arrive as `message` events: a binary room's payload in
   base64, a text room's (the broker runs with sse_text_rooms=py.text.*)
   as text; each id holds every room's `<epoch>:<offset>`;
3. the reader goes away, more is published, and a new request with the
   last id in `Last-Event-ID` gets `subscribed` with recovered: true for
   each room, the missed publications once and in order, then live ones.

Usage: python3 tests/python/sse_client.py HOST:PORT (tests/sse.rs runs it).
Exits 0 with a one-line summary, or 1 with what did not match.
"""

import base64
import http.client
import json
import os
import sys

try:
    import msgpack
    from websockets.sync.client import connect
except ImportError as missing:
    sys.exit(f"sse: {missing}: install tests/python/requirements.txt (./scripts/test.sh does)")

TIMEOUT = 10.0


class Mismatch(Exception):
    """The server said something the protocol does not allow here."""


def check(condition, message):
    if not condition:
        raise Mismatch(message)


class Stream:
    """One SSE response, read event by event."""

    def __init__(self, addr, rooms, last_event_id=None):
        host, port = addr.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
        query = "&".join(f"room={room}" for room in rooms)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", f"/sse?{query}", headers=headers)
        self.response = self.connection.getresponse()
        if self.response.status != 200:
            raise Mismatch(f"status {self.response.status}: {self.response.read()!r}")
        check(self.response.getheader("Content-Type") == "text/event-stream", "content type")
        check(self.response.getheader("Cache-Control") == "no-cache", "Cache-Control")
        check(self.response.getheader("X-Accel-Buffering") == "no", "X-Accel-Buffering")
        check(self.response.getheader("Transfer-Encoding") == "chunked", "a chunked body")

    def event(self):
        """The next event as (id, name, data), skipping comments."""
        fields = {}
        while True:
            line = self.response.readline()
            check(line, "the stream ended")
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                if fields:
                    return fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value

    def close(self):
        self.connection.close()


class Publisher:
    """A WebSocket client that publishes and waits for each ack."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 1

    def publish(self, room, data):
        request_id = self.next_id
        self.next_id += 1
        self.ws.send(msgpack.packb({"id": request_id, "publish": {"room": room, "data": data}}, use_bin_type=True))
        reply = msgpack.unpackb(self.ws.recv(timeout=TIMEOUT), raw=False)
        check(reply.get("reply", {}).get("id") == request_id and "ack" in reply["reply"], f"publish: {reply!r}")
        return reply["reply"]["ack"]["offset"]


def payload_of(room, data):
    """A message event's payload, as bytes, from `text` or base64 `data`."""
    if room.startswith("py.text."):
        check("text" in data and "data" not in data, f"a text room sends text: {data!r}")
        return data["text"].encode("utf-8")
    check("data" in data and "text" not in data, f"a binary room sends base64: {data!r}")
    return base64.b64decode(data["data"])


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 tests/python/sse_client.py HOST:PORT")
    addr = sys.argv[1]
    with connect(f"ws://{addr}/ws", subprotocols=["roomcast.v1.msgpack"], open_timeout=TIMEOUT) as ws:
        run(addr, Publisher(ws))


def run(addr, publisher):
    binary, text = f"py.bin.{os.getpid()}", f"py.text.{os.getpid()}"
    rooms = [binary, text]

    stream = Stream(addr, rooms)
    positions = {}
    for room in rooms:
        event_id, name, data = stream.event()
        check(name == "subscribed" and data["room"] == room, f"subscribed to {room}: {name} {data!r}")
        check(data["recovered"] is False and data["offset"] == 0, f"a fresh room: {data!r}")
        positions[room] = (data["epoch"], 0)

    def expect(stream, room, payload):
        event_id, name, data = stream.event()
        check(name == "message" and data["room"] == room, f"a message of {room}: {name} {data!r}")
        epoch, offset = positions[room]
        check(data["offset"] == offset + 1 and data["epoch"] == epoch, f"the next offset: {data!r}")
        positions[room] = (epoch, offset + 1)
        check(payload_of(room, data) == payload, f"payload {payload!r}: {data!r}")
        wanted = ",".join(f"{e}:{o}" for e, o in (positions[r] for r in rooms))
        check(event_id == wanted, f"id {event_id!r}, expected {wanted!r}")
        return event_id

    publisher.publish(binary, b"\x00\x01\xff")
    expect(stream, binary, b"\x00\x01\xff")
    publisher.publish(text, "grüße".encode())
    last_id = expect(stream, text, "grüße".encode())
    stream.close()

    missed = [(binary, b"away-1"), (text, b"away-2"), (binary, b"away-3")]
    for room, data in missed:
        publisher.publish(room, data)
    stream = Stream(addr, rooms, last_event_id=last_id)
    for room in rooms:
        _, name, data = stream.event()
        check(name == "subscribed" and data["recovered"] is True, f"recovered {room}: {name} {data!r}")
        check(data["room"] == room, f"rooms answer in request order: {data!r}")
        if room == binary:
            expect(stream, binary, b"away-1")
            expect(stream, binary, b"away-3")
        else:
            expect(stream, text, b"away-2")
    publisher.publish(text, b"live")
    expect(stream, text, b"live")
    stream.close()
    print(f"sse: ok, 2 rooms, {len(missed)} missed publications resumed once, in order, then live")


if __name__ == "__main__":
    try:
        main()
    except (Mismatch, OSError, TimeoutError) as failure:
        print(f"sse: FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
