/**
 * `roomcast.v1.proto`: the envelopes as the Protocol Buffers messages of
 * proto/roomcast.proto, through code protoc-gen-es generates from it
 * (src/gen/, `npm run generate`). A separate entry point (`roomcast/proto`),
 * so that a MessagePack-only application does not carry the Protobuf runtime:
 *
 * ```ts
 * import { Client } from "roomcast";
 * import { protobuf } from "roomcast/proto";
 * const client = new Client(url, { codec: protobuf });
 * ```
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ClientMessageSchema,
  ServerMessageSchema,
  type ClientInfo,
  type ClientMessage,
} from "./gen/roomcast_pb.js";
import type { Codec, Request, ServerEnvelope, WireClientInfo, WireReply } from "./protocol.js";

type Op = ClientMessage["op"];

function operation(request: Request): Op {
  if ("subscribe" in request) {
    const { room, recover, join_leave } = request.subscribe;
    const value = {
      room,
      joinLeave: join_leave ?? false,
      recover: recover && { epoch: recover.epoch, offset: BigInt(recover.offset) },
    };
    return { case: "subscribe", value: value as never };
  }
  if ("unsubscribe" in request) return { case: "unsubscribe", value: request.unsubscribe as never };
  if ("publish" in request) {
    const { room, data, idempotency_key } = request.publish;
    return { case: "publish", value: { room, data, idempotencyKey: idempotency_key ?? "" } as never };
  }
  if ("history" in request) {
    const { room, since, limit, reverse } = request.history;
    const value = { room, since: BigInt(since ?? 0), limit: limit ?? 0, reverse: reverse ?? false };
    return { case: "history", value: value as never };
  }
  if ("presence" in request) return { case: "presence", value: request.presence as never };
  if ("presence_stats" in request) return { case: "presenceStats", value: request.presence_stats as never };
  return { case: "refresh", value: request.refresh as never };
}

const info = (i: ClientInfo | undefined): WireClientInfo | undefined =>
  i && { client: i.client, user: i.user, joined_at_ms: Number(i.joinedAtMs) };

export const protobuf: Codec = {
  subprotocol: "roomcast.v1.proto",
  encode(request: Request): Uint8Array {
    const message = create(ClientMessageSchema, { id: BigInt(request.id), op: operation(request) as never });
    return toBinary(ClientMessageSchema, message);
  },
  decode(bytes: Uint8Array): ServerEnvelope {
    const { kind } = fromBinary(ServerMessageSchema, bytes);
    switch (kind.case) {
      case "reply": {
        const { id, outcome } = kind.value;
        const reply: WireReply = { id: Number(id) };
        switch (outcome.case) {
          case "ack":
            reply.ack = {
              offset: Number(outcome.value.offset),
              epoch: outcome.value.epoch,
              recovered: outcome.value.recovered,
              duplicate: outcome.value.duplicate,
            };
            break;
          case "error":
            reply.error = { code: outcome.value.code, message: outcome.value.message };
            break;
          case "history":
            reply.history = {
              epoch: outcome.value.epoch,
              offset: Number(outcome.value.offset),
              publications: outcome.value.publications.map((p) => ({ offset: Number(p.offset), data: p.data })),
            };
            break;
          case "presence":
            reply.presence = { clients: outcome.value.clients.map((c) => info(c)!) };
            break;
          case "presenceStats":
            reply.presence_stats = { clients: outcome.value.clients, users: outcome.value.users };
            break;
        }
        return { reply };
      }
      case "message":
        return { message: { room: kind.value.room, offset: Number(kind.value.offset), data: kind.value.data } };
      case "join":
        return { join: { room: kind.value.room, info: info(kind.value.info) } };
      case "leave":
        return { leave: { room: kind.value.room, info: info(kind.value.info) } };
      default:
        return {};
    }
  },
};
