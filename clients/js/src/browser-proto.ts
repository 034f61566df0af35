/** The browser bundle with both codecs: everything of `roomcast` plus `protobuf`. */
export * from "./index.js";
export { protobuf } from "./proto.js";
