#!/usr/bin/env bash
# Runs Matrix's Complement conformance suite against the homeserver, without
# Docker, and regenerates docs/conformance.md from the results.
#
# Usage: ./scripts/complement.sh [--update-passing] [--jobs N] [--timeout DURATION]
#                               [--packages LIST] [--run REGEXP]
#
#   --update-passing  add every test that passed to tests/complement/passing.txt,
#                     the CI gate list (entries are never removed by the script)
#   --jobs N          test processes at once (default 4; they mostly wait on I/O)
#   --timeout D       wall-clock limit of the test run, a Go duration (default 28m)
#   --packages LIST   only these Complement packages, comma-separated
#                     (tests/csapi, tests, tests/msc2836, ...)
#   --run REGEXP      only top-level tests matching REGEXP
#
# With --packages or --run the run is partial: its report is written to the
# results directory instead of docs/conformance.md.
#
# Results (go test -json per test process, server logs of failed tests) go to
# $CARGO_TARGET_DIR/complement/full. Needs root for unshare; see
# tests/complement/README.md for how the harness works.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../tests/complement/lib.sh"

JOBS=4
TIMEOUT=28m
PACKAGES=""
RUN=""
UPDATE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --update-passing) UPDATE=1 ;;
        --jobs) JOBS="$2"; shift ;;
        --timeout) TIMEOUT="$2"; shift ;;
        --packages) PACKAGES="$2"; shift ;;
        --run) RUN="$2"; shift ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "complement.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

OUT="$CARGO_TARGET_DIR/complement/full"
REPORT="$ROOT/docs/conformance.md"
if [ -n "$PACKAGES$RUN" ]; then
    REPORT="$OUT.md"
fi

ensure_go
ensure_complement_modules
BINARY="$CARGO_TARGET_DIR/complement/homeserver-full"
build_homeserver "$BINARY"

log "complement: whole suite (jobs $JOBS, limit $TIMEOUT)"
args=(run -root "$HS_COMPLEMENT_DIR" -binary "$BINARY" -out "$OUT" -jobs "$JOBS" -timeout "$TIMEOUT"
    -report "$REPORT" -homeserver-rev "$(homeserver_rev)" -passing "$HS_COMPLEMENT_DIR/passing.txt")
[ -z "$PACKAGES" ] || args+=(-packages "$PACKAGES")
[ -z "$RUN" ] || args+=(-run "$RUN")
[ -z "$UPDATE" ] || args+=(-update-passing)
cd "$HS_COMPLEMENT_DIR"
go run ./cmd/hscomplement "${args[@]}"
