#!/usr/bin/env bash
# The Complement regression gate: runs the tests listed in
# tests/complement/passing.txt (every Complement test and subtest that passes
# today) and fails if any of them does not pass. scripts/test.sh runs it as
# its last step, `complement`.
#
# Usage: ./scripts/complement-gate.sh [--jobs N] [--timeout DURATION]
#
# Results go to $CARGO_TARGET_DIR/complement/gate (go test -json per test
# process; server logs of failed tests under logs/).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../tests/complement/lib.sh"

JOBS=4
TIMEOUT=12m
while [ $# -gt 0 ]; do
    case "$1" in
        --jobs) JOBS="$2"; shift ;;
        --timeout) TIMEOUT="$2"; shift ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "complement-gate.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

ensure_go
ensure_complement_modules
BINARY="$CARGO_TARGET_DIR/complement/homeserver-gate"
build_homeserver "$BINARY"

log "complement gate: tests/complement/passing.txt (jobs $JOBS, limit $TIMEOUT)"
cd "$HS_COMPLEMENT_DIR"
go run ./cmd/hscomplement gate -root "$HS_COMPLEMENT_DIR" -binary "$BINARY" \
    -out "$CARGO_TARGET_DIR/complement/gate" -jobs "$JOBS" -timeout "$TIMEOUT" \
    -passing "$HS_COMPLEMENT_DIR/passing.txt"
