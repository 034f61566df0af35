#!/usr/bin/env bash
# What the cluster costs: the same scenarios against one node with the
# memory engine and against 1, 2 and 3 nodes on one Redis (publisher on the
# first node, subscribers spread over all of them), run alternately in one
# session; then what one node's engine publishes per second into Redis next
# to redis-benchmark running the same script with the same pipelining on
# the same Redis. Medians and ratios go to loadtest/results/cluster.md.
#
#   loadtest/cluster.sh                    # 3 rounds (~8 min)
#   ROUNDS=1 DURATION=5s loadtest/cluster.sh
#
# Environment: ROUNDS (3), DURATION (10s), SERVER_CPU (0: nodes and Redis),
# LOAD_CPU (1: the generator and redis-benchmark), REDIS_PORT (6391),
# OUT (loadtest/results/cluster-<date>.jsonl), REPORT (loadtest/results/cluster.md).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
REDIS_PORT=${REDIS_PORT:-6391}
stamp=$(date -u +%Y-%m-%dT%H-%M-%SZ)
OUT=${OUT:-loadtest/results/cluster-$stamp.jsonl}
REPORT=${REPORT:-loadtest/results/cluster.md}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

echo "==> building"
cargo build --release -q
cargo build --release -q -p roomcast-load
load=target/release/roomcast-load
redis_url="redis://127.0.0.1:$REDIS_PORT"

pids=()
redis_pid=""
stop_nodes() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
stop_all() {
    stop_nodes
    [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null || true
}
trap stop_all EXIT

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

# A fresh Redis for each run, so rooms and streams never pile up.
start_redis() {
    [[ -n $redis_pid ]] && { kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; }
    taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save "" --appendonly no >/dev/null 2>&1 &
    redis_pid=$!
    wait_port "$REDIS_PORT"
}

# start_nodes ENGINE COUNT [CPU]: COUNT nodes (one worker each) on ports
# 9301..., pinned to CPU (SERVER_CPU).
start_nodes() {
    local engine=$1 count=$2 cpu=${3:-$SERVER_CPU}
    for n in $(seq 1 "$count"); do
        local port=$((9300 + n)) extra=()
        [[ $engine == redis ]] && extra=(--redis-url "$redis_url")
        # No per-connection publish limits: the publish runs measure the
        # engine, not the limiter (which would answer 109 past 10,000/s).
        ROOMCAST_PUBLISH_RATE=0 ROOMCAST_PUBLISH_BYTES_RATE=0 \
            taskset -c "$cpu" target/release/roomcast --listen "127.0.0.1:$port" \
            --workers 1 --admin-listen off "${extra[@]}" >/dev/null 2>&1 &
        pids+=($!)
        wait_port "$port"
    done
}

scenario_args() {
    case "$1" in
        fanout) echo "fanout --subscribers 1000 --publishers 1 --payload 128 --window 64 --duration $DURATION" ;;
        latency) echo "latency --rate 1000 --subscribers 100 --payload 128 --duration $DURATION" ;;
        publish-1) echo "rooms --rooms 1 --per-room 0 --payload 128 --window 64 --duration $DURATION" ;;
        publish-1000) echo "rooms --rooms 1000 --per-room 0 --payload 128 --window 64 --duration $DURATION" ;;
    esac
}

# run ROUND SCENARIO ENGINE COUNT [NODE_CPU]
run() {
    local round=$1 scenario=$2 engine=$3 count=$4 node_cpu=${5:-$SERVER_CPU}
    [[ $engine == redis ]] && start_redis
    start_nodes "$engine" "$count" "$node_cpu"
    local subs=()
    for n in $(seq 1 "$count"); do subs+=(--subscriber-addr "127.0.0.1:$((9300 + n))"); done
    echo "==> round $round: $scenario, $engine, $count node(s)"
    # shellcheck disable=SC2046
    json=$(taskset -c "$LOAD_CPU" $load $(scenario_args "$scenario") --addr 127.0.0.1:9301 \
        "${subs[@]}" --server-pid "${pids[0]}" 2>/dev/null) || json='{"failed":true}'
    echo "{\"round\":$round,\"scenario\":\"$scenario\",\"engine\":\"$engine\",\"nodes\":$count,\"result\":$json}" >> "$OUT"
    stop_nodes
}

# redis-benchmark running publish.lua as one node's core runs it: one
# connection, 64 commands in flight, one room, a fresh idempotency key each
# time (three random parts of 10^6, so no call is a duplicate). Only the
# one-room case: redis-benchmark draws every random part of a command
# independently, so it cannot hold 1,000 rooms' meta, stream and channel
# together.
redis_benchmark() {
    local round=$1
    start_redis
    local sha data rps
    sha=$(redis-cli -p "$REDIS_PORT" script load "$(cat src/engine/redis/publish.lua)")
    data=$(head -c 128 /dev/zero | tr '\0' 'x')
    echo "==> round $round: redis-benchmark, 1 room"
    rps=$(taskset -c "$LOAD_CPU" redis-benchmark -p "$REDIS_PORT" -c 1 -P 64 -n 200000 -r 1000000 -q \
        evalsha "$sha" 4 "rc:{p0}:m:bench" "rc:{p0}:s:bench" \
        "rc:{p0}:k:bench:__rand_int__:__rand_int__:__rand_int__" "rc:{p0}:c:bench" \
        "$data" 0123456789abcdef 0 300000 3900000 10000 nonce 2>/dev/null |
        tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
    echo "{\"round\":$round,\"scenario\":\"publish-1\",\"engine\":\"redis-benchmark\",\"nodes\":0,\"result\":{\"publishes_per_s\":${rps:-0}}}" >> "$OUT"
}

PARTS=${PARTS:-"pubsub publish"}
for round in $(seq 1 "$ROUNDS"); do
    if [[ $PARTS == *pubsub* ]]; then
        for scenario in fanout latency; do
            run "$round" "$scenario" memory 1
            for count in 1 2 3; do run "$round" "$scenario" redis "$count"; done
        done
    fi
    if [[ $PARTS == *publish* ]]; then
        # Redis keeps a core to itself here; the node shares the other with
        # the generator, as redis-benchmark does: both clients drive the
        # same Redis from the same core.
        for rooms in 1 1000; do
            run "$round" "publish-$rooms" redis 1 "$LOAD_CPU"
        done
        redis_benchmark "$round"
    fi
done

python3 loadtest/cluster_report.py "$OUT" "$REPORT" "$DURATION"
echo "==> $REPORT"
