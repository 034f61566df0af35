// Telemetry fan-out: one publisher sends readings at a fixed rate into one
// room; many viewers subscribe to it and check that every reading arrives,
// in order, quickly.
//
// Timeline: the viewers connect and subscribe at once; the publisher starts
// LEAD later and publishes RATE x DURATION readings into a room of this run
// (offsets 1, 2, ...). Each viewer leaves once it has the last one; one that
// still misses readings DRAIN past the end counts them as undelivered.
//
//   cargo run --release                      # the broker, in another terminal
//   k6 run loadtest/k6/telemetry.js
//   k6 run -e VIEWERS=500 -e RATE=200 -e DURATION=30s loadtest/k6/telemetry.js
//
// Settings (-e NAME=value):
//   ROOMCAST_URL   broker                               ws://127.0.0.1:8080/ws
//   VIEWERS        subscribed viewer VUs                20
//   RATE           readings published per second        50
//   PAYLOAD_BYTES  bytes of data per reading (>= 8)     128
//   DURATION       how long the publisher publishes     10s
//   LEAD           viewers' head start                  1s
//   DRAIN          viewers wait this long past the end  1s
//   P95_MS         delivery latency p95 bound, ms       50
//
// Thresholds: delivery latency p95 < P95_MS, no gaps, nothing undelivered,
// no protocol errors, at least one delivery.

import {
  deliveryThresholds, duration, envDurationMs, envInt, envNumber, paced, runTag, Session, targetUrl,
} from './lib/roomcast.js';

const VIEWERS = envInt('VIEWERS', 20);
const RATE = envNumber('RATE', 50);
const PAYLOAD_BYTES = envInt('PAYLOAD_BYTES', 128);
const DURATION_MS = envDurationMs('DURATION', '10s');
const LEAD_MS = envDurationMs('LEAD', '1s');
const DRAIN_MS = envDurationMs('DRAIN', '1s');
const P95_MS = envNumber('P95_MS', 50);

/** What the publisher sends: the room's last offset. */
const READINGS = Math.floor((DURATION_MS * RATE) / 1000);
if (READINGS < 1) {
  throw new Error(`RATE x DURATION must make at least one reading, not ${READINGS}`);
}

// Generous: the sessions end by themselves; this only stops a hung run.
const MAX_DURATION = duration(LEAD_MS + DURATION_MS + DRAIN_MS + 30000);

export const options = {
  scenarios: {
    viewers: {
      executor: 'per-vu-iterations',
      exec: 'viewer',
      vus: VIEWERS,
      iterations: 1,
      maxDuration: MAX_DURATION,
    },
    publisher: {
      executor: 'per-vu-iterations',
      exec: 'publisher',
      vus: 1,
      iterations: 1,
      startTime: duration(LEAD_MS),
      maxDuration: MAX_DURATION,
    },
  },
  thresholds: deliveryThresholds(P95_MS),
};

/** One room per run, so its offsets start at 0. */
export function setup() {
  return { room: `telemetry.${runTag()}` };
}

export function publisher({ room }) {
  new Session(targetUrl(), {
    onOpen(session) {
      // Fire-and-forget (id 0), as a sensor would: only errors come back.
      paced(
        RATE,
        DURATION_MS,
        () => session.publish(room, PAYLOAD_BYTES, false),
        () => session.closeAfter(DRAIN_MS / 2),
      );
    },
  });
}

export function viewer({ room }) {
  new Session(targetUrl(), {
    onOpen(session) {
      session.subscribe(room);
      session.finishAt(room, READINGS, LEAD_MS + DURATION_MS + DRAIN_MS, DRAIN_MS);
    },
  });
}
