#!/usr/bin/env bash
# Build flagd-eval (flagd's Go evaluator behind a JSON-lines main) and cache it outside the repo.
#
# Why: Ferry's answers under the flagd-v2 bucketing generation must equal flagd's Go evaluator's,
# and the only way to get that evaluator here is its Go module, built with the machine's Go from
# the module proxy at the version go.mod pins (github.com/open-feature/flagd/core). Same pattern
# as operator/ferry/devenv/control-plane-binaries.sh: file-locked, a cache hit prints the binary
# at once. The cache directory is keyed by the content of main.go, go.mod and go.sum, so editing
# the tool or moving the pin rebuilds it.
#
# Usage: tests/tools/flagd-eval/build.sh   -> prints the binary's path on stdout
# Env:   FERRY_CACHE_DIR (default ~/.cache/ferry)
set -euo pipefail
# shellcheck source=../../../operator/ferry/devenv/build-cache.sh
# Its own directory without `dirname`: the scripts must give their clear "no Go" error even
# with a PATH that has nothing on it.
_here="${BASH_SOURCE[0]%/*}"; [[ "$_here" == "${BASH_SOURCE[0]}" ]] && _here=.
source "$_here/../../../operator/ferry/devenv/build-cache.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CORE_VERSION="$(awk '{for (i = 1; i < NF; i++) if ($i == "github.com/open-feature/flagd/core") {print $(i + 1); exit}}' "$HERE/go.mod")"
KEY="$(for f in main.go go.mod go.sum; do if [[ -f "$HERE/$f" ]]; then cat "$HERE/$f"; fi; done | sha256sum | cut -c1-12)"
OUT="$FERRY_CACHE/flagd-eval-core-$CORE_VERSION-$KEY"
BIN="$OUT/bin/flagd-eval"

fail() { echo "flagd-eval build: $*" >&2; exit 1; }

[[ -n "$CORE_VERSION" ]] || fail "go.mod in $HERE requires no github.com/open-feature/flagd/core version"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

require_go 1.25

mkdir -p "$OUT/bin" "$OUT/src"
build_lock "$OUT" 1800
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

start=$(date +%s)
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=mod"
cp "$HERE/main.go" "$HERE/go.mod" "$OUT/src/"
if [[ -f "$HERE/go.sum" ]]; then cp "$HERE/go.sum" "$OUT/src/"; fi
(
  cd "$OUT/src"
  echo "building flagd-eval with github.com/open-feature/flagd/core $CORE_VERSION (first build takes a minute or more)..." >&2
  go mod tidy >/dev/null 2>&1 || go mod tidy \
    || fail "go mod tidy failed in $PWD: check the Go module proxy is reachable (GOPROXY=$(go env GOPROXY)) and serves github.com/open-feature/flagd/core@$CORE_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" . || fail "go build failed in $PWD (see output above)"
) >&2
mv "$BIN.tmp" "$BIN"
echo "built flagd-eval in $(( $(date +%s) - start ))s into $BIN" >&2
echo "$BIN"
