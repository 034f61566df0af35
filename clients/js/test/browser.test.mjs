// The client in headless Chromium (Debian's chromium, driven by
// playwright-core) against a real roomcast broker: the browser bundles
// (MessagePack only, and with Protobuf), resume after a cut, the offline
// queue, the `online` event, and a React StrictMode page using useRoom.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { decode } from "@msgpack/msgpack";
import * as esbuild from "esbuild";
import { startBrowserStage, text, waitFor } from "./support.mjs";


let broker, proxy, site, browser, publisher;
let roomSeq = 0;
const freshRoom = (name) => `${name}.browser.${process.pid}.${++roomSeq}`;

/** Serves the bundles and the test pages on localhost. */
async function serve() {
  const react = await esbuild.build({
    entryPoints: [new URL("./browser/react-page.jsx", import.meta.url).pathname],
    bundle: true,
    write: false,
    format: "esm",
    jsx: "automatic",
    // StrictMode runs effects twice only in React's development build.
    define: { "process.env.NODE_ENV": '"development"' },
    logLevel: "error",
  });
  const files = {
    "/": ["text/html", "<!doctype html><title>roomcast</title><div id=root></div>"],
    "/react.html": ["text/html", '<!doctype html><title>roomcast react</title><div id=root></div><script type=module src="/react.js"></script>'],
    "/react.js": ["text/javascript", react.outputFiles[0].contents],
    "/roomcast.js": ["text/javascript", readFileSync(new URL("../dist/browser/roomcast.min.js", import.meta.url))],
    "/roomcast-proto.js": ["text/javascript", readFileSync(new URL("../dist/browser/roomcast-proto.min.js", import.meta.url))],
  };
  const server = createServer((request, response) => {
    const file = files[new URL(request.url, "http://localhost").pathname];
    if (!file) return response.writeHead(404).end();
    response.writeHead(200, { "content-type": file[0] }).end(file[1]);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { origin: `http://localhost:${server.address().port}`, close: () => server.close() };
}

/**
 * A fresh page with the client bundle loaded as `window.roomcast`; every
 * binary frame the page's WebSockets send is recorded in `window.sent`.
 */
async function page(bundle = "/roomcast.js") {
  const context = await browser.newContext();
  const tab = await context.newPage();
  tab.on("pageerror", (error) => console.error("page error:", error));
  await tab.addInitScript(() => {
    window.sent = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
      window.sent.push(Array.from(new Uint8Array(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength)));
      return send.call(this, data);
    };
  });
  await tab.goto(`${site.origin}/`);
  await tab.evaluate(async (bundle) => {
    window.roomcast = await import(bundle);
  }, bundle);
  return tab;
}

/** Starts a client in the page that follows `room` and records it in `window.seen` and `window.events`. */
async function follow(tab, url, room, options = {}) {
  await tab.evaluate(
    async ({ url, room, options, proto }) => {
      const { Client, protobuf } = window.roomcast;
      const client = new Client(url, { ...options, ...(proto ? { codec: protobuf } : {}) });
      window.client = client;
      window.seen = [];
      window.events = [];
      client.on("state", ({ state }) => window.events.push(`client:${state}`));
      const subscription = client.subscribe(room);
      subscription.on("message", ({ offset, data }) => window.seen.push([offset, new TextDecoder().decode(data)]));
      subscription.on("subscribed", (event) =>
        window.events.push(`subscribed:${event.resubscribed}:${event.recovered}:${event.reload}`),
      );
      client.connect();
      await subscription.ready();
    },
    { url, room, options, proto: !!options.proto },
  );
}

const seen = (tab) => tab.evaluate(() => window.seen);
const until = (tab, what, check) => waitFor(async () => tab.evaluate(check), what);

let stage;
before(async () => {
  stage = await startBrowserStage({ serve });
  ({ broker, proxy, site, browser, publisher } = stage);
});

after(() => stage?.stop());

test("Chromium: the MessagePack bundle connects and receives live messages", async () => {
  const tab = await page();
  const room = freshRoom("live");
  await follow(tab, broker.url, room);
  for (const data of ["one", "two", "three"]) await publisher.publish(room, data);
  await until(tab, "three messages in the page", () => window.seen.length === 3);
  assert.deepEqual(await seen(tab), [[1, "one"], [2, "two"], [3, "three"]]);
  assert.deepEqual(await tab.evaluate(() => window.events), ["client:connecting", "client:connected", "subscribed:false:false:false"]);
  const ack = await tab.evaluate(async (room) => (await window.client.publish(room, "from the page")).offset, room);
  assert.equal(ack, 4);
  await tab.context().close();
});

test("Chromium: the Protobuf bundle negotiates roomcast.v1.proto and receives live messages", async () => {
  const tab = await page("/roomcast-proto.js");
  const room = freshRoom("proto");
  await follow(tab, broker.url, room, { proto: true });
  assert.equal(await tab.evaluate(() => window.client.codec.subprotocol), "roomcast.v1.proto");
  await publisher.publish(room, "bytes");
  await until(tab, "the message", () => window.seen.length === 1);
  assert.deepEqual(await seen(tab), [[1, "bytes"]]);
  // The first frame the page sent is a protobuf subscribe: field 1 (id) = 1, then field 2.
  assert.deepEqual((await tab.evaluate(() => window.sent[0])).slice(0, 3), [0x08, 0x01, 0x12]);
  await tab.context().close();
});

test("Chromium: after the test cuts the connection, the page resumes: recovered, every offset once", async () => {
  const tab = await page();
  const room = freshRoom("cut");
  await follow(tab, proxy.url, room, { minReconnectDelay: 50, maxReconnectDelay: 200 });
  for (let i = 1; i <= 3; i++) await publisher.publish(room, `m${i}`);
  await until(tab, "three messages", () => window.seen.length === 3);
  proxy.refuse = true;
  proxy.cut();
  await until(tab, "the page to notice", () => window.client.state === "connecting");
  for (let i = 4; i <= 8; i++) await publisher.publish(room, `m${i}`);
  proxy.refuse = false;
  await until(tab, "eight messages", () => window.seen.length === 8);
  await publisher.publish(room, "m9");
  await until(tab, "nine messages", () => window.seen.length === 9);
  assert.deepEqual(await seen(tab), Array.from({ length: 9 }, (_, i) => [i + 1, `m${i + 1}`]));
  assert.ok((await tab.evaluate(() => window.events)).includes("subscribed:true:true:false"));
  await tab.context().close();
});

test("Chromium: publishes made offline are queued, then acknowledged and delivered once each", async () => {
  const tab = await page();
  const room = freshRoom("offline");
  const watcher = publisher.subscribe(room);
  await watcher.ready();
  const delivered = [];
  watcher.on("message", ({ offset, data }) => delivered.push([offset, text(data)]));
  await follow(tab, proxy.url, `${room}.own`, { minReconnectDelay: 50, maxReconnectDelay: 200 });
  proxy.refuse = true;
  proxy.cut();
  await until(tab, "the page to notice", () => window.client.state === "connecting");
  await tab.evaluate((room) => {
    window.acks = Promise.all(["o1", "o2", "o3"].map((data) => window.client.publish(room, data)));
  }, room);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(delivered.length, 0);
  proxy.refuse = false;
  const acks = await tab.evaluate(async () => (await window.acks).map((ack) => ack.offset));
  assert.deepEqual(acks, [1, 2, 3]);
  await waitFor(() => delivered.length === 3, "three deliveries");
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(delivered, [[1, "o1"], [2, "o2"], [3, "o3"]]);
  watcher.release();
  await tab.context().close();
});

test("Chromium: the browser's online event ends the backoff wait at once", async () => {
  const tab = await page();
  const room = freshRoom("online");
  // A backoff bound of 10 minutes: without the online event the page would wait.
  await follow(tab, proxy.url, room, { minReconnectDelay: 600_000, maxReconnectDelay: 600_000 });
  proxy.refuse = true;
  proxy.cut();
  await until(tab, "the page to notice", () => window.client.state === "connecting");
  proxy.refuse = false;
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(await tab.evaluate(() => window.client.state), "connecting", "still waiting out the backoff");
  await tab.evaluate(() => window.dispatchEvent(new Event("online")));
  await until(tab, "the reconnect", () => window.client.state === "connected");
  await publisher.publish(room, "back");
  await until(tab, "the message", () => window.seen.length === 1);
  await tab.context().close();
});

test("Chromium: a React StrictMode page renders live messages with useRoom, subscribed once", async () => {
  const context = await browser.newContext();
  const tab = await context.newPage();
  const errors = [];
  tab.on("pageerror", (error) => errors.push(error));
  await tab.addInitScript(() => {
    window.sent = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
      window.sent.push(Array.from(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)));
      return send.call(this, data);
    };
  });
  const room = freshRoom("react");
  await tab.goto(`${site.origin}/react.html?url=${encodeURIComponent(broker.url)}&room=${encodeURIComponent(room)}`);
  await tab.waitForFunction(() => document.getElementById("state")?.textContent === "subscribed", null, { timeout: 10_000 });
  for (const data of ["alpha", "beta", "gamma"]) await publisher.publish(room, data);
  await tab.waitForFunction(() => document.querySelectorAll("#messages li").length === 3, null, { timeout: 10_000 });
  const items = await tab.$$eval("#messages li", (lis) => lis.map((li) => li.textContent));
  assert.deepEqual(items, ["1:alpha", "2:beta", "3:gamma"]);
  const ops = (await tab.evaluate(() => window.sent)).map((frame) => decode(Uint8Array.from(frame)));
  const about = ops.filter((op) => (op.subscribe ?? op.unsubscribe)?.room === room);
  assert.deepEqual(about.map((op) => Object.keys(op).find((key) => key !== "id")), ["subscribe"], "one subscribe, no unsubscribe");
  assert.deepEqual(errors, []);
  await context.close();
});
