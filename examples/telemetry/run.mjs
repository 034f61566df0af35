// examples/telemetry: a browser dashboard of simulated sensors, one room per
// sensor. The page subscribes to every room and keeps only each sensor's
// latest value, drawing once per animation frame (conflation): however many
// messages arrive, the page does one frame's work per frame.
//
//   node examples/telemetry/run.mjs [--sensors 2000] [--hz 2] [--port 8090]
//
// then open the printed address. ROOMCAST_BIN picks the broker binary
// (default: built with cargo --release).
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, flag, roomcastJs, servePage, startBroker } from "../js-launch.mjs";

const sensors = Number(flag("sensors", "2000"));
const hz = Number(flag("hz", "2"));
await roomcastJs();
const ws = await startBroker(["--workers", "2"]);
const page = await servePage(join(dirname(fileURLToPath(import.meta.url)), "index.html"), Number(flag("port", "8090")), {
  "/config.json": (_, response) =>
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ws, sensors })),
});

// The simulator: a random walk per sensor, each value a float64 (8 bytes).
const publisher = await connect(ws);
const values = Float64Array.from({ length: sensors }, () => 50 + Math.random() * 20);
const tick = 1000 / hz / 10; // spread each round over ten ticks
let next = 0;
setInterval(() => {
  const batch = Math.ceil(sensors / 10);
  for (let i = 0; i < batch; i++, next = (next + 1) % sensors) {
    values[next] = Math.min(100, Math.max(0, values[next] + (Math.random() - 0.5) * 6));
    publisher.publishNoAck(`sensors.${next}`, new Uint8Array(new Float64Array([values[next]]).buffer));
  }
}, tick);
console.log(`telemetry: ${sensors} sensors at ${hz} Hz (${sensors * hz} messages/s) on ${ws}\nopen ${page}`);
