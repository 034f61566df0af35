// The admin dashboard in headless Chromium (Debian's chromium, driven by
// playwright-core): an operator opens /dashboard on the admin listener,
// traffic starts, and the page's charts and top-rooms table follow it live.
// The traffic comes from a second tab: a real browser WebSocket publishing
// to the real broker, MessagePack written by hand (two small envelopes).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const BIN = process.env.ROOMCAST_BIN;
if (!BIN) throw new Error("set ROOMCAST_BIN to the roomcast binary (tests/browser/test.sh does)");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOT = process.env.DASHBOARD_SCREENSHOT ?? join(tmpdir(), "roomcast-dashboard.png");
// How long the traffic runs before the screenshot (for a picture with some history in it).
const HOLD_MS = Number(process.env.DASHBOARD_HOLD_MS ?? 0);

let broker;
let browser;

/** Starts roomcast on free ports; resolves with its WebSocket URL and admin address. */
async function startBroker() {
  const child = spawn(BIN, ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--workers", "2", "--pin-cores", "false"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const said = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`roomcast said only: ${said}`)), 15_000);
    lines.on("line", (line) => {
      said.push(line);
      if (said.length === 2) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => reject(new Error(`roomcast exited (${code})`)));
  });
  const ws = /ws:\/\/\S+/.exec(said[0])?.[0];
  const admin = /http:\/\/\S+/.exec(said[1])?.[0];
  if (!ws || !admin) throw new Error(`unexpected start lines: ${said}`);
  return { ws, admin, child };
}

/** Polls `check` until it returns something truthy; fails naming `what` (and what `seen` says). */
async function waitFor(check, what, ms = 15_000, seen = async () => "") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; ${await seen()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

before(async () => {
  broker = await startBroker();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
});

after(async () => {
  await browser?.close();
  broker?.child.kill("SIGKILL");
});

/**
 * Opens a tab that subscribes to every room in `rooms` and publishes to
 * them, `perTick` messages every 20 ms, `weights[i]` of each tick to room i.
 */
async function startTraffic(context, rooms, weights) {
  const tab = await context.newPage();
  await tab.goto(`${broker.admin}/stats`); // any page of ours: same-site, no mixed content
  await tab.evaluate(
    ({ url, rooms, weights }) => {
      const text = (s) => [...new TextEncoder().encode(s)];
      const str = (s) => [0xa0 | s.length, ...text(s)];
      const subscribe = (id, room) => new Uint8Array([0x82, ...str("id"), id, ...str("subscribe"), 0x81, ...str("room"), ...str(room)]);
      const publish = (room) => new Uint8Array([0x82, ...str("id"), 0, ...str("publish"), 0x82, ...str("room"), ...str(room), ...str("data"), 0xc4, 4, 1, 2, 3, 4]);
      window.received = 0;
      const socket = new WebSocket(url, "roomcast.v1.msgpack");
      socket.binaryType = "arraybuffer";
      socket.onmessage = () => window.received++;
      socket.onopen = () => {
        rooms.forEach((room, i) => socket.send(subscribe(i + 1, room)));
        window.traffic = setInterval(() => {
          rooms.forEach((room, i) => {
            for (let n = 0; n < weights[i]; n++) socket.send(publish(room));
          });
        }, 20);
      };
    },
    { url: broker.ws, rooms, weights },
  );
  return tab;
}

test("Chromium: the dashboard draws the node live and names its busiest room", async () => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => message.type() === "error" && problems.push(message.text()));

  const response = await page.goto(`${broker.admin}/dashboard`);
  assert.equal(response.status(), 200);
  assert.equal(await page.title(), "roomcast dashboard");
  await waitFor(() => page.evaluate(() => document.getElementById("status").textContent === "live"), "the event stream to open");
  await waitFor(() => page.evaluate(() => window.roomcastDashboard.samples.length >= 2), "two samples while idle");
  const idle = await page.evaluate(() => window.roomcastDashboard.samples.at(-1));
  assert.equal(idle.engine, "memory");
  assert.equal(idle.rates.deliveries, 0, "nothing is delivered before the traffic starts");
  const quietChart = await page.evaluate(() => document.getElementById("deliveries").toDataURL());

  // Traffic: the hot room gets four times the publications of the others.
  const rooms = ["dash.hot", "dash.warm", "dash.cool"];
  const traffic = await startTraffic(context, rooms, [8, 2, 2]);
  const busy = await waitFor(
    () =>
      page.evaluate(() => {
        const last = window.roomcastDashboard.samples.at(-1);
        return last.rates.deliveries > 100 && last.top_rooms.length === 3 ? last : null;
      }),
    "a sample with deliveries and three busy rooms",
    15_000,
    async () => `last sample: ${JSON.stringify(await page.evaluate(() => window.roomcastDashboard.samples.at(-1)))}`,
  );
  assert.ok(busy.connections >= 1, `the traffic tab's connection is counted: ${busy.connections}`);
  assert.equal(busy.cores.length, 2, "one entry per core");
  assert.ok(busy.cores.some((core) => core.cpu > 0), `some core did work: ${JSON.stringify(busy.cores)}`);
  assert.deepEqual(busy.top_rooms.map((r) => r.room)[0], "dash.hot", JSON.stringify(busy.top_rooms));
  assert.ok(busy.delivery_lag.count > 0, `publication-to-core lag was observed: ${JSON.stringify(busy.delivery_lag)}`);
  assert.equal(busy.engine_up, true);

  // What the operator sees: the chart moved and the table names the rooms.
  const movedChart = await page.evaluate(() => document.getElementById("deliveries").toDataURL());
  assert.notEqual(movedChart, quietChart, "the deliveries chart changed while the load ran");
  const legend = await page.textContent("#legend-deliveries");
  assert.match(legend, /deliveries [1-9]/, legend);
  const table = await page.$$eval("#rooms tr td:first-child", (cells) => cells.map((c) => c.textContent));
  assert.equal(table[0], "dash.hot", `top rooms table: ${table}`);
  assert.ok(await traffic.evaluate(() => window.received > 0), "the traffic tab's subscriber received its deliveries");

  await new Promise((resolve) => setTimeout(resolve, HOLD_MS));
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  console.log(`screenshot: ${SCREENSHOT}`);
  assert.deepEqual(problems, [], "no script errors on the page");
  await context.close();
});

test("Chromium: the dashboard's stream survives a viewer's reconnect and serves several viewers", async () => {
  const context = await browser.newContext();
  const first = await context.newPage();
  const second = await context.newPage();
  await first.goto(`${broker.admin}/dashboard`);
  await second.goto(`${broker.admin}/dashboard`);
  for (const page of [first, second]) {
    await waitFor(() => page.evaluate(() => window.roomcastDashboard.samples.length >= 2), "samples in each viewer");
  }
  await first.reload();
  await waitFor(() => first.evaluate(() => window.roomcastDashboard.samples.length >= 1), "samples after a reload");
  await context.close();
});
