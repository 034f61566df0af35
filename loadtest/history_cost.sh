#!/usr/bin/env bash
# What history costs on fan-out: the same scenarios against roomcast with
# history off and on (every room keeping HISTORY_SIZE publications), run
# alternately in one session so both see the same machine, then medians and
# ratios in loadtest/results/history.md.
#
#   loadtest/history_cost.sh                        # fanout and rooms, 3 rounds (~4 min)
#   ROUNDS=5 SCENARIOS=fanout loadtest/history_cost.sh
#
# Environment: ROUNDS (3), SCENARIOS (fanout rooms), DURATION (10s),
# HISTORY_SIZE (1000), SERVER_CPU (0), LOAD_CPU (1),
# OUT (loadtest/results/history-<date>.jsonl), REPORT (loadtest/results/history.md).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"fanout rooms"}
DURATION=${DURATION:-10s}
HISTORY_SIZE=${HISTORY_SIZE:-1000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
stamp=$(date -u +%Y-%m-%dT%H-%M-%SZ)
OUT=${OUT:-loadtest/results/history-$stamp.jsonl}
REPORT=${REPORT:-loadtest/results/history.md}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

echo "==> building"
cargo build --release -q
cargo build --release -q -p roomcast-load
load=target/release/roomcast-load
port=9210

source loadtest/scenarios.sh
trap stop_server EXIT

for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        for history in 0 "$HISTORY_SIZE"; do
            ROOMCAST_HISTORY_SIZE=$history taskset -c "$SERVER_CPU" \
                target/release/roomcast --listen "127.0.0.1:$port" --workers 1 >/dev/null 2>&1 &
            server_pid=$!
            for _ in $(seq 50); do
                (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
                sleep 0.1
            done
            echo "==> round $round: $scenario, history_size $history"
            # shellcheck disable=SC2046
            json=$(taskset -c "$LOAD_CPU" $load $(scenario_args "$scenario") \
                --addr "127.0.0.1:$port" --server-pid "$server_pid" 2>/dev/null)
            echo "{\"round\":$round,\"scenario\":\"$scenario\",\"history_size\":$history,\"result\":$json}" >> "$OUT"
            stop_server
        done
    done
done

python3 - "$OUT" "$REPORT" "$DURATION" "$HISTORY_SIZE" <<'PY'
import json, statistics, sys, platform, subprocess, datetime
out, report, duration, size = sys.argv[1:5]
runs = [json.loads(line) for line in open(out)]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [
    "# What history costs on fan-out",
    "",
    f"`loadtest/history_cost.sh`, {datetime.date.today()}, on {cpu} ({subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores): "
    f"roomcast with 1 worker pinned to one core, `roomcast-load` pinned to another; "
    f"history off (`history_size = 0`) and on (`history_size = {size}` for every room) run alternately, "
    f"{duration} windows, medians of {max(r['round'] for r in runs)} rounds.",
    "",
    "| scenario | history | deliveries/s (median) | server CPU µs per delivery | lossless | on ÷ off |",
    "|---|---|---:|---:|---|---:|",
]
for scenario in dict.fromkeys(r["scenario"] for r in runs):
    medians = {}
    for history in dict.fromkeys(r["history_size"] for r in runs if r["scenario"] == scenario):
        sel = [r["result"] for r in runs if r["scenario"] == scenario and r["history_size"] == history]
        rate = statistics.median(r["deliveries_per_s"] for r in sel)
        cost = statistics.median(r["server_cpu_s_per_million_deliveries"] for r in sel)
        lossless = all(r["lossless"] for r in sel)
        medians[history] = rate
        ratio = f"{rate / medians[0]:.3f}×" if history and 0 in medians else ""
        lines.append(f"| {scenario} | {'off' if history == 0 else f'{history} kept'} | {rate/1e6:.2f} M | {cost:.3f} | {'yes' if lossless else 'NO'} | {ratio} |")
lines += ["", f"Raw results: `{out}`.", ""]
open(report, "w").write("\n".join(lines))
print("\n".join(lines))
PY
