#!/usr/bin/env bash
# Multi-core scaling curve: the same load against roomcast with 1, 2, 4, 8
# and 16 workers. Meant for a machine with many cores (16 here): the server
# gets cores 0..N-1, the generator the cores from GEN_CPUS (default 8-15),
# so up to 8 workers neither steals from the other; at 16 workers they
# share cores and the result says so (cpu_contention).
#
#   BIN=target/release OUT=/tmp/scaling loadtest/scaling.sh
#
# Environment: BIN (folder with roomcast and roomcast-load), OUT (folder for
# scaling.jsonl), WORKERS ("1 2 4 8 16"), GEN_CPUS (8-15), DURATION (10s),
# SCENARIO (the generator's arguments).
set -euo pipefail
BIN=${BIN:-target/release}
OUT=${OUT:-loadtest/results}
WORKERS=${WORKERS:-"1 2 4 8 16"}
GEN_CPUS=${GEN_CPUS:-8-15}
DURATION=${DURATION:-10s}
SCENARIO=${SCENARIO:-"rooms --rooms 400 --per-room 25 --payload 128 --window 64"}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
results="$OUT/scaling.jsonl"
: > "$results"
for n in $WORKERS; do
    log=$(mktemp)
    taskset -c "0-$((n - 1))" "$BIN/roomcast" --listen 127.0.0.1:9300 --workers "$n" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
    json=$(taskset -c "$GEN_CPUS" "$BIN/roomcast-load" $SCENARIO --duration "$DURATION" \
        --addr 127.0.0.1:9300 --server-pid "$pid" 2>"$OUT/scaling-$n.stderr" | tail -n 1) || json='{"error":"generator failed"}'
    python3 -c 'import json,sys; r=json.loads(sys.argv[2]); r["workers"]=int(sys.argv[1]); print(json.dumps(r))' "$n" "$json" >> "$results"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    sleep 1
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = rows[0].get("deliveries_per_s") or 1
print("| workers | deliveries/s | speed-up | server cores busy | CPU µs/delivery | lossless | gen. saturated | contention |")
print("|---:|---:|---:|---:|---:|---|---|---|")
for r in rows:
    d = r.get("deliveries_per_s") or 0
    print(f"| {r['workers']} | {d:,.0f} | {d / base:.2f}× | {r.get('server_cpu_cores', 0):.2f} | {r.get('server_cpu_s_per_million_deliveries', 0):.3f} "
          f"| {r.get('lossless')} | {r.get('generator_saturated')} | {r.get('cpu_contention')} |")
PY
