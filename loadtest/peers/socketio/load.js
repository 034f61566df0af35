#!/usr/bin/env node
// Fan-out load driver for the Socket.IO peer (server.js in this folder):
// S subscribers in one room, one publisher, fixed payload, fixed duration.
// Prints one JSON line.
//
//   node load.js [--url http://127.0.0.1:9203] [--subs 100] [--payload 64]
//                [--duration 10] [--rate 0] [--window 64] [--threads 1]
//                [--room fanout] [--grace 5]
//
// --rate R     publishes per second (0: as fast as the window allows)
// --window W   at most W publications not yet received by every subscriber
//              (closed loop on delivery, so the server's unbounded per-socket
//              buffers cannot hide a client that falls behind)
// --threads T  spread the subscribers over T worker threads (the
//              socket.io-client costs far more CPU per message than the server)
//
// losses: messages a subscriber should have got (offsets after its subscribe
// ack, up to the last publish) and did not get by the end of the grace period;
// gaps: times a subscriber saw an offset other than last + 1.
// server_cpu_s comes from the server's GET /stats (process.cpuUsage()), so
// compare peers by server_cpu_s_per_million_deliveries, not by client load.
"use strict";
const { Worker, isMainThread, parentPort, workerData } = require("node:worker_threads");
const { performance } = require("node:perf_hooks");
const { io } = require("socket.io-client");

const now = () => performance.timeOrigin + performance.now(); // epoch ms, same clock in every thread

function connect(url) {
  return new Promise((resolve, reject) => {
    const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false, timeout: 20000 });
    s.once("connect", () => resolve(s));
    s.once("connect_error", reject);
  });
}

function emitAck(socket, event, arg) {
  return new Promise((resolve) => socket.emit(event, arg, resolve));
}

// ---------------------------------------------------------------- worker ----
async function runSubscribers({ url, room, count, payload, maxSamples }) {
  const subs = [];
  for (let i = 0; i < count; i++) subs.push(await connect(url));
  const state = subs.map(() => ({ base: 0, last: 0, received: 0, gaps: 0, bad: 0 }));
  const pending = new Map(); // offset -> subscribers that got it
  let low = 0; // every offset <= low was received (or skipped) by every subscriber here
  const lat = new Float64Array(maxSamples);
  let nlat = 0;
  let posted = false;
  const post = () => {
    posted = false;
    parentPort.postMessage({ type: "low", low });
  };
  subs.forEach((s, i) => {
    const st = state[i];
    s.on("message", (m) => {
      const t = now();
      if (m.offset !== st.last + 1) st.gaps++;
      st.last = m.offset;
      st.received++;
      const data = m.data instanceof ArrayBuffer ? new Uint8Array(m.data) : m.data;
      if (!data || data.byteLength !== payload) st.bad++;
      else if (nlat < maxSamples && payload >= 8)
        lat[nlat++] = t - new DataView(data.buffer, data.byteOffset, 8).getFloat64(0, true);
      const c = (pending.get(m.offset) || 0) + 1;
      if (c === count) {
        // each subscriber reads its room in order, so offsets complete in order
        pending.delete(m.offset);
        if (m.offset > low) {
          low = m.offset;
          if (!posted) (posted = true), setImmediate(post);
        }
      } else pending.set(m.offset, c);
    });
  });
  for (let i = 0; i < subs.length; i++) state[i].last = state[i].base = (await emitAck(subs[i], "subscribe", room)).offset;
  parentPort.postMessage({ type: "ready", base: Math.max(...state.map((s) => s.base)) });
  parentPort.on("message", (msg) => {
    if (msg.type !== "finish") return;
    const last = msg.lastOffset;
    const r = { type: "result", deliveries: 0, losses: 0, gaps: 0, bad: 0, lat: lat.slice(0, nlat) };
    for (const st of state) {
      r.deliveries += st.received;
      r.losses += Math.max(0, last - st.base - st.received);
      r.gaps += st.gaps;
      r.bad += st.bad;
    }
    for (const s of subs) s.close();
    parentPort.postMessage(r, [r.lat.buffer]);
  });
  setInterval(() => parentPort.postMessage({ type: "progress", got: state.reduce((a, s) => a + s.received, 0), low }), 200).unref();
}

// ------------------------------------------------------------------ main ----
function args() {
  const a = { url: "http://127.0.0.1:9203", subs: 100, payload: 64, duration: 10, rate: 0, window: 64, threads: 1, room: "fanout", grace: 5 };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) {
    const k = v[i].replace(/^--/, "");
    if (!(k in a)) throw new Error(`unknown option ${v[i]}`);
    a[k] = typeof a[k] === "number" ? Number(v[i + 1]) : v[i + 1];
  }
  return a;
}

async function serverStats(url) {
  try {
    const r = await fetch(new URL("/stats", url));
    return await r.json();
  } catch {
    return null;
  }
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] * 1000) / 1000;
}

async function main() {
  const a = args();
  const threads = Math.max(1, Math.min(a.threads, a.subs));
  const workers = [];
  const lows = [];
  const got = [];
  let wake = null;
  const ready = [];
  for (let t = 0; t < threads; t++) {
    const count = Math.floor(a.subs / threads) + (t < a.subs % threads ? 1 : 0);
    const w = new Worker(__filename, {
      workerData: { url: a.url, room: a.room, count, payload: a.payload, maxSamples: Math.ceil(2e6 / threads) },
    });
    lows.push(0);
    got.push(0);
    ready.push(
      new Promise((resolve, reject) => {
        w.on("error", reject);
        w.on("message", (m) => {
          if (m.type === "ready") resolve(m.base);
          else if (m.type === "low") {
            lows[t] = m.low;
            if (wake) wake();
          } else if (m.type === "progress") got[t] = m.got;
        });
      }),
    );
    workers.push(w);
  }
  const bases = await Promise.all(ready);
  const pub = await connect(a.url);
  let offset = Math.max(...bases); // room's offset when everyone was subscribed
  for (let t = 0; t < threads; t++) lows[t] = Math.max(lows[t], offset);
  const firstOffset = offset;

  const data = Buffer.alloc(a.payload, 0x61);
  const before = await serverStats(a.url);
  const cpu0 = process.cpuUsage();
  const start = now();
  const end = start + a.duration * 1000;
  let published = 0;
  let acked = offset;
  const minLow = () => lows.reduce((m, x) => Math.min(m, x), Infinity);
  const interval = a.rate > 0 ? 1000 / a.rate : 0;
  let next = start;

  while (now() < end) {
    if (offset - minLow() >= a.window) {
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 5);
      });
      wake = null;
      continue;
    }
    if (interval) {
      const t = now();
      if (t < next) {
        await new Promise((r) => setTimeout(r, Math.max(0, next - t)));
        continue;
      }
      next += interval;
    }
    if (a.payload >= 8) data.writeDoubleLE(now(), 0);
    offset++;
    published++;
    pub.emit("publish", { room: a.room, data }, (r) => {
      if (r && r.offset > acked) acked = r.offset;
    });
    // let socket.io flush and the workers' watermarks come in every few sends
    if ((published & 7) === 0) await new Promise((r) => setImmediate(r));
  }
  const pubEnd = now();
  // grace: wait until every subscriber has everything, or grace runs out
  const graceEnd = now() + a.grace * 1000;
  while (minLow() < offset && now() < graceEnd) await new Promise((r) => setTimeout(r, 10));
  const drained = now();
  const cpu1 = process.cpuUsage(cpu0);
  const after = await serverStats(a.url);

  const results = await Promise.all(
    workers.map(
      (w) =>
        new Promise((resolve) => {
          w.on("message", (m) => m.type === "result" && resolve(m));
          w.postMessage({ type: "finish", lastOffset: offset });
        }),
    ),
  );
  pub.close();
  for (const w of workers) w.terminate();

  const r = { deliveries: 0, losses: 0, gaps: 0, bad: 0 };
  let lats = [];
  for (const x of results) {
    r.deliveries += x.deliveries;
    r.losses += x.losses;
    r.gaps += x.gaps;
    r.bad += x.bad;
    lats.push(x.lat);
  }
  const all = new Float64Array(lats.reduce((n, l) => n + l.length, 0));
  let k = 0;
  for (const l of lats) all.set(l, k), (k += l.length);
  all.sort();
  const elapsed = (drained - start) / 1000;
  let serverCpu = null;
  if (before && after && after.cpu_user_us !== undefined)
    serverCpu = (after.cpu_user_us + after.cpu_system_us - before.cpu_user_us - before.cpu_system_us) / 1e6;
  const out = {
    peer: "socketio",
    scenario: "fanout",
    subscribers: a.subs,
    publishers: 1,
    payload_bytes: a.payload,
    rate: a.rate,
    window: a.window,
    threads,
    duration_s: Math.round(elapsed * 1000) / 1000,
    publish_s: Math.round((pubEnd - start)) / 1000,
    publishes: published,
    first_offset: firstOffset + 1,
    last_offset: offset,
    deliveries: r.deliveries,
    deliveries_per_s: Math.round(r.deliveries / elapsed),
    losses: r.losses,
    gaps: r.gaps,
    bad_payloads: r.bad,
    latency_ms_p50: pct(all, 50),
    latency_ms_p99: pct(all, 99),
    latency_ms_max: all.length ? Math.round(all[all.length - 1] * 1000) / 1000 : null,
    server_cpu_s: serverCpu === null ? null : Math.round(serverCpu * 1000) / 1000,
    server_cpu_s_per_million_deliveries: serverCpu === null || !r.deliveries ? null : Math.round((serverCpu / r.deliveries) * 1e6 * 1000) / 1000,
    server_deliveries: after && before ? after.deliveries - before.deliveries : null,
    client_cpu_s: Math.round(((cpu1.user + cpu1.system) / 1e6) * 1000) / 1000,
  };
  console.log(JSON.stringify(out));
  process.exit(r.losses || r.bad ? 1 : 0);
}

if (isMainThread) {
  main().catch((e) => {
    console.error(e);
    process.exit(2);
  });
} else {
  runSubscribers(workerData).catch((e) => {
    console.error(e);
    process.exit(2);
  });
}
