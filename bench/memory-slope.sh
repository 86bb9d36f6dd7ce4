#!/usr/bin/env bash
# Issue 12, row 1: marginal server RSS per extra idle authenticated socket between 5,000
# and 19,000 sockets (100 sessions); target <= 4096 bytes.
#
# One fresh server steps up: a small warm-up run first (so the baseline is not a cold
# heap), RSS read with no socket open, then loadgen processes started one after another
# (5,000, then 5,000 more, then 9,000 more: `connect` cannot add sockets to a running
# process) that hold their sockets together until the last read. At each count: wait until
# /metrics `tether_sockets_open` reaches it and no password hash runs, settle, read VmRSS
# once it is steady (the logins' argon2 buffers, ~40 MB, leave about a second later).
# Prints the averages ((RSS - RSS with no socket) / sockets) at each count and the slopes
# between the counts; the row's figure is the 5,000 -> 19,000 slope.
#
# Logins are made cheap (CHEAP_LOGINS=1, the default; see CHEAP_HASH_SWITCHES in lib.sh):
# at the default argon2 cost the ~40 MB of a step's login hashes stays resident for up to
# ~6 s, so it lands in one reading and not the next (+-2.7 KB a socket on the 14,000-socket
# slope). CHEAP_LOGINS=0 measures with the default cost and create-many bots. The 100 sessions are split over the
# three processes in proportion to their sockets (26 + 26 + 48), ~190 sockets a session.
#
# Usage: bench/memory-slope.sh
# Env: TETHER_BIN, LOADGEN_BIN, BASE_BIN (A/B), ROUNDS (3), RESULTS (bench/results),
#      LABEL/BASE_LABEL (new/base), COUNTS ("5000 10000 19000"), SESSIONS (100),
#      SETTLE seconds before each read (3), HOLD seconds the first process holds (60),
#      CHEAP_LOGINS (1).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_bins

read -r -a counts <<<"${COUNTS:-5000 10000 19000}"
sessions=${SESSIONS:-100}
settle=${SETTLE:-3}
hold=${HOLD:-60}
cheap_logins=${CHEAP_LOGINS:-1}
last=${counts[-1]}
first=${counts[0]}

bench_figure slope_first_last "marginal RSS per extra idle socket, $first -> $last" B '<=' 4096
for ((i = 0; i < ${#counts[@]}; i++)); do
    bench_figure "avg_${counts[$i]}" "average RSS per socket at ${counts[$i]}" B
done
for ((i = 1; i < ${#counts[@]}; i++)); do
    bench_figure "slope_${counts[$((i - 1))]}_${counts[$i]}" "slope ${counts[$((i - 1))]} -> ${counts[$i]}" B
done

measure() {
    local register=()
    if [ "$cheap_logins" = 1 ]; then
        start_server --users 0 "${CHEAP_HASH_SWITCHES[@]}"
        register=(--register --users "$sessions")
    else
        start_server --users "$sessions"
    fi
    # Warm the allocator (as bench/idle-memory.sh does), then the baseline with no socket.
    "$loadgen" connect --target "$server_url" --sockets 200 --sessions 10 --hold 1s --max-time 60s \
        "${register[@]}" >"$prefix.warmup.txt" 2>&1
    wait_metric tether_sockets_open le 0 30
    wait_metric tether_password_hashes_running le 0 30
    sleep "$settle"
    local rss0 prev=0 sessions_left=$sessions i count add step_sessions holders=() hold_left pid
    rss0=$(rss_settled_kib)
    local deadline=$((SECONDS + hold))
    declare -A rss_at open_at
    printf '%8s %8s %10s %14s\n' sockets open 'RSS KiB' 'avg B/socket' | tee "$prefix.table"
    printf '%8s %8s %10s %14s\n' 0 "$(metric tether_sockets_open)" "$rss0" - | tee -a "$prefix.table"
    for ((i = 0; i < ${#counts[@]}; i++)); do
        count=${counts[$i]}
        add=$((count - prev))
        if ((i == ${#counts[@]} - 1)); then
            step_sessions=$sessions_left
        else
            step_sessions=$(((sessions * add + last / 2) / last))
            ((step_sessions >= 1)) || step_sessions=1
        fi
        sessions_left=$((sessions_left - step_sessions))
        # Every process ends at about the same time, after the last read.
        hold_left=$((deadline - SECONDS))
        ((hold_left >= 15)) || die "HOLD=$hold is too short: $hold_left s left at $count sockets"
        "$loadgen" connect --target "$server_url" --sockets "$add" --sessions "$step_sessions" \
            --concurrency 256 --hold "${hold_left}s" --max-time "$((hold_left + 120))s" \
            --json "$prefix.connect-$count.json" >"$prefix.connect-$count.txt" 2>&1 &
        holders+=($!)
        bench_children+=($!)
        if ! wait_metric tether_sockets_open ge "$count" 120; then
            tail -5 "$prefix.connect-$count.txt"
            die "the server never had $count sockets open"
        fi
        wait_metric tether_password_hashes_running le 0 30
        sleep "$settle"
        rss_at[$count]=$(rss_settled_kib)
        open_at[$count]=$(metric tether_sockets_open)
        printf '%8s %8s %10s %14.0f\n' "$count" "${open_at[$count]}" "${rss_at[$count]}" \
            "$(awk -v r="${rss_at[$count]}" -v b="$rss0" -v n="${open_at[$count]}" 'BEGIN { print (r - b) * 1024 / n }')" |
            tee -a "$prefix.table"
        [ "${open_at[$count]%.*}" -eq "$count" ] ||
            echo "warning: $((${open_at[$count]%.*})) sockets open where $count were meant (a holder dropped some?)"
        prev=$count
    done
    echo "server CPU so far: $(cpu_seconds) s; the loadgen holders' so far: $(for pid in "${holders[@]}"; do printf '%s s ' "$(cpu_seconds "$pid")"; done)"
    for ((i = 0; i < ${#counts[@]}; i++)); do
        count=${counts[$i]}
        record "avg_$count" "$(awk -v r="${rss_at[$count]}" -v b="$rss0" -v n="${open_at[$count]}" \
            'BEGIN { printf "%.0f", (r - b) * 1024 / n }')"
    done
    slope() {
        awk -v r1="${rss_at[$1]}" -v r2="${rss_at[$2]}" -v n1="${open_at[$1]}" -v n2="${open_at[$2]}" \
            'BEGIN { printf "%.0f", (r2 - r1) * 1024 / (n2 - n1) }'
    }
    for ((i = 1; i < ${#counts[@]}; i++)); do
        record "slope_${counts[$((i - 1))]}_${counts[$i]}" "$(slope "${counts[$((i - 1))]}" "${counts[$i]}")"
    done
    record slope_first_last "$(slope "$first" "$last")"
    # The holders end on their own at about the deadline; their reports are kept.
    local status=0
    for pid in "${holders[@]}"; do
        wait "$pid" || status=$?
        forget_child "$pid"
    done
    for count in "${counts[@]}"; do
        echo "-- loadgen connect up to $count:"
        grep -E "sockets opened|failed to open|dropped during|open at the end" "$prefix.connect-$count.txt" || true
        loadgen_cpu "$prefix.connect-$count.json"
    done
    ((status == 0)) || echo "warning: a loadgen holder exited with status $status"
    stop_server
}

bench_main memory-slope
