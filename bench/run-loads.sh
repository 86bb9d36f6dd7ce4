#!/usr/bin/env bash
# The load generator's scenarios against a fresh release server each, on loopback.
# Usage: bench/run-loads.sh [scenario...]   (default: all; outputs in bench/results/)
# Scenarios: http upgrades revoke-one revoke-all revoke-1000 revoke-100-one-session pings play play-small-rooms play-1000
# TETHER_BIN=path runs another build of the server (e.g. an older commit's, for a
# before/after in one sitting), LOADGEN_BIN another load generator (with both given,
# nothing is built); RESULTS=dir writes its outputs elsewhere. Helpers: bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_bins # TETHER_BIN / LOADGEN_BIN, else target/release/* built first
results=${RESULTS:-bench/results}
mkdir -p "$results"

run() {
    local name=$1; shift
    echo "=== $name: loadgen $*" | tee "$results/$name.txt"
    $loadgen "$@" --target "$server_url" --json "$results/$name.json" 2>&1 | tee -a "$results/$name.txt"
}

tick_histogram() {
    curl -fs "$server_url/metrics" | grep -E '^tether_tick_duration_seconds_(bucket|count|sum)' >>"$results/$1.txt" || true
}

scenarios=${*:-"http upgrades revoke-one revoke-all pings play"}
for scenario in $scenarios; do
    case $scenario in
        http)
            start_server
            run http http --concurrency 32 --sessions 8 --duration 10s --compare-healthz
            stop_server ;;
        upgrades)
            start_server
            run upgrades connect --sockets 10000 --sessions 100 --concurrency 256 --hold 2s
            stop_server ;;
        revoke-one)
            # One session at a time, one socket each, while 10,000 other sockets are open.
            start_server
            $loadgen connect --target "$server_url" --sockets 10000 --sessions 100 --users 100 --hold 60s \
                >"$server_work/background.txt" 2>&1 &
            background=$!
            bench_children+=("$background")
            wait_metric tether_sockets_open ge 10000 60 || true
            run revoke-one revoke --sockets 300 --sessions 300 --users-prefix bot --users 300 --rate 50 \
                --admin-password-file "$admin_password_file"
            stop_pid "$background"
            stop_server ;;
        revoke-all)
            start_server
            run revoke-all revoke --sockets 10000 --sessions 100 --all \
                --admin-password-file "$admin_password_file"
            stop_server ;;
        revoke-100-one-session)
            # Issue 2's figure: one session with 100 open sockets, revoked by an admin.
            start_server
            run revoke-100-one-session revoke --sockets 100 --sessions 1 --rate 1 \
                --admin-password-file "$admin_password_file"
            stop_server ;;
        revoke-1000)
            start_server
            run revoke-1000 revoke --sockets 1000 --sessions 100 --all \
                --admin-password-file "$admin_password_file"
            stop_server ;;
        pings)
            start_server
            run pings play --players 5000 --sessions 100 --pings-only --duration 20s
            stop_server ;;
        play)
            start_server --max-rooms 100 --room-capacity 100
            run play play --players 5000 --room-size 100 --hz 20 --sessions 100 --duration 20s
            tick_histogram play
            stop_server ;;
        play-small-rooms)
            # The same 5,000 players at 20 Hz in rooms of 10: a tenth of the bytes.
            start_server --max-rooms 1000
            run play-small-rooms play --players 5000 --room-size 10 --hz 20 --sessions 100 --duration 20s
            tick_histogram play-small-rooms
            stop_server ;;
        play-1000)
            start_server --max-rooms 100 --room-capacity 100
            run play-1000 play --players 1000 --room-size 100 --hz 20 --sessions 100 --duration 20s
            tick_histogram play-1000
            stop_server ;;
        *) echo "unknown scenario $scenario"; exit 2 ;;
    esac
done
