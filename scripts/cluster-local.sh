#!/usr/bin/env bash
# Starts N instances of one homeserver (multi-instance mode,
# docs/scale-out.md) on loopback for benchmarks and manual tests: server name
# cluster.localhost, instance i's client API on 127.0.0.1:(8100 + i), all on
# one PostgreSQL database and one Redis (Cluster).
#
#   HS_CLUSTER_DB=postgres://postgres@127.0.0.1:54329/hs_cluster \
#   HS_CLUSTER_REDIS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
#   ./scripts/cluster-local.sh 3          # build (release) and run until Ctrl-C
#
# With HS_CLUSTER_CQL=host:port the message bodies go to a CQL keyspace
# (HS_CLUSTER_KEYSPACE, default hs_cluster; replication factor 1) and the
# binary is built with `--features cql`.
#
# HS_CLUSTER_DB_CONNECTIONS sets each instance's PostgreSQL pool (default 32;
# PostgreSQL's own default max_connections of 100 allows three instances).
#
# The database must exist (it is migrated on start). Then, for example:
#   hs-bench latency --base-url http://127.0.0.1:8100 --instance http://127.0.0.1:8102
#   hs-bench throughput --base-url http://127.0.0.1:8100 \
#       --instance http://127.0.0.1:8101 --instance http://127.0.0.1:8102
set -euo pipefail

N="${1:-3}"
: "${HS_CLUSTER_DB:?set HS_CLUSTER_DB to a PostgreSQL URL}"
: "${HS_CLUSTER_REDIS:?set HS_CLUSTER_REDIS to Redis host:port seeds, comma-separated}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${HS_CLUSTER_DIR:-$(mktemp -d /tmp/hs-cluster.XXXXXX)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hs-target-release}"
FEATURES=()
[ -z "${HS_CLUSTER_CQL:-}" ] || FEATURES=(--features cql)
if [ -z "${HS_BINARY:-}" ]; then
    (cd "$ROOT" && cargo build --release -p homeserver "${FEATURES[@]}")
    HS_BINARY="$CARGO_TARGET_DIR/release/homeserver"
fi
seeds="$(echo "$HS_CLUSTER_REDIS" | sed 's/[^,][^,]*/"&"/g')"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
for ((i = 0; i < N; i++)); do
    cat >"$DIR/instance$i.toml" <<CONF
server_name = "cluster.localhost"
signing_key_path = "$DIR/signing.key"

[listeners]
client = "127.0.0.1:$((8100 + i))"

[database]
url = "$HS_CLUSTER_DB"
max_connections = ${HS_CLUSTER_DB_CONNECTIONS:-32}

[registration]
enabled = true
require_token = false

[rate_limits]
enabled = false

[media]
path = "$DIR/media"

[cluster]
redis = [$seeds]
instance_id = $i
$(if [ -n "${HS_CLUSTER_CQL:-}" ]; then
    printf '\n[storage.cql]\ncontact_points = ["%s"]\nkeyspace = "%s"\nreplication_factor = 1\n' \
        "$HS_CLUSTER_CQL" "${HS_CLUSTER_KEYSPACE:-hs_cluster}"
fi)

[logging]
level = "warn"
CONF
    "$HS_BINARY" --config "$DIR/instance$i.toml" >"$DIR/instance$i.log" 2>&1 &
    pids+=($!)
    # The first instance creates the signing key the others load.
    [ "$i" -eq 0 ] && sleep 2
    echo "instance $i: http://127.0.0.1:$((8100 + i)) (log $DIR/instance$i.log)"
done
wait
