#!/usr/bin/env bash
# Two roomcast binaries side by side, as issue 9 asks of a refactor: the
# race's scenarios (fan-out 1 x 1,000, 100 rooms x 10, p99 at 1,000 msg/s
# into 100 subscribers, RSS per idle connection), each run against a fresh
# server, BEFORE and AFTER alternated, ROUNDS rounds; then a table of
# medians. The server is pinned to SERVER_CPU with 1 worker, the generator
# to LOAD_CPU.
#
#   BEFORE=/path/to/old/roomcast loadtest/before_after.sh
#   BEFORE=... AFTER=... ROUNDS=3 DURATION=10s SCENARIOS="fanout rooms" loadtest/before_after.sh
#
# Environment: BEFORE (required), AFTER (target/release/roomcast), ROUNDS (3),
# DURATION (10s), SCENARIOS (fanout rooms latency connections), CONNECTIONS
# (19000), SERVER_CPU (0), LOAD_CPU (1), LOAD (target/release/roomcast-load),
# OUT (loadtest/results/before-after-<date>.jsonl).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

BEFORE=${BEFORE:?set BEFORE to the roomcast binary to compare against}
AFTER=${AFTER:-target/release/roomcast}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
SCENARIOS=${SCENARIOS:-"fanout rooms latency connections"}
CONNECTIONS=${CONNECTIONS:-19000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LOAD=${LOAD:-target/release/roomcast-load}
OUT=${OUT:-loadtest/results/before-after-$(date -u +%Y-%m-%dT%H-%M-%SZ).jsonl}
PORT=9210
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
ulimit -n "$(ulimit -Hn)"

source loadtest/scenarios.sh
trap stop_server EXIT

run_one() {
    local label=$1 binary=$2 scenario=$3 log json
    log=$(mktemp)
    taskset -c "$SERVER_CPU" "$binary" --listen "127.0.0.1:$PORT" --workers 1 >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$log" && break
        sleep 0.1
    done
    local command="taskset -c $LOAD_CPU $LOAD $(scenario_args "$scenario") --addr 127.0.0.1:$PORT --server-pid $server_pid"
    echo "==> round $round $label $scenario"
    json=$($command 2>/dev/null | tail -n 1) || json='{"error":"generator failed"}'
    python3 - "$label" "$scenario" "$round" "$command" "$json" >>"$OUT" <<'PY'
import json, sys
label, scenario, round_, command, raw = sys.argv[1:]
try:
    result = json.loads(raw)
except ValueError:
    result = {"error": raw[-500:]}
result.update({"binary": label, "race_scenario": scenario, "round": int(round_), "command": command})
print(json.dumps(result))
PY
    stop_server
    rm -f "$log"
    sleep 1
}

for round in $(seq "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        # Alternate which binary goes first, so drift hits both alike.
        if (( round % 2 )); then
            run_one before "$BEFORE" "$scenario"
            run_one after "$AFTER" "$scenario"
        else
            run_one after "$AFTER" "$scenario"
            run_one before "$BEFORE" "$scenario"
        fi
    done
done

echo "==> raw results: $OUT"
python3 loadtest/before_after_report.py "$OUT"
