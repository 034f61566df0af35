// roomcast's room semantics, natively on Socket.IO 4. Socket.IO has its own
// framing (Engine.IO packets, then Socket.IO packets, with binary data sent
// as a separate attachment frame), so roomcast's generator cannot drive this
// server; load.js in this folder drives it with socket.io-client.
//
// Events (client -> server, all with an optional ack callback):
//   "subscribe"   room            ack({offset})  the room's current offset
//   "unsubscribe" room            ack({offset: 0})
//   "publish"     {room, data}    ack({offset})  the offset given (data: binary)
// Server -> client: "message" {room, offset, data}, sent with
// io.to(room).emit(), which encodes the packet once for the whole room.
//
// Start: PORT=9203 node server.js   (or ../start.sh socketio 9203)
"use strict";
const http = require("node:http");
const { Server } = require("socket.io");

const PORT = Number(process.env.PORT || 9203);
const HOST = process.env.HOST || "127.0.0.1";

const offsets = new Map(); // room -> offset of its last publication
const stats = { connections_open: 0, connections_accepted: 0, messages_received: 0, publishes: 0, deliveries: 0 };

const httpServer = http.createServer((req, res) => {
  if (req.url === "/stats") {
    const cpu = process.cpuUsage();
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify({ ...stats, cpu_user_us: cpu.user, cpu_system_us: cpu.system }));
  }
  res.writeHead(404);
  res.end("not found");
});

const io = new Server(httpServer, {
  path: "/socket.io/",
  transports: ["websocket"], // no long-polling: compare WebSocket with WebSocket
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024, // roomcast's max_message_size
  pingInterval: 25000, // roomcast's ping_interval / pong_timeout
  pingTimeout: 20000,
});

const validRoom = (room) =>
  typeof room === "string" && room.length > 0 && Buffer.byteLength(room) <= 255 && !/[\s\p{Cc}*?>]/u.test(room);

io.on("connection", (socket) => {
  stats.connections_open++;
  stats.connections_accepted++;
  // Socket.IO puts every socket in a room named by its id; keep ours apart.
  const mine = new Set();
  socket.on("disconnect", () => stats.connections_open--);

  socket.on("subscribe", (room, ack) => {
    stats.messages_received++;
    if (!validRoom(room)) return typeof ack === "function" && ack({ error: { code: 102, message: "invalid room" } });
    mine.add(room);
    socket.join(room); // synchronous with the default in-memory adapter
    if (typeof ack === "function") ack({ offset: offsets.get(room) || 0 });
  });

  socket.on("unsubscribe", (room, ack) => {
    stats.messages_received++;
    if (!mine.delete(room))
      return typeof ack === "function" && ack({ error: { code: 104, message: `not subscribed to ${room}` } });
    socket.leave(room);
    if (typeof ack === "function") ack({ offset: 0 });
  });

  socket.on("publish", (msg, ack) => {
    stats.messages_received++;
    const room = msg && msg.room;
    if (!validRoom(room)) return typeof ack === "function" && ack({ error: { code: 102, message: "invalid room" } });
    const offset = (offsets.get(room) || 0) + 1;
    offsets.set(room, offset);
    stats.publishes++;
    const members = io.sockets.adapter.rooms.get(room);
    if (members) stats.deliveries += members.size;
    io.to(room).emit("message", { room, offset, data: msg.data || Buffer.alloc(0) });
    if (typeof ack === "function") ack({ offset });
  });
});

httpServer.listen(PORT, HOST, () => {
  console.log(`listening on ws://${HOST}:${httpServer.address().port}/ws`);
  console.log(`(Socket.IO, not the roomcast protocol: connect a Socket.IO client to http://${HOST}:${httpServer.address().port}/socket.io/)`);
});
