#!/usr/bin/env bash
# Build the packaging and test tools from their Go modules and cache them outside the repo:
#   helm       helm.sh/helm/v3/cmd/helm           (charts/ferry: lint, template, package)
#   kustomize  sigs.k8s.io/kustomize/kustomize/v5  (manifests/)
#   kstatus    tests/tools/kstatus                 (kstatus's verdict on objects, for the tests)
#
# Why build: no release download is reachable from these machines, but the Go module proxy is
# (the same reasoning as operator/ferry/devenv/control-plane-binaries.sh, whose pattern this
# follows: explicit versions, one builder at a time under a file lock, a cache hit in well under a
# second).
#
# Usage: scripts/tool-binaries.sh [helm|kustomize|kstatus ...]   (default: all three)
#        -> prints the path of each binary asked for, one per line, in that order
# Env:   FERRY_CACHE_DIR (default ~/.cache/ferry), HELM_VERSION, KUSTOMIZE_VERSION
set -euo pipefail
# shellcheck source=../operator/ferry/devenv/build-cache.sh
# Its own directory without `dirname`: the scripts must give their clear "no Go" error even
# with a PATH that has nothing on it.
_here="${BASH_SOURCE[0]%/*}"; [[ "$_here" == "${BASH_SOURCE[0]}" ]] && _here=.
source "$_here/../operator/ferry/devenv/build-cache.sh"

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"   # v5.8.3 needs a newer Go than 1.26
CACHE="$FERRY_CACHE"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KSTATUS_SRC="$REPO/tests/tools/kstatus"

fail() { echo "tool-binaries: $*" >&2; exit 1; }

# The binary each tool is cached as. kstatus is keyed by its sources, so editing them rebuilds it.
target() {
  case "$1" in
    helm) echo "$CACHE/helm-$HELM_VERSION/helm" ;;
    kustomize) echo "$CACHE/kustomize-$KUSTOMIZE_VERSION/kustomize" ;;
    kstatus)
      local key
      key=$(cat "$KSTATUS_SRC/go.mod" "$KSTATUS_SRC/go.sum" "$KSTATUS_SRC/main.go" | sha256sum)
      echo "$CACHE/kstatus-${key:0:16}/kstatus" ;;
    *) fail "unknown tool '$1' (known: helm kustomize kstatus)" ;;
  esac
}

go_install() {  # $1: output path, $2: package@version, $3: ldflags
  # `go install pkg@version` builds with the module's own go.mod (exactly what its authors pin);
  # it installs under GOBIN, so into a scratch directory first and then to $1.
  local gobin pkg="${2%@*}" name
  name=$(basename "$pkg")
  [[ "$name" =~ ^v[0-9]+$ ]] && name=$(basename "$(dirname "$pkg")")  # .../kustomize/v5 -> kustomize
  gobin="$(dirname "$1")/.gobin"
  rm -rf "$gobin"
  GOBIN="$gobin" go install -trimpath -ldflags "$3" "$2" || fail "go install $2 failed (see output above)"
  mv "$gobin/$name" "$1"
  rm -rf "$gobin"
}

build_helm() {  # $1: output path
  # helm's own Makefile sets these: its version, and the Kubernetes version `helm template` and
  # `helm lint` assume without a cluster (the variables default to 1.20; the Makefile derives
  # them from the k8s.io/client-go helm is built with, v0.37.x -> 1.37, and so do we).
  local gomod client_go minor
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') \
    || fail "go mod download helm.sh/helm/v3@$HELM_VERSION failed: check the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))"
  client_go=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")
  [[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || fail "cannot read k8s.io/client-go's version from $gomod"
  minor="${BASH_REMATCH[1]}"
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  echo "building helm $HELM_VERSION (Kubernetes 1.$minor assumed offline; first build takes minutes)..." >&2
  go_install "$1" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$ldflags"
}

build_kustomize() {
  echo "building kustomize $KUSTOMIZE_VERSION..." >&2
  go_install "$1" "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" "-s -w"
}

build_kstatus() {
  echo "building kstatus (tests/tools/kstatus)..." >&2
  # Built from a copy: the module cache and build output stay out of the repository.
  local src
  src="$(dirname "$1")/src"
  rm -rf "$src" && mkdir -p "$src"
  cp "$KSTATUS_SRC/go.mod" "$KSTATUS_SRC/go.sum" "$KSTATUS_SRC/main.go" "$src/"
  (cd "$src" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$1" .) \
    || fail "go build in tests/tools/kstatus failed (see output above)"
}

ensure() {  # $1: tool; prints its path, building it once
  local bin dir start
  bin=$(target "$1")
  if [[ -x "$bin" ]]; then echo "$bin"; return; fi
  require_go 1.26
  dir=$(dirname "$bin")
  mkdir -p "$dir"
  (
    build_lock "$dir"
    [[ -x "$bin" ]] && exit 0
    start=$(date +%s)
    export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=
    "build_$1" "$bin.tmp"
    mv "$bin.tmp" "$bin"
    echo "built $1 in $(( $(date +%s) - start ))s into $bin" >&2
  ) >&2
  echo "$bin"
}

tools=("$@")
((${#tools[@]})) || tools=(helm kustomize kstatus)
for tool in "${tools[@]}"; do
  ensure "$tool"
done
