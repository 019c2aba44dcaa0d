# Shared by scripts/complement.sh and scripts/complement-gate.sh (sourced).
# Provides: ROOT, HS_COMPLEMENT_DIR, CARGO_TARGET_DIR, log, ensure_go,
# ensure_complement_modules (checks for the Complement checkout first),
# build_homeserver, homeserver_rev.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HS_COMPLEMENT_DIR="$ROOT/tests/complement"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hs-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if [ -t 2 ]; then
    log() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
else
    log() { printf '\n==> %s\n' "$*" >&2; }
fi

# Go: the machine's, or Debian's golang-go. go.mod asks for Go 1.25; an older go
# fetches that toolchain through the module proxy by itself (GOTOOLCHAIN=auto).
ensure_go() {
    if ! command -v go >/dev/null; then
        if [ -x /usr/local/go/bin/go ]; then
            export PATH="/usr/local/go/bin:$PATH"
        else
            local sudo=""
            [ "$(id -u)" -eq 0 ] || sudo=sudo
            log "apt-get install golang-go"
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
                $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends golang-go ||
                { echo "complement: Go is missing and could not be installed" >&2; return 1; }
        fi
    fi
    if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
        echo "complement: unshare (util-linux) or ip (iproute2) missing: test processes will run one at a time" >&2
    fi
}

# Complement's own source must be checked out at tests/complement/upstream
# (the Go module proxy refuses it; see tests/complement/upstream.txt). Its
# dependencies come from the Go module proxy into the module cache (a no-op
# when cached).
ensure_complement_modules() {
    if [ ! -f "$HS_COMPLEMENT_DIR/upstream/tests/csapi/main_test.go" ]; then
        echo "complement: no Complement checkout at tests/complement/upstream." >&2
        echo "  The Go module proxy refuses github.com/matrix-org/complement; put a checkout of" >&2
        echo "  the commit named in tests/complement/upstream.txt there (instructions inside)." >&2
        return 1
    fi
    log "go mod download (tests/complement)"
    (cd "$HS_COMPLEMENT_DIR" && go mod download)
}

# Builds the homeserver and copies the binary to $1, so that a concurrent
# cargo build cannot swap it in the middle of a run.
build_homeserver() {
    log "cargo build -p homeserver"
    (cd "$ROOT" && cargo build -p homeserver)
    mkdir -p "$(dirname "$1")"
    cp "$CARGO_TARGET_DIR/debug/homeserver" "$1"
}

homeserver_rev() {
    git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown
}
