#!/usr/bin/env bash
# The race: the same scenarios against roomcast and each peer, the server
# pinned to one core and the load generator to another, then a table in
# BENCHMARKS.md with the date, the machine, the commands and the raw JSON.
#
#   loadtest/race.sh                 # every server, every scenario, 3 rounds (~25 min)
#   SERVERS="roomcast bun" SCENARIOS="fanout" DURATION=5s ROUNDS=1 loadtest/race.sh
#
# One machine's run-to-run noise is larger than some of the differences
# measured, so the race runs ROUNDS rounds and the report shows medians.
# In each round every server runs a scenario before the next scenario
# starts, so the servers of one table row ran minutes apart at most; the
# servers' order rotates from round to round, so that none always runs
# first (the connect rate, for one, depends on what the run before left
# behind on the machine).
#
# Environment: SERVERS (roomcast bun node-ws limit socketio), SCENARIOS
# (fanout rooms latency connections), ROUNDS (3), DURATION (10s), SERVER_CPU (0),
# LOAD_CPU (1), CONNECTIONS (19000: both processes stay under a 20,000
# open-file limit), OUT (loadtest/results/race-<date>.jsonl),
# REPORT (BENCHMARKS.md; empty: do not write it).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

SERVERS=${SERVERS:-"roomcast bun node-ws limit socketio"}
SCENARIOS=${SCENARIOS:-"fanout rooms latency connections"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONNECTIONS=${CONNECTIONS:-19000}
stamp=$(date -u +%Y-%m-%dT%H-%M-%SZ)
OUT=${OUT:-loadtest/results/race-$stamp.jsonl}
REPORT=${REPORT-BENCHMARKS.md}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

echo "==> building"
cargo build --release -q
cargo build --release -q -p roomcast-load
[[ -x loadtest/peers/limit/target/release/roomcast-limit && -x loadtest/peers/bun/node_modules/.bin/bun ]] || loadtest/peers/setup.sh
ulimit -n "$(ulimit -Hn)"

load=target/release/roomcast-load
declare -A port=([roomcast]=9200 [bun]=9201 [node-ws]=9202 [socketio]=9203 [limit]=9204)

source loadtest/scenarios.sh
trap stop_server EXIT

start_server() {
    local name=$1 log
    log=$(mktemp)
    taskset -c "$SERVER_CPU" loadtest/peers/start.sh "$name" "${port[$name]}" >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q "listening on ws://" "$log" && return 0
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$log" >&2
    return 1
}

# Appends one JSON line: the generator's result plus server, scenario,
# round, command.
record() {
    local server=$1 scenario=$2 command=$3 json=$4
    python3 - "$server" "$scenario" "$round" "$command" "$json" >>"$OUT" <<'PY'
import json, sys
server, scenario, round_, command, raw = sys.argv[1:]
try:
    result = json.loads(raw)
except ValueError:
    result = {"error": raw[-500:]}
result.update({"server": server, "race_scenario": scenario, "round": int(round_), "command": command})
print(json.dumps(result))
PY
}

# The servers in round R's order: SERVERS rotated left by R - 1, so that no
# server always runs first (or right after a given one) in every round.
rotated() {
    local round=$1
    shift
    local servers=("$@") n=$# i
    for ((i = 0; i < n; i++)); do
        echo "${servers[(i + round - 1) % n]}"
    done
}

for round in $(seq "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        for server in $(rotated "$round" $SERVERS); do
            if [[ $server == socketio ]]; then
                # Socket.IO speaks its own protocol: its own driver, fan-out only.
                [[ $scenario == fanout ]] || continue
                start_server socketio
                command="taskset -c $LOAD_CPU node loadtest/peers/socketio/load.js --url http://127.0.0.1:${port[socketio]} --subs 1000 --payload 128 --duration ${DURATION%s}"
                echo "==> round $round socketio fanout: $command"
                json=$(eval "$command" 2>/dev/null | tail -n 1) || json='{"error":"driver failed"}'
                record socketio fanout "$command" "$json"
                stop_server
                continue
            fi
            start_server "$server"
            command="taskset -c $LOAD_CPU $load $(scenario_args "$scenario") --addr 127.0.0.1:${port[$server]} --server-pid $server_pid"
            echo "==> round $round $server $scenario: $command"
            json=$($command 2>/dev/null | tail -n 1) || json='{"error":"generator failed"}'
            record "$server" "$scenario" "$command" "$json"
            stop_server
            sleep 1
        done
    done
done

echo "==> raw results: $OUT"
if [[ -n $REPORT ]]; then
    python3 loadtest/race_report.py "$OUT" > "$REPORT"
    echo "==> wrote $REPORT"
fi
