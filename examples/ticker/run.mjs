// examples/ticker: a trading ticker over Protobuf. Prices stream to one room
// per symbol; the page resumes after a reconnect and shows what happened to
// the stream: "resumed, N replayed" when the room's history covered the
// outage, or a red gap line with the offsets lost when it did not.
//
//   node examples/ticker/run.mjs [--port 8091]
//
// then open the printed address and press "drop 2 s" (the history covers
// it) or "drop 12 s" (more than the 100 publications a room keeps: a gap).
// The page reaches the broker through a proxy in this script, which the
// buttons cut.
import net from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, flag, roomcastJs, servePage, startBroker } from "../js-launch.mjs";

const symbols = ["BTC", "ETH", "SOL", "EUR", "GOLD"];
await roomcastJs();
const direct = await startBroker(["--workers", "2", "--history-size", "100"]);
const brokerPort = Number(new URL(direct).port);

// The proxy the page goes through; /drop?seconds=N cuts it and refuses connections for N seconds.
const sockets = new Set();
let refuseUntil = 0;
const proxy = net.createServer((client) => {
  if (Date.now() < refuseUntil) return client.destroy();
  const upstream = net.connect(brokerPort, "127.0.0.1");
  client.pipe(upstream).pipe(client);
  for (const socket of [client, upstream]) {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket)).on("error", () => {});
  }
});
await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
const ws = `ws://127.0.0.1:${proxy.address().port}/ws`;

const page = await servePage(join(dirname(fileURLToPath(import.meta.url)), "index.html"), Number(flag("port", "8091")), {
  "/config.json": (_, response) =>
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ws, symbols })),
  "/drop": (request, response) => {
    const seconds = Number(new URL(request.url, "http://localhost").searchParams.get("seconds") ?? 2);
    refuseUntil = Date.now() + seconds * 1000;
    for (const socket of sockets) socket.destroy();
    response.writeHead(204).end();
  },
});

// The market: a random walk per symbol, 10 prices a second each, as text.
const { protobuf } = await roomcastJs();
const market = await connect(direct, { codec: protobuf });
const prices = Object.fromEntries(symbols.map((s, i) => [s, [60_000, 3_000, 150, 1.08, 2_300][i]]));
setInterval(() => {
  for (const symbol of symbols) {
    prices[symbol] *= 1 + (Math.random() - 0.5) * 0.002;
    market.publishNoAck(`ticker.${symbol}`, prices[symbol].toPrecision(6));
  }
}, 100);
console.log(`ticker: ${symbols.join(", ")} on ${direct} (the page goes through ${ws})\nopen ${page}`);
