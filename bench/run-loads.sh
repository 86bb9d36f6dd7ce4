#!/usr/bin/env bash
# The load generator's scenarios against a fresh release server each, on loopback.
# Usage: bench/run-loads.sh [scenario...]   (default: all; outputs in bench/results/)
# Scenarios: http upgrades revoke-one revoke-all revoke-1000 revoke-100-one-session pings play play-small-rooms play-1000
# TETHER_BIN=path runs another build of the server (e.g. an older commit's, for a
# before/after in one sitting); RESULTS=dir writes its outputs elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p tether -p tether-loadgen
tether=${TETHER_BIN:-$PWD/target/release/tether}
loadgen=$PWD/target/release/loadgen
results=${RESULTS:-bench/results}
mkdir -p "$results"
port=18490
target=http://127.0.0.1:$port
server=""
work=""

start_server() {
    work=$(mktemp -d)
    printf '%s' bot-password | $tether user create-many --prefix bot --count 400 --password-stdin \
        --database-url "sqlite://$work/tether.db" >/dev/null
    $tether serve --bind 127.0.0.1:$port --database-url "sqlite://$work/tether.db" --log-format json \
        --auth-per-ip-per-minute 0 --auth-per-username-per-minute 0 --upgrades-per-ip-per-minute 0 \
        --ws-messages-per-second 0 \
        --registrations-per-ip-per-minute 0 --refreshes-per-ip-per-minute 0 --max-sockets-per-session 0 --max-connections 0 --max-connections-per-ip 0 "$@" >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do curl -fs "$target/healthz" >/dev/null && return; sleep 0.1; done
    echo "server did not start"; cat "$work/server.log"; exit 1
}

stop_server() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap stop_server EXIT

run() {
    local name=$1; shift
    echo "=== $name: loadgen $*" | tee "$results/$name.txt"
    $loadgen "$@" --target "$target" --json "$results/$name.json" 2>&1 | tee -a "$results/$name.txt"
}

tick_histogram() {
    curl -fs "$target/metrics" | grep -E '^tether_tick_duration_seconds_(bucket|count|sum)' >>"$results/$1.txt" || true
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
            $loadgen connect --target "$target" --sockets 10000 --sessions 100 --users 100 --hold 60s \
                >"$work/background.txt" 2>&1 &
            background=$!
            for _ in $(seq 1 120); do
                open=$(curl -fs "$target/metrics" | awk '/^tether_sockets_open / {print $2}')
                [ "${open%.*}" -ge 10000 ] && break
                sleep 0.5
            done
            run revoke-one revoke --sockets 300 --sessions 300 --users-prefix bot --users 300 --rate 50 \
                --admin-password-file "$work/tether.db.admin-password"
            kill "$background" 2>/dev/null || true
            stop_server ;;
        revoke-all)
            start_server
            run revoke-all revoke --sockets 10000 --sessions 100 --all \
                --admin-password-file "$work/tether.db.admin-password"
            stop_server ;;
        revoke-100-one-session)
            # Issue 2's figure: one session with 100 open sockets, revoked by an admin.
            start_server
            run revoke-100-one-session revoke --sockets 100 --sessions 1 --rate 1 \
                --admin-password-file "$work/tether.db.admin-password"
            stop_server ;;
        revoke-1000)
            start_server
            run revoke-1000 revoke --sockets 1000 --sessions 100 --all \
                --admin-password-file "$work/tether.db.admin-password"
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
