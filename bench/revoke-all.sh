#!/usr/bin/env bash
# Issue 12, row 2: 10,000 sockets over 100 sessions, one admin revoke-all. Figures: the
# request -> last close frame (target <= 100 ms) and the request -> HTTP answer
# (target <= 120 ms), as loadgen `revoke --all` measures them; every socket must end 4001.
#
# Usage: bench/revoke-all.sh
# Env: TETHER_BIN, LOADGEN_BIN, BASE_BIN (A/B), ROUNDS (3), RESULTS (bench/results),
#      LABEL/BASE_LABEL (new/base), SOCKETS (10000), SESSIONS (100).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_bins

sockets=${SOCKETS:-10000}
sessions=${SESSIONS:-100}
bench_figure last_close "revoke-all of $sockets sockets: request -> last close" ms '<=' 100
bench_figure answer "revoke-all of $sockets sockets: request -> HTTP answer" ms '<=' 120
bench_figure close_p50 "revoke-all: request -> close p50" ms

measure() {
    start_server
    local status=0 cpu0
    cpu0=$(cpu_seconds)
    "$loadgen" revoke --target "$server_url" --sockets "$sockets" --sessions "$sessions" --all \
        --admin-password-file "$admin_password_file" --max-time 3m --json "$prefix.json" 2>&1 || status=$?
    echo "server CPU during the run: $(awk -v a="$(cpu_seconds)" -v b="$cpu0" 'BEGIN { printf "%.2f", a - b }') s"
    stop_server
    loadgen_cpu "$prefix.json"
    local opened with_4001
    opened=$(json_figure "$prefix.json" "sockets opened (welcome received)")
    with_4001=$(json_figure "$prefix.json" "  with 4001 revoked")
    [ "$status" -eq 0 ] && [ "$opened" = "$sockets" ] && [ "$with_4001" = "$sockets" ] ||
        echo "warning: loadgen status $status, $opened sockets opened, $with_4001 closed with 4001 (of $sockets)"
    record last_close "$(awk -v s="$(json_figure "$prefix.json" "first request to last close")" 'BEGIN { printf "%.1f", s * 1000 }')"
    record answer "$(json_latency "$prefix.json" "revoke sent -> HTTP answer" max_ms)"
    record close_p50 "$(json_latency "$prefix.json" "revoke sent -> close frame" p50_ms)"
}

bench_main revoke-all
