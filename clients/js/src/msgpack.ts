/**
 * `roomcast.v1.msgpack`: the envelopes as MessagePack maps keyed by field
 * name. `Uint8Array` becomes `bin`, strings `str`, and offsets fit a double
 * (the server counts from 1 and would need 2^53 publications to a room).
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import type { Codec, Request, ServerEnvelope } from "./protocol.js";

// Left-out options are the library's defaults; `ignoreUndefined` drops the
// optional fields the caller did not set, as the schema's defaults allow.
const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

export const msgpack: Codec = {
  subprotocol: "roomcast.v1.msgpack",
  encode: (request: Request) => encoder.encode(request),
  decode: (bytes: Uint8Array) => {
    const envelope = decoder.decode(bytes);
    if (envelope === null || typeof envelope !== "object" || Array.isArray(envelope)) {
      throw new Error("a server envelope must be a map");
    }
    return envelope as ServerEnvelope;
  },
};
