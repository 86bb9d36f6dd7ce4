#!/usr/bin/env bash
# Issue 12, row 1 across a cluster: 50,000 idle authenticated sockets over three release
# nodes on PostgreSQL (one loadgen process per node), RSS per socket on each node. It runs
# the idle part of bench/cluster.sh (PARTS=idle) once per round. These are averages
# ((RSS while holding - RSS after a warm-up) / sockets on the node), ~16,666 sockets a
# node; the 4 KiB target is the single node's marginal slope (bench/memory-slope.sh), so
# this row prints no verdict of its own.
#
# Needs PostgreSQL at $TETHER_BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# Usage: bench/memory-cluster.sh
# Env: TETHER_BIN, LOADGEN_BIN, BASE_BIN (A/B), ROUNDS (3), RESULTS (bench/results),
#      LABEL/BASE_LABEL (new/base), SOCKETS (50000).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_bins

sockets=${SOCKETS:-50000}
bench_figure mean "average RSS per idle socket, $sockets over 3 nodes (mean of the nodes)" B
bench_figure node_a "node A" B
bench_figure node_b "node B" B
bench_figure node_c "node C" B
bench_figure total "sockets open in total" ""

measure() {
    local out
    out=$(mktemp -d "${TMPDIR:-/tmp}/memory-cluster.XXXXXX")
    TETHER_BIN=$server_bin LOADGEN_BIN=$loadgen PARTS=idle RESULTS=$out "$bench_root/bench/cluster.sh" "$sockets"
    local node
    for node in a b c; do
        cp "$out/cluster-idle-$node.json" "$prefix.node-$node.json"
        record "node_$node" "$(awk -v n="node-$node:" '$1 == n && /bytes per socket/ { print $(NF - 3) }' "$out/cluster-idle.txt")"
    done
    record mean "$(awk '/^node-.*bytes per socket/ { s += $(NF - 3); n++ } END { printf "%.0f", s / n }' "$out/cluster-idle.txt")"
    record total "$(awk '/^sockets open in total:/ { print $NF }' "$out/cluster-idle.txt")"
    rm -rf "$out"
}

bench_main memory-cluster
