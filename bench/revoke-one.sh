#!/usr/bin/env bash
# Issue 12, row 3: one session revoked (admin `POST /api/admin/sessions/{sid}/revoke`)
# while 10,000 other sockets are open: request -> close frame p99, target <= 2 ms.
#
# A background loadgen holds 10,000 sockets over 100 sessions; a second one logs in 300
# more sessions with one socket each and revokes them one request at a time, 50 a second
# (as run-loads.sh's revoke-one). The 10,000 are checked to be still open afterwards.
#
# Usage: bench/revoke-one.sh
# Env: TETHER_BIN, LOADGEN_BIN, BASE_BIN (A/B), ROUNDS (3), RESULTS (bench/results),
#      LABEL/BASE_LABEL (new/base), BACKGROUND (10000), REVOKES (300), RATE (50).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_bins

background=${BACKGROUND:-10000}
revokes=${REVOKES:-300}
rate=${RATE:-50}
bench_figure close_p99 "one session revoked beside $background open sockets: request -> close p99" ms '<=' 2
bench_figure close_p50 "request -> close p50" ms
bench_figure close_max "request -> close max" ms
bench_figure answer_p99 "request -> HTTP answer p99" ms

measure() {
    start_server
    "$loadgen" connect --target "$server_url" --sockets "$background" --sessions 100 --users 100 \
        --hold 120s --max-time 5m >"$prefix.background.txt" 2>&1 &
    local held=$! status=0 open cpu0
    bench_children+=("$held")
    if ! wait_metric tether_sockets_open ge "$background" 120; then
        tail -5 "$prefix.background.txt"
        die "the background never had $background sockets open"
    fi
    sleep 2
    cpu0=$(cpu_seconds)
    "$loadgen" revoke --target "$server_url" --sockets "$revokes" --sessions "$revokes" --users "$revokes" \
        --rate "$rate" --admin-password-file "$admin_password_file" --max-time 3m --json "$prefix.json" 2>&1 ||
        status=$?
    echo "server CPU during the revocations (logins included): $(awk -v a="$(cpu_seconds)" -v b="$cpu0" 'BEGIN { printf "%.2f", a - b }') s"
    open=$(metric tether_sockets_open)
    echo "background sockets still open after the run: $open (of $background)"
    [ "${open%.*}" -ge "$background" ] || echo "warning: the background lost sockets during the run"
    # The background has done its part; its text output is kept, its report is not needed.
    stop_pid "$held"
    stop_server
    loadgen_cpu "$prefix.json"
    local with_4001
    with_4001=$(json_figure "$prefix.json" "  with 4001 revoked")
    [ "$status" -eq 0 ] && [ "$with_4001" = "$revokes" ] ||
        echo "warning: loadgen status $status, $with_4001 of $revokes closed with 4001"
    record close_p99 "$(json_latency "$prefix.json" "revoke sent -> close frame" p99_ms)"
    record close_p50 "$(json_latency "$prefix.json" "revoke sent -> close frame" p50_ms)"
    record close_max "$(json_latency "$prefix.json" "revoke sent -> close frame" max_ms)"
    record answer_p99 "$(json_latency "$prefix.json" "revoke sent -> HTTP answer" p99_ms)"
}

bench_main revoke-one
