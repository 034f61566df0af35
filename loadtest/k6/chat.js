// Chat: many small rooms. Each VU joins one room, says a line every so often
// (publish with an id, so each line is acknowledged) and receives every line
// of its room, its own included, checking offsets and timing each delivery.
// Each user says RATE x DURATION lines, so a room's last offset is known:
// a user leaves once it has seen it, and counts what is still missing DRAIN
// past the end as undelivered.
//
//   cargo run --release                      # the broker, in another terminal
//   k6 run loadtest/k6/chat.js
//   k6 run -e ROOMS=500 -e USERS_PER_ROOM=8 -e DURATION=1m loadtest/k6/chat.js
//
// Settings (-e NAME=value):
//   ROOMCAST_URL    broker                              ws://127.0.0.1:8080/ws
//   ROOMS           rooms                               10
//   USERS_PER_ROOM  VUs in each room (VUs = the product) 4
//   RATE            lines per second per user           1
//   PAYLOAD_BYTES   bytes of data per line (>= 8)       64
//   DURATION        how long users talk                 10s
//   DRAIN           users wait this long past the end   2s
//   P95_MS          delivery latency p95 bound, ms      50
//
// Thresholds: delivery latency p95 < P95_MS, no gaps, nothing undelivered,
// no protocol errors (error replies, unanswered publishes, unexpected
// closes), at least one delivery.

import { setTimeout } from 'k6/timers';

import {
  deliveryThresholds, duration, envDurationMs, envInt, envNumber, paced, runTag, Session, targetUrl,
} from './lib/roomcast.js';

const ROOMS = envInt('ROOMS', 10);
const USERS_PER_ROOM = envInt('USERS_PER_ROOM', 4);
const RATE = envNumber('RATE', 1);
const PAYLOAD_BYTES = envInt('PAYLOAD_BYTES', 64);
const DURATION_MS = envDurationMs('DURATION', '10s');
const DRAIN_MS = envDurationMs('DRAIN', '2s');
const P95_MS = envNumber('P95_MS', 50);

/** Lines each user says, and so each room's last offset. */
const LINES_PER_USER = Math.floor((DURATION_MS * RATE) / 1000);
const ROOM_LINES = LINES_PER_USER * USERS_PER_ROOM;
if (LINES_PER_USER < 1) {
  throw new Error(`RATE x DURATION must make at least one line, not ${LINES_PER_USER}`);
}

export const options = {
  scenarios: {
    chat: {
      executor: 'per-vu-iterations',
      exec: 'user',
      vus: ROOMS * USERS_PER_ROOM,
      iterations: 1,
      // Generous: the sessions end by themselves; this only stops a hung run.
      maxDuration: duration(DURATION_MS + DRAIN_MS + 30000),
    },
  },
  thresholds: deliveryThresholds(P95_MS),
};

/** A prefix per run, so the rooms' offsets start at 0. */
export function setup() {
  return { prefix: `chat.${runTag()}` };
}

export function user({ prefix }) {
  // Consecutive VUs go to different rooms, so every room fills up evenly.
  const room = `${prefix}.${(__VU - 1) % ROOMS}`;
  new Session(targetUrl(), {
    onOpen(session) {
      session.subscribe(room, () => {
        // Users do not speak in step: each starts at a random point of its period.
        const period = 1000 / RATE;
        setTimeout(() => {
          paced(RATE, DURATION_MS, () => session.publish(room, PAYLOAD_BYTES, true));
        }, Math.random() * period);
        session.finishAt(room, ROOM_LINES, period + DURATION_MS + DRAIN_MS, DRAIN_MS);
      });
    },
  });
}
