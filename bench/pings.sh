#!/usr/bin/env bash
# Issue 12, row 5: ping round trip p99 with 5,000 sockets (100 sessions) each sending a
# `ping` once a second and nothing else (loadgen `play --pings-only`), target <= 2 ms.
#
# Usage: bench/pings.sh
# Env: TETHER_BIN, LOADGEN_BIN, BASE_BIN (A/B), ROUNDS (3), RESULTS (bench/results),
#      LABEL/BASE_LABEL (new/base), PLAYERS (5000), DURATION (20s).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_bins

players=${PLAYERS:-5000}
duration=${DURATION:-20s}
bench_figure p99 "ping -> pong p99, $players sockets at 1 Hz" ms '<=' 2
bench_figure p50 "ping -> pong p50" ms
bench_figure p999 "ping -> pong p99.9" ms
bench_figure max "ping -> pong max" ms

measure() {
    start_server
    local status=0 cpu0
    cpu0=$(cpu_seconds)
    "$loadgen" play --target "$server_url" --players "$players" --sessions 100 --pings-only \
        --duration "$duration" --max-time 3m --json "$prefix.json" 2>&1 || status=$?
    echo "server CPU during the run: $(awk -v a="$(cpu_seconds)" -v b="$cpu0" 'BEGIN { printf "%.2f", a - b }') s"
    stop_server
    loadgen_cpu "$prefix.json"
    local sent got ended
    sent=$(json_figure "$prefix.json" "pings sent")
    got=$(json_figure "$prefix.json" "pongs received")
    ended=$(json_figure "$prefix.json" "players whose socket ended early")
    echo "pings sent $sent, pongs received $got, sockets ended early $ended"
    [ "$status" -eq 0 ] && [ "$ended" = 0 ] || echo "warning: loadgen status $status, $ended sockets ended early"
    record p99 "$(json_latency "$prefix.json" "ping -> pong" p99_ms)"
    record p50 "$(json_latency "$prefix.json" "ping -> pong" p50_ms)"
    record p999 "$(json_latency "$prefix.json" "ping -> pong" p999_ms)"
    record max "$(json_latency "$prefix.json" "ping -> pong" max_ms)"
}

bench_main pings
