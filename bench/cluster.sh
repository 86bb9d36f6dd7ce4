#!/usr/bin/env bash
# Three release nodes on one PostgreSQL on this machine:
#  1. 1,000 sockets spread over the three, every session revoked by one revoke-all on
#     node A: request -> close per node (the goal is p99 <= 20 ms);
#  2. 50,000 idle authenticated sockets across the three (one loadgen process per
#     node: each process may hold at most 20,000 files), RSS per socket per node.
# Needs PostgreSQL at $TETHER_BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# Usage: bench/cluster.sh [IDLE_SOCKETS=50000]
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-50000}
admin_url=${TETHER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
cargo build --release --quiet -p tether -p tether-loadgen
tether=$PWD/target/release/tether
loadgen=$PWD/target/release/loadgen
mkdir -p bench/results
work=$(mktemp -d)
db=tether_bench_$RANDOM$RANDOM
url="${admin_url%/*}/$db"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

psql "$admin_url" -qc "CREATE DATABASE $db"
head -c 48 /dev/urandom | base64 >"$work/secret"
$tether migrate --database-url "$url" >/dev/null
printf '%s' bot-password | $tether user create-many --prefix bot --count 1000 --password-stdin --database-url "$url" >/dev/null
printf '%s' 'bench admin password' | $tether user create --username benchadmin --password-stdin --admin --database-url "$url" >/dev/null

ports=(18501 18502 18503)
names=(a b c)
for i in 0 1 2; do
    $tether serve --bind 127.0.0.1:${ports[$i]} --database-url "$url" --jwt-secret-file "$work/secret" \
        --node-id "node-${names[$i]}" --log-format json \
        --auth-per-ip-per-minute 0 --auth-per-username-per-minute 0 --upgrades-per-ip-per-minute 0 \
        --ws-messages-per-second 0 \
        --registrations-per-ip-per-minute 0 --refreshes-per-ip-per-minute 0 --max-sockets-per-session 0 --max-connections 0 --max-connections-per-ip 0 >"$work/node-${names[$i]}.log" 2>&1 &
    pids+=($!)
done
for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done
targets="http://127.0.0.1:18501,http://127.0.0.1:18502,http://127.0.0.1:18503"

echo "=== 1,000 sockets over 3 nodes, revoke-all on node A" | tee bench/results/cluster-revoke.txt
$loadgen revoke --target http://127.0.0.1:18501 --socket-targets "$targets" --sockets 1000 --sessions 100 --all \
    --admin-user benchadmin --admin-password 'bench admin password' --json bench/results/cluster-revoke.json 2>&1 |
    tee -a bench/results/cluster-revoke.txt

echo "=== $idle idle sockets across 3 nodes" | tee bench/results/cluster-idle.txt
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
before=()
for i in 0 1 2; do before+=("$(rss "${pids[$i]}")"); done
per_node=$((idle / 3))
holders=()
for i in 0 1 2; do
    $loadgen connect --target "http://127.0.0.1:${ports[$i]}" --sockets "$per_node" --sessions 300 --users 300 \
        --concurrency 128 --hold 40s >"$work/idle-$i.txt" 2>&1 &
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
        tee -a bench/results/cluster-idle.txt
done
echo "sockets open in total: $total" | tee -a bench/results/cluster-idle.txt
for holder in "${holders[@]}"; do wait "$holder" || true; done
for i in 0 1 2; do grep -E "sockets opened|failed to open" "$work/idle-$i.txt" | sed "s/^/node-${names[$i]}: /" | tee -a bench/results/cluster-idle.txt; done
