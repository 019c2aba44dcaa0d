#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine:
#
#   fmt       cargo fmt --check
#   clippy    cargo clippy, warnings are errors
#   sqlite    cargo test --workspace (embedded SQLite store)
#   postgres  the workspace's tests again against a private PostgreSQL cluster
#   scaleout  the CQL timeline tests against a private Apache Cassandra node,
#             with a private 3-master Redis Cluster (docs/scale-out.md)
#   clients   a real third-party client (matrix-nio) against the built binary
#   synapse   federation with a real Synapse (from PyPI) on loopback, both ways
#             (tests/interop)
#   complement  the Complement conformance tests that pass today
#             (scripts/complement-gate.sh; tests/complement/passing.txt)
#
# Usage: ./scripts/test.sh [STEP...]   (no STEP runs them all, in that order)
#
# Everything the suite needs is installed here if it is missing (PostgreSQL
# from apt, rustfmt/clippy with rustup, a Python venv with pinned packages),
# and skipped quickly when it is already there. Every step runs even if an
# earlier one failed, so one run reports everything; the exit code is non-zero
# if any step failed.
#
# Environment:
#   CARGO_TARGET_DIR      shared build cache (default $HOME/.cache/hs-target)
#   HS_TEST_POSTGRES_URL  use this PostgreSQL admin URL instead of starting a
#                         private cluster
#   HS_VENV               Python venv for the client tests (default $HOME/.cache/hs-venv)
#   HS_SYNAPSE_VENV       Python venv with Synapse for the interop tests
#                         (default $HOME/.cache/hs-synapse-venv)
#   HS_TEST_S3_URL        use this S3-compatible endpoint for the media tests instead
#                         of starting S3Proxy (with HS_TEST_S3_ACCESS_KEY and
#                         HS_TEST_S3_SECRET_KEY)
#   HS_TEST_CQL_URL       use this CQL node (host:port) instead of starting Cassandra
#   HS_TEST_REDIS_CLUSTER use these Redis Cluster seeds (host:port,...) instead of
#                         starting a cluster
#   HS_BINARY             homeserver binary the client tests start
#                         (default $CARGO_TARGET_DIR/debug/homeserver)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hs-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# CI builds once per run: incremental caches would only fill the disk.
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL=0
fi
# The shared build cache grows with every checkout path and feature set it
# sees (each keeps its own test executables). When the disk runs low, drop
# what a rebuild can restore: incremental caches and all but the newest two
# builds of each test executable.
prune_target_dir() {
    local dir="$CARGO_TARGET_DIR/debug" free_kb
    [ -d "$dir" ] || return 0
    free_kb="$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')"
    [ -n "$free_kb" ] && [ "$free_kb" -lt $((20 * 1024 * 1024)) ] || return 0
    echo "test.sh: less than 20 GB free; pruning stale build artifacts in $dir" >&2
    rm -rf "$dir/incremental"
    if [ -d "$dir/deps" ]; then
        find "$dir/deps" -maxdepth 1 -type f -perm -u+x -regex '.*-[0-9a-f]\{16\}' -printf '%T@ %f\n' |
            sort -rn | awk '{ name = $2; sub(/-[0-9a-f]+$/, "", name); if (++seen[name] > 2) print $2 }' |
            while read -r f; do rm -f "$dir/deps/$f" "$dir/deps/$f.d"; done
    fi
}
prune_target_dir

HS_VENV="${HS_VENV:-$HOME/.cache/hs-venv}"
HS_SYNAPSE_VENV="${HS_SYNAPSE_VENV:-$HOME/.cache/hs-synapse-venv}"
ALL_STEPS=(fmt clippy sqlite postgres scaleout clients synapse complement)

if [ -t 2 ]; then
    log() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
else
    log() { printf '\n==> %s\n' "$*" >&2; }
fi
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Argument parsing

STEPS=()
if [ $# -eq 0 ]; then
    STEPS=("${ALL_STEPS[@]}")
else
    for arg in "$@"; do
        case "$arg" in
            fmt | clippy | sqlite | postgres | scaleout | clients | synapse | complement) STEPS+=("$arg") ;;
            -h | --help)
                sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
                exit 0
                ;;
            *) die "unknown step '$arg' (steps: ${ALL_STEPS[*]})" ;;
        esac
    done
fi
wants() {
    local s
    for s in "${STEPS[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

# ---------------------------------------------------------------------------
# Installing what the suite needs

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null; then
        echo "test.sh: need to install $*, but apt-get is not available" >&2
        return 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" || return 1
}

ensure_rust() {
    if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
    local missing=()
    if wants fmt && ! cargo fmt --version >/dev/null 2>&1; then missing+=(rustfmt); fi
    if wants clippy && ! cargo clippy --version >/dev/null 2>&1; then missing+=(clippy); fi
    if [ ${#missing[@]} -gt 0 ]; then
        command -v rustup >/dev/null || die "need rust components ${missing[*]}, but rustup is not available"
        log "rustup component add ${missing[*]}"
        rustup component add "${missing[@]}"
    fi
}

# Prints the newest PostgreSQL server bin directory, e.g. /usr/lib/postgresql/15/bin.
pg_bindir() {
    local d
    # shellcheck disable=SC2012 # version directories have plain names
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
        echo "$d"
    fi
}

ensure_postgres() {
    if [ -z "$(pg_bindir)" ]; then
        apt_install postgresql || return 1
    fi
    if [ -z "$(pg_bindir)" ]; then
        echo "test.sh: PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin" >&2
        return 1
    fi
}

ensure_python() {
    if ! command -v python3 >/dev/null; then
        apt_install python3 python3-venv || return 1
    fi
    # Debian's system python3 ships venv/ensurepip separately.
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv || return 1
    fi
}

# The venv is reused while it works and was built from the same requirements.
ensure_venv() {
    local req="$ROOT/tests/clients/requirements.txt"
    local wanted stamp="$HS_VENV/.hs-requirements"
    wanted="$(cat "$req" "$ROOT/tests/clients/constraints.txt")"
    if [ -x "$HS_VENV/bin/python" ] && "$HS_VENV/bin/python" -c 'import nio, pytest' >/dev/null 2>&1 &&
        [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
        return 0
    fi
    ensure_python
    if ! [ -x "$HS_VENV/bin/python" ] || ! "$HS_VENV/bin/python" -c 'pass' >/dev/null 2>&1; then
        log "creating venv $HS_VENV"
        rm -rf "$HS_VENV"
        mkdir -p "$(dirname "$HS_VENV")"
        python3 -m venv "$HS_VENV"
    fi
    log "pip install -r tests/clients/requirements.txt"
    "$HS_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    printf '%s' "$wanted" >"$stamp"
}

# Synapse gets a venv of its own (its pins differ from matrix-nio's), reused
# while it works and was built from the same requirements.
ensure_synapse_venv() {
    local req="$ROOT/tests/interop/requirements.txt"
    local wanted stamp="$HS_SYNAPSE_VENV/.hs-requirements"
    wanted="$(cat "$req" "$ROOT/tests/interop/constraints.txt")"
    if [ -x "$HS_SYNAPSE_VENV/bin/python" ] &&
        "$HS_SYNAPSE_VENV/bin/python" -c 'import synapse, pytest, signedjson' >/dev/null 2>&1 &&
        [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
        return 0
    fi
    ensure_python
    command -v openssl >/dev/null || apt_install openssl || return 1
    if ! [ -x "$HS_SYNAPSE_VENV/bin/python" ] || ! "$HS_SYNAPSE_VENV/bin/python" -c 'pass' >/dev/null 2>&1; then
        log "creating venv $HS_SYNAPSE_VENV"
        rm -rf "$HS_SYNAPSE_VENV"
        mkdir -p "$(dirname "$HS_SYNAPSE_VENV")"
        python3 -m venv "$HS_SYNAPSE_VENV"
    fi
    log "pip install -r tests/interop/requirements.txt"
    "$HS_SYNAPSE_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    printf '%s' "$wanted" >"$stamp"
}

# ---------------------------------------------------------------------------
# A private PostgreSQL cluster for this run

PG_DIR=""
PG_BIN=""
PG_USER=""
PG_PORT=""

# Runs a command as the cluster's owner (PostgreSQL refuses to run as root),
# from a directory that owner can read.
as_pg() {
    if [ -n "$PG_USER" ]; then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Clusters left behind by runs that were killed outright (no trap ran): each
# cluster dir records the pid of the test.sh that owns it.
reap_stale_clusters() {
    local dir owner
    for dir in /tmp/hs-pg.*; do
        [ -f "$dir/owner.pid" ] || continue
        owner="$(cat "$dir/owner.pid" 2>/dev/null || true)"
        if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then continue; fi
        echo "removing stale test cluster $dir" >&2
        if [ -f "$dir/data/postmaster.pid" ]; then
            as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        fi
        rm -rf "$dir"
    done
}

start_postgres() {
    PG_BIN="$(pg_bindir)"
    if [ "$(id -u)" -eq 0 ]; then
        PG_USER=postgres
        if ! id -u "$PG_USER" >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER" || return 1
        fi
    fi
    # This runs in a condition, where errexit is off: check each step.
    PG_DIR="$(mktemp -d /tmp/hs-pg.XXXXXX)" || return 1
    chmod 755 "$PG_DIR" || return 1
    if [ -n "$PG_USER" ]; then chown "$PG_USER" "$PG_DIR" || return 1; fi
    echo "$$" >"$PG_DIR/owner.pid" || return 1
    reap_stale_clusters

    log "initdb ($PG_BIN) in $PG_DIR"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log" >&2; return 1; }
    cat >>"$PG_DIR/data/postgresql.conf" <<EOF || return 1

# Tuned for throwaway test databases: durability off, many connections.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
log_min_messages = warning
EOF

    # Pick a free port; retry a few times in case another process takes it
    # between our check and the server's bind.
    local port=$((55432 + $$ % 1000)) attempt
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        while port_in_use "$port"; do port=$((port + 1)); done
        if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -o "-p $port" -w -t 60 start >/dev/null; then
            PG_PORT="$port"
            export HS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
            log "PostgreSQL listening on 127.0.0.1:$PG_PORT"
            return 0
        fi
        echo "PostgreSQL failed to start on port $port (attempt $attempt):" >&2
        tail -n 5 "$PG_DIR/server.log" >&2 || true
        port=$((port + 1))
    done
    return 1
}

stop_postgres() {
    [ -n "$PG_DIR" ] || return 0
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || {
            local pid
            pid="$(head -n1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true)"
            [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
        }
    fi
    rm -rf "$PG_DIR"
    PG_DIR=""
}

# ---------------------------------------------------------------------------
# An S3-compatible server for the media tests: S3Proxy (Apache-2.0), one
# self-contained jar from Maven Central, on its filesystem backend. Why this
# one: docs/media.md.

S3PROXY_VERSION=2.6.0
S3_DIR=""
S3_PID=""

s3proxy_jar() {
    echo "$HOME/.m2/repository/org/gaul/s3proxy/$S3PROXY_VERSION/s3proxy-$S3PROXY_VERSION-jar-with-dependencies.jar"
}

ensure_s3proxy() {
    [ -f "$(s3proxy_jar)" ] && command -v java >/dev/null && return 0
    if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
        apt_install openjdk-17-jre-headless maven || return 1
    fi
    log "mvn dependency:get org.gaul:s3proxy:$S3PROXY_VERSION (jar-with-dependencies)"
    mvn -q -B dependency:get -Dtransitive=false \
        -Dartifact="org.gaul:s3proxy:$S3PROXY_VERSION:jar:jar-with-dependencies" || return 1
    [ -f "$(s3proxy_jar)" ]
}

# S3Proxy servers left behind by runs that were killed outright.
reap_stale_s3proxies() {
    local dir owner pid
    for dir in /tmp/hs-s3.*; do
        [ -f "$dir/owner.pid" ] || continue
        owner="$(cat "$dir/owner.pid" 2>/dev/null || true)"
        if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then continue; fi
        pid="$(cat "$dir/server.pid" 2>/dev/null || true)"
        [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
        rm -rf "$dir"
    done
}

start_s3proxy() {
    reap_stale_s3proxies
    S3_DIR="$(mktemp -d /tmp/hs-s3.XXXXXX)" || return 1
    echo "$$" >"$S3_DIR/owner.pid" || return 1
    mkdir -p "$S3_DIR/data" || return 1
    local port=$((58000 + $$ % 1000)) i
    while port_in_use "$port"; do port=$((port + 1)); done
    printf '%s\n' \
        "s3proxy.endpoint=http://127.0.0.1:$port" \
        "s3proxy.authorization=aws-v2-or-v4" \
        "s3proxy.identity=hs-test" \
        "s3proxy.credential=hs-test-secret" \
        "jclouds.provider=filesystem-nio2" \
        "jclouds.identity=hs-test" \
        "jclouds.credential=hs-test-secret" \
        "jclouds.filesystem.basedir=$S3_DIR/data" >"$S3_DIR/s3proxy.conf" || return 1
    log "starting S3Proxy $S3PROXY_VERSION on 127.0.0.1:$port"
    java -Xmx256m -jar "$(s3proxy_jar)" --properties "$S3_DIR/s3proxy.conf" >"$S3_DIR/server.log" 2>&1 &
    S3_PID=$!
    echo "$S3_PID" >"$S3_DIR/server.pid"
    for i in $(seq 1 120); do
        if port_in_use "$port"; then
            export HS_TEST_S3_URL="http://127.0.0.1:$port"
            export HS_TEST_S3_ACCESS_KEY=hs-test HS_TEST_S3_SECRET_KEY=hs-test-secret
            return 0
        fi
        kill -0 "$S3_PID" 2>/dev/null || break
        sleep 0.5
    done
    echo "S3Proxy did not start:" >&2
    tail -n 20 "$S3_DIR/server.log" >&2 || true
    return 1
}

stop_s3proxy() {
    if [ -n "$S3_PID" ]; then
        kill "$S3_PID" 2>/dev/null || true
        wait "$S3_PID" 2>/dev/null || true
        S3_PID=""
    fi
    [ -z "$S3_DIR" ] || rm -rf "$S3_DIR"
    S3_DIR=""
}

# ---------------------------------------------------------------------------
# A single-node Apache Cassandra for the CQL timeline tests (scaleout step).
# ScyllaDB is not installable here; Cassandra 5 speaks the same CQL native
# protocol v4 the `scylla` driver uses. It runs from Maven Central's jars
# (cassandra-all and its runtime dependencies), not a tarball. docs/scale-out.md.

CASSANDRA_VERSION=5.0.9
CASSANDRA_HOME="$HOME/.cache/hs-cassandra"
CQL_DIR=""
CQL_PID=""

cassandra_lib() { echo "$CASSANDRA_HOME/lib-$CASSANDRA_VERSION"; }

# Cassandra 5.0 supports Java 11 and 17 (not newer); the flags below are 17's.
java17() {
    local j
    for j in /usr/lib/jvm/java-17-openjdk-*/bin/java; do
        [ -x "$j" ] && { echo "$j"; return 0; }
    done
    return 1
}

# The jars are fetched once into $CASSANDRA_HOME/lib-VERSION (Maven's own
# cache makes a refetch quick too); a stamp marks a complete copy.
ensure_cassandra() {
    local lib stamp
    lib="$(cassandra_lib)"
    stamp="$lib/.complete"
    [ -f "$stamp" ] && java17 >/dev/null && return 0
    if ! java17 >/dev/null || ! command -v mvn >/dev/null; then
        apt_install openjdk-17-jre-headless maven || return 1
    fi
    mkdir -p "$CASSANDRA_HOME" || return 1
    cat >"$CASSANDRA_HOME/pom.xml" <<EOF || return 1
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>hs.test</groupId>
  <artifactId>hs-cassandra</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
    log "mvn dependency:copy-dependencies org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION"
    rm -rf "$lib"
    (cd "$CASSANDRA_HOME" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$lib") || return 1
    touch "$stamp"
}

# Cassandra nodes left behind by runs that were killed outright.
reap_stale_cassandras() {
    local dir owner pid
    for dir in /tmp/hs-cql.*; do
        [ -f "$dir/owner.pid" ] || continue
        owner="$(cat "$dir/owner.pid" 2>/dev/null || true)"
        if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then continue; fi
        pid="$(cat "$dir/server.pid" 2>/dev/null || true)"
        [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
        rm -rf "$dir"
    done
}

# The module flags of Cassandra 5.0's conf/jvm17-server.options: Cassandra
# reaches into JDK internals (off-heap memory, direct buffers, JMX, reflection
# on the class loader), which Java 17 refuses unless opened explicitly.
CASSANDRA_JVM17_OPTS=(
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.base/jdk.internal.ref=ALL-UNNAMED
    --add-exports java.base/sun.nio.ch=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.nio=ALL-UNNAMED
    --add-opens java.base/java.util.concurrent=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.math=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens java.base/java.net=ALL-UNNAMED
)

free_port() {
    local port="$1"
    while port_in_use "$port"; do port=$((port + 1)); done
    echo "$port"
}

start_cassandra() {
    reap_stale_cassandras
    CQL_DIR="$(mktemp -d /tmp/hs-cql.XXXXXX)" || return 1
    echo "$$" >"$CQL_DIR/owner.pid" || return 1
    local storage native start
    storage="$(free_port $((47000 + $$ % 1000)))"
    native="$(free_port $((49042 + $$ % 1000)))"
    [ "$native" != "$storage" ] || native="$(free_port $((storage + 1)))"
    cat >"$CQL_DIR/cassandra.yaml" <<EOF || return 1
# A throwaway single node for the tests: loopback only, one token, no
# bootstrap, commit log synced in the background.
cluster_name: hs-test
num_tokens: 1
initial_token: 0
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $storage
native_transport_port: $native
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$storage"
data_file_directories: [$CQL_DIR/data]
commitlog_directory: $CQL_DIR/commitlog
saved_caches_directory: $CQL_DIR/saved_caches
hints_directory: $CQL_DIR/hints
cdc_raw_directory: $CQL_DIR/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
# Dropping a test keyspace need not snapshot it first.
auto_snapshot: false
EOF
    cat >"$CQL_DIR/logback.xml" <<EOF || return 1
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$CQL_DIR/server.log</file>
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level [%thread] %logger{20} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
EOF
    # Start-up shortcuts for a throwaway node: no gossip settling or ring delay
    # (there is no ring), a fixed memtable row overhead instead of a 4-second
    # estimate, and schema changes kept in the commit log without flushing
    # the schema tables each time (each test creates a keyspace).
    log "starting Cassandra $CASSANDRA_VERSION on 127.0.0.1:$native (storage port $storage)"
    start=$(date +%s%N)
    "$(java17)" -Xms512m -Xmx512m -Xss256k -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1 \
        -Djava.net.preferIPv4Stack=true \
        "${CASSANDRA_JVM17_OPTS[@]}" \
        -Dcassandra-foreground=yes \
        -Dcassandra.config="file://$CQL_DIR/cassandra.yaml" \
        -Dcassandra.storagedir="$CQL_DIR" \
        -Dlogback.configurationFile="$CQL_DIR/logback.xml" \
        -Dcassandra.skip_wait_for_gossip_to_settle=0 \
        -Dcassandra.ring_delay_ms=0 \
        -Dcassandra.superuser_setup_delay_ms=0 \
        -Dcassandra.memtable.row_overhead_size=180 \
        -Dcassandra.test.flush_local_schema_changes=false \
        -cp "$(cassandra_lib)/*" org.apache.cassandra.service.CassandraDaemon \
        >"$CQL_DIR/stdout.log" 2>&1 &
    CQL_PID=$!
    echo "$CQL_PID" >"$CQL_DIR/server.pid"
    for _ in $(seq 1 360); do
        if port_in_use "$native"; then
            export HS_TEST_CQL_URL="127.0.0.1:$native"
            log "Cassandra ready on $HS_TEST_CQL_URL after $((($(date +%s%N) - start) / 1000000)) ms"
            return 0
        fi
        kill -0 "$CQL_PID" 2>/dev/null || break
        sleep 0.5
    done
    echo "Cassandra did not start:" >&2
    tail -n 30 "$CQL_DIR/stdout.log" "$CQL_DIR/server.log" >&2 || true
    return 1
}

stop_cassandra() {
    if [ -n "$CQL_PID" ]; then
        kill "$CQL_PID" 2>/dev/null || true
        wait "$CQL_PID" 2>/dev/null || true
        CQL_PID=""
    fi
    [ -z "$CQL_DIR" ] || rm -rf "$CQL_DIR"
    CQL_DIR=""
}

# ---------------------------------------------------------------------------
# A 3-master Redis Cluster from Debian's redis-server (scaleout step).

REDIS_DIR=""
REDIS_PIDS=()

ensure_redis() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    apt_install redis-server redis-tools || return 1
}

# Redis Cluster nodes left behind by runs that were killed outright.
reap_stale_redis_clusters() {
    local dir owner pidfile pid
    for dir in /tmp/hs-redis.*; do
        [ -f "$dir/owner.pid" ] || continue
        owner="$(cat "$dir/owner.pid" 2>/dev/null || true)"
        if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then continue; fi
        for pidfile in "$dir"/*/redis.pid; do
            pid="$(cat "$pidfile" 2>/dev/null || true)"
            [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
        done
        rm -rf "$dir"
    done
}

# Three masters, no replicas: the smallest cluster that spreads the 16384 hash
# slots over several nodes, so clients must follow MOVED redirections.
start_redis_cluster() {
    reap_stale_redis_clusters
    REDIS_DIR="$(mktemp -d /tmp/hs-redis.XXXXXX)" || return 1
    echo "$$" >"$REDIS_DIR/owner.pid" || return 1
    local port=$((46379 + $$ % 1000)) addrs=() node
    for _ in 1 2 3; do
        # A cluster node also listens on port + 10000 for its bus.
        while port_in_use "$port" || port_in_use $((port + 10000)); do port=$((port + 1)); done
        node="$REDIS_DIR/$port"
        mkdir -p "$node" || return 1
        # In the foreground of a background job, so this script can wait for it.
        redis-server --bind 127.0.0.1 --port "$port" --dir "$node" \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
            --appendonly no --save '' --logfile "$node/redis.log" &
        REDIS_PIDS+=($!)
        echo "$!" >"$node/redis.pid" || return 1
        addrs+=("127.0.0.1:$port")
        port=$((port + 1))
    done
    for node in "${addrs[@]}"; do
        for _ in $(seq 1 50); do
            redis-cli -h 127.0.0.1 -p "${node#*:}" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    log "redis-cli --cluster create ${addrs[*]}"
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$REDIS_DIR/create.log" 2>&1 ||
        { cat "$REDIS_DIR/create.log" >&2; return 1; }
    # Wait until every node agrees the slots are covered.
    for _ in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p "${addrs[0]#*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
            HS_TEST_REDIS_CLUSTER="$(IFS=,; echo "${addrs[*]}")"
            export HS_TEST_REDIS_CLUSTER
            log "Redis Cluster ready: $HS_TEST_REDIS_CLUSTER"
            return 0
        fi
        sleep 0.1
    done
    echo "Redis Cluster did not reach cluster_state:ok" >&2
    return 1
}

stop_redis_cluster() {
    [ -n "$REDIS_DIR" ] || return 0
    local pid
    for pid in "${REDIS_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    REDIS_PIDS=()
    rm -rf "$REDIS_DIR"
    REDIS_DIR=""
}

cleanup() {
    local rc=$?
    stop_postgres || true
    stop_s3proxy || true
    stop_cassandra || true
    stop_redis_cluster || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Steps

RESULTS=()
FAILED=0

# run_step NAME FUNCTION: runs FUNCTION in a subshell with errexit, records the outcome.
run_step() {
    local name="$1" fn="$2" start rc
    log "step: $name"
    start=$(date +%s)
    set +e
    (set -e; "$fn")
    rc=$?
    set -e
    local secs=$(($(date +%s) - start))
    if [ "$rc" -eq 0 ]; then
        RESULTS+=("$(printf 'PASS  %-9s %4ss' "$name" "$secs")")
    else
        RESULTS+=("$(printf 'FAIL  %-9s %4ss  (exit %s)' "$name" "$secs" "$rc")")
        FAILED=$((FAILED + 1))
    fi
}

step_fmt() { cargo fmt --all -- --check; }

step_clippy() { cargo clippy --workspace --all-targets -- -D warnings; }

# --no-fail-fast: one failing test binary must not hide the others' results.
step_sqlite() { env -u HS_TEST_POSTGRES_URL cargo test --workspace --no-fail-fast; }

step_postgres() {
    [ -n "${HS_TEST_POSTGRES_URL:-}" ] || { echo "no PostgreSQL available" >&2; return 1; }
    echo "HS_TEST_POSTGRES_URL=$HS_TEST_POSTGRES_URL"
    cargo test --workspace --tests --no-fail-fast
}

# The CQL event log's conformance tests (homeserver/engine/tests/cql_timeline.rs)
# on the Cassandra node, then the storage conformance suite with the timeline's
# message bodies in the log (its `cql_*` variants; `cql_postgres` too when the
# postgres step's server is up); the Redis Cluster must answer with all slots
# covered. The `cql` feature is off in the clippy step, so its code is linted here.
step_scaleout() {
    [ -n "${HS_TEST_CQL_URL:-}" ] || { echo "no CQL node available" >&2; return 1; }
    [ -n "${HS_TEST_REDIS_CLUSTER:-}" ] || { echo "no Redis Cluster available" >&2; return 1; }
    echo "HS_TEST_CQL_URL=$HS_TEST_CQL_URL HS_TEST_REDIS_CLUSTER=$HS_TEST_REDIS_CLUSTER"
    redis-cli --cluster check "${HS_TEST_REDIS_CLUSTER%%,*}"
    cargo clippy -p hs-engine --features cql --all-targets -- -D warnings
    cargo clippy -p homeserver --features cql --bins -- -D warnings
    cargo test -p hs-engine --features cql --test cql_timeline --no-fail-fast
    cargo test -p hs-engine --features cql --test storage_conformance --no-fail-fast
    # Several instances on one PostgreSQL database and the Redis Cluster, and
    # three of them on the Cassandra timeline too (homeserver/tests/scaleout.rs);
    # a missing server fails them here.
    [ -n "${HS_TEST_POSTGRES_URL:-}" ] || { echo "no PostgreSQL available" >&2; return 1; }
    HS_TEST_SCALEOUT=1 cargo test -p homeserver --features cql --test scaleout --no-fail-fast
}

step_clients() {
    ensure_venv
    cargo build -p homeserver
    export HS_BINARY="${HS_BINARY:-$CARGO_TARGET_DIR/debug/homeserver}"
    [ -x "$HS_BINARY" ] || { echo "homeserver binary not found at $HS_BINARY" >&2; return 1; }
    local rc=0
    # No cache or bytecode files in the work tree.
    PYTHONDONTWRITEBYTECODE=1 "$HS_VENV/bin/python" -m pytest -p no:cacheprovider -v tests/clients || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "pytest collected no tests: counted as a failure" >&2
    fi
    return "$rc"
}

# One Synapse and one of our servers federate over TLS on loopback (a test CA
# made by the tests; tests/interop/conftest.py).
step_synapse() {
    ensure_synapse_venv
    cargo build -p homeserver
    export HS_BINARY="${HS_BINARY:-$CARGO_TARGET_DIR/debug/homeserver}"
    [ -x "$HS_BINARY" ] || { echo "homeserver binary not found at $HS_BINARY" >&2; return 1; }
    export HS_SYNAPSE_VENV
    local rc=0
    PYTHONDONTWRITEBYTECODE=1 "$HS_SYNAPSE_VENV/bin/python" -m pytest -p no:cacheprovider -v tests/interop || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "pytest collected no tests: counted as a failure" >&2
    fi
    return "$rc"
}

# Installs Go and Complement's dependencies itself if they are missing.
# Complement's own source cannot be installed here: the Go module proxy refuses
# github.com/matrix-org/complement (403 "not available"), and a copy fetched by
# other means may not be committed. The gate runs when a checkout is present at
# tests/complement/upstream (tests/complement/README.md) and says so otherwise.
step_complement() {
    if [ ! -d tests/complement/upstream/tests ]; then
        echo "complement: not run - no Complement checkout at tests/complement/upstream" >&2
        echo "  (the Go module proxy refuses github.com/matrix-org/complement; see tests/complement/README.md)" >&2
        return 0
    fi
    ./scripts/complement-gate.sh
}

# ---------------------------------------------------------------------------
# Main

ensure_rust

PG_SETUP_FAILED=0
# The scaleout step's multi-instance tests share one PostgreSQL database.
if { wants postgres || wants scaleout; } && [ -z "${HS_TEST_POSTGRES_URL:-}" ]; then
    if ! { ensure_postgres && start_postgres; }; then
        PG_SETUP_FAILED=1
    fi
fi

SCALEOUT_SETUP_FAILED=""
if wants scaleout; then
    if [ -z "${HS_TEST_CQL_URL:-}" ] && ! { ensure_cassandra && start_cassandra; }; then
        SCALEOUT_SETUP_FAILED="Cassandra did not start"
    fi
    if [ -z "${HS_TEST_REDIS_CLUSTER:-}" ] && ! { ensure_redis && start_redis_cluster; }; then
        SCALEOUT_SETUP_FAILED="${SCALEOUT_SETUP_FAILED:+$SCALEOUT_SETUP_FAILED; }Redis Cluster did not start"
    fi
fi

# The media tests run on both blob stores; under CI=true a missing S3 server
# fails them rather than skipping.
if { wants sqlite || wants postgres; } && [ -z "${HS_TEST_S3_URL:-}" ]; then
    if ! { ensure_s3proxy && start_s3proxy; }; then
        RESULTS+=("$(printf 'FAIL  %-9s %4ss  (S3Proxy did not start)' s3proxy 0)")
        FAILED=$((FAILED + 1))
    fi
fi

for step in "${ALL_STEPS[@]}"; do
    wants "$step" || continue
    if [ "$step" = postgres ] && [ "$PG_SETUP_FAILED" -eq 1 ]; then
        RESULTS+=("$(printf 'FAIL  %-9s %4ss  (PostgreSQL did not start)' postgres 0)")
        FAILED=$((FAILED + 1))
        continue
    fi
    if [ "$step" = scaleout ] && [ -n "$SCALEOUT_SETUP_FAILED" ]; then
        RESULTS+=("$(printf 'FAIL  %-9s %4ss  (%s)' scaleout 0 "$SCALEOUT_SETUP_FAILED")")
        FAILED=$((FAILED + 1))
        continue
    fi
    run_step "$step" "step_$step"
done

printf '\n==================== test summary ====================\n'
printf '%s\n' "${RESULTS[@]}"
printf 'steps: %d passed, %d failed\n' "$((${#RESULTS[@]} - FAILED))" "$FAILED"
[ "$FAILED" -eq 0 ]
