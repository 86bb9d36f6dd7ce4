#!/usr/bin/env bash
# Server RSS per idle authenticated socket: a release server on loopback, N sockets
# held by loadgen, RSS sampled before the sockets and while they are held.
# Usage: bench/idle-memory.sh [SOCKETS=10000] [SESSIONS=100]
set -euo pipefail
cd "$(dirname "$0")/.."
sockets=${1:-10000}
sessions=${2:-100}
tether=target/release/tether
loadgen=target/release/loadgen
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

printf '%s' bot-password | $tether user create-many --prefix bot --count "$sessions" --password-stdin \
    --database-url "sqlite://$work/tether.db" >/dev/null
$tether serve --bind 127.0.0.1:18480 --database-url "sqlite://$work/tether.db" --log-format json \
    --auth-per-ip-per-minute 0 --auth-per-username-per-minute 0 --upgrades-per-ip-per-minute 0 \
    --ws-messages-per-second 0 \
    --registrations-per-ip-per-minute 0 --refreshes-per-ip-per-minute 0 --max-sockets-per-session 0 --max-connections 0 --max-connections-per-ip 0 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:18480/healthz >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
# Warm the allocator with one small run first, so the baseline is not a cold heap.
$loadgen connect --target http://127.0.0.1:18480 --sockets 200 --sessions 10 --hold 1s >/dev/null
before=$(rss)
$loadgen connect --target http://127.0.0.1:18480 --sockets "$sockets" --sessions "$sessions" \
    --concurrency 256 --hold 20s --json "$work/connect.json" >"$work/connect.txt" 2>&1 &
held=$!
peak=0
for _ in $(seq 1 60); do
    sleep 0.5
    now=$(rss)
    [ "$now" -gt "$peak" ] && peak=$now
    open=$(curl -fs http://127.0.0.1:18480/metrics | awk '/^tether_sockets_open / {print $2}')
    [ "${open%.*}" -ge "$sockets" ] && break
done
sleep 2
during=$(rss)
open=$(curl -fs http://127.0.0.1:18480/metrics | awk '/^tether_sockets_open / {print $2}')
wait $held || true
grep -E "sockets opened|upgrade rate|failed" "$work/connect.txt" | head -5
echo "sockets open on the server: $open"
echo "server RSS before: ${before} KiB, while holding: ${during} KiB"
awk -v b="$before" -v d="$during" -v n="$open" 'BEGIN { printf "RSS per idle socket: %.0f bytes\n", (d - b) * 1024 / n }'
