/**
 * One room followed by a client. The client makes at most one per room and
 * counts the callers that asked for it (`Client.subscribe` adds one,
 * `release` takes one away), so a room requested twice (React StrictMode
 * runs effects twice) is subscribed once on the wire.
 *
 * The rule that hands each offset over once and in order lives here
 * (`_accept`, `_acknowledge`), without I/O, as in the Rust client's rooms.rs.
 */
import { Emitter } from "./emitter.js";
import type { RoomcastError } from "./errors.js";
import type { Position } from "./protocol.js";

export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";

/** A publication delivered to a subscribed room. */
export interface Message {
  room: string;
  offset: number;
  data: Uint8Array;
}

/** Who is in a room (a presence entry). */
export interface ClientInfo {
  /** Unique to the connection; opaque. */
  client: string;
  /** The `sub` of the connection's token; empty when anonymous or without tokens. */
  user: string;
  /** When it subscribed, in milliseconds since the Unix epoch (server clock). */
  joinedAt: number;
}

/** A subscribe was acknowledged: the first time, or again after a reconnect. */
export interface SubscribedEvent {
  room: string;
  /** The room's epoch and offset when the server answered. */
  epoch: string;
  offset: number;
  /** Subscribed again after a reconnect (or a close 1012 / 4002). */
  resubscribed: boolean;
  /** Every publication after `previous` follows: nothing was missed. */
  recovered: boolean;
  /**
   * Publications were missed and will not come (the room's history did not
   * reach back, or its epoch changed): reload the room's state from your own
   * source as of `offset`. Never true on a first subscribe without `since`.
   */
  reload: boolean;
  /** The position the subscribe resumed from, if any. */
  previous?: Position;
}

export interface SubscriptionEvents {
  state: { state: SubscriptionState; previous: SubscriptionState };
  subscribed: SubscribedEvent;
  message: Message;
  join: ClientInfo;
  leave: ClientInfo;
  /** The server refused the subscribe (e.g. 107, 106): the room is no longer followed. */
  error: RoomcastError;
}

export interface SubscribeOptions {
  /** Receive `join` and `leave` events (rooms with join and leave events only; others refuse with error 106). */
  joinLeave?: boolean;
  /** Start after this position (stored from an earlier session) instead of now, if the room's history still holds it. */
  since?: Position;
}

export class Subscription extends Emitter<SubscriptionEvents> {
  /** Where this room stands for the application: the epoch of the last ack and the offset of the last message handed over. */
  position: Position | undefined;
  state: SubscriptionState = "unsubscribed";
  /** @internal callers holding it */
  _refs = 0;
  /** @internal */
  readonly _joinLeave: boolean;
  /** @internal some subscribe of it was acknowledged: a later ack is a resubscribe */
  _confirmed = false;
  /** @internal subscribed on the current connection */
  _active = false;
  /** @internal the server refused it: not subscribed again */
  _refused = false;

  /** @internal made by `Client.subscribe` only */
  constructor(
    readonly room: string,
    options: SubscribeOptions,
    private readonly _release: (subscription: Subscription) => void,
  ) {
    super();
    this._joinLeave = options.joinLeave ?? false;
    this.position = options.since && { ...options.since };
  }

  /** Gives back one `Client.subscribe`; the last one unsubscribes the room. */
  release(): void {
    this._release(this);
  }

  /** Resolves at the next `subscribed` (at once if subscribed), rejects at the next `error`. */
  ready(): Promise<SubscribedEvent | undefined> {
    if (this.state === "subscribed") return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const offs = [
        this.on("subscribed", (event) => {
          offs.forEach((off) => off());
          resolve(event);
        }),
        this.on("error", (error) => {
          offs.forEach((off) => off());
          reject(error);
        }),
      ];
    });
  }

  /** @internal */
  _setState(state: SubscriptionState): void {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this._emit("state", { state, previous });
  }

  /**
   * @internal Whether a message at `offset` is new; if so it becomes the last
   * one handed over. Offsets never go back within an epoch, so anything at
   * or below the last one is a replay.
   */
  _accept(offset: number): boolean {
    const position = this.position;
    if (!position) return true;
    if (offset <= position.offset) return false;
    position.offset = offset;
    return true;
  }

  /**
   * @internal Takes in a subscribe ack. `sent`: the recover position the
   * subscribe carried. Returns the event for the application.
   */
  _acknowledge(sent: Position | undefined, epoch: string, offset: number, recovered: boolean): SubscribedEvent {
    const resubscribed = this._confirmed;
    this.position =
      sent && recovered
        ? // Every publication after the position we gave follows.
          { ...sent }
        : // A plain subscribe, or something was missed: live messages follow the ack's offset.
          { epoch, offset };
    this._confirmed = true;
    this._active = true;
    return {
      room: this.room,
      epoch,
      offset,
      resubscribed,
      recovered: !!sent && recovered,
      reload: !!sent && !recovered,
      previous: sent,
    };
  }
}
