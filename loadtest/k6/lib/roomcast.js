// roomcast for k6: envelopes (docs/PROTOCOL.md, `roomcast.v1.msgpack`), the
// metrics every scenario shares, and `Session`, one checked connection.
//
// k6 1.1 has its browser-like WebSocket in `k6/experimental/websockets`
// (there is no `k6/websockets` yet). Its close event carries no close code;
// a close the server starts with a code other than 1000 arrives first as an
// error event whose `error` reads "websocket: close 1013 (...): reason".

import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Rate, Trend } from 'k6/metrics';
import { clearTimeout, setTimeout } from 'k6/timers';

import { decode, encode } from './msgpack.js';

export const SUBPROTOCOL = 'roomcast.v1.msgpack';
export const DEFAULT_URL = 'ws://127.0.0.1:8080/ws';

// WebSocket readyState values.
const CONNECTING = 0;
const OPEN = 1;

/** Bytes at the start of a publication's data: the send time, float64 ms. */
export const STAMP_BYTES = 8;

/**
 * The metrics of every scenario. Each scenario sets thresholds on the ones
 * it exercises; `count==0` thresholds pass when a counter has no samples.
 */
export const metrics = {
  /** Publish send time (in the payload) to receive time, ms. */
  latency: new Trend('roomcast_delivery_latency', true),
  /** Messages received. */
  deliveries: new Counter('roomcast_deliveries'),
  /** Publications sent. */
  publishes: new Counter('roomcast_publishes'),
  /** Offsets missing from a room's sequence (the broker lost messages). */
  gaps: new Counter('roomcast_gaps'),
  /**
   * Messages still missing when a client gave up waiting for a room's last
   * offset (`Session.finishAt`): lost at the end of the stream, or too late.
   */
  undelivered: new Counter('roomcast_undelivered'),
  /**
   * Anything a correct broker never does to a correct client: an error
   * reply, an undecodable envelope, a reply to no request, a message before
   * its subscribe ack or out of order, a request left unanswered, a close
   * the client did not ask for.
   */
  protocolErrors: new Counter('roomcast_protocol_errors'),
  /** Whether each WebSocket upgrade succeeded with the msgpack subprotocol. */
  handshakes: new Rate('roomcast_handshake_success'),
  /** Subscribe sent to its ack received, ms. */
  subscribeLatency: new Trend('roomcast_subscribe_latency', true),
};

/** The broker's WebSocket URL: `ROOMCAST_URL`, default ws://127.0.0.1:8080/ws. */
/**
 * The thresholds every delivery scenario shares: latency p95 under `p95Ms`,
 * and no gap, no undelivered message, no protocol error, no failed
 * handshake, and at least one delivery (k6 1.1 checks thresholds on metrics
 * that never got a sample, so a run that delivered nothing must fail).
 */
export function deliveryThresholds(p95Ms) {
  return {
    roomcast_delivery_latency: [`p(95)<${p95Ms}`],
    roomcast_gaps: ['count==0'],
    roomcast_undelivered: ['count==0'],
    roomcast_protocol_errors: ['count==0'],
    roomcast_deliveries: ['count>0'],
    roomcast_handshake_success: ['rate==1'],
  };
}

export function targetUrl() {
  return __ENV.ROOMCAST_URL || DEFAULT_URL;
}

/** A positive integer from the environment, or `fallback`. */
export function envInt(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`${name}=${raw}: expected a positive integer`);
  }
  return n;
}

/** A positive number from the environment, or `fallback`. */
export function envNumber(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    throw new Error(`${name}=${raw}: expected a positive number`);
  }
  return n;
}

/**
 * A duration from the environment in ms, or `fallback` (a string such as
 * "10s"). Accepts k6's simple forms: "500ms", "10s", "2m", "1h"; a bare
 * number is seconds.
 */
export function envDurationMs(name, fallback) {
  const raw = __ENV[name] || fallback;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(raw).trim());
  if (!match) {
    throw new Error(`${name}=${raw}: expected a duration such as 500ms, 10s or 2m`);
  }
  const scale = { ms: 1, s: 1000, m: 60000, h: 3600000 }[match[2] || 's'];
  return Math.round(Number(match[1]) * scale);
}

/** A k6 duration string for `ms`. */
export function duration(ms) {
  return `${Math.round(ms)}ms`;
}

/** A short random tag, so each run gets rooms of its own (offsets start at 0). */
export function runTag() {
  return Math.random().toString(36).slice(2, 8);
}

/** `{"id": id, "subscribe": {"room": room}}` as a binary message. */
export function subscribeEnvelope(id, room) {
  return toArrayBuffer(encode({ id, subscribe: { room } }));
}

/** `{"id": id, "unsubscribe": {"room": room}}` as a binary message. */
export function unsubscribeEnvelope(id, room) {
  return toArrayBuffer(encode({ id, unsubscribe: { room } }));
}

/** `{"id": id, "publish": {"room": room, "data": data}}` as a binary message. */
export function publishEnvelope(id, room, data) {
  return toArrayBuffer(encode({ id, publish: { room, data } }));
}

/**
 * A server envelope, checked against the schema:
 *   {kind: 'ack', id, offset}
 *   {kind: 'error', id, code, message}
 *   {kind: 'message', room, offset, data}
 * Throws when it is not one of these.
 */
export function decodeServer(bytes) {
  const envelope = decode(bytes);
  if (envelope === null || typeof envelope !== 'object' || Array.isArray(envelope)) {
    throw new Error('envelope is not a map');
  }
  const { reply, message } = envelope;
  if ((reply === undefined) === (message === undefined)) {
    throw new Error('envelope holds neither or both of reply and message');
  }
  if (reply !== undefined) {
    const id = uint(reply.id, 'reply.id');
    if ((reply.ack === undefined) === (reply.error === undefined)) {
      throw new Error(`reply ${id} holds neither or both of ack and error`);
    }
    if (reply.ack !== undefined) {
      return { kind: 'ack', id, offset: uint(reply.ack.offset, 'ack.offset') };
    }
    const error = reply.error;
    const text = error.message === undefined ? '' : error.message;
    return { kind: 'error', id, code: uint(error.code, 'error.code'), message: text };
  }
  if (typeof message.room !== 'string' || message.room === '') {
    throw new Error('message without a room');
  }
  const data = message.data === undefined ? new Uint8Array(0) : message.data;
  if (!(data instanceof Uint8Array)) {
    throw new Error('message data is not bin');
  }
  return { kind: 'message', room: message.room, offset: uint(message.offset, 'message.offset'), data };
}

/**
 * Publication data of `size` bytes (at least STAMP_BYTES) that starts with
 * the send time, `Date.now()` as a big-endian float64.
 */
export function stampedData(size) {
  const data = new Uint8Array(Math.max(size, STAMP_BYTES));
  data.fill(0x2e, STAMP_BYTES);
  new DataView(data.buffer).setFloat64(0, Date.now());
  return data;
}

/** The send time in stamped data, or NaN when the data is too short. */
export function stampOf(data) {
  if (data.length < STAMP_BYTES) {
    return NaN;
  }
  return new DataView(data.buffer, data.byteOffset, STAMP_BYTES).getFloat64(0);
}

/**
 * One roomcast connection, checked as it goes: the subprotocol echo, one
 * reply per request, each room's offsets (ack + 1, ack + 2, ... with gaps
 * counted), and no close it did not ask for. It records the shared metrics.
 *
 * Latency: the send time is `Date.now()` (whole ms) and the receive time is
 * the k6 event's timestamp (sub-ms, taken when k6 read the frame), so a
 * sample reads up to 1 ms high, never low.
 *
 * Callbacks (all optional): onOpen(session), onMessage(session, room,
 * offset, data), onClose(session, expected). A scenario ends a session with
 * `closeAfter`, `closeWhenAnswered` or `finishAt`; closing cancels the
 * session's timers, so the VU's iteration ends with it.
 */
export class Session {
  constructor(url, callbacks = {}) {
    this.callbacks = callbacks;
    this.nextId = 1;
    /** Request id -> {onAck}, until its reply arrives. */
    this.pending = new Map();
    /** Room -> last offset seen (the subscribe ack's at first). */
    this.offsets = new Map();
    this.opened = false;
    this.closing = false;
    this.failed = false;
    /** Timers to cancel on close, so a finished session ends its iteration. */
    this.timers = new Set();
    /** What `finishAt` waits for: {room, offset, drainMs, timer}. */
    this.finish = null;
    /** Runs once no request awaits a reply (set by `closeWhenAnswered`). */
    this.onAnswered = null;
    this.ws = new WebSocket(url, [SUBPROTOCOL]);
    this.ws.binaryType = 'arraybuffer';
    this.ws.onopen = () => this.handleOpen();
    this.ws.onmessage = (event) => this.handleMessage(event);
    this.ws.onerror = (event) => this.handleError(event);
    this.ws.onclose = () => this.handleClose();
  }

  /** Whether requests can be sent now. */
  get isOpen() {
    return this.opened && !this.closing && this.ws.readyState === OPEN;
  }

  /** Joins `room`; `onAck(offset)` runs when the ack arrives. */
  subscribe(room, onAck) {
    const sentAt = Date.now();
    return this.request(subscribeEnvelope, room, (offset, receivedAt) => {
      metrics.subscribeLatency.add(receivedAt - sentAt);
      this.offsets.set(room, offset);
      if (onAck) {
        onAck(offset);
      }
      this.checkFinished(room);
    });
  }

  /**
   * Publishes stamped data of `size` bytes to `room`. With `wantAck` the
   * request carries an id and its ack is awaited; otherwise it is id 0
   * (fire-and-forget: only errors come back).
   */
  publish(room, size, wantAck) {
    if (!this.isOpen) {
      return false;
    }
    const data = stampedData(size);
    if (wantAck) {
      this.request((id) => publishEnvelope(id, room, data), room, null);
    } else {
      this.ws.send(publishEnvelope(0, room, data));
    }
    metrics.publishes.add(1);
    return true;
  }

  request(envelope, room, onAck) {
    if (!this.isOpen) {
      return false;
    }
    const id = this.nextId++;
    this.pending.set(id, { onAck });
    this.ws.send(envelope(id, room));
    return true;
  }

  /**
   * Closes after `drainMs`, so that replies and messages in flight arrive
   * first; a request still unanswered then counts as a protocol error.
   */
  closeAfter(drainMs) {
    this.later(drainMs, () => this.closeWhenAnswered(0));
  }

  /**
   * Closes as soon as every request has its reply; past `maxWaitMs` the
   * unanswered ones count as protocol errors and it closes anyway.
   */
  closeWhenAnswered(maxWaitMs) {
    if (this.closing) {
      return;
    }
    if (this.pending.size === 0) {
      this.close();
      return;
    }
    this.onAnswered = () => this.close();
    this.later(maxWaitMs, () => {
      for (const id of this.pending.keys()) {
        this.protocolError(`request ${id} got no reply within ${maxWaitMs} ms`);
      }
      this.close();
    });
  }

  /**
   * Waits until `room` has delivered offset `lastOffset` (its final
   * publication), then closes once every request is answered (waiting at
   * most `drainMs` for that). Past `deadlineMs` from now it stops waiting:
   * the offsets still missing count in `roomcast_undelivered`.
   */
  finishAt(room, lastOffset, deadlineMs, drainMs) {
    this.finish = { room, offset: lastOffset, drainMs, timer: null };
    this.finish.timer = this.later(deadlineMs, () => {
      const seen = this.offsets.get(room) || 0;
      const missing = lastOffset - seen;
      if (missing > 0) {
        metrics.undelivered.add(missing);
        console.warn(
          `roomcast VU ${__VU}: room ${room}: offsets ${seen + 1}..${lastOffset} ` +
            `not delivered within ${deadlineMs} ms`,
        );
      }
      this.finish = null;
      this.closeWhenAnswered(drainMs);
    });
    this.checkFinished(room);
  }

  checkFinished(room) {
    const finish = this.finish;
    if (finish === null || finish.room !== room || (this.offsets.get(room) || 0) < finish.offset) {
      return;
    }
    this.finish = null;
    this.cancel(finish.timer);
    this.closeWhenAnswered(finish.drainMs);
  }

  /** `setTimeout` whose timer `close` cancels; returns the timer. */
  later(ms, f) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.closing) {
        f();
      }
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  cancel(timer) {
    clearTimeout(timer);
    this.timers.delete(timer);
  }

  /** Closes now (code 1000). */
  close() {
    if (this.closing) {
      return;
    }
    this.closing = true;
    this.cancelTimers();
    if (this.ws.readyState === CONNECTING || this.ws.readyState === OPEN) {
      this.ws.close();
    }
  }

  protocolError(what) {
    metrics.protocolErrors.add(1);
    console.warn(`roomcast VU ${__VU}: ${what}`);
  }

  handleOpen() {
    this.opened = true;
    const ok = this.ws.protocol === SUBPROTOCOL;
    metrics.handshakes.add(ok);
    if (!ok) {
      this.protocolError(`server chose subprotocol "${this.ws.protocol}"`);
      this.close();
      return;
    }
    if (this.callbacks.onOpen) {
      this.callbacks.onOpen(this);
    }
  }

  handleMessage(event) {
    const receivedAt = event.timestamp || Date.now();
    let envelope;
    try {
      envelope = decodeServer(event.data);
    } catch (error) {
      this.protocolError(`undecodable envelope: ${error.message}`);
      this.close();
      return;
    }
    if (envelope.kind === 'message') {
      this.handleDelivery(envelope, receivedAt);
      return;
    }
    if (envelope.kind === 'error') {
      this.pending.delete(envelope.id);
      this.protocolError(`error reply to request ${envelope.id}: ${envelope.code} ${envelope.message}`);
      if (this.pending.size === 0 && this.onAnswered) {
        this.onAnswered();
      }
      return;
    }
    const request = this.pending.get(envelope.id);
    if (request === undefined) {
      this.protocolError(`ack for request ${envelope.id}, which is not awaiting one`);
      return;
    }
    this.pending.delete(envelope.id);
    if (request.onAck) {
      request.onAck(envelope.offset, receivedAt);
    }
    if (this.pending.size === 0 && this.onAnswered) {
      this.onAnswered();
    }
  }

  handleDelivery({ room, offset, data }, receivedAt) {
    const last = this.offsets.get(room);
    if (last === undefined) {
      this.protocolError(`message ${offset} of room ${room} before its subscribe ack`);
      return;
    }
    if (offset <= last) {
      this.protocolError(`room ${room}: offset ${offset} after ${last}`);
      return;
    }
    if (offset > last + 1) {
      metrics.gaps.add(offset - last - 1);
      console.warn(`roomcast VU ${__VU}: room ${room}: offsets ${last + 1}..${offset - 1} missing`);
    }
    this.offsets.set(room, offset);
    metrics.deliveries.add(1);
    const sentAt = stampOf(data);
    if (!Number.isNaN(sentAt)) {
      metrics.latency.add(receivedAt - sentAt);
    }
    if (this.callbacks.onMessage) {
      this.callbacks.onMessage(this, room, offset, data);
    }
    this.checkFinished(room);
  }

  handleError(event) {
    if (!this.opened) {
      metrics.handshakes.add(false);
      this.failed = true;
      console.warn(`roomcast VU ${__VU}: handshake failed: ${event.error}`);
      return;
    }
    if (!this.closing && !this.failed) {
      this.failed = true;
      this.protocolError(`connection error: ${event.error}`);
    }
  }

  cancelTimers() {
    for (const timer of this.timers) {
      clearTimeout(timer);
    }
    this.timers.clear();
  }

  handleClose() {
    const expected = this.closing || this.failed;
    if (!expected) {
      this.failed = true;
      this.protocolError('the server closed the connection');
    }
    this.closing = true;
    this.cancelTimers();
    if (this.callbacks.onClose) {
      this.callbacks.onClose(this, expected);
    }
  }
}

/**
 * Runs `send()` `rate` times a second for `durationMs`, then `done()`. It
 * sends what is due by the clock at each tick, so timer jitter does not
 * change the rate. Returns a function that stops it early.
 */
export function paced(rate, durationMs, send, done) {
  const start = Date.now();
  const tickMs = Math.max(1, Math.min(1000 / rate, 50));
  let sent = 0;
  let stopped = false;
  const tick = () => {
    if (stopped) {
      return;
    }
    const elapsed = Date.now() - start;
    const due = Math.floor((Math.min(elapsed, durationMs) * rate) / 1000);
    while (sent < due) {
      sent++;
      if (send() === false) {
        stopped = true;
        return;
      }
    }
    if (elapsed >= durationMs) {
      stopped = true;
      if (done) {
        done();
      }
      return;
    }
    setTimeout(tick, tickMs);
  };
  setTimeout(tick, 0);
  return () => {
    stopped = true;
  };
}

function uint(value, what) {
  if (value === undefined) {
    return 0;
  }
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(`${what} is not an unsigned integer`);
  }
  return value;
}

function toArrayBuffer(bytes) {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}
