// Checks lib/msgpack.js and lib/roomcast.js against the MessagePack test
// vectors of docs/PROTOCOL.md ("Worked examples") and a few round trips.
// Needs no broker; exits non-zero when a check fails.
//
//   k6 run --quiet loadtest/k6/codec_check.js

import { check } from 'k6';

import { decode, encode } from './lib/msgpack.js';
import {
  decodeServer,
  publishEnvelope,
  stampedData,
  stampOf,
  subscribeEnvelope,
  unsubscribeEnvelope,
} from './lib/roomcast.js';

export const options = {
  iterations: 1,
  vus: 1,
  thresholds: { checks: ['rate==1'] },
};

const LOBBY = 'aa636861742e6c6f626279';

const CLIENT_VECTORS = [
  ['subscribe {id: 1}', subscribeEnvelope(1, 'chat.lobby'),
    `82a2696401a9737562736372696265 81a4726f6f6d${LOBBY}`],
  ['unsubscribe {id: 2}', unsubscribeEnvelope(2, 'chat.lobby'),
    `82a2696402ab756e737562736372696265 81a4726f6f6d${LOBBY}`],
  ['publish {id: 3}', publishEnvelope(3, 'chat.lobby', bytes('6869')),
    `82a2696403a77075626c697368 82a4726f6f6d${LOBBY} a464617461c4026869`],
  ['publish {id: 0}', publishEnvelope(0, 'chat.lobby', bytes('6869')),
    `82a2696400a77075626c697368 82a4726f6f6d${LOBBY} a464617461c4026869`],
];

const SERVER_VECTORS = [
  ['ack 41', '81a57265706c7982a2696401a361636b81a66f6666736574 29',
    { kind: 'ack', id: 1, offset: 41 }],
  ['ack 0', '81a57265706c7982a2696402a361636b81a66f6666736574 00',
    { kind: 'ack', id: 2, offset: 0 }],
  ['error 102', '81a57265706c7982a2696409a56572726f7282a4636f646566a76d657373616765d920' +
    '696e76616c696420726f6f6d3a20726f6f6d206e616d6520697320656d707479',
  { kind: 'error', id: 9, code: 102, message: 'invalid room: room name is empty' }],
  ['message 42', `81a76d65737361676583a4726f6f6d${LOBBY}a66f66667365742aa464617461c4026869`,
    { kind: 'message', room: 'chat.lobby', offset: 42, data: '6869' }],
];

// Each value in its shortest form, as the server writes them.
const WIDTHS = [
  [127, '7f'], [128, 'cc80'], [256, 'cd0100'], [65536, 'ce00010000'],
  [4294967296, 'cf0000000100000000'], [-1, 'ff'], [-33, 'd0df'], [-129, 'd1ff7f'],
  [-32769, 'd2ffff7fff'], [-2147483649, 'd3ffffffff7fffffff'], [0.5, 'cb3fe0000000000000'],
  ['x'.repeat(32), `d920${'78'.repeat(32)}`], [new Uint8Array(256), `c50100${'00'.repeat(256)}`],
];

const ROUND_TRIPS = [
  0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296, Number.MAX_SAFE_INTEGER,
  -1, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649, Number.MIN_SAFE_INTEGER,
  0.5, -1.25, true, false, null, '', 'café', '日本.チャット', '😀', 'x'.repeat(31), 'x'.repeat(32),
  'x'.repeat(256), 'y'.repeat(70000), [1, 'two', [3]], { nested: { deeper: { id: 7 } } },
];

export default function () {
  for (const [name, actual, expected] of CLIENT_VECTORS) {
    check(hex(actual), { [`encodes ${name}`]: (h) => h === expected.replace(/ /g, '') });
  }
  for (const [name, wire, expected] of SERVER_VECTORS) {
    const decoded = decodeServer(bytes(wire));
    if (decoded.data !== undefined) {
      decoded.data = hex(decoded.data);
    }
    check(decoded, { [`decodes ${name}`]: (d) => JSON.stringify(d) === JSON.stringify(expected) });
  }
  for (const [value, expected] of WIDTHS) {
    check(hex(encode(value)), { [`width of ${describe(value)}`]: (h) => h === expected });
  }
  for (const value of ROUND_TRIPS) {
    const label = describe(value);
    check(value, { [`round trip ${label}`]: (v) => JSON.stringify(decode(encode(v))) === JSON.stringify(v) });
  }
  for (const size of [0, 200, 300, 70000]) {
    const data = bytes('ab'.repeat(size));
    check(decode(encode(data)), { [`bin of ${size} bytes`]: (d) => d.length === size && hex(d) === hex(data) });
  }
  const stamped = stampedData(64);
  check(stampOf(stamped), { 'stamp reads back': (t) => Math.abs(Date.now() - t) < 1000 });
  check(null, {
    'refuses a repeated key': () => throws(() => decode(bytes('82a161 01a161 02'))),
    'refuses trailing bytes': () => throws(() => decode(bytes('0102'))),
    'refuses a truncated str': () => throws(() => decode(bytes('a3616263'.slice(0, 6)))),
    'refuses invalid UTF-8': () => throws(() => decode(bytes('a2c328'))),
    'refuses an unsafe uint64': () => throws(() => decode(bytes('cf0020000000000000'))),
    'refuses a reply with ack and error': () =>
      throws(() => decodeServer(encode({ reply: { id: 1, ack: {}, error: { code: 1 } } }))),
  });
}

function bytes(text) {
  const clean = text.replace(/ /g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = parseInt(clean.substr(2 * i, 2), 16);
  }
  return out;
}

function hex(data) {
  const view = data instanceof Uint8Array ? data : new Uint8Array(data);
  const digits = [];
  for (const b of view) {
    digits.push((b < 16 ? '0' : '') + b.toString(16));
  }
  return digits.join('');
}

function describe(value) {
  if (typeof value === 'string' && value.length > 8) {
    return `a string of ${value.length} chars`;
  }
  if (value instanceof Uint8Array) {
    return `${value.length} bytes`;
  }
  return JSON.stringify(value).slice(0, 32);
}

function throws(f) {
  try {
    f();
    return false;
  } catch (_) {
    return true;
  }
}
