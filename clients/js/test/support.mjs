// Test kit: a real roomcast broker on port 0, a TCP proxy the tests cut, the
// stage the Chromium tests share, and small waiting helpers. Every test file
// starts its brokers through here.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import net from "node:net";
import { createInterface } from "node:readline";

import { chromium } from "playwright-core";
import WebSocket from "ws";

import { Client } from "../dist/index.js";

export const BIN = process.env.ROOMCAST_BIN;
if (!BIN) throw new Error("set ROOMCAST_BIN to the roomcast binary (clients/js/test.sh does)");

/** The flags the client tests run every broker with; `extra` adds to them. */
const FLAGS = ["--admin-listen", "127.0.0.1:0", "--workers", "2", "--pin-cores", "false", "--history-size", "100", "--presence", "true", "--join-leave", "true"];

/**
 * Starts `roomcast --listen 127.0.0.1:0 ...` and waits for its first two
 * lines, `roomcast listening on ws://127.0.0.1:PORT/ws with 2 workers` and
 * `roomcast admin on http://127.0.0.1:PORT`.
 */
export async function startBroker(extra = [], listen = "127.0.0.1:0") {
  const child = spawn(BIN, ["--listen", listen, ...FLAGS, ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-4000)));
  // Both lines often come in one chunk, and readline emits them in one go:
  // a listener added after the first would miss the second. One listener
  // collects them all (and keeps draining stdout afterwards).
  const lines = [];
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`roomcast did not start in 15 s: ${stderr}`)), 15_000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (lines.length < 2) lines.push(line);
      if (lines.length === 2) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => reject(new Error(`roomcast exited (${code}): ${stderr}`)));
  });
  await started;
  // The second line says where the admin listener is.
  const [first, second] = lines;
  const match = /ws:\/\/127\.0\.0\.1:(\d+)(\/\S*)/.exec(first);
  if (!match) throw new Error(`unexpected first line: ${first}`);
  const port = Number(match[1]);
  const admin = /http:\/\/(\S+)/.exec(second)?.[1];
  if (!admin) throw new Error(`unexpected second line: ${second}`);
  return {
    port,
    url: `ws://127.0.0.1:${port}${match[2]}`,
    child,
    /** The node's counters (GET /stats on the admin listener). */
    stats: async () => (await fetch(`http://${admin}/stats`)).json(),
    /** SIGTERM: a graceful shutdown (every connection closed with 1012). */
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill(signal);
      await exited;
    },
  };
}

/**
 * A TCP proxy in front of a broker, so a test can fail the network on cue:
 * `cut()` destroys every proxied connection (the client sees 1006),
 * `refuse = true` closes new ones at once, `mute = true` stops passing the
 * server's bytes to the client (replies lost on the way).
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  const proxy = {
    target: targetPort,
    refuse: false,
    mute: false,
    accepted: 0,
    cut() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
  };
  const server = net.createServer((client) => {
    if (proxy.refuse) return client.destroy();
    proxy.accepted++;
    const upstream = net.connect(proxy.target, "127.0.0.1");
    const pair = [client, upstream];
    pairs.add(pair);
    client.on("data", (chunk) => upstream.write(chunk));
    upstream.on("data", (chunk) => {
      if (!proxy.mute) client.write(chunk);
    });
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.port = server.address().port;
  proxy.url = `ws://127.0.0.1:${proxy.port}/ws`;
  proxy.close = () => {
    proxy.cut();
    return new Promise((resolve) => server.close(resolve));
  };
  return proxy;
}

/** Resolves once `check()` is truthy (polled), or fails after `ms` naming `what`. */
export async function waitFor(check, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The next `type` event of `emitter` that passes `accept`, or an error after `ms`. */
export function nextEvent(emitter, type, accept = () => true, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${String(type)} event within ${ms} ms`));
    }, ms);
    const off = emitter.on(type, (event) => {
      if (!accept(event)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/** An HS256 JWT for `secret` (the broker's `--jwt-secret`). */
export function jwt(secret, claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

export const text = (data) => new TextDecoder().decode(data);

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

/**
 * What every Chromium test file starts from: a broker (with `flags`), a proxy
 * in front of it the test can cut, the file's own page server (`serve()`,
 * which returns something with `close()`), headless Chromium, and a publisher
 * connected from Node. `stop()` ends them all.
 */
export async function startBrowserStage({ flags = [], serve }) {
  const stage = {};
  stage.stop = async () => {
    stage.publisher?.close();
    await stage.browser?.close();
    stage.site?.close();
    await stage.proxy?.close();
    await stage.broker?.stop("SIGKILL");
  };
  try {
    stage.broker = await startBroker(flags);
    stage.proxy = await startProxy(stage.broker.port);
    stage.site = await serve();
    stage.browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
    stage.publisher = new Client(stage.broker.url, { WebSocket });
    const up = nextEvent(stage.publisher, "connected");
    stage.publisher.connect();
    await up;
  } catch (error) {
    await stage.stop();
    throw error;
  }
  return stage;
}
