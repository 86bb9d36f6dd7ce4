#!/usr/bin/env bash
# Issue 14's figures, both from the load generator:
#  1. introspection: `POST /api/auth/introspect` (Basic credential, form body, token
#     verify, registry check) requests per second vs `GET /healthz` in the same loadgen
#     run, and `GET /api/me` beside it for scale; one SQLite server.
#  2. feed delivery: two release nodes on one PostgreSQL; bots log out on node A, a
#     consumer follows the revocation stream on node B; time from each logout's 204 to
#     its event on B, p50/p99. The same run on one node (follow on A) is the baseline.
# Needs PostgreSQL at $TETHER_BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# Usage: bench/services.sh
# Env: TETHER_BIN, LOADGEN_BIN (else target/release/*, built first), RESULTS (bench/results),
#      ROUNDS (3), DURATION per http phase (10s), CONCURRENCY (16), REVOCATIONS (500), BATCH (1),
#      ALG (HS256: the generated secret; EdDSA: a key file with one Ed25519 key, for part 1),
#      PARTS ("introspect feed").
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_bins
results=${RESULTS:-bench/results}
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
concurrency=${CONCURRENCY:-16}
revocations=${REVOCATIONS:-500}
batch=${BATCH:-1}
mkdir -p "$results"

# credential DATABASE_URL: a service credential, exported for loadgen.
credential() {
    local printed
    printed=$($tether service create --name "bench-$RANDOM$RANDOM" --database-url "$1")
    LOADGEN_CLIENT_ID=$(jq -er .client_id <<<"$printed")
    LOADGEN_CLIENT_SECRET=$(jq -er .client_secret <<<"$printed")
    export LOADGEN_CLIENT_ID LOADGEN_CLIENT_SECRET
}

parts=${PARTS:-introspect feed}
alg=${ALG:-HS256}
key_flags=()
if [ "$alg" = EdDSA ]; then
    keys_dir=$(mktemp -d)
    jwk=$($tether keys generate --alg EdDSA --kid bench)
    echo "{\"active\": \"bench\", \"keys\": [$jwk]}" >"$keys_dir/keys.json"
    key_flags=(--jwt-keys-file "$keys_dir/keys.json")
fi

if [[ " $parts " == *" introspect "* ]]; then
echo "=== 1. introspection vs /healthz ($alg tokens), $rounds rounds, $(date -u +%FT%TZ)" | tee "$results/services-introspect-$alg.txt"
server_bin=$tether
for round in $(seq 1 "$rounds"); do
    start_server --users 16 "${key_flags[@]}"
    credential "sqlite://$server_work/tether.db"
    # The node rereads credentials every 2 s.
    for _ in $(seq 1 50); do
        curl -fs -u "$LOADGEN_CLIENT_ID:$LOADGEN_CLIENT_SECRET" "$server_url/api/auth/revocations/snapshot" >/dev/null && break
        sleep 0.1
    done
    for endpoint in introspect me; do
        $loadgen http --target "$server_url" --endpoint "$endpoint" --compare-healthz --sessions 16 \
            --concurrency "$concurrency" --duration "$duration" \
            --json "$results/services-introspect-$alg-$endpoint-$round.json" 2>&1 |
            grep -E "per second|ratio|p50|p99|failed" | sed "s/^/  round $round $endpoint: /" |
            tee -a "$results/services-introspect-$alg.txt"
    done
    stop_server
done
fi
[[ " $parts " == *" feed "* ]] || exit 0

echo "=== 2. revocation feed delivery, node A -> node B and A -> A, $(date -u +%FT%TZ)" | tee "$results/services-feed.txt"
pg_bench_database
url=$pg_url
# A logout revokes only its own session: the same bots serve every run.
printf '%s' bot-password | $tether user create-many --prefix bot --count "$revocations" --password-stdin --database-url "$url" >/dev/null
credential "$url"
pg_bench_nodes a b
a=${node_urls[0]}
b=${node_urls[1]}
for round in $(seq 1 "$rounds"); do
    # Alternate: across nodes, then one node.
    for follow in "$b" "$a"; do
        name=$([ "$follow" = "$b" ] && echo across || echo same)
        $loadgen feed --target "$a" --revoke-on "$a" --follow-on "$follow" --revocations "$revocations" \
            --batch "$batch" --users "$revocations" \
            --json "$results/services-feed-$name-$round.json" 2>&1 |
            grep -E "events|lost|duplicate|204 -> event|p50|p99" | sed "s/^/  round $round $name: /" |
            tee -a "$results/services-feed.txt"
    done
done
