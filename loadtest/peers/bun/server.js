// roomcast protocol subset (roomcast.v1.msgpack) on Bun's built-in WebSocket
// pub/sub (uWebSockets inside): ws.subscribe(room) / server.publish(room, frame).
//
// Implements: subscribe, unsubscribe, publish (with or without id), message
// delivery with per-room offsets, subprotocol echo. Envelopes are built once
// per publish with msgpackr and handed to uWS, which writes the same bytes to
// every subscriber of the topic.
//
// Start: PORT=9201 node_modules/.bin/bun server.js   (or ../start.sh bun 9201)
import { Packr, Unpackr } from "msgpackr";

const PORT = Number(process.env.PORT || 9201);
const HOST = process.env.HOST || "127.0.0.1";
const SUBPROTOCOL = "roomcast.v1.msgpack";
// roomcast's defaults: max_message_size 64 KiB, outbound_max_bytes 256 KiB
// with slow_consumer = "close".
const MAX_MESSAGE = 64 * 1024;
const OUTBOUND_MAX_BYTES = 256 * 1024;

// Plain maps, no msgpackr record extension: the wire must be standard
// MessagePack maps keyed by field name.
const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

const offsets = new Map(); // room -> offset of its last publication
const stats = { connections_open: 0, connections_accepted: 0, messages_received: 0, publishes: 0, deliveries: 0, protocol_closes: 0 };

const ack = (id, offset) => packr.pack({ reply: { id, ack: { offset } } });
const error = (id, code, message) => packr.pack({ reply: { id, error: { code, message } } });
const validRoom = (room) =>
  typeof room === "string" && room.length > 0 && Buffer.byteLength(room) <= 255 && !/[\s\p{Cc}*?>]/u.test(room);

function pickProtocol(header) {
  if (header === null) return null; // no offer: msgpack, no header in the answer
  for (const token of header.split(",")) if (token.trim() === SUBPROTOCOL) return SUBPROTOCOL;
  return undefined; // only unknown tokens
}

const server = Bun.serve({
  hostname: HOST,
  port: PORT,
  fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname === "/stats") return Response.json(stats);
    if (url.pathname !== "/ws") return new Response("not found", { status: 404 });
    const proto = pickProtocol(req.headers.get("sec-websocket-protocol"));
    if (proto === undefined)
      return new Response(`unsupported subprotocol; this server speaks: ${SUBPROTOCOL}`, { status: 400 });
    // Bun (uWS) echoes the first offered token by itself when no header is
    // given; we set it explicitly, and only when the client offered one.
    const headers = new Headers();
    if (proto) headers.set("Sec-WebSocket-Protocol", proto);
    if (server.upgrade(req, { headers, data: { rooms: new Set() } })) return;
    return new Response("Upgrade Required", { status: 426, headers: { Upgrade: "websocket" } });
  },
  websocket: {
    // Closest equivalent of roomcast's slow_consumer = "close" with
    // outbound_max_bytes = 256 KiB: once a socket has more than 256 KiB
    // buffered, uWS closes it instead of buffering more (without
    // closeOnBackpressureLimit it would silently drop the message instead).
    backpressureLimit: OUTBOUND_MAX_BYTES,
    closeOnBackpressureLimit: true,
    maxPayloadLength: MAX_MESSAGE,
    perMessageDeflate: false,
    idleTimeout: 120,
    sendPings: true,
    open(ws) {
      stats.connections_open++;
      stats.connections_accepted++;
    },
    message(ws, msg) {
      stats.messages_received++;
      if (typeof msg === "string") {
        stats.protocol_closes++;
        ws.close(1003, "text frames are not supported");
        return;
      }
      let env;
      try {
        env = unpackr.unpack(msg);
      } catch {
        env = null;
      }
      if (env === null || typeof env !== "object" || Array.isArray(env)) {
        stats.protocol_closes++;
        ws.close(1007, "malformed envelope");
        return;
      }
      const id = env.id || 0;
      let op, body;
      if (env.publish) (op = 3), (body = env.publish);
      else if (env.subscribe) (op = 1), (body = env.subscribe);
      else if (env.unsubscribe) (op = 2), (body = env.unsubscribe);
      else return void ws.sendBinary(error(id, 100, "unknown operation"));
      const room = body.room;
      if (!validRoom(room)) return void ws.sendBinary(error(id, 102, "invalid room"));

      if (op === 3) {
        const offset = (offsets.get(room) || 0) + 1;
        offsets.set(room, offset);
        stats.publishes++;
        const data = body.data === undefined ? Buffer.alloc(0) : body.data;
        // Encoded once; uWS shares it across all subscribers of the topic.
        const frame = packr.pack({ message: { room, offset, data } });
        stats.deliveries += server.subscriberCount(room);
        server.publish(room, frame);
        if (id) ws.sendBinary(ack(id, offset));
      } else if (op === 1) {
        const rooms = ws.data.rooms;
        if (!rooms.has(room)) {
          if (rooms.size >= 1024) return void ws.sendBinary(error(id, 103, "already subscribed to 1024 rooms, the limit"));
          rooms.add(room);
        }
        // The ack goes out before any message of the room (single thread).
        if (id) ws.sendBinary(ack(id, offsets.get(room) || 0));
        ws.subscribe(room);
      } else {
        const rooms = ws.data.rooms;
        if (!rooms.has(room)) return void ws.sendBinary(error(id, 104, `not subscribed to ${room}`));
        rooms.delete(room);
        ws.unsubscribe(room);
        if (id) ws.sendBinary(ack(id, 0));
      }
    },
    close(ws) {
      stats.connections_open--;
    },
  },
});

console.log(`listening on ws://${HOST}:${server.port}/ws`);
