#!/usr/bin/env bash
# Starts SERVER on core 0, runs multiroom.py on core 1 for 6 s, prints
# its line and the server's CPU (cores, setup included), stops SERVER.
#   loadtest/experiments/multiroom_run.sh NAME PORT RATE R S -- SERVER...
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name=$1; port=$2; rate=$3; R=$4; S=$5; shift 6
taskset -c 0 "$@" >/dev/null 2>&1 &
spid=$!
sleep 1.5
a=$(awk '{print $14+$15}' /proc/$spid/stat)
t0=$(date +%s.%N)
out=$(taskset -c 1 python3 "$here/multiroom.py" $port $R $S $rate 6)
b=$(awk '{print $14+$15}' /proc/$spid/stat)
t1=$(date +%s.%N)
echo "$name R=$R S=$S: $out; server cpu $(python3 -c "print(round(($b-$a)/100/($t1-$t0),2))") cores (incl. setup)"
kill $spid; wait $spid 2>/dev/null
