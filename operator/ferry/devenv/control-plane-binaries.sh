#!/usr/bin/env bash
# Build pinned kube-apiserver, kubectl and etcd from their Go modules and cache them outside the repo.
#
# Why build: no release download is reachable from these machines, but the Go module proxy is. This is
# what controller-runtime's envtest runs (etcd + kube-apiserver as local processes); we just produce
# the binaries ourselves. A second run is a cache hit and prints the directory at once.
#
# Usage: scripts/control-plane-binaries.sh        -> prints the bin directory on stdout
# Env:   FERRY_CACHE_DIR (default ~/.cache/ferry), K8S_VERSION, ETCD_VERSION
set -euo pipefail
# shellcheck source=build-cache.sh
# Its own directory without `dirname`: the scripts must give their clear "no Go" error even
# with a PATH that has nothing on it.
_here="${BASH_SOURCE[0]%/*}"; [[ "$_here" == "${BASH_SOURCE[0]}" ]] && _here=.
source "$_here/build-cache.sh"

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
OUT="$FERRY_CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BIN="$OUT/bin"

fail() { echo "control-plane-binaries: $*" >&2; exit 1; }

if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kubectl" && -x "$BIN/etcd" ]]; then
  echo "$BIN"
  exit 0
fi

require_go 1.24

mkdir -p "$BIN" "$OUT/src"
build_lock "$OUT"
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kubectl" && -x "$BIN/etcd" ]]; then
  echo "$BIN"
  exit 0
fi

start=$(date +%s)
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local

# --- kube-apiserver + kubectl: k8s.io/kubernetes with its staging modules replaced by published ones
K8S_MOD="$OUT/src/kubernetes"
mkdir -p "$K8S_MOD"
(
  cd "$K8S_MOD"
  minor="${K8S_VERSION#v1.}"                      # 36.3
  staging_version="v0.$minor"                     # v0.36.3
  if [[ ! -f go.mod ]]; then
    go mod init ferry.local/k8sbuild >/dev/null 2>&1
  fi
  gomod_file=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') \
    || fail "go mod download k8s.io/kubernetes@$K8S_VERSION failed: check the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))"
  staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod_file" | sort -u)
  [[ -n "$staging" ]] || fail "found no staging modules in $gomod_file"
  args=()
  for m in $staging; do args+=("-replace=$m=$m@$staging_version"); done
  go mod edit "${args[@]}"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy || fail "go mod tidy failed in $PWD (see output above)"
  echo "building kube-apiserver $K8S_VERSION (first build takes minutes)..." >&2
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver || fail "go build kube-apiserver failed (see output above)"
  echo "building kubectl $K8S_VERSION..." >&2
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$BIN/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl || fail "go build kubectl failed (see output above)"
) >&2

# --- etcd: a tiny main calling etcdmain.Main in its own module
ETCD_MOD="$OUT/src/etcd"
mkdir -p "$ETCD_MOD"
(
  cd "$ETCD_MOD"
  [[ -f go.mod ]] || go mod init ferry.local/etcdbuild >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy >/dev/null 2>&1 || go mod tidy || fail "go mod tidy failed in $PWD (see output above)"
  echo "building etcd $ETCD_VERSION..." >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" . || fail "go build etcd failed (see output above)"
) >&2

for b in kube-apiserver kubectl etcd; do mv "$BIN/$b.tmp" "$BIN/$b"; done
echo "built control-plane binaries in $(( $(date +%s) - start ))s into $BIN" >&2
echo "$BIN"
