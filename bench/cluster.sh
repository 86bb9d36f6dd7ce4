#!/usr/bin/env bash
# Three release nodes on one PostgreSQL on this machine:
#  1. 1,000 sockets spread over the three, every session revoked by one revoke-all on
#     node A: request -> close per node (the goal is p99 <= 20 ms);
#  2. 50,000 idle authenticated sockets across the three (one loadgen process per
#     node: each process may hold at most 20,000 files), RSS per socket per node.
# Needs PostgreSQL at $TETHER_BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# Usage: bench/cluster.sh [IDLE_SOCKETS=50000]
# Env: TETHER_BIN, LOADGEN_BIN (else target/release/*, built first), RESULTS (bench/results),
#      PARTS ("revoke idle": which of the two to run; bench/memory-cluster.sh runs "idle").
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
idle=${1:-50000}
parts=${PARTS:-revoke idle}
bench_bins
results=${RESULTS:-bench/results}
mkdir -p "$results"
pg_bench_database
url=$pg_url
work=$pg_work
printf '%s' bot-password | $tether user create-many --prefix bot --count 1000 --password-stdin --database-url "$url" >/dev/null
printf '%s' 'bench admin password' | $tether user create --username benchadmin --password-stdin --admin --database-url "$url" >/dev/null

names=(a b c)
pg_bench_nodes "${names[@]}"
pids=("${pg_node_pids[@]}")
ports=("${node_urls[@]##*:}")
targets="http://127.0.0.1:${ports[0]},http://127.0.0.1:${ports[1]},http://127.0.0.1:${ports[2]}"

if [[ " $parts " == *" revoke "* ]]; then
echo "=== 1,000 sockets over 3 nodes, revoke-all on node A" | tee "$results/cluster-revoke.txt"
$loadgen revoke --target "http://127.0.0.1:${ports[0]}" --socket-targets "$targets" --sockets 1000 --sessions 100 --all \
    --admin-user benchadmin --admin-password 'bench admin password' --json "$results/cluster-revoke.json" 2>&1 |
    tee -a "$results/cluster-revoke.txt"
fi

[[ " $parts " == *" idle "* ]] || exit 0
# The revoke part's logins (default argon2 cost) and closed sockets leave memory that the
# nodes give back only seconds later: let it go before the baseline.
[[ " $parts " == *" revoke "* ]] && sleep 12
echo "=== $idle idle sockets across 3 nodes" | tee "$results/cluster-idle.txt"
rss() { rss_settled_kib "$1"; }
# Warm each node's allocator with a small run first, so the baseline is not a cold heap.
# The idle sockets' bots (idlea1.., idleb1.., idlec1..) are registered at the nodes' cheap
# argon2 cost (CHEAP_HASH_SWITCHES in lib.sh): a login's 19 MiB hash buffers would stay
# resident for seconds and land in the RSS readings.
for i in 0 1 2; do
    $loadgen connect --target "http://127.0.0.1:${ports[$i]}" --sockets 200 --sessions 10 --hold 1s --max-time 60s \
        --register --users-prefix "idle${names[$i]}" --users 300 >"$work/warmup-$i.txt" 2>&1
done
sleep 2
before=()
for i in 0 1 2; do before+=("$(rss "${pids[$i]}")"); done
per_node=$((idle / 3))
holders=()
for i in 0 1 2; do
    $loadgen connect --target "http://127.0.0.1:${ports[$i]}" --sockets "$per_node" --sessions 300 \
        --users-prefix "idle${names[$i]}" --users 300 \
        --concurrency 128 --hold 40s --max-time 3m --json "$results/cluster-idle-${names[$i]}.json" >"$work/idle-$i.txt" 2>&1 &
    holders+=($!)
done
for _ in $(seq 1 120); do
    total=0
    for port in "${ports[@]}"; do
        open=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '/^tether_sockets_open / {print $2}')
        total=$((total + ${open%.*}))
    done
    [ "$total" -ge $((per_node * 3)) ] && break
    sleep 0.5
done
sleep 2
for i in 0 1 2; do
    open=$(curl -fs "http://127.0.0.1:${ports[$i]}/metrics" | awk '/^tether_sockets_open / {print $2}')
    now=$(rss "${pids[$i]}")
    awk -v n="node-${names[$i]}" -v b="${before[$i]}" -v d="$now" -v o="${open%.*}" \
        'BEGIN { printf "%s: %d sockets open, RSS %d -> %d KiB, %.0f bytes per socket\n", n, o, b, d, (d - b) * 1024 / o }' |
        tee -a "$results/cluster-idle.txt"
done
echo "sockets open in total: $total" | tee -a "$results/cluster-idle.txt"
for holder in "${holders[@]}"; do wait "$holder" || true; done
for i in 0 1 2; do grep -E "sockets opened|failed to open" "$work/idle-$i.txt" | sed "s/^/node-${names[$i]}: /" | tee -a "$results/cluster-idle.txt"; done
for i in 0 1 2; do loadgen_cpu "$results/cluster-idle-${names[$i]}.json" | sed "s/^/node-${names[$i]}: /" | tee -a "$results/cluster-idle.txt"; done
