#!/usr/bin/env bash
# Runs the chat example: starts a roomcast broker on 127.0.0.1:8080 (history,
# presence, join and leave events, a demo JWT secret) unless one already
# listens there, installs the Python client if needed, and joins as NAME.
#
# Usage: examples/chat/run.sh NAME [ROOM]    e.g. in two terminals:
#        examples/chat/run.sh alice
#        examples/chat/run.sh bob
# The broker started by the first one stops when that one quits.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
name=${1:?usage: examples/chat/run.sh NAME [ROOM]}
room=${2:-chat.lobby}
port=${ROOMCAST_PORT:-8080}
# Demo only: anyone who knows it can sign tokens. A real backend keeps its own.
secret=${ROOMCAST_JWT_SECRET:-chat-example-secret-not-for-production}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

if ! listening; then
    if [[ -z ${ROOMCAST_BIN:-} ]]; then
        cargo build -q --bin roomcast
        ROOMCAST_BIN=$repo/target/debug/roomcast
    fi
    "$ROOMCAST_BIN" --listen "127.0.0.1:$port" --history-size 100 --presence true \
        --join-leave true --jwt-secret "$secret" --admin-listen 127.0.0.1:0 >/dev/null 2>&1 &
    broker=$!
    trap 'kill "$broker" 2>/dev/null' EXIT
    for _ in $(seq 100); do listening && break; sleep 0.1; done
fi

if ! python3 -c 'import roomcast' 2>/dev/null; then
    flags=(-q --disable-pip-version-check)
    stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
    if [[ -z ${VIRTUAL_ENV:-} && -e $stdlib/EXTERNALLY-MANAGED ]]; then
        flags+=(--break-system-packages)
    fi
    python3 -m pip install "${flags[@]}" -e clients/python
fi

python3 examples/chat/chat.py --url "ws://127.0.0.1:$port/ws" --name "$name" --room "$room" --secret "$secret"
