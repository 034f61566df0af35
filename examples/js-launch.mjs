// What the browser examples share: build the broker and clients/js when
// needed, start a broker, serve a page with the client bundles, and give the
// example a Node client for its simulator.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const js = join(repo, "clients/js");

/** Runs `npm ci` and the build in clients/js when its dist/ is missing. */
export async function roomcastJs() {
  if (!existsSync(join(js, "dist/browser/roomcast-proto.min.js"))) {
    execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: js, stdio: "inherit" });
    execFileSync("npm", ["run", "build"], { cwd: js, stdio: "inherit" });
  }
  const WebSocket = createRequire(join(js, "package.json"))("ws");
  const { Client } = await import(join(js, "dist/index.js"));
  const { protobuf } = await import(join(js, "dist/proto.js"));
  return { Client, protobuf, WebSocket };
}

/** Starts roomcast (ROOMCAST_BIN, or built with cargo) with `flags`; resolves with its ws:// URL. */
export async function startBroker(flags) {
  let bin = process.env.ROOMCAST_BIN;
  if (!bin) {
    execFileSync("cargo", ["build", "--release", "--bin", "roomcast"], { cwd: repo, stdio: "inherit" });
    bin = join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "release/roomcast");
  }
  const child = spawn(bin, ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--pin-cores", "false", ...flags], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  process.on("exit", () => child.kill());
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
  const first = await new Promise((resolve) => createInterface({ input: child.stdout }).once("line", resolve));
  const url = /ws:\/\/\S+/.exec(first)?.[0];
  if (!url) throw new Error(`roomcast said: ${first}`);
  return url;
}

/** Serves `page` at / and the client bundles at /roomcast.js and /roomcast-proto.js; `routes` adds handlers. */
export async function servePage(page, port, routes = {}) {
  const files = {
    "/": ["text/html", () => readFileSync(page)],
    "/roomcast.js": ["text/javascript", () => readFileSync(join(js, "dist/browser/roomcast.min.js"))],
    "/roomcast-proto.js": ["text/javascript", () => readFileSync(join(js, "dist/browser/roomcast-proto.min.js"))],
  };
  const server = createServer((request, response) => {
    const path = new URL(request.url, "http://localhost").pathname;
    if (routes[path]) return routes[path](request, response);
    const file = files[path];
    if (!file) return response.writeHead(404).end();
    response.writeHead(200, { "content-type": file[0], "cache-control": "no-store" }).end(file[1]());
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return `http://localhost:${server.address().port}/`;
}

/** A connected Node client. */
export async function connect(url, options = {}) {
  const { Client, WebSocket } = await roomcastJs();
  const client = new Client(url, { WebSocket, ...options });
  await new Promise((resolve) => {
    client.on("connected", resolve);
    client.connect();
  });
  return client;
}

/** `--name value` from the command line, or the default. */
export function flag(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
}
