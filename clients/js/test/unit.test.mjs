// Without a server: the codecs against the worked examples of
// docs/PROTOCOL.md (the same bytes tests/vectors.rs checks on the Rust side),
// the backoff's bounds, and the rule that hands each offset over once.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { msgpack } from "../dist/index.js";
import { protobuf } from "../dist/proto.js";
import { backoffDelay } from "../dist/backoff.js";
import { Subscription } from "../dist/subscription.js";

const doc = readFileSync(new URL("../../../docs/PROTOCOL.md", import.meta.url), "utf8");
const hex = (s) => Uint8Array.from(s.split(" "), (b) => parseInt(b, 16));
const show = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
const epoch = "9f3c2a1b4d5e6f70";
const hi = new Uint8Array([0x68, 0x69]);
const room = "chat.lobby";

/** Client envelopes: [request, msgpack hex, proto hex], each copied from PROTOCOL.md. */
const requests = [
  [{ id: 1, subscribe: { room } },
    "82 a2 69 64 01 a9 73 75 62 73 63 72 69 62 65 81 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79",
    "08 01 12 0c 0a 0a 63 68 61 74 2e 6c 6f 62 62 79"],
  [{ id: 3, publish: { room, data: hi } },
    "82 a2 69 64 03 a7 70 75 62 6c 69 73 68 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 64 61 74 61 c4 02 68 69",
    "08 03 22 10 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 02 68 69"],
  [{ id: 0, publish: { room, data: hi } },
    "82 a2 69 64 00 a7 70 75 62 6c 69 73 68 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 64 61 74 61 c4 02 68 69",
    "22 10 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 02 68 69"],
  [{ id: 10, subscribe: { room, recover: { epoch, offset: 40 } } },
    "82 a2 69 64 0a a9 73 75 62 73 63 72 69 62 65 82 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a7 72 65 63 6f 76 65 72 82 a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 a6 6f 66 66 73 65 74 28",
    "08 0a 12 22 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 14 0a 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 10 28"],
  [{ id: 11, publish: { room, data: hi, idempotency_key: "order-17" } },
    "82 a2 69 64 0b a7 70 75 62 6c 69 73 68 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a4 64 61 74 61 c4 02 68 69 af 69 64 65 6d 70 6f 74 65 6e 63 79 5f 6b 65 79 a8 6f 72 64 65 72 2d 31 37",
    "08 0b 22 1a 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 12 02 68 69 1a 08 6f 72 64 65 72 2d 31 37"],
  [{ id: 12, history: { room, since: 40, limit: 2, reverse: undefined } },
    "82 a2 69 64 0c a7 68 69 73 74 6f 72 79 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a5 73 69 6e 63 65 28 a5 6c 69 6d 69 74 02",
    "08 0c 2a 10 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 10 28 18 02"],
];

/** Server envelopes: [what each codec must decode to (defaults aside), msgpack hex, proto hex]. */
const replies = [
  [{ reply: { id: 1, ack: { offset: 41, epoch } } },
    "81 a5 72 65 70 6c 79 82 a2 69 64 01 a3 61 63 6b 82 a6 6f 66 66 73 65 74 29 a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30",
    "0a 18 08 01 12 14 08 29 12 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30"],
  [{ reply: { id: 2, ack: { offset: 0 } } },
    "81 a5 72 65 70 6c 79 82 a2 69 64 02 a3 61 63 6b 81 a6 6f 66 66 73 65 74 00",
    "0a 04 08 02 12 00"],
  [{ reply: { id: 9, error: { code: 102, message: "invalid room: room name is empty" } } },
    "81 a5 72 65 70 6c 79 82 a2 69 64 09 a5 65 72 72 6f 72 82 a4 63 6f 64 65 66 a7 6d 65 73 73 61 67 65 d9 20 69 6e 76 61 6c 69 64 20 72 6f 6f 6d 3a 20 72 6f 6f 6d 20 6e 61 6d 65 20 69 73 20 65 6d 70 74 79",
    "0a 28 08 09 1a 24 08 66 12 20 69 6e 76 61 6c 69 64 20 72 6f 6f 6d 3a 20 72 6f 6f 6d 20 6e 61 6d 65 20 69 73 20 65 6d 70 74 79"],
  [{ message: { room, offset: 42, data: hi } },
    "81 a7 6d 65 73 73 61 67 65 83 a4 72 6f 6f 6d aa 63 68 61 74 2e 6c 6f 62 62 79 a6 6f 66 66 73 65 74 2a a4 64 61 74 61 c4 02 68 69",
    "12 12 0a 0a 63 68 61 74 2e 6c 6f 62 62 79 10 2a 1a 02 68 69"],
  [{ reply: { id: 10, ack: { offset: 42, epoch, recovered: true } } },
    "81 a5 72 65 70 6c 79 82 a2 69 64 0a a3 61 63 6b 83 a6 6f 66 66 73 65 74 2a a5 65 70 6f 63 68 b0 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 a9 72 65 63 6f 76 65 72 65 64 c3",
    "0a 1a 08 0a 12 16 08 2a 12 10 39 66 33 63 32 61 31 62 34 64 35 65 36 66 37 30 18 01"],
  [{ reply: { id: 11, ack: { offset: 42, duplicate: true } } },
    "81 a5 72 65 70 6c 79 82 a2 69 64 0b a3 61 63 6b 82 a6 6f 66 66 73 65 74 2a a9 64 75 70 6c 69 63 61 74 65 c3",
    "0a 08 08 0b 12 04 08 2a 20 01"],
];

/** Drops the fields a codec fills with their defaults (proto3 decodes absent as 0, "" or false). */
function withoutDefaults(value) {
  if (value instanceof Uint8Array || typeof value !== "object" || value === null) return value;
  const out = {};
  for (const [key, inner] of Object.entries(value)) {
    if (inner === undefined || inner === false || inner === "" || (inner === 0 && key !== "offset")) continue;
    out[key] = withoutDefaults(inner);
  }
  return out;
}

test("the vectors in this test are the ones PROTOCOL.md shows", () => {
  for (const [, packed, proto] of [...requests, ...replies]) {
    assert.ok(doc.includes(`msgpack  ${packed}\n`), `PROTOCOL.md no longer shows msgpack ${packed}`);
    assert.ok(doc.includes(`proto    ${proto}\n`), `PROTOCOL.md no longer shows proto ${proto}`);
  }
});

for (const [codec, column] of [[msgpack, 1], [protobuf, 2]]) {
  test(`${codec.subprotocol} encodes every client vector byte for byte`, () => {
    for (const vector of requests) {
      assert.equal(show(codec.encode(vector[0])), vector[column], JSON.stringify(vector[0]));
    }
  });

  test(`${codec.subprotocol} decodes every server vector`, () => {
    for (const vector of replies) {
      assert.deepEqual(withoutDefaults(codec.decode(hex(vector[column]))), vector[0]);
    }
  });
}

test("msgpack refuses a server envelope that is not a map", () => {
  assert.throws(() => msgpack.decode(hex("93 01 02 03")));
});

test("backoff draws with full jitter from a bound that doubles from 0.5 s up to 20 s", () => {
  const bound = (attempt) => backoffDelay(attempt, 500, 20_000, 1);
  assert.deepEqual([0, 1, 2, 3, 5, 6, 100].map(bound), [500, 1000, 2000, 4000, 16_000, 20_000, 20_000]);
  assert.equal(backoffDelay(4, 500, 20_000, 0), 0, "full jitter starts at zero");
  assert.equal(backoffDelay(0, 500, 20_000, 0.5), 250);
});

test("a subscription hands each offset over once and in order", () => {
  const room = new Subscription("ticks", {}, () => {});
  const first = room._acknowledge(undefined, "e1", 10, false);
  assert.deepEqual([first.recovered, first.reload, first.resubscribed], [false, false, false]);
  assert.equal(room._accept(10), false, "the ack's offset came before the subscription");
  assert.equal(room._accept(11), true);
  assert.equal(room._accept(12), true);
  assert.equal(room._accept(11), false, "a replay of an older message");
  assert.equal(room._accept(12), false, "a replay of the last one");
  assert.deepEqual(room.position, { epoch: "e1", offset: 12 });
});

test("a resubscribe recovers from the last offset handed over, or says reload from the ack's", () => {
  const room = new Subscription("ticks", { since: { epoch: "e1", offset: 12 } }, () => {});
  const recovered = room._acknowledge({ epoch: "e1", offset: 12 }, "e1", 20, true);
  assert.equal(recovered.recovered, true);
  assert.equal(room._accept(13), true, "the missed messages follow");
  const lost = room._acknowledge({ epoch: "e1", offset: 13 }, "e2", 3, false);
  assert.deepEqual([lost.recovered, lost.reload, lost.resubscribed], [false, true, true]);
  assert.deepEqual(room.position, { epoch: "e2", offset: 3 });
  assert.equal(room._accept(3), false);
  assert.equal(room._accept(4), true, "a new epoch: live messages after the ack's offset");
});
