# Sourced by the comparison scripts (race.sh, history_cost.sh,
# before_after.sh), so every one runs the same scenarios the same way.
# Uses DURATION and CONNECTIONS from the caller.

# The generator's arguments for a scenario (the same for every server).
scenario_args() {
    case "$1" in
        fanout) echo "fanout --subscribers 1000 --publishers 1 --payload 128 --window 64 --duration $DURATION" ;;
        rooms) echo "rooms --rooms 100 --per-room 10 --payload 128 --window 64 --duration $DURATION" ;;
        latency) echo "latency --rate 1000 --subscribers 100 --payload 128 --duration $DURATION" ;;
        connections) echo "connections --connections ${CONNECTIONS:-19000} --hold 5s" ;;
    esac
}

# Stops the server whose pid is in server_pid, if any; the callers also run
# it on exit (trap stop_server EXIT).
server_pid=""
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
