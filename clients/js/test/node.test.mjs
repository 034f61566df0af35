// The client in Node against a real roomcast broker: connecting with each
// codec, publish and ack, resume after the network is cut, the offline
// queue, a lost ack retried without a duplicate, history, presence, join and
// leave, reference counting, tokens, and a server restart (1012).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { Client, UnauthorizedError } from "../dist/index.js";
import { protobuf } from "../dist/proto.js";
import { jwt, nextEvent, startBroker, startProxy, text, waitFor } from "./support.mjs";

let broker;
const clients = [];
let roomSeq = 0;
const freshRoom = (name) => `${name}.${process.pid}.${++roomSeq}`;

/** A connected client; closed after the file's tests. */
async function connected(url, options = {}) {
  const client = new Client(url, { WebSocket, minReconnectDelay: 50, maxReconnectDelay: 200, ...options });
  clients.push(client);
  const up = nextEvent(client, "connected");
  client.connect();
  await up;
  return client;
}

/** Collects a subscription's messages as [offset, text]. */
function collect(subscription) {
  const seen = [];
  subscription.on("message", ({ offset, data }) => seen.push([offset, text(data)]));
  return seen;
}

before(async () => {
  broker = await startBroker();
});
after(async () => {
  for (const client of clients) client.close();
  await broker.stop("SIGKILL");
});

for (const codec of [undefined, protobuf]) {
  const name = codec?.subprotocol ?? "roomcast.v1.msgpack (default)";
  test(`${name}: connects, subscribes, publishes with an ack and receives in order`, async () => {
    const states = [];
    const client = new Client(broker.url, { WebSocket, codec });
    clients.push(client);
    client.on("state", ({ state }) => states.push(state));
    const up = nextEvent(client, "connected");
    client.connect();
    const { subprotocol } = await up;
    assert.equal(subprotocol, codec?.subprotocol ?? "roomcast.v1.msgpack");
    const room = freshRoom("basic");
    const subscription = client.subscribe(room);
    const subscribed = await subscription.ready();
    assert.deepEqual([subscribed.offset, subscribed.recovered, subscribed.reload], [0, false, false]);
    assert.equal(subscription.state, "subscribed");
    const seen = collect(subscription);
    const acks = await Promise.all(["a", "b", "c"].map((data) => client.publish(room, data)));
    assert.deepEqual(acks.map((ack) => ack.offset), [1, 2, 3]);
    assert.ok(acks.every((ack) => !ack.duplicate));
    client.publishNoAck(room, "d");
    await waitFor(() => seen.length === 4, "four messages");
    assert.deepEqual(seen, [[1, "a"], [2, "b"], [3, "c"], [4, "d"]]);
    assert.deepEqual(states, ["connecting", "connected"]);
    client.close();
    assert.equal(client.state, "disconnected");
    assert.equal(subscription.state, "unsubscribed");
    await assert.rejects(client.publish(room, "late"), { kind: "closed" });
  });
}

test("a publish whose ack does not come rejects with a timeout", async () => {
  const proxy = await startProxy(broker.port);
  try {
    const client = await connected(proxy.url);
    proxy.mute = true;
    await assert.rejects(client.publish(freshRoom("timeout"), "x", { timeout: 300 }), { kind: "timeout" });
  } finally {
    await proxy.close();
  }
});

test("after the network is cut, every room resumes from its last offset: recovered, nothing twice, nothing missed", async () => {
  const proxy = await startProxy(broker.port);
  try {
    const room = freshRoom("resume");
    const publisher = await connected(broker.url);
    const client = await connected(proxy.url);
    const subscription = client.subscribe(room);
    await subscription.ready();
    const seen = collect(subscription);
    for (let i = 1; i <= 5; i++) await publisher.publish(room, `m${i}`);
    await waitFor(() => seen.length === 5, "the first five");
    const states = [];
    client.on("state", ({ state }) => states.push(state));
    proxy.refuse = true;
    proxy.cut();
    await waitFor(() => client.state === "connecting", "the client to notice the cut");
    assert.equal(subscription.state, "subscribing");
    for (let i = 6; i <= 10; i++) await publisher.publish(room, `m${i}`);
    const resubscribed = nextEvent(subscription, "subscribed");
    proxy.refuse = false;
    const event = await resubscribed;
    assert.deepEqual([event.resubscribed, event.recovered, event.reload], [true, true, false]);
    assert.deepEqual(event.previous, { epoch: event.epoch, offset: 5 });
    await publisher.publish(room, "m11");
    await waitFor(() => seen.length === 11, "eleven messages");
    assert.deepEqual(seen.map(([offset]) => offset), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert.deepEqual(seen.map(([, data]) => data), seen.map(([offset]) => `m${offset}`));
    assert.deepEqual(states, ["connecting", "connected"]);
  } finally {
    await proxy.close();
  }
});

test("a room whose history no longer reaches back says reload, then goes on live", async () => {
  const proxy = await startProxy(broker.port);
  try {
    const room = freshRoom("reload");
    const publisher = await connected(broker.url);
    const client = await connected(proxy.url);
    const subscription = client.subscribe(room);
    await subscription.ready();
    const seen = collect(subscription);
    await publisher.publish(room, "first");
    await waitFor(() => seen.length === 1, "the first message");
    proxy.refuse = true;
    proxy.cut();
    await waitFor(() => client.state === "connecting", "the cut");
    // --history-size 100: 150 more than the room keeps.
    await Promise.all(Array.from({ length: 150 }, (_, i) => publisher.publish(room, `x${i}`)));
    const resubscribed = nextEvent(subscription, "subscribed");
    proxy.refuse = false;
    const event = await resubscribed;
    assert.deepEqual([event.recovered, event.reload, event.offset], [false, true, 151]);
    await publisher.publish(room, "live");
    await waitFor(() => seen.length === 2, "the live message");
    assert.deepEqual(seen, [[1, "first"], [152, "live"]]);
  } finally {
    await proxy.close();
  }
});

test("publishes made while disconnected wait in a bounded queue and are delivered once each, in order", async () => {
  const proxy = await startProxy(broker.port);
  try {
    const room = freshRoom("queue");
    const watcher = await connected(broker.url);
    const watched = watcher.subscribe(room);
    await watched.ready();
    const seen = collect(watched);
    const client = await connected(proxy.url, { maxQueuedPublishes: 4 });
    proxy.refuse = true;
    proxy.cut();
    await waitFor(() => client.state === "connecting", "the cut");
    const acks = ["q1", "q2", "q3"].map((data) => client.publish(room, data));
    client.publishNoAck(room, "q4");
    assert.throws(() => client.publishNoAck(room, "q5"), { kind: "queue-full" });
    await assert.rejects(client.publish(room, "q6"), { kind: "queue-full" });
    assert.equal(seen.length, 0, "nothing went out while disconnected");
    proxy.refuse = false;
    assert.deepEqual((await Promise.all(acks)).map((ack) => [ack.offset, ack.duplicate]), [[1, false], [2, false], [3, false]]);
    await waitFor(() => seen.length === 4, "four deliveries");
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(seen, [[1, "q1"], [2, "q2"], [3, "q3"], [4, "q4"]]);
  } finally {
    await proxy.close();
  }
});

test("a publish whose ack was lost with the connection is sent again under its key: duplicate, delivered once", async () => {
  const proxy = await startProxy(broker.port);
  try {
    const room = freshRoom("lostack");
    const watcher = await connected(broker.url);
    const watched = watcher.subscribe(room);
    await watched.ready();
    const seen = collect(watched);
    const client = await connected(proxy.url);
    proxy.mute = true;
    const ack = client.publish(room, "once");
    await waitFor(() => seen.length === 1, "the publication to be made");
    proxy.cut();
    proxy.mute = false;
    const { offset, duplicate } = await ack;
    assert.deepEqual([offset, duplicate], [1, true]);
    await client.publish(room, "next");
    await waitFor(() => seen.length === 2, "the next one");
    assert.deepEqual(seen, [[1, "once"], [2, "next"]]);
  } finally {
    await proxy.close();
  }
});

test("history pages, presence, presence stats, and join and leave events", async () => {
  const room = freshRoom("people");
  const alice = await connected(broker.url);
  const bob = await connected(broker.url, { codec: protobuf });
  for (const data of ["h1", "h2", "h3"]) await alice.publish(room, data);
  const page = await bob.history(room, { since: 1, limit: 5 });
  assert.deepEqual(page.publications.map((p) => [p.offset, text(p.data)]), [[2, "h2"], [3, "h3"]]);
  assert.equal(page.offset, 3);
  assert.match(page.epoch, /^[0-9a-f]{16}$/);
  const newest = await alice.history(room, { reverse: true, limit: 1 });
  assert.deepEqual(newest.publications.map((p) => p.offset), [3]);

  const watching = alice.subscribe(room, { joinLeave: true });
  await watching.ready();
  const joined = nextEvent(watching, "join", (info) => info.joinedAt > 0 && true, 5000);
  const joins = [];
  watching.on("join", (info) => joins.push(info));
  const bobs = bob.subscribe(room);
  await bobs.ready();
  await joined;
  const present = await bob.presence(room);
  assert.equal(present.length, 2);
  assert.ok(present.every((entry) => entry.client && entry.joinedAt > 0));
  assert.deepEqual(await alice.presenceStats(room), { clients: 2, users: 0 });
  const left = nextEvent(watching, "leave");
  bobs.release();
  const leave = await left;
  assert.equal(leave.client, joins.at(-1).client, "the one who joined left");
  await assert.rejects(alice.history("bad room", {}), { kind: "server", code: 102 });
});

test("one subscription per room: counted references, one subscribe, unsubscribed after the last release", async () => {
  const room = freshRoom("refs");
  const client = await connected(broker.url);
  const observer = await connected(broker.url);
  const first = client.subscribe(room);
  const second = client.subscribe(room);
  assert.equal(first, second);
  await first.ready();
  first.release();
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(second.state, "subscribed", "one reference is left");
  assert.equal((await observer.presenceStats(room)).clients, 1);
  // Released and taken back in the same task, as StrictMode does: no unsubscribe.
  second.release();
  const again = client.subscribe(room);
  assert.equal(again, first);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(again.state, "subscribed");
  again.release();
  await waitFor(async () => (await observer.presenceStats(room)).clients === 0, "the unsubscribe");
  assert.equal(again.state, "unsubscribed");
  assert.equal(client.subscription(room), undefined);
});

describe("tokens", () => {
  const secret = "client-tests-secret";
  let secured;
  before(async () => {
    secured = await startBroker(["--jwt-secret", secret, "--jwt-leeway", "0s"]);
  });
  after(() => secured.stop("SIGKILL"));

  const token = (seconds) => {
    const now = Math.floor(Date.now() / 1000);
    return jwt(secret, { sub: "ada", iat: now, exp: now + seconds, rooms: { sub: ["auth.*"], pub: ["auth.*"], presence: ["auth.*"] } });
  };

  test("getToken is asked before connecting and again ahead of exp: the connection outlives its first token", async () => {
    let asked = 0;
    const client = await connected(secured.url, {
      getToken: () => {
        asked++;
        return token(3);
      },
    });
    const room = `auth.${process.pid}`;
    const subscription = client.subscribe(room);
    await subscription.ready();
    let closes = 0;
    client.on("connecting", () => closes++);
    await new Promise((resolve) => setTimeout(resolve, 4500));
    assert.ok(asked >= 2, `getToken asked ${asked} times`);
    assert.equal(closes, 0, "never closed with 4001");
    assert.equal((await client.publish(room, "still here")).offset > 0, true);
    assert.deepEqual(await client.presenceStats(room), { clients: 1, users: 1 });
  });

  test("a getToken that throws UnauthorizedError stops the client for good", async () => {
    const client = new Client(secured.url, {
      WebSocket,
      getToken: () => {
        throw new UnauthorizedError("signed out");
      },
    });
    clients.push(client);
    const stopped = nextEvent(client, "disconnected");
    client.connect();
    assert.equal((await stopped).reason, "signed out");
    assert.equal(client.state, "disconnected");
    await assert.rejects(client.publish("auth.x", "no"), { kind: "closed" });
  });
});

test("a server restart (close 1012) is followed by a reconnect; the new epoch says reload", async () => {
  const first = await startBroker();
  const proxy = await startProxy(first.port);
  let second;
  try {
    const room = freshRoom("restart");
    const client = await connected(proxy.url);
    const subscription = client.subscribe(room);
    const { epoch } = await subscription.ready();
    const closed = nextEvent(client, "connecting");
    await first.stop("SIGTERM");
    assert.equal((await closed).code, 1012);
    second = await startBroker();
    proxy.target = second.port;
    const event = await nextEvent(subscription, "subscribed", () => true, 15_000);
    assert.notEqual(event.epoch, epoch);
    assert.deepEqual([event.resubscribed, event.recovered, event.reload], [true, false, true]);
    assert.equal((await client.publish(room, "after")).offset, 1);
  } finally {
    await proxy.close();
    await first.stop("SIGKILL");
    await second?.stop("SIGKILL");
  }
});
