// Reconnect storm: VUs connect, subscribe to a room, receive a little, close
// and do it all again, as fast as they can, while one publisher keeps every
// room busy. Exercises the upgrade path, subscribe/unsubscribe on close, and
// offsets seen from a fresh subscription each time.
//
//   cargo run --release                      # the broker, in another terminal
//   k6 run loadtest/k6/reconnect_storm.js
//   k6 run -e VUS=500 -e HOLD=200ms -e DURATION=1m loadtest/k6/reconnect_storm.js
//
// Settings (-e NAME=value):
//   ROOMCAST_URL      broker                                   ws://127.0.0.1:8080/ws
//   VUS               reconnecting VUs                         20
//   ROOMS             rooms they pick from at random           10
//   RATE              publications per second in each room     20
//   HOLD              time connected per cycle (+ up to half)  500ms
//   DURATION          how long the storm lasts                 10s
//   HANDSHAKE_MIN     handshake success rate bound             0.99
//   SUBSCRIBE_P95_MS  subscribe reply latency p95 bound, ms    100
//
// Thresholds: handshake success rate >= HANDSHAKE_MIN, subscribe reply
// latency p95 < SUBSCRIBE_P95_MS, no protocol errors, no gaps, at least one
// delivery.

import { duration, envDurationMs, envInt, envNumber, paced, runTag, Session, targetUrl } from './lib/roomcast.js';

const VUS = envInt('VUS', 20);
const ROOMS = envInt('ROOMS', 10);
const RATE = envNumber('RATE', 20);
const HOLD_MS = envDurationMs('HOLD', '500ms');
const DURATION_MS = envDurationMs('DURATION', '10s');
const HANDSHAKE_MIN = envNumber('HANDSHAKE_MIN', 0.99);
const SUBSCRIBE_P95_MS = envNumber('SUBSCRIBE_P95_MS', 100);

export const options = {
  scenarios: {
    storm: {
      executor: 'constant-vus',
      exec: 'cycle',
      vus: VUS,
      duration: duration(DURATION_MS),
      // A cycle in progress at the end finishes within 1.5 x HOLD.
      gracefulStop: duration(2 * HOLD_MS + 5000),
    },
    chatter: {
      executor: 'per-vu-iterations',
      exec: 'chatter',
      vus: 1,
      iterations: 1,
      maxDuration: duration(DURATION_MS + 30000),
    },
  },
  thresholds: {
    roomcast_handshake_success: [`rate>=${HANDSHAKE_MIN}`],
    roomcast_subscribe_latency: [`p(95)<${SUBSCRIBE_P95_MS}`],
    roomcast_protocol_errors: ['count==0'],
    roomcast_gaps: ['count==0'],
    roomcast_deliveries: ['count>0'],
  },
};

/** A prefix per run, so the rooms' offsets start at 0. */
export function setup() {
  return { prefix: `storm.${runTag()}` };
}

/** One connect, subscribe, receive, close cycle; k6 repeats it. */
export function cycle({ prefix }) {
  const room = `${prefix}.${Math.floor(Math.random() * ROOMS)}`;
  new Session(targetUrl(), {
    onOpen(session) {
      session.subscribe(room, () => session.closeAfter(HOLD_MS + Math.random() * (HOLD_MS / 2)));
    },
  });
}

/** Publishes into every room, RATE a second each, for the whole storm. */
export function chatter({ prefix }) {
  const rooms = [];
  for (let i = 0; i < ROOMS; i++) {
    rooms.push(`${prefix}.${i}`);
  }
  let next = 0;
  new Session(targetUrl(), {
    onOpen(session) {
      paced(
        RATE * ROOMS,
        DURATION_MS,
        () => session.publish(rooms[next++ % ROOMS], 32, false),
        () => session.closeAfter(500),
      );
    },
  });
}
