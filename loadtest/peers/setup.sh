#!/usr/bin/env bash
# Install the Node peers' pinned packages and build the limit baseline.
# (roomcast itself: cargo build --release at the repo root.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for d in bun node-ws socketio; do
  # npm install, not npm ci: the registry lacks some other platforms' optional
  # msgpackr-extract builds, which makes npm ci refuse the lock file; npm
  # install keeps every version the lock file pins.
  (cd "$here/$d" && npm install --no-audit --no-fund)
done
"$here/bun/node_modules/.bin/bun" --version
cargo build --release --manifest-path "$here/limit/Cargo.toml"
