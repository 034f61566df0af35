/** Why a call failed; `kind` names the fault so callers can branch on it. */
export type ErrorKind =
  /** The server answered with an error reply; `code` is its number (PROTOCOL.md, "Error codes"). */
  | "server"
  /** No answer within the call's timeout. A publish may still have been made. */
  | "timeout"
  /** A read (history, presence) was on a connection that dropped before its answer. */
  | "disconnected"
  /** The offline queue already holds `maxQueuedPublishes` publications. */
  | "queue-full"
  /** The client was closed, or stopped for good (a refused token, a close that forbids reconnecting). */
  | "closed"
  /** `getToken` refused: the client stops for good. */
  | "unauthorized";

export class RoomcastError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** The server's error code, for `kind: "server"`. */
    readonly code?: number,
  ) {
    super(message);
    this.name = "RoomcastError";
  }
}

/**
 * Throw this from `getToken` when the user may not connect at all (signed
 * out, banned): the client stops for good instead of retrying.
 */
export class UnauthorizedError extends RoomcastError {
  constructor(message = "unauthorized") {
    super("unauthorized", message);
    this.name = "UnauthorizedError";
  }
}
