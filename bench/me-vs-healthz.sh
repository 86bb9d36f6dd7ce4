#!/usr/bin/env bash
# Issue 12, row 4: `GET /api/me` (Bearer token: verify, registry check, JSON answer) vs
# `GET /healthz` requests per second with wrk (2 threads, 64 connections) against the same
# server in the same run; target me/healthz >= 0.80.
#
# One bot logs in with curl; wrk gets its access token through the environment and a
# small Lua script (never on a command line, never printed). After a short warm-up, the
# two endpoints alternate healthz, me, healthz, me... (PAIRS pairs); a round's figures are
# the medians of each endpoint's runs and their ratio.
#
# Usage: bench/me-vs-healthz.sh
# Env: TETHER_BIN, BASE_BIN (A/B), ROUNDS (3), RESULTS (bench/results), LABEL/BASE_LABEL,
#      DURATION per wrk run (10s), PAIRS (2), THREADS (2), CONNECTIONS (64), WARMUP (2s).
# Installs wrk with apt-get when it is missing.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
LOADGEN_BIN=${LOADGEN_BIN:-/bin/true} # not used here: wrk is the load generator
bench_bins

duration=${DURATION:-10s}
pairs=${PAIRS:-2}
threads=${THREADS:-2}
connections=${CONNECTIONS:-64}
warmup=${WARMUP:-2s}
if ! command -v wrk >/dev/null; then
    echo "wrk is missing: apt-get install -y wrk"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
command -v wrk >/dev/null || die "wrk could not be installed"

bench_figure ratio "GET /api/me vs GET /healthz req/s (wrk -t$threads -c$connections)" x '>=' 0.80
bench_figure me "GET /api/me" req/s
bench_figure healthz "GET /healthz" req/s

# wrk_run NAME PATH [LUA]: one wrk run; prints its output, leaves req/s in $rps.
wrk_run() {
    local name=$1 path=$2 out=$prefix.wrk-$1.txt
    /usr/bin/time -f '%U %S %e' -o "$prefix.wrk-$name.time" \
        wrk -t"$threads" -c"$connections" -d"$wrk_duration" --latency ${3:+-s "$3"} "$server_url$path" >"$out" 2>&1
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    local bad
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    grep -E "Latency  |50%|99%|requests in|Socket errors" "$out" | sed "s/^/  $name: /"
    [ -z "$bad" ] || die "$name: $bad answers were not 2xx (see $out)"
    [ -n "$rps" ] || die "$name: no Requests/sec in $out"
    awk -v n="$name" -v r="$rps" '{ printf "  %s: %.0f req/s, wrk CPU %.2f cores\n", n, r, ($1 + $2) / $3 }' \
        "$prefix.wrk-$name.time"
}

measure() {
    start_server --users 1
    local token lua=$server_work/me.lua i me=() healthz=() cpu0
    token=$(curl -fsS --max-time 10 -H 'content-type: application/json' \
        -d '{"username":"bot1","password":"bot-password"}' "$server_url/api/auth/login" | jq -er .access_token) ||
        die "the bot could not log in"
    cat >"$lua" <<'LUA'
local token = os.getenv("TETHER_BENCH_TOKEN")
wrk.headers["Authorization"] = "Bearer " .. token
LUA
    export TETHER_BENCH_TOKEN=$token
    wrk_duration=$warmup
    wrk_run warmup-healthz /healthz
    wrk_run warmup-me /api/me "$lua"
    wrk_duration=$duration
    cpu0=$(cpu_seconds)
    for i in $(seq 1 "$pairs"); do
        wrk_run "healthz-$i" /healthz
        healthz+=("$rps")
        wrk_run "me-$i" /api/me "$lua"
        me+=("$rps")
    done
    unset TETHER_BENCH_TOKEN
    echo "server CPU during the measured runs: $(awk -v a="$(cpu_seconds)" -v b="$cpu0" 'BEGIN { printf "%.2f", a - b }') s"
    stop_server
    local me_med healthz_med
    me_med=$(median "${me[@]}")
    healthz_med=$(median "${healthz[@]}")
    record me "$(printf '%.0f' "$me_med")"
    record healthz "$(printf '%.0f' "$healthz_med")"
    record ratio "$(awk -v m="$me_med" -v h="$healthz_med" 'BEGIN { printf "%.3f", m / h }')"
}

bench_main me-vs-healthz
