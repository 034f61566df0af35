/**
 * The wire vocabulary of roomcast protocol version 1 (docs/PROTOCOL.md), in
 * the shape of its MessagePack form: maps keyed by the schema's field names.
 * The MessagePack codec writes these objects as they are; the Protobuf codec
 * maps them to and from the generated messages. Nothing here does I/O.
 */

/** Where a room's order stands: an epoch names one incarnation of the room, offsets count its publications from 1. */
export interface Position {
  epoch: string;
  offset: number;
}

/** One operation a client sends; exactly one key is set. */
export type Operation =
  | { subscribe: { room: string; recover?: Position; join_leave?: boolean } }
  | { unsubscribe: { room: string } }
  | { publish: { room: string; data: Uint8Array; idempotency_key?: string } }
  | { history: { room: string; since?: number; limit?: number; reverse?: boolean } }
  | { presence: { room: string } }
  | { presence_stats: { room: string } }
  | { refresh: { token: string } };

/** A client envelope: a request id (0: no success reply wanted) and one operation. */
export type Request = { id: number } & Operation;

export interface WireAck {
  offset?: number;
  epoch?: string;
  recovered?: boolean;
  duplicate?: boolean;
}
export interface WireClientInfo {
  client?: string;
  user?: string;
  joined_at_ms?: number;
}
export interface WireHistoryPage {
  epoch?: string;
  offset?: number;
  publications?: { offset?: number; data?: Uint8Array }[];
}

/** The answer to one request, matched by id. */
export interface WireReply {
  id?: number;
  ack?: WireAck;
  error?: { code?: number; message?: string };
  history?: WireHistoryPage;
  presence?: { clients?: WireClientInfo[] };
  presence_stats?: { clients?: number; users?: number };
}

/**
 * One server envelope. Fields the server leaves out (defaults, in both
 * encodings) are `undefined` here; readers apply the defaults.
 */
export interface ServerEnvelope {
  reply?: WireReply;
  message?: { room?: string; offset?: number; data?: Uint8Array };
  join?: { room?: string; info?: WireClientInfo };
  leave?: { room?: string; info?: WireClientInfo };
}

/**
 * An encoding of the envelopes, negotiated by WebSocket subprotocol. The
 * client offers `subprotocol` and checks that the server echoes it.
 */
export interface Codec {
  readonly subprotocol: string;
  encode(request: Request): Uint8Array;
  /** Throws on bytes that are not an envelope. */
  decode(bytes: Uint8Array): ServerEnvelope;
}
