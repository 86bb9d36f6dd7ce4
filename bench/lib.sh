# shellcheck shell=bash
# Helpers the bench scripts share. Source it (`. bench/lib.sh`), don't run it.
#
#   bench_bins                 the binaries: TETHER_BIN / LOADGEN_BIN, else target/release/*
#                              (built first unless both are given or BUILD=0)
#   start_server [--users N] [serve flags...]
#                              a fresh release server of $server_bin on a free loopback port,
#                              its own SQLite database in a temp dir, N bots (default 400; 0: none),
#                              the load switches; sets server_pid server_port server_url server_work
#   stop_server                SIGTERM, at most 10 s, then SIGKILL; removes the temp dir
#   wait_healthz URL SECONDS   /healthz answers 200 within the bound
#   metric NAME                a label-less value from $server_url/metrics
#   wait_metric NAME ge|le N SECONDS
#   rss_kib [PID]              VmRSS of the server (or PID), KiB; rss_settled_kib once steady
#   cpu_seconds [PID]          user + system CPU of the server (or PID) so far
#   median N...  verdict VALUE OP TARGET  json_figure FILE NAME  json_latency FILE NAME FIELD
#   bench_figure / record / bench_main   the rounds, the A/B alternation and the summary
#   pg_bench_database          a fresh PostgreSQL database on $TETHER_BENCH_DATABASE_URL's server,
#                              migrated, with a signing secret; sets pg_url pg_work; dropped at exit
#   pg_bench_nodes NAME...     one release node of $tether per name on it; sets node_urls
#
# Every wait is bounded; every server and load generator listens on or talks to 127.0.0.1.

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The load switches: every rate limit and connection cap off (as client-demo/README.md says).
LOAD_SWITCHES=(
    --auth-per-ip-per-minute 0 --auth-per-username-per-minute 0 --upgrades-per-ip-per-minute 0
    --ws-messages-per-second 0
    --registrations-per-ip-per-minute 0 --refreshes-per-ip-per-minute 0
    --max-sockets-per-session 0 --max-connections 0 --max-connections-per-ip 0
)

die() { echo "error: $*" >&2; exit 1; }

# Every socket is a descriptor, in the server as in loadgen: take the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_bins() {
    if { [ -z "${TETHER_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; } && [ "${BUILD:-1}" != 0 ]; then
        # Two builds at once on 2 cores help neither, and a load run beside one measures nothing.
        if pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; then
            die "another cargo/rustc is running: wait for it, or give TETHER_BIN and LOADGEN_BIN (or BUILD=0)"
        fi
        echo "building the release binaries in $bench_root (BUILD=0, or TETHER_BIN and LOADGEN_BIN, to skip)" >&2
        (cd "$bench_root" && cargo build --release --quiet -p tether -p tether-loadgen)
    fi
    tether=$(realpath "${TETHER_BIN:-$bench_root/target/release/tether}")
    loadgen=$(realpath "${LOADGEN_BIN:-$bench_root/target/release/loadgen}")
    base_bin=${BASE_BIN:+$(realpath "$BASE_BIN")}
    local bin
    for bin in "$tether" "$loadgen" ${base_bin:+"$base_bin"}; do
        [ -x "$bin" ] || die "no executable at $bin"
    done
    server_bin=$tether
}

# A port outside the ephemeral range (32768-60999 here) that nothing listens on.
free_port() {
    local used port
    used=$(ss -Htln | awk '{ sub(/.*:/, "", $4); print $4 }')
    for _ in $(seq 1 200); do
        port=$((18400 + RANDOM % 1500))
        grep -qx "$port" <<<"$used" || { echo "$port"; return 0; }
    done
    die "no free port in 18400-19899"
}

wait_healthz() {
    local deadline=$((SECONDS + $2))
    until curl -fs --max-time 2 "$1/healthz" >/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

server_pid=""
server_work=""
start_server() {
    local users=400
    if [ "${1:-}" = --users ]; then users=$2; shift 2; fi
    server_work=$(mktemp -d "${TMPDIR:-/tmp}/tether-bench.XXXXXX")
    server_port=$(free_port)
    server_url=http://127.0.0.1:$server_port
    if ((users > 0)); then
        printf '%s' bot-password | "$server_bin" user create-many --prefix bot --count "$users" --password-stdin \
            --database-url "sqlite://$server_work/tether.db" >/dev/null
    fi
    "$server_bin" serve --bind "127.0.0.1:$server_port" --database-url "sqlite://$server_work/tether.db" \
        --log-format json "${LOAD_SWITCHES[@]}" "$@" >"$server_work/server.log" 2>&1 &
    server_pid=$!
    if ! wait_healthz "$server_url" 15; then
        echo "server did not start within 15 s:" >&2
        tail -20 "$server_work/server.log" >&2
        stop_server
        return 1
    fi
    # shellcheck disable=SC2034 # for the scripts' `loadgen revoke`
    admin_password_file=$server_work/tether.db.admin-password
}

# Logins that cost almost no memory: the server hashes with 8 KiB and one pass (argon2id
# at its default cost holds 19 MiB per hash, two at a time, and that stays resident for
# up to several seconds after the logins), and the bots are registered through the API
# (`loadgen --register`) so that their stored hashes have that cost too. For the memory
# rows, where a login's transient would land in one RSS reading and not the next.
# shellcheck disable=SC2034 # for the scripts
CHEAP_HASH_SWITCHES=(--argon2-memory-kib 8 --argon2-iterations 1)

# Whether PID still runs (a child that exited stays a zombie until waited for).
alive() {
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# stop_pid PID: SIGTERM, at most 10 s, then SIGKILL, then reap it.
stop_pid() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$1" || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_child "$1"
}

# Background processes a script starts (load generators holding sockets) are added to
# bench_children and stopped on exit; once reaped, forget_child PID (its id may be reused).
bench_children=()
forget_child() {
    local pid kept=()
    for pid in "${bench_children[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    bench_children=("${kept[@]}")
}

stop_server() {
    [ -n "$server_pid" ] && stop_pid "$server_pid"
    [ -n "$server_work" ] && rm -rf "$server_work"
    server_pid=""
    server_work=""
}

bench_cleanup() {
    local pid
    for pid in "${bench_children[@]}"; do alive "$pid" && stop_pid "$pid"; done
    stop_server
    # An `if`, not `&&`: the trap's last status is the script's, and a run without
    # figures must still exit 0.
    if [ -n "${figs_dir:-}" ]; then rm -rf "$figs_dir"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# (The whole answer is read first: an awk that stopped at the match would make curl fail
# with a write error, and pipefail the assignment.)
metric() {
    local text
    text=$(curl -fs --max-time 5 "$server_url/metrics") || return 1
    awk -v n="$1" '$1 == n { print $2; exit }' <<<"$text"
}

# wait_metric NAME ge|le N SECONDS: polls /metrics twice a second until NAME >= (<=) N.
wait_metric() {
    local name=$1 op=$2 want=$3 deadline=$((SECONDS + $4)) value
    while :; do
        value=$(metric "$name") || value=""
        value=${value%.*}
        if [ -n "$value" ]; then
            case $op in
                ge) [ "$value" -ge "$want" ] && return 0 ;;
                le) [ "$value" -le "$want" ] && return 0 ;;
                *) die "wait_metric: op is ge or le" ;;
            esac
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out after $4 s: $name is ${value:-absent}, wanted $op $want" >&2
            return 1
        fi
        sleep 0.5
    done
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/${1:-$server_pid}/status"; }

# RSS once it has stopped moving: sampled every 0.5 s until two samples in a row are
# within 256 KiB (at most 10 s; then the last sample, with a warning). A login's argon2
# buffers (19 MiB each, two at a time) stay resident for about a second after it, so a
# single early sample can be 40 MB off.
rss_settled_kib() {
    local pid=${1:-$server_pid} old new
    old=$(rss_kib "$pid")
    for _ in $(seq 1 20); do
        sleep 0.5
        new=$(rss_kib "$pid")
        if (((new > old ? new - old : old - new) < 256)); then echo "$new"; return 0; fi
        old=$new
    done
    echo "warning: RSS still moving after 10 s (last $new KiB)" >&2
    echo "$new"
}

cpu_seconds() {
    sed 's/^.*) //' "/proc/${1:-$server_pid}/stat" |
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($12 + $13) / hz }'
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# verdict VALUE '<='|'>=' TARGET -> MET or MISSED
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        ok = (op == "<=") ? (v + 0 <= t + 0) : (v + 0 >= t + 0); print ok ? "MET" : "MISSED" }'
}

json_figure() { jq -er --arg n "$2" '[.figures[] | select(.name == $n) | .value][0]' "$1"; }
json_latency() { jq -er --arg n "$2" --arg f "$3" '[.latencies[] | select(.name == $n) | .[$f]][0]' "$1"; }

# The load generator's own CPU, as it reports it in its JSON.
loadgen_cpu() {
    local cores
    cores=$(json_figure "$1" "loadgen CPU (cores busy, whole run)" 2>/dev/null) || cores=""
    printf 'loadgen CPU: %.2f cores busy over its whole run (%s)\n' "${cores:-0}" "$(basename "$1")"
}

# --- rounds, A/B, summary -------------------------------------------------------------
# A script declares its figures with bench_figure, defines measure() (run once against
# $server_bin, writing its files under $prefix.*, calling `record KEY VALUE` for each
# figure) and calls bench_main NAME. ROUNDS runs of $tether (label $LABEL, default new);
# with BASE_BIN, ROUNDS runs of it too, alternating base, new, base, new...
fig_keys=()
declare -A fig_desc fig_unit fig_op fig_target
# bench_figure KEY DESCRIPTION UNIT [OP TARGET]; the first one declared is the row's figure.
bench_figure() {
    fig_keys+=("$1")
    fig_desc[$1]=$2
    fig_unit[$1]=$3
    fig_op[$1]=${4:-}
    fig_target[$1]=${5:-}
}

record() {
    echo "$1 $2" >>"$figs_dir/$label"
    printf '  [%s] %s = %s %s\n' "$label" "$1" "$2" "${fig_unit[$1]:-}"
}

# Four significant figures, never an exponent.
fmt() { awk -v v="$1" 'BEGIN { if (v >= 1000 || v <= -1000) printf "%.0f", v; else printf "%.4g", v }'; }

values_of() { [ -f "$figs_dir/$1" ] && awk -v k="$2" '$1 == k { print $2 }' "$figs_dir/$1"; }

bench_main() {
    bench_name=$1
    results=$(realpath -m "${RESULTS:-$bench_root/bench/results}")
    mkdir -p "$results"
    rounds=${ROUNDS:-3}
    figs_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-figures.XXXXXX")
    local new_label=${LABEL:-new} base_label=${BASE_LABEL:-base} round runs=()
    [ -z "$base_bin" ] || [ "$new_label" != "$base_label" ] || die "LABEL and BASE_LABEL are both $new_label"
    for round in $(seq 1 "$rounds"); do
        [ -n "$base_bin" ] && runs+=("$base_label:$base_bin:$round")
        runs+=("$new_label:$tether:$round")
    done
    local run
    for run in "${runs[@]}"; do
        IFS=: read -r label server_bin round <<<"$run"
        prefix=$results/$bench_name-$label-$round
        echo "=== $bench_name, $label ($server_bin), round $round of $rounds, $(date -u +%FT%TZ)" |
            tee "$prefix.txt"
        echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$prefix.txt"
        local out tee_pid
        exec {out}> >(tee -a "$prefix.txt")
        tee_pid=$!
        measure >&"$out" 2>&1
        exec {out}>&-
        wait "$tee_pid" 2>/dev/null || true
    done
    bench_summary "$new_label" "$base_label" | tee "$results/$bench_name-summary.txt"
}

bench_summary() {
    local new_label=$1 base_label=$2 key values med bvalues bmed line unit
    echo "=== $bench_name: summary ($(date -u +%FT%TZ))"
    for key in "${fig_keys[@]}"; do
        mapfile -t values < <(values_of "$new_label" "$key")
        [ "${#values[@]}" -gt 0 ] || { echo "${fig_desc[$key]}: no value"; continue; }
        med=$(median "${values[@]}")
        unit=${fig_unit[$key]:+ ${fig_unit[$key]}}
        line="${fig_desc[$key]}: $(fmt "$med")$unit (median of ${#values[@]}: ${values[*]})"
        if [ -n "${fig_op[$key]}" ]; then
            line+=" target ${fig_op[$key]} ${fig_target[$key]}$unit: $(verdict "$med" "${fig_op[$key]}" "${fig_target[$key]}")"
        fi
        echo "$line"
        [ -n "$base_bin" ] || continue
        mapfile -t bvalues < <(values_of "$base_label" "$key")
        if [ "${#bvalues[@]}" -gt 0 ]; then
            bmed=$(median "${bvalues[@]}")
            echo "  $base_label: $(fmt "$bmed")$unit (median of ${#bvalues[@]}: ${bvalues[*]}), ratio $new_label/$base_label $(awk -v n="$med" -v b="$bmed" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", n / b }')"
        fi
    done
}

# A database of its own on the bench PostgreSQL, for the several-node scripts; it and the
# nodes started on it go when the script exits (this replaces bench_cleanup's trap).
pg_bench_database() {
    pg_admin_url=${TETHER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    pg_work=$(mktemp -d)
    pg_db=tether_bench_$RANDOM$RANDOM
    pg_url="${pg_admin_url%/*}/$pg_db"
    pg_node_pids=()
    trap pg_bench_cleanup EXIT
    psql "$pg_admin_url" -qc "CREATE DATABASE $pg_db"
    head -c 48 /dev/urandom | base64 >"$pg_work/secret"
    $tether migrate --database-url "$pg_url" >/dev/null
}

pg_bench_cleanup() {
    local pid
    for pid in "${pg_node_pids[@]}"; do alive "$pid" && stop_pid "$pid"; done
    psql "$pg_admin_url" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$pg_work"
    bench_cleanup
}

# pg_bench_nodes NAME...: nodes `node-NAME` on distinct free ports, each ready (bounded).
pg_bench_nodes() {
    local name port ports=() i=0
    node_urls=()
    while [ "${#ports[@]}" -lt "$#" ]; do
        port=$(free_port)
        [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
    done
    for name in "$@"; do
        $tether serve --bind "127.0.0.1:${ports[$i]}" --database-url "$pg_url" --jwt-secret-file "$pg_work/secret" \
            --node-id "node-$name" --log-format json "${LOAD_SWITCHES[@]}" "${CHEAP_HASH_SWITCHES[@]}" \
            >"$pg_work/node-$name.log" 2>&1 &
        pg_node_pids+=($!)
        node_urls+=("http://127.0.0.1:${ports[$i]}")
        i=$((i + 1))
    done
    for port in "${ports[@]}"; do
        wait_healthz "http://127.0.0.1:$port" 15 || die "node on $port did not start (logs in $pg_work)"
        for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    done
}
