// roomcast protocol subset (roomcast.v1.msgpack) on Node + ws, the classic
// rooms-map pattern: rooms as Map<room, Set<ws>>, each publication encoded
// once with msgpackr and ws.send(buf) to every member of the room.
//
// Implements: subscribe, unsubscribe, publish (with or without id), message
// delivery with per-room offsets, subprotocol echo.
//
// Start: PORT=9202 node server.js   (or ../start.sh node-ws 9202)
"use strict";
const http = require("node:http");
const { WebSocketServer } = require("ws");
const { Packr, Unpackr } = require("msgpackr");

const PORT = Number(process.env.PORT || 9202);
const HOST = process.env.HOST || "127.0.0.1";
const SUBPROTOCOL = "roomcast.v1.msgpack";
// roomcast's defaults: max_message_size 64 KiB, outbound_max_bytes 256 KiB
// with slow_consumer = "close" (close 1013), close_timeout 2 s.
const MAX_MESSAGE = 64 * 1024;
const OUTBOUND_MAX_BYTES = 256 * 1024;
const CLOSE_TIMEOUT_MS = 2000;

const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

const rooms = new Map(); // room -> Set<ws>
const offsets = new Map(); // room -> offset of its last publication
const stats = { connections_open: 0, connections_accepted: 0, messages_received: 0, publishes: 0, deliveries: 0, protocol_closes: 0, slow_consumer_closes: 0 };

const ack = (id, offset) => packr.pack({ reply: { id, ack: { offset } } });
const error = (id, code, message) => packr.pack({ reply: { id, error: { code, message } } });
const validRoom = (room) =>
  typeof room === "string" && room.length > 0 && Buffer.byteLength(room) <= 255 && !/[\s\p{Cc}*?>]/u.test(room);

// ws has no outbound limit of its own: a sender that outruns a reader grows
// its buffer without bound. The usual guard, and the closest equivalent of
// roomcast's default: close a socket that has more than 256 KiB queued.
function send(ws, buf) {
  if (ws.readyState !== 1) return false;
  if (ws.bufferedAmount > OUTBOUND_MAX_BYTES) {
    slowConsumer(ws);
    return false;
  }
  ws.send(buf, { binary: true });
  return true;
}

function slowConsumer(ws) {
  stats.slow_consumer_closes++;
  leaveAll(ws);
  ws.close(1013, "slow consumer"); // queued behind what is buffered, so bound it:
  setTimeout(() => ws.terminate(), CLOSE_TIMEOUT_MS).unref();
}

function leaveAll(ws) {
  for (const room of ws.rooms) {
    const set = rooms.get(room);
    if (set && set.delete(ws) && set.size === 0) rooms.delete(room);
  }
  ws.rooms.clear();
}

function onMessage(ws, msg, isBinary) {
  stats.messages_received++;
  if (!isBinary) {
    stats.protocol_closes++;
    return ws.close(1003, "text frames are not supported");
  }
  let env;
  try {
    env = unpackr.unpack(msg);
  } catch {
    env = null;
  }
  if (env === null || typeof env !== "object" || Array.isArray(env)) {
    stats.protocol_closes++;
    return ws.close(1007, "malformed envelope");
  }
  const id = env.id || 0;
  let op, body;
  if (env.publish) (op = 3), (body = env.publish);
  else if (env.subscribe) (op = 1), (body = env.subscribe);
  else if (env.unsubscribe) (op = 2), (body = env.unsubscribe);
  else return send(ws, error(id, 100, "unknown operation"));
  const room = body.room;
  if (!validRoom(room)) return send(ws, error(id, 102, "invalid room"));

  if (op === 3) {
    const offset = (offsets.get(room) || 0) + 1;
    offsets.set(room, offset);
    stats.publishes++;
    const data = body.data === undefined ? Buffer.alloc(0) : body.data;
    const frame = packr.pack({ message: { room, offset, data } }); // encoded once
    const set = rooms.get(room);
    if (set) {
      // snapshot not needed: a slow consumer is removed after its send, and
      // deleting the current element of a Set during for..of is safe.
      for (const sub of set) if (send(sub, frame)) stats.deliveries++;
    }
    if (id) send(ws, ack(id, offset));
  } else if (op === 1) {
    if (!ws.rooms.has(room)) {
      if (ws.rooms.size >= 1024) return send(ws, error(id, 103, "already subscribed to 1024 rooms, the limit"));
      ws.rooms.add(room);
      let set = rooms.get(room);
      if (!set) rooms.set(room, (set = new Set()));
      set.add(ws);
    }
    if (id) send(ws, ack(id, offsets.get(room) || 0));
  } else {
    if (!ws.rooms.has(room)) return send(ws, error(id, 104, `not subscribed to ${room}`));
    ws.rooms.delete(room);
    const set = rooms.get(room);
    if (set && set.delete(ws) && set.size === 0) rooms.delete(room);
    if (id) send(ws, ack(id, 0));
  }
}

const wss = new WebSocketServer({
  noServer: true,
  maxPayload: MAX_MESSAGE,
  perMessageDeflate: false,
  clientTracking: false,
  // Called only when the client offered at least one token; unknown-only
  // offers were already refused with 400 below.
  handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
});

wss.on("connection", (ws) => {
  stats.connections_open++;
  stats.connections_accepted++;
  ws.rooms = new Set();
  ws.on("message", (msg, isBinary) => onMessage(ws, msg, isBinary));
  ws.on("close", () => {
    stats.connections_open--;
    leaveAll(ws);
  });
  ws.on("error", () => {});
});

const server = http.createServer((req, res) => {
  if (req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(stats));
  }
  if (req.url === "/ws") {
    res.writeHead(426, { Upgrade: "websocket" });
    return res.end("Upgrade Required");
  }
  res.writeHead(404);
  res.end("not found");
});

server.on("upgrade", (req, socket, head) => {
  const offer = req.headers["sec-websocket-protocol"];
  let status = 0;
  if (req.url !== "/ws") status = 404;
  else if (offer !== undefined && !offer.split(",").some((t) => t.trim() === SUBPROTOCOL)) status = 400;
  if (status) {
    const body = status === 400 ? `unsupported subprotocol; this server speaks: ${SUBPROTOCOL}` : "not found";
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    return;
  }
  socket.setNoDelay(true);
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
});

server.listen(PORT, HOST, () => console.log(`listening on ws://${HOST}:${server.address().port}/ws`));
