#!/usr/bin/env bash
# roomcast's own pages (the admin dashboard) in headless Chromium, through
# `node --test`, against a real roomcast binary.
#
#   tests/browser/test.sh                          builds the broker with cargo first
#   ROOMCAST_BIN=path/to/roomcast tests/browser/test.sh
#   DASHBOARD_SCREENSHOT=docs/dashboard.png DASHBOARD_HOLD_MS=30000 tests/browser/test.sh
#                                                  keeps the screenshot there, after 30 s of traffic
#
# Needs Node 20+, npm and Debian's chromium at /usr/bin/chromium (scripts/test.sh
# installs both). Exits non-zero when anything fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel)"

if [[ -z "${ROOMCAST_BIN:-}" ]]; then
  (cd "$repo" && cargo build --bin roomcast)
  ROOMCAST_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/roomcast"
fi
export ROOMCAST_BIN
[[ -x "$ROOMCAST_BIN" ]] || { echo "no roomcast binary at $ROOMCAST_BIN" >&2; exit 1; }
[[ -x "${CHROMIUM:-/usr/bin/chromium}" ]] || { echo "no chromium at ${CHROMIUM:-/usr/bin/chromium}: run scripts/test.sh, or apt-get install chromium" >&2; exit 1; }
if [[ -n "${DASHBOARD_SCREENSHOT:-}" ]]; then
  DASHBOARD_SCREENSHOT="$(cd "$(dirname "$DASHBOARD_SCREENSHOT")" && pwd)/$(basename "$DASHBOARD_SCREENSHOT")"
  export DASHBOARD_SCREENSHOT
fi

cd "$here"
npm ci --no-audit --no-fund
node --test --test-concurrency=1 ./*.test.mjs
