/**
 * React bindings (`roomcast/react`): a provider for the client and
 * `useRoom(room)`, which follows a room while a component is mounted and
 * returns its latest messages and subscription state.
 *
 * Built on `useSyncExternalStore`. Under StrictMode React subscribes, drops
 * and subscribes again at once; the client counts references and releases a
 * room only after the current task, so the room is subscribed once on the
 * wire.
 */
import { createContext, createElement, useContext, useMemo, useSyncExternalStore, type ReactNode } from "react";
import type { Client } from "./client.js";
import type { Message, SubscribedEvent, SubscriptionState } from "./subscription.js";

const ClientContext = createContext<Client | null>(null);

export function RoomcastProvider(props: { client: Client; children?: ReactNode }) {
  return createElement(ClientContext.Provider, { value: props.client }, props.children);
}

/** The client of the nearest `RoomcastProvider`. */
export function useRoomcast(): Client {
  const client = useContext(ClientContext);
  if (!client) throw new Error("useRoomcast and useRoom need a <RoomcastProvider client={...}> above them");
  return client;
}

export interface RoomSnapshot {
  /** The latest messages, oldest first, at most `limit`. */
  messages: readonly Message[];
  state: SubscriptionState;
  /** The last `subscribed` event: after a reconnect, `reload` says the messages shown have a gap. */
  subscribed?: SubscribedEvent;
  /** Set when the server refused the subscription. */
  error?: Error;
}

export interface UseRoomOptions {
  /** How many messages the snapshot keeps. Default 100. */
  limit?: number;
}

/** Follows `room` while mounted; re-renders on every message and state change. */
export function useRoom(room: string, options: UseRoomOptions = {}): RoomSnapshot {
  const client = useRoomcast();
  const limit = options.limit ?? 100;
  const store = useMemo(() => roomStore(client, room, limit), [client, room, limit]);
  return useSyncExternalStore(store.subscribe, store.snapshot, store.snapshot);
}

/** An external store over one room; it follows the room while React listens. */
function roomStore(client: Client, room: string, limit: number) {
  let snapshot: RoomSnapshot = { messages: [], state: client.subscription(room)?.state ?? "unsubscribed" };
  const update = (change: Partial<RoomSnapshot>) => (snapshot = { ...snapshot, ...change });
  return {
    snapshot: () => snapshot,
    subscribe(changed: () => void) {
      const subscription = client.subscribe(room);
      update({ state: subscription.state });
      const offs = [
        subscription.on("message", (message) => {
          update({ messages: [...snapshot.messages, message].slice(-limit) });
          changed();
        }),
        subscription.on("state", ({ state }) => {
          update({ state });
          changed();
        }),
        subscription.on("subscribed", (subscribed) => {
          update({ subscribed, error: undefined });
          changed();
        }),
        subscription.on("error", (error) => {
          update({ error });
          changed();
        }),
      ];
      changed();
      return () => {
        offs.forEach((off) => off());
        subscription.release();
      };
    },
  };
}
