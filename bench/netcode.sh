#!/usr/bin/env bash
# Issue 13: the game's netcode under `loadgen play`. PLAYERS players at 20 Hz in rooms
# of ROOM_SIZE (player i joins room-<i / ROOM_SIZE>), for DURATION. A server that has
# binary frames (it knows --max-rooms-per-user) is played with ENCODING (default binary)
# and the room limits off; an older one with JSON, all it speaks.
#
# Usage: bench/netcode.sh                      (5,000 players in 50 rooms of 100)
#        PLAYERS=100 bench/netcode.sh          (one room of 100: the snapshot gaps)
# Env: TETHER_BIN, LOADGEN_BIN, BASE_BIN (A/B), ROUNDS (3), RESULTS (bench/results),
#      LABEL/BASE_LABEL (new/base), PLAYERS (5000), ROOM_SIZE (100), DURATION (20s),
#      ENCODING (binary).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_bins

players=${PLAYERS:-5000}
room_size=${ROOM_SIZE:-100}
duration=${DURATION:-20s}
tick_ms=50
bench_figure kept "players kept to the end, of $players" "" '>=' "$players"
bench_figure bytes "bytes received per player per second" B '<=' 8000
bench_figure gap_p10 "snapshot gap p10" ms '>=' 40
bench_figure gap_p50 "snapshot gap p50" ms
bench_figure gap_p90 "snapshot gap p90" ms '<=' 60
bench_figure gap_p99 "snapshot gap p99" ms '<=' 80
bench_figure snapshots "snapshots per player per second" /s '>=' 19
bench_figure ack_p50 "input -> ack p50" ticks
bench_figure ack_p99 "input -> ack p99" ticks '<=' 3
bench_figure send_p99 "tick -> written p99 (server; upper bucket bound)" ms '<=' 5
bench_figure tick_p99 "tick duration p99 (server; upper bucket bound)" ms
bench_figure server_cpu "server CPU, cores busy during play" cores
bench_figure loadgen_cpu "load generator CPU, cores busy (whole run)" cores

# histogram_p99 NAME FILE: the upper bound of the bucket holding the 99th percentile, ms.
histogram_p99() {
    awk -v name="$1" '
        index($0, name "_bucket{le=\"") == 1 {
            split($0, parts, "\""); le = parts[2]; split($0, fields, " "); n = fields[2]
            bounds[++count] = le; totals[count] = n
        }
        END {
            if (count == 0) { print "nan"; exit }
            all = totals[count]
            for (i = 1; i <= count; i++) if (totals[i] >= 0.99 * all) { print (bounds[i] == "+Inf" ? "inf" : bounds[i] * 1000); exit }
        }' "$2"
}

measure() {
    local flags=() encoding=json
    if "$server_bin" serve --help | grep -q -- --max-rooms-per-user; then
        flags=(--max-rooms-per-user 0 --room-creations-per-user-per-minute 0)
        encoding=${ENCODING:-binary}
    fi
    start_server --users 100 --max-rooms 1000 --room-capacity "$room_size" "${flags[@]}"
    local status=0 cpu0 cpu1
    "$loadgen" play --target "$server_url" --players "$players" --room-size "$room_size" --hz 20 \
        --sessions 100 --encoding "$encoding" --duration "$duration" --max-time 3m \
        --json "$prefix.json" >"$prefix.loadgen.txt" 2>&1 &
    local loadgen_pid=$!
    bench_children+=("$loadgen_pid")
    # The play phase starts once every player has joined (or failed to); its CPU is
    # what counts. Players that fell behind while others joined never arrive.
    wait_metric tether_sockets_open ge $((players * 9 / 10)) 120 || true
    sleep 3
    cpu0=$(cpu_seconds)
    local window=$(( ${duration%s} - 6 ))
    sleep "$window"
    cpu1=$(cpu_seconds)
    wait "$loadgen_pid" || status=$?
    curl -fs "$server_url/metrics" >"$prefix.metrics.txt" || true
    stop_server
    grep -v '^\s*$' "$prefix.loadgen.txt" | tail -45
    echo "encoding $encoding, loadgen status $status"
    local joined ended
    joined=$(json_figure "$prefix.json" "players in rooms (joined received)")
    ended=$(json_figure "$prefix.json" "players whose socket ended early")
    record kept "$(awk -v j="$joined" -v e="$ended" 'BEGIN { print j - e }')"
    record bytes "$(json_figure "$prefix.json" "bytes per second per player")"
    record gap_p10 "$(json_latency "$prefix.json" "snapshot gap (inter-arrival)" p10_ms)"
    record gap_p50 "$(json_latency "$prefix.json" "snapshot gap (inter-arrival)" p50_ms)"
    record gap_p90 "$(json_latency "$prefix.json" "snapshot gap (inter-arrival)" p90_ms)"
    record gap_p99 "$(json_latency "$prefix.json" "snapshot gap (inter-arrival)" p99_ms)"
    record snapshots "$(json_figure "$prefix.json" "snapshots per second per player")"
    record ack_p50 "$(awk -v v="$(json_latency "$prefix.json" "input -> acknowledging snapshot" p50_ms)" -v t=$tick_ms 'BEGIN { print v / t }')"
    record ack_p99 "$(awk -v v="$(json_latency "$prefix.json" "input -> acknowledging snapshot" p99_ms)" -v t=$tick_ms 'BEGIN { print v / t }')"
    record send_p99 "$(histogram_p99 tether_snapshot_send_delay_seconds "$prefix.metrics.txt")"
    record tick_p99 "$(histogram_p99 tether_tick_duration_seconds "$prefix.metrics.txt")"
    record server_cpu "$(awk -v a="$cpu1" -v b="$cpu0" -v w="$window" 'BEGIN { printf "%.2f", (a - b) / w }')"
    record loadgen_cpu "$(json_figure "$prefix.json" "loadgen CPU (cores busy, whole run)")"
}

bench_main "netcode-$players"
