/**
 * roomcast: a client for the roomcast WebSocket broker, for browsers and
 * Node. MessagePack by default; Protobuf from `roomcast/proto`; a React
 * provider and hook from `roomcast/react`.
 *
 * ```ts
 * import { Client } from "roomcast";
 * const client = new Client("ws://localhost:8080/ws");
 * client.connect();
 * const room = client.subscribe("chat.lobby");
 * room.on("message", ({ offset, data }) => console.log(offset, data));
 * room.on("subscribed", ({ reload }) => reload && refetchEverything());
 * const { offset } = await client.publish("chat.lobby", "hello");
 * ```
 */
export { Client } from "./client.js";
export type {
  ClientEvents,
  ClientOptions,
  ClientState,
  HistoryOptions,
  HistoryPage,
  PublishOptions,
  PublishResult,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { Subscription } from "./subscription.js";
export type {
  ClientInfo,
  Message,
  SubscribedEvent,
  SubscribeOptions,
  SubscriptionEvents,
  SubscriptionState,
} from "./subscription.js";
export { RoomcastError, UnauthorizedError } from "./errors.js";
export type { ErrorKind } from "./errors.js";
export { msgpack } from "./msgpack.js";
export type { Codec, Position } from "./protocol.js";
