/**
 * The roomcast client: one WebSocket at a time, reconnected with backoff,
 * every room resumed from the last offset handed to the application.
 *
 * # Life of a call
 * A call becomes a request (`_request`): sent at once when the connection is
 * up and nothing waits ahead of it, else queued in call order (`_queue`).
 * A sent request waits in `_inFlight` under its id until its reply, its
 * timeout or the connection's end. When a connection ends, acknowledged
 * publishes go back to the front of the queue, under the same idempotency
 * key, so a publish whose ack was lost is answered `duplicate` instead of
 * being delivered twice; reads fail (their answer would describe a moment
 * the caller did not ask about). A new connection first subscribes every
 * room again with `recover`, and the queue is sent once all have answered.
 *
 * # States
 * Client: `disconnected` (not trying: before `connect`, after `close`, or
 * stopped for good) → `connecting` (an attempt, or the backoff wait before
 * one) → `connected`. Subscription: `unsubscribed` → `subscribing` (waiting
 * for a connection or the ack) → `subscribed`, back to `subscribing` while
 * the client reconnects.
 */
import { backoffDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { RoomcastError, UnauthorizedError } from "./errors.js";
import { msgpack } from "./msgpack.js";
import type { Codec, Operation, Position, ServerEnvelope, WireClientInfo, WireReply } from "./protocol.js";
import { Subscription, type ClientInfo, type SubscribeOptions } from "./subscription.js";

export type ClientState = "disconnected" | "connecting" | "connected";

/** The part of the WHATWG WebSocket the client uses; browsers' and the `ws` package's both fit. */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface ClientOptions {
  /** The envelope encoding, offered as the WebSocket subprotocol. Default `msgpack`; `protobuf` comes from `roomcast/proto`. */
  codec?: Codec;
  /** The WebSocket class. Default `globalThis.WebSocket` (browsers, Node 22+); in Node 20 pass the `ws` package's. */
  WebSocket?: WebSocketConstructor;
  /** A fixed JWT. Default none. */
  token?: string;
  /**
   * Fetches a JWT: before the first connection, before a reconnect when the
   * token is near its `exp` or a connection attempt failed, and ahead of
   * `exp` on a live connection (sent as `refresh`). Throw
   * `UnauthorizedError` to stop the client for good. Default none.
   */
  getToken?: () => Promise<string> | string;
  /** The first reconnect waits a random time up to this (ms); each failed attempt doubles the bound. Default 500. */
  minReconnectDelay?: number;
  /** The largest bound a reconnect wait is drawn from (ms). Default 20 000. */
  maxReconnectDelay?: number;
  /** How long a publish or read waits for its answer, queued time included (ms); 0 waits forever. Default 10 000. */
  timeout?: number;
  /** TCP connect plus the WebSocket upgrade (ms). Default 10 000. */
  connectTimeout?: number;
  /** Publications held while disconnected; past it, publishing fails with `queue-full`. Default 1024. */
  maxQueuedPublishes?: number;
}

export interface ClientEvents {
  state: { state: ClientState; previous: ClientState };
  /** Entering `connecting`; `code` and `reason` say why (0 when `connect` was called). */
  connecting: { code: number; reason: string };
  connected: { subprotocol: string };
  /** Stopped for good: `close`, a refused token, or a close code that forbids reconnecting. */
  disconnected: { code: number; reason: string };
  /** Something the application may want to log: an error reply to a fire-and-forget publish, a refused refresh, a failed `getToken`. */
  error: { error: Error };
}

export interface PublishOptions {
  /** Overrides the client's `timeout` (ms). */
  timeout?: number;
  /** Your own key (at most 128 bytes); default: one of the client's making, unique per publish. */
  idempotencyKey?: string;
}

export interface PublishResult {
  /** The offset the room gave the publication. */
  offset: number;
  /** The server had seen this idempotency key: a retry, not published again. */
  duplicate: boolean;
}

export interface HistoryOptions {
  /** Oldest first: offsets above `since`; newest first (`reverse`): below it. 0: from the oldest (newest). */
  since?: number;
  /** At most this many publications; 0 is the server's page size. */
  limit?: number;
  reverse?: boolean;
  timeout?: number;
}

export interface HistoryPage {
  epoch: string;
  /** The room's offset when the page was read. */
  offset: number;
  publications: { offset: number; data: Uint8Array }[];
}

// Close codes after which a new connection would meet the same fate: the
// server meant it (1000), or it blames this client's frames.
const FINAL_CLOSES = [1000, 1002, 1003, 1007, 1008, 1009, 1010];
const TOKEN_EXPIRED = 4001;
const EMPTY = new Uint8Array(0);
const OPEN = 1;

interface Pending {
  op: Operation;
  resolve: (reply: WireReply) => void;
  reject: (error: RoomcastError) => void;
  id?: number;
  timer?: ReturnType<typeof setTimeout>;
  /** Acknowledged publish: back to the queue when its connection drops. */
  retry?: boolean;
  /** Fire-and-forget publish: sent with id 0. */
  noAck?: boolean;
}

interface SubscribeSent {
  subscription: Subscription;
  sent: Position | undefined;
  /** One of the batch after connecting, which holds the queue back. */
  batch: boolean;
}

const serverError = (error: { code?: number; message?: string }) =>
  new RoomcastError("server", error.message ?? "", error.code ?? 0);

const clientInfo = (info: WireClientInfo | undefined): ClientInfo => ({
  client: info?.client ?? "",
  user: info?.user ?? "",
  joinedAt: info?.joined_at_ms ?? 0,
});

export class Client extends Emitter<ClientEvents> {
  state: ClientState = "disconnected";
  readonly codec: Codec;
  private _ws: WebSocketLike | undefined;
  private _WebSocket: WebSocketConstructor;
  private _subscriptions = new Map<string, Subscription>();
  private _inFlight = new Map<number, Pending>();
  private _subscribing = new Map<number, SubscribeSent>();
  private _queue: Pending[] = [];
  /** Subscribes of the batch after connecting still unanswered; the queue waits for 0. */
  private _batch = 0;
  /** Ids grow for the client's life, so a reply never matches a request of another connection. */
  private _nextId = 1;
  private _keyPrefix: string;
  private _nextKey = 0;
  private _stopped = true;
  /** Failed attempts since the last connection. */
  private _attempt = 0;
  /** Counts `_open` calls, so that a slow `getToken` of an abandoned attempt opens nothing. */
  private _generation = 0;
  private _retryTimer: ReturnType<typeof setTimeout> | undefined;
  private _refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private _token: string | undefined;
  /** The token may have been refused (an attempt failed before opening, or 4001): fetch another. */
  private _tokenStale = false;
  private readonly _o: Required<Omit<ClientOptions, "codec" | "WebSocket" | "token" | "getToken">> &
    Pick<ClientOptions, "getToken">;
  private readonly _online = () => this._reconnectNow();

  constructor(
    readonly url: string,
    options: ClientOptions = {},
  ) {
    super();
    this.codec = options.codec ?? msgpack;
    this._WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket!;
    this._token = options.token;
    this._o = {
      getToken: options.getToken,
      minReconnectDelay: options.minReconnectDelay ?? 500,
      maxReconnectDelay: options.maxReconnectDelay ?? 20_000,
      timeout: options.timeout ?? 10_000,
      connectTimeout: options.connectTimeout ?? 10_000,
      maxQueuedPublishes: options.maxQueuedPublishes ?? 1024,
    };
    const random = new Uint8Array(8);
    // Keys must not collide across the room's publishers: a CSPRNG where there is one.
    if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(random);
    else random.forEach((_, i) => (random[i] = Math.random() * 256));
    this._keyPrefix = Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** Starts connecting (and reconnecting); does nothing unless `disconnected`. */
  connect(): void {
    if (this.state !== "disconnected") return;
    this._stopped = false;
    this._attempt = 0;
    (globalThis as { addEventListener?: (type: string, listener: () => void) => void }).addEventListener?.(
      "online",
      this._online,
    );
    this._enterConnecting(0, "connect called");
    void this._open();
  }

  /**
   * Closes the connection (1000) and stops reconnecting. Calls still waiting
   * fail with `closed`; subscriptions are kept, `unsubscribed`, and resume
   * from their position at the next `connect`.
   */
  close(): void {
    this._stop(1000, "closed by the client");
  }

  /**
   * Follows `room`. One subscription per room: a second call returns the same
   * object and adds a reference; pair each call with one `release()`.
   * Options count only when the room is not followed yet.
   */
  subscribe(room: string, options: SubscribeOptions = {}): Subscription {
    let subscription = this._subscriptions.get(room);
    if (!subscription) {
      subscription = new Subscription(room, options, (s) => this._release(s));
      this._subscriptions.set(room, subscription);
    }
    subscription._refs++;
    if (subscription.state === "unsubscribed" && !this._stopped) {
      subscription._refused = false;
      subscription._setState("subscribing");
      this._sendSubscribe(subscription, false);
    }
    return subscription;
  }

  /** The subscription of `room`, if it is followed. */
  subscription(room: string): Subscription | undefined {
    return this._subscriptions.get(room);
  }

  /**
   * Publishes and resolves with the offset the room gave it. Queued while
   * disconnected (up to `maxQueuedPublishes`) and sent again after a dropped
   * connection under the same idempotency key, so it is published once.
   * Rejects with `timeout` after `timeout` ms, and is then not sent again.
   */
  async publish(room: string, data: Uint8Array | string, options: PublishOptions = {}): Promise<PublishResult> {
    const key = options.idempotencyKey ?? `${this._keyPrefix}-${++this._nextKey}`;
    const op = { publish: { room, data: bytes(data), idempotency_key: key } };
    const { ack } = await this._request(op, options.timeout, true);
    return { offset: ack?.offset ?? 0, duplicate: !!ack?.duplicate };
  }

  /**
   * Publishes without an ack (fire-and-forget): queued while disconnected,
   * never sent twice (at most once). Throws `queue-full` or `closed`; an
   * error reply arrives as an `error` event.
   */
  publishNoAck(room: string, data: Uint8Array | string): void {
    const refused = this._submit({ op: { publish: { room, data: bytes(data) } }, noAck: true, resolve() {}, reject() {} }, 0);
    if (refused) throw refused;
  }

  /** A page of `room`'s history (rooms with history only; others: server error 106). */
  async history(room: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    const { since, limit, reverse } = options;
    const { history } = await this._request({ history: { room, since, limit, reverse } }, options.timeout);
    return {
      epoch: history?.epoch ?? "",
      offset: history?.offset ?? 0,
      publications: (history?.publications ?? []).map((p) => ({ offset: p.offset ?? 0, data: p.data ?? EMPTY })),
    };
  }

  /** Who is in `room`, earliest joined first (rooms with presence only). */
  async presence(room: string, options: { timeout?: number } = {}): Promise<ClientInfo[]> {
    const { presence } = await this._request({ presence: { room } }, options.timeout);
    return (presence?.clients ?? []).map(clientInfo);
  }

  /** How many connections and distinct users are in `room`. */
  async presenceStats(room: string, options: { timeout?: number } = {}): Promise<{ clients: number; users: number }> {
    const stats = (await this._request({ presence_stats: { room } }, options.timeout)).presence_stats;
    return { clients: stats?.clients ?? 0, users: stats?.users ?? 0 };
  }

  // ---- requests ----

  private _request(op: Operation, timeout = this._o.timeout, retry = false): Promise<WireReply> {
    return new Promise((resolve, reject) => {
      const refused = this._submit({ op, resolve, reject, retry }, timeout);
      if (refused) reject(refused);
    });
  }

  /** Sends or queues a request; returns the error when it is refused at once. */
  private _submit(pending: Pending, timeout: number): RoomcastError | undefined {
    if (this._stopped) return new RoomcastError("closed", "the client is closed");
    if (timeout > 0) {
      pending.timer = setTimeout(() => {
        this._queue = this._queue.filter((p) => p !== pending);
        if (pending.id) this._inFlight.delete(pending.id);
        pending.reject(new RoomcastError("timeout", `no answer within ${timeout} ms`));
      }, timeout);
    }
    if (this._sendsNow()) {
      this._send(pending);
      return;
    }
    const publishes = this._queue.filter((p) => p.retry || p.noAck).length;
    if ((pending.retry || pending.noAck) && publishes >= this._o.maxQueuedPublishes) {
      clearTimeout(pending.timer);
      return new RoomcastError("queue-full", `the offline queue holds ${publishes} publications`);
    }
    this._queue.push(pending);
  }

  /** Requests go out directly only when connected and nothing queued is ahead of them. */
  private _sendsNow(): boolean {
    return this._ws?.readyState === OPEN && this.state === "connected" && this._batch === 0 && !this._queue.length;
  }

  private _send(pending: Pending): void {
    if (pending.noAck) {
      this._write({ id: 0, ...pending.op });
      pending.resolve({});
      return;
    }
    const id = this._nextId++;
    pending.id = id;
    this._inFlight.set(id, pending);
    this._write({ id, ...pending.op });
  }

  private _write(request: Parameters<Codec["encode"]>[0]): void {
    if (this._ws?.readyState === OPEN) this._ws.send(this.codec.encode(request));
  }

  /** Sends what waited for the connection, in order. */
  private _flush(): void {
    while (this._queue.length && this._ws?.readyState === OPEN && this._batch === 0) {
      this._send(this._queue.shift()!);
    }
  }

  // ---- subscriptions ----

  private _sendSubscribe(subscription: Subscription, batch: boolean): void {
    if (this._ws?.readyState !== OPEN || this.state !== "connected") {
      if (!batch) return; // the batch after connecting sends it
    }
    const id = this._nextId++;
    const sent = subscription.position && { ...subscription.position };
    this._subscribing.set(id, { subscription, sent, batch });
    if (batch) this._batch++;
    this._write({
      id,
      subscribe: { room: subscription.room, recover: sent, join_leave: subscription._joinLeave || undefined },
    });
  }

  private _release(subscription: Subscription): void {
    if (subscription._refs === 0) return;
    if (--subscription._refs > 0) return;
    // A caller that takes the room back at once (React StrictMode runs an
    // effect's cleanup and the effect again) keeps it without a round trip.
    setTimeout(() => {
      if (subscription._refs > 0 || this._subscriptions.get(subscription.room) !== subscription) return;
      this._subscriptions.delete(subscription.room);
      if (subscription.state !== "unsubscribed" && this._ws?.readyState === OPEN) {
        // An id, so an error reply (none is expected) is swallowed here.
        const id = this._nextId++;
        this._inFlight.set(id, { op: { unsubscribe: { room: subscription.room } }, resolve() {}, reject() {}, id });
        this._write({ id, unsubscribe: { room: subscription.room } });
      }
      subscription._active = false;
      subscription._setState("unsubscribed");
    });
  }

  private _subscribed(sent: SubscribeSent, reply: WireReply): void {
    const { subscription } = sent;
    if (sent.batch) this._batch--;
    if (this._subscriptions.get(subscription.room) === subscription && subscription.state === "subscribing") {
      if (reply.error) {
        subscription._refused = true;
        subscription._active = false;
        subscription._setState("unsubscribed");
        subscription._emit("error", serverError(reply.error));
      } else {
        const ack = reply.ack ?? {};
        const event = subscription._acknowledge(sent.sent, ack.epoch ?? "", ack.offset ?? 0, !!ack.recovered);
        subscription._setState("subscribed");
        subscription._emit("subscribed", event);
      }
    }
    if (sent.batch && this._batch === 0) this._flush();
  }

  // ---- the connection ----

  private _enterConnecting(code: number, reason: string): void {
    if (this.state === "connecting") return;
    this._setState("connecting");
    this._emit("connecting", { code, reason });
  }

  private async _open(): Promise<void> {
    this._retryTimer = undefined;
    const generation = ++this._generation;
    let token: string | undefined;
    try {
      token = await this._currentToken();
    } catch (error) {
      if (generation !== this._generation) return;
      if (error instanceof UnauthorizedError) return this._stop(0, error.message, error);
      this._emit("error", { error: error as Error });
      return this._retry();
    }
    if (generation !== this._generation || this._stopped) return;
    const protocols = [this.codec.subprotocol];
    if (token) protocols.push(`roomcast.jwt.${token}`);
    let ws: WebSocketLike;
    try {
      ws = new this._WebSocket(this.url, protocols);
    } catch (error) {
      return this._stop(0, String(error));
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    let opened = false;
    const connectTimer = setTimeout(() => ws.close(), this._o.connectTimeout);
    ws.onopen = () => {
      clearTimeout(connectTimer);
      if (ws !== this._ws) return;
      opened = true;
      if (ws.protocol !== this.codec.subprotocol) {
        this._ws = undefined;
        ws.close();
        return this._stop(0, `asked for ${this.codec.subprotocol}, the server answered "${ws.protocol}"`);
      }
      this._opened();
    };
    ws.onmessage = (event) => {
      if (ws !== this._ws) return;
      let envelope: ServerEnvelope;
      try {
        envelope = this.codec.decode(new Uint8Array(event.data as ArrayBuffer));
      } catch (error) {
        this._emit("error", { error: error as Error });
        ws.close(); // the server broke the protocol: start over
        return;
      }
      this._receive(envelope);
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      clearTimeout(connectTimer);
      if (ws !== this._ws) return;
      this._ws = undefined;
      if (!opened) this._tokenStale = true;
      this._lost(event.code, event.reason);
    };
  }

  private _opened(): void {
    this._attempt = 0;
    this._setState("connected");
    this._scheduleRefresh();
    // Every followed room again, each from its position; the queue waits for the batch.
    for (const subscription of this._subscriptions.values()) {
      if (subscription._refs > 0 && !subscription._refused) {
        subscription._setState("subscribing");
        this._sendSubscribe(subscription, true);
      }
    }
    this._emit("connected", { subprotocol: this.codec.subprotocol });
    if (this._batch === 0) this._flush();
  }

  private _receive(envelope: ServerEnvelope): void {
    const { reply, message, join, leave } = envelope;
    if (reply) {
      const id = reply.id ?? 0;
      const sent = this._subscribing.get(id);
      if (sent) {
        this._subscribing.delete(id);
        return this._subscribed(sent, reply);
      }
      const pending = this._inFlight.get(id);
      if (!pending) {
        if (reply.error) this._emit("error", { error: serverError(reply.error) });
        return;
      }
      this._inFlight.delete(id);
      clearTimeout(pending.timer);
      if (reply.error) pending.reject(serverError(reply.error));
      else pending.resolve(reply);
    } else if (message) {
      const subscription = this._subscriptions.get(message.room ?? "");
      const offset = message.offset ?? 0;
      if (subscription?._active && subscription._accept(offset)) {
        subscription._emit("message", { room: subscription.room, offset, data: message.data ?? EMPTY });
      }
    } else if (join || leave) {
      const event = (join ?? leave)!;
      const subscription = this._subscriptions.get(event.room ?? "");
      if (subscription?._active) subscription._emit(join ? "join" : "leave", clientInfo(event.info));
    }
  }

  /** The connection ended: settle what was in flight on it, then reconnect or stop. */
  private _lost(code: number, reason: string): void {
    clearTimeout(this._refreshTimer);
    this._subscribing.clear();
    this._batch = 0;
    for (const subscription of this._subscriptions.values()) {
      subscription._active = false;
      if (subscription.state === "subscribed") subscription._setState("subscribing");
    }
    const retry: Pending[] = [];
    for (const pending of this._inFlight.values()) {
      if (pending.retry) retry.push(pending);
      else if (pending.op && "unsubscribe" in pending.op) pending.resolve({});
      else {
        clearTimeout(pending.timer);
        pending.reject(new RoomcastError("disconnected", `the connection closed (${code}) before the answer`));
      }
    }
    this._inFlight.clear();
    // Sent before anything still queued: they go first, in their order.
    retry.sort((a, b) => a.id! - b.id!);
    this._queue.unshift(...retry);
    if (code === TOKEN_EXPIRED) this._tokenStale = true;
    if (FINAL_CLOSES.includes(code) || (code === TOKEN_EXPIRED && !this._o.getToken)) {
      return this._stop(code, reason);
    }
    this._enterConnecting(code, reason);
    this._retry();
  }

  private _retry(): void {
    const delay = backoffDelay(this._attempt++, this._o.minReconnectDelay, this._o.maxReconnectDelay, Math.random());
    this._retryTimer = setTimeout(() => void this._open(), delay);
  }

  /** The browser says the network is back: skip the rest of the backoff wait. */
  private _reconnectNow(): void {
    if (this.state !== "connecting" || this._retryTimer === undefined) return;
    clearTimeout(this._retryTimer);
    this._attempt = 0;
    void this._open();
  }

  /** Stops for good: every waiting call fails, subscriptions become `unsubscribed`. */
  private _stop(code: number, reason: string, cause?: Error): void {
    this._stopped = true;
    this._generation++;
    clearTimeout(this._retryTimer);
    clearTimeout(this._refreshTimer);
    this._retryTimer = undefined;
    (globalThis as { removeEventListener?: (type: string, listener: () => void) => void }).removeEventListener?.(
      "online",
      this._online,
    );
    const ws = this._ws;
    this._ws = undefined;
    if (ws) ws.close(1000);
    const error =
      cause instanceof RoomcastError ? cause : new RoomcastError("closed", `the client stopped: ${reason} (${code})`);
    for (const pending of [...this._inFlight.values(), ...this._queue]) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this._inFlight.clear();
    this._queue = [];
    this._subscribing.clear();
    this._batch = 0;
    for (const subscription of this._subscriptions.values()) {
      subscription._active = false;
      subscription._setState("unsubscribed");
    }
    if (this.state === "disconnected") return;
    this._setState("disconnected");
    this._emit("disconnected", { code, reason });
  }

  private _setState(state: ClientState): void {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this._emit("state", { state, previous });
  }

  // ---- tokens ----

  private async _currentToken(): Promise<string | undefined> {
    const getToken = this._o.getToken;
    if (getToken && (!this._token || this._tokenStale || refreshIn(this._token) <= 0)) {
      this._token = await getToken();
      this._tokenStale = false;
    }
    return this._token;
  }

  /** Asks for a new token ahead of the current one's `exp` and hands it to the server (`refresh`). */
  private _scheduleRefresh(): void {
    const getToken = this._o.getToken;
    if (!getToken || !this._token) return;
    const delay = refreshIn(this._token);
    if (!Number.isFinite(delay)) return;
    this._refreshTimer = setTimeout(async () => {
      try {
        const token = await getToken();
        await this._request({ refresh: { token } });
        this._token = token;
        this._scheduleRefresh();
      } catch (error) {
        if (error instanceof UnauthorizedError) return this._stop(0, error.message, error);
        // The server closes with 4001 at `exp`; the reconnect fetches a new token.
        this._tokenStale = true;
        this._emit("error", { error: error as Error });
      }
    }, Math.max(0, delay));
  }
}

/** Milliseconds until a JWT should be replaced: a third of its life (at most 30 s) before `exp`; Infinity without `exp`. */
function refreshIn(token: string): number {
  try {
    const part = token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/");
    const { exp, iat } = JSON.parse(atob(part)) as { exp?: number; iat?: number };
    if (typeof exp !== "number") return Infinity;
    const margin = Math.min(30_000, typeof iat === "number" ? ((exp - iat) * 1000) / 3 : 30_000);
    return exp * 1000 - margin - Date.now();
  } catch {
    return Infinity;
  }
}

const encoder = new TextEncoder();
const bytes = (data: Uint8Array | string) => (typeof data === "string" ? encoder.encode(data) : data);
