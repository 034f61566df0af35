#!/usr/bin/env bash
# Builds clients/js and runs its tests against a real roomcast: unit tests,
# Node tests, and headless Chromium tests, all through `node --test`.
#
#   clients/js/test.sh                        builds the broker with cargo first
#   ROOMCAST_BIN=path/to/roomcast clients/js/test.sh
#
# Needs Node 20+ and npm; installs Debian's chromium with apt-get when
# /usr/bin/chromium is missing (as root, or through sudo). Exits non-zero
# when anything fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel)"

if [[ -z "${ROOMCAST_BIN:-}" ]]; then
  (cd "$repo" && cargo build --bin roomcast)
  ROOMCAST_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/roomcast"
fi
export ROOMCAST_BIN
[[ -x "$ROOMCAST_BIN" ]] || { echo "no roomcast binary at $ROOMCAST_BIN" >&2; exit 1; }

if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    as_root=()
  elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "/usr/bin/chromium is missing; install it: apt-get install -y --no-install-recommends chromium" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get install -y --no-install-recommends chromium \
    || { "${as_root[@]}" apt-get update && "${as_root[@]}" apt-get install -y --no-install-recommends chromium; }
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
(( node_major >= 20 )) || { echo "clients/js needs Node 20 or later (found $(node --version))" >&2; exit 1; }

cd "$here"
npm ci --no-audit --no-fund
npm run build
node --test --test-concurrency=1 test/*.test.mjs
