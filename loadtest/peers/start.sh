#!/usr/bin/env bash
# Start one peer in the foreground (exec: the PID you get is the server's).
#   loadtest/peers/start.sh NAME PORT      NAME: roomcast|bun|node-ws|socketio|limit
# e.g. taskset -c 0 loadtest/peers/start.sh bun 9201 &
# Each prints "listening on ws://127.0.0.1:PORT/ws" when ready (roomcast
# prints its own line, which contains the same "listening on ws://..." part).
# roomcast and limit must be built first, the Node peers installed first
# (see README.md); this script builds and installs nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
name="${1:?usage: start.sh roomcast|bun|node-ws|socketio|limit PORT}"
port="${2:-}"
case "$name" in
  roomcast) port="${port:-9200}"
    exec "$repo/target/release/roomcast" --listen "127.0.0.1:$port" --workers "${WORKERS:-1}" ;;
  bun) port="${port:-9201}"; cd "$here/bun"
    PORT="$port" exec "$here/bun/node_modules/.bin/bun" server.js ;;
  node-ws) port="${port:-9202}"; cd "$here/node-ws"
    PORT="$port" exec node server.js ;;
  socketio) port="${port:-9203}"; cd "$here/socketio"
    PORT="$port" exec node server.js ;;
  limit) port="${port:-9204}"
    PORT="$port" exec "$here/limit/target/release/roomcast-limit" ;;
  *) echo "unknown peer '$name': roomcast|bun|node-ws|socketio|limit" >&2; exit 2 ;;
esac
