// Server-Sent Events in headless Chromium (Debian's chromium, driven by
// playwright-core): a real EventSource on a page of another origin reads
// GET /sse from the broker (through CORS), and after the test cuts the
// connection the browser's own reconnect, with Last-Event-ID, resumes every
// room with no gap and no duplicate. docs/PROTOCOL.md, "Server-Sent Events".
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { startBrowserStage, waitFor } from "./support.mjs";


let broker, proxy, site, browser, publisher;
let roomSeq = 0;
const fresh = (kind) => `${kind}.sse.${process.pid}.${++roomSeq}`;

/** A blank page on http://localhost:PORT: another origin than the broker's 127.0.0.1. */
async function serve() {
  const server = createServer((request, response) => {
    response.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>roomcast sse</title>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { origin: `http://localhost:${server.address().port}`, close: () => server.close() };
}

/**
 * A fresh page whose EventSource follows `url`: each message is recorded in
 * `window.seen` as [room, offset, payload, lastEventId], every other event
 * in `window.events`.
 */
async function follow(url) {
  const context = await browser.newContext();
  const tab = await context.newPage();
  tab.on("pageerror", (error) => console.error("page error:", error));
  await tab.goto(`${site.origin}/`);
  await tab.evaluate((url) => {
    window.seen = [];
    window.events = [];
    const source = new EventSource(url);
    window.source = source;
    source.onopen = () => window.events.push(["open"]);
    source.onerror = () => window.events.push(["error", source.readyState]);
    for (const name of ["subscribed", "recovery_refused", "subscribe_error", "close"]) {
      source.addEventListener(name, (event) => window.events.push([name, JSON.parse(event.data), event.lastEventId]));
    }
    source.onmessage = (event) => {
      const { room, offset, text, data } = JSON.parse(event.data);
      window.seen.push([room, offset, text ?? atob(data), event.lastEventId]);
    };
  }, url);
  return tab;
}

const until = (tab, what, check, arg) => waitFor(async () => tab.evaluate(check, arg), what);
const count = (tab, name) => tab.evaluate((name) => window.events.filter((e) => e[0] === name).length, name);

let stage;
before(async () => {
  stage = await startBrowserStage({ flags: ["--sse-text-rooms", "text.*"], serve });
  ({ broker, proxy, site, browser, publisher } = stage);
});

after(() => stage?.stop());

test("Chromium: an EventSource on another origin receives publications, with every room's position as the event id", async () => {
  const [text, binary] = [fresh("text"), fresh("bin")];
  const tab = await follow(`http://127.0.0.1:${broker.port}/sse?room=${text}&room=${binary}`);
  await until(tab, "both rooms subscribed", () => window.events.filter((e) => e[0] === "subscribed").length === 2);
  const epochs = Object.fromEntries((await tab.evaluate(() => window.events.filter((e) => e[0] === "subscribed"))).map(([, d]) => [d.room, d.epoch]));
  await publisher.publish(text, "grüße");
  await until(tab, "the text message", () => window.seen.length === 1);
  await publisher.publish(binary, new Uint8Array([104, 105]));
  await until(tab, "the binary message", () => window.seen.length === 2);
  assert.deepEqual(await tab.evaluate(() => window.seen), [
    [text, 1, "grüße", `${epochs[text]}:1,${epochs[binary]}:0`],
    [binary, 1, "hi", `${epochs[text]}:1,${epochs[binary]}:1`],
  ]);
  assert.equal(await count(tab, "error"), 0);
  await tab.context().close();
});

test("Chromium: after the test cuts the connection, the EventSource's own reconnect resumes both rooms: every offset once, in order", async () => {
  const [text, binary] = [fresh("text"), fresh("bin")];
  const tab = await follow(`http://127.0.0.1:${proxy.port}/sse?room=${text}&room=${binary}`);
  await until(tab, "both rooms subscribed", () => window.events.filter((e) => e[0] === "subscribed").length === 2);
  for (let i = 1; i <= 3; i++) {
    await publisher.publish(text, `t${i}`);
    await publisher.publish(binary, `b${i}`);
  }
  await until(tab, "six messages", () => window.seen.length === 6);

  proxy.refuse = true;
  proxy.cut();
  await until(tab, "the page to notice", () => window.events.some((e) => e[0] === "error"));
  for (let i = 4; i <= 6; i++) {
    await publisher.publish(text, `t${i}`);
    await publisher.publish(binary, `b${i}`);
  }
  proxy.refuse = false;
  await until(tab, "twelve messages", () => window.seen.length === 12);
  // Live again, and nothing twice: the sentinel is the next one.
  await publisher.publish(binary, "sentinel");
  await until(tab, "the sentinel", () => window.seen.length === 13);

  const seen = await tab.evaluate(() => window.seen);
  const of = (room) => seen.filter(([r]) => r === room).map(([, offset, payload]) => [offset, payload]);
  assert.deepEqual(of(text), [1, 2, 3, 4, 5, 6].map((i) => [i, `t${i}`]));
  assert.deepEqual(of(binary), [...[1, 2, 3, 4, 5, 6].map((i) => [i, `b${i}`]), [7, "sentinel"]]);
  const subscribed = (await tab.evaluate(() => window.events)).filter((e) => e[0] === "subscribed");
  assert.deepEqual(subscribed.map(([, d]) => [d.room, d.recovered]), [[text, false], [binary, false], [text, true], [binary, true]],
    "the reconnect recovered both rooms");
  assert.equal(await count(tab, "recovery_refused"), 0);
  assert.ok(proxy.accepted >= 2, "the browser reconnected by itself");
  await tab.context().close();
});
