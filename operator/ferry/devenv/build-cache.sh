# shellcheck shell=bash
# Sourced by every script that builds pinned binaries from Go modules and caches them outside the
# repo: operator/ferry/devenv/control-plane-binaries.sh and vault-binary.sh,
# scripts/tool-binaries.sh, tests/tools/flagd-eval/build.sh. The sourcing script defines
# `fail MESSAGE` (prints with its own name, exits 1) before calling these functions.

# Where built binaries are cached: outside the repo, shared by every checkout on the machine.
FERRY_CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"

# require_go MIN_VERSION: a clear error (not "command not found") without a Go toolchain.
require_go() {
  command -v go >/dev/null 2>&1 \
    || fail "no Go toolchain on PATH: install Go >= $1 (https://go.dev/dl) and run again"
}

# build_lock DIR [SECONDS]: one builder at a time. A second caller waits (bounded) for the first
# instead of racing it; the lock (file descriptor 9) is held until the calling shell or subshell
# exits. Callers look for the binary again once they hold it: the first caller may have built it.
build_lock() {
  local dir=$1 seconds=${2:-3600}
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock -w "$seconds" 9 || fail "timed out after ${seconds}s waiting for another build holding $dir/.lock"
}
