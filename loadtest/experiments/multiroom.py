"""An experiment for issue 11, not part of the race: R rooms with one
publisher each, and S subscriber connections that each join ALL rooms, so
a server can merge many rooms' messages into one write per socket (a
traffic shape our generator does not make). Open loop at RATE publishes/s
without request ids; deliveries are counted from the bytes received, so it
needs no frame parsing and Python keeps up to about 1.7 M deliveries/s.

    python3 loadtest/experiments/multiroom.py PORT R S RATE SECONDS
    loadtest/experiments/multiroom_run.sh NAME PORT RATE R S -- SERVER...
"""
import base64, os, socket, sys, time, selectors, msgpack

host, port = "127.0.0.1", int(sys.argv[1])
R, S = int(sys.argv[2]), int(sys.argv[3])
rate = float(sys.argv[4])          # publishes/s over all publishers
secs = float(sys.argv[5])
payload = b"x" * 128

def ws_frame(data):
    n = len(data)
    hdr = bytes([0x82])
    if n < 126: hdr += bytes([0x80 | n])
    elif n < 65536: hdr += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else: hdr += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return hdr + b"\0\0\0\0" + data   # mask key 0: payload unchanged

def connect():
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: roomcast.v1.msgpack\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert b" 101 " in buf.split(b"\r\n")[0], buf[:100]
    return s, buf.split(b"\r\n\r\n", 1)[1]

subs = []
for i in range(S):
    s, rest = connect()
    s.sendall(b"".join(ws_frame(msgpack.packb({"id": r + 1, "subscribe": {"room": f"mr{r}"}})) for r in range(R)))
    subs.append(s)
time.sleep(1.0)   # acks arrive; drained below
pubs = []
for r in range(R):
    s, _ = connect()
    s.setblocking(False)
    pubs.append((s, ws_frame(msgpack.packb({"publish": {"room": f"mr{r}", "data": payload}}))))
sel = selectors.DefaultSelector()
for s in subs:
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
# drain acks
t = time.time() + 0.5
while time.time() < t:
    for key, _ in sel.select(0.05):
        try: key.fileobj.recv(1 << 20)
        except BlockingIOError: pass

delivery = len(ws_frame(msgpack.packb({"message": {"room": "mr10", "offset": 100000, "data": payload}}))) - 4  # server frames unmasked
tick = 0.01
per_tick = rate * tick / R
owed = [0.0] * R
sent = 0; partial = 0
received = 0
start = time.time(); nxt = start; end = start + secs
buf = bytearray(1 << 20)
while True:
    now = time.time()
    if now >= end: break
    if now >= nxt:
        nxt += tick
        for i, (s, frame) in enumerate(pubs):
            owed[i] += per_tick
            k = int(owed[i]); owed[i] -= k
            if k:
                data = frame * k
                try:
                    n = s.send(data)
                except BlockingIOError:
                    n = 0
                sent += n // len(frame)
                if n != len(data): partial += 1
    for key, _ in sel.select(max(0.0, min(nxt, end) - time.time())):
        try:
            while True:
                n = key.fileobj.recv_into(buf)
                if n <= 0: break
                received += n
                if n < len(buf): break
        except BlockingIOError:
            pass
el = time.time() - start
print(f"offered {rate:.0f}/s sent {sent/el:.0f} publishes/s, partial sends {partial}, "
      f"received {received/el/1e6:.1f} MB/s = {received/delivery/el/1e6:.2f} M deliveries/s "
      f"(expected {sent*S/el/1e6:.2f} M), frame ~{delivery} B")
