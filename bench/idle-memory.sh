#!/usr/bin/env bash
# Server RSS per idle authenticated socket: a release server on loopback, N sockets
# held by loadgen, RSS sampled before the sockets and while they are held. An average,
# flattered at small counts by the pages the logins freed; bench/memory-slope.sh
# measures the marginal slope between counts (issue 12's figure).
# Usage: bench/idle-memory.sh [SOCKETS=10000] [SESSIONS=100]
# Env: TETHER_BIN, LOADGEN_BIN (else target/release/*, as built).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
sockets=${1:-10000}
sessions=${2:-100}
BUILD=${BUILD:-0} bench_bins
work=$(mktemp -d)
trap 'bench_cleanup; rm -rf "$work"' EXIT

start_server --users "$sessions"
# Warm the allocator with one small run first, so the baseline is not a cold heap.
$loadgen connect --target "$server_url" --sockets 200 --sessions 10 --hold 1s >/dev/null
wait_metric tether_sockets_open le 0 30
before=$(rss_settled_kib)
$loadgen connect --target "$server_url" --sockets "$sockets" --sessions "$sessions" \
    --concurrency 256 --hold 20s --json "$work/connect.json" >"$work/connect.txt" 2>&1 &
held=$!
bench_children+=("$held")
wait_metric tether_sockets_open ge "$sockets" 30 || true
sleep 2
during=$(rss_settled_kib)
open=$(metric tether_sockets_open)
wait $held || true
forget_child "$held"
grep -E "sockets opened|upgrade rate|failed" "$work/connect.txt" | head -5
echo "sockets open on the server: $open"
echo "server RSS before: ${before} KiB, while holding: ${during} KiB"
awk -v b="$before" -v d="$during" -v n="$open" 'BEGIN { printf "RSS per idle socket: %.0f bytes\n", (d - b) * 1024 / n }'
loadgen_cpu "$work/connect.json"
