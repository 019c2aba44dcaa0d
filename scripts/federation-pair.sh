#!/usr/bin/env bash
# Starts two federating homeservers on loopback for benchmarks and manual
# tests: hs1.localhost (client API :8008, federation :8448) and hs2.localhost
# (client :8018, federation :8449). A throwaway CA signs both TLS
# certificates; each server trusts it and finds the other through a static
# override, so no DNS is involved.
#
#   ./scripts/federation-pair.sh            # build (release) and run until Ctrl-C
#   HS_BINARY=path/to/homeserver ./scripts/federation-pair.sh
#
# Then, for example:
#   hs-bench federation --a http://127.0.0.1:8008 --b http://127.0.0.1:8018 \
#       --a-server hs1.localhost
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${HS_PAIR_DIR:-$(mktemp -d /tmp/hs-pair.XXXXXX)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hs-target-release}"
if [ -z "${HS_BINARY:-}" ]; then
    (cd "$ROOT" && cargo build --release -p homeserver)
    HS_BINARY="$CARGO_TARGET_DIR/release/homeserver"
fi
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }

cd "$DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=hs-pair test CA" -keyout ca.key -out ca.crt 2>/dev/null
for i in 1 2; do
    name="hs$i.localhost"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\n' "$name" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 2 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    client_port=$((8008 + (i - 1) * 10))
    fed_port=$((8447 + i))
    mkdir -p "data$i"
    cat >"hs$i.toml" <<CONF
server_name = "$name"
signing_key_path = "$DIR/data$i/signing.key"

[listeners]
client = "127.0.0.1:$client_port"
federation = "127.0.0.1:$fed_port"

[database]
url = "sqlite://$DIR/data$i/homeserver.db"

[registration]
enabled = true
require_token = false

[rate_limits]
enabled = false

[tls]
cert_path = "$DIR/$name.crt"
key_path = "$DIR/$name.key"

[federation]
trusted_ca_paths = ["$DIR/ca.crt"]
overrides = { "hs1.localhost" = "127.0.0.1:8448", "hs2.localhost" = "127.0.0.1:8449" }

[logging]
level = "warn"
CONF
done

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
for i in 1 2; do
    "$HS_BINARY" --config "$DIR/hs$i.toml" >"$DIR/hs$i.log" 2>&1 &
    pids+=($!)
done
echo "hs1.localhost: client http://127.0.0.1:8008, federation :8448 (log $DIR/hs1.log)"
echo "hs2.localhost: client http://127.0.0.1:8018, federation :8449 (log $DIR/hs2.log)"
wait
