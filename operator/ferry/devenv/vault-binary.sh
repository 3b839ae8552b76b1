#!/usr/bin/env bash
# Build a pinned Vault server (test/dev use only) from its Go modules and cache it outside the repo.
#
# Why this recipe (see docs/decisions/0015-secrets-from-vault.md and issue 16):
#  - no release download is reachable from these machines, but the Go module proxy is;
#  - github.com/hashicorp/vault's go.mod replaces ./api and ./sdk with in-tree copies, which a
#    dependency's replace directives cannot do, so a throwaway wrapper module requires the
#    *published* api/sdk/auth modules instead;
#  - v1.14.2 (MPL-2.0) is the release whose in-tree sdk matches a published one (sdk v0.9.2);
#    later 1.14.x/1.15.x fail to compile this way, and v1.14.9+ are BUSL-1.1;
#  - built with Go >= 1.23, the negative-serial X.509 check must be relaxed (see main.go below);
#  - published sdk v0.9.2 panics at the first request because one builtin path defines a
#    CreateOperation without an ExistenceCheck (the in-tree copy Vault was released with does
#    not have that check), so the check is removed in a *copy* of the cached module, used
#    through a replace directive (the module cache itself is never modified).
# It is a test server (dev mode, loopback): users point Ferry at their own Vault or OpenBao.
# A second run is a cache hit and prints the binary's path at once.
#
# Usage: operator/ferry/devenv/vault-binary.sh      -> prints the path of the vault binary on stdout
# Env:   FERRY_CACHE_DIR (default ~/.cache/ferry), FERRY_VAULT_BIN (use this binary instead)
set -euo pipefail
# shellcheck source=build-cache.sh
# Its own directory without `dirname`: the scripts must give their clear "no Go" error even
# with a PATH that has nothing on it.
_here="${BASH_SOURCE[0]%/*}"; [[ "$_here" == "${BASH_SOURCE[0]}" ]] && _here=.
source "$_here/build-cache.sh"

VAULT_VERSION="v1.14.2"
API_VERSION="v1.9.2"
SDK_VERSION="v0.9.2"
AUTH_K8S_VERSION="v0.4.1"
AUTH_APPROLE_VERSION="v0.1.0"
AUTH_USERPASS_VERSION="v0.1.0"
# Versions that `go mod tidy` must not drift away from (later ones do not compile with v1.14.2).
PINS=("go.opentelemetry.io/otel/exporters/otlp/otlptrace@v1.22.0" "dario.cat/mergo@v1.0.0")

OUT="$FERRY_CACHE/vault-$VAULT_VERSION"
BIN="$OUT/bin/vault"

fail() { echo "vault-binary: $*" >&2; exit 1; }

if [[ -n "${FERRY_VAULT_BIN:-}" ]]; then
  [[ -x "$FERRY_VAULT_BIN" ]] || fail "FERRY_VAULT_BIN=$FERRY_VAULT_BIN is not an executable file"
  echo "$FERRY_VAULT_BIN"
  exit 0
fi
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

require_go 1.23

mkdir -p "$OUT/bin" "$OUT/src"
build_lock "$OUT"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

start=$(date +%s)
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local

mod_dir() {  # module@version -> its directory in the module cache (downloading it if needed)
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' \
    || fail "go mod download $1 failed: check the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))"
}

(
  # --- the patched copy of sdk v0.9.2
  SDK_COPY="$OUT/src/sdk"
  if [[ ! -f "$SDK_COPY/.ferry-patched" ]]; then
    rm -rf "$SDK_COPY"
    cp -r "$(mod_dir "github.com/hashicorp/vault/sdk@$SDK_VERSION")" "$SDK_COPY"
    chmod -R u+w "$SDK_COPY"
    python3 - "$SDK_COPY/framework/backend.go" <<'PY' || fail "patching sdk framework/backend.go failed"
import re, sys
path = sys.argv[1]
src = open(path).read()
# The block starting at this comment up to the end of its `if p.ExistenceCheck == nil { ... }`.
pattern = re.compile(
    r"\n\t\t// Detect the coding error of attempting to define a CreateOperation without defining"
    r" an ExistenceCheck\n\t\tif p\.ExistenceCheck == nil \{\n.*?\n\t\t\}\n",
    re.S,
)
new, n = pattern.subn("\n", src, count=1)
if n != 1:
    sys.exit("expected CreateOperation/ExistenceCheck panic block not found in " + path)
open(path, "w").write(new)
PY
    touch "$SDK_COPY/.ferry-patched"
  fi

  # --- the wrapper module
  W="$OUT/src/wrapper"
  mkdir -p "$W"
  cd "$W"
  rm -f go.mod go.sum
  go mod init ferry.local/vaultbuild >/dev/null 2>&1
  cp "$(mod_dir "github.com/hashicorp/vault@$VAULT_VERSION")/go.sum" go.sum
  chmod u+w go.sum
  go mod edit \
    -require="github.com/hashicorp/vault@$VAULT_VERSION" \
    -require="github.com/hashicorp/vault/api@$API_VERSION" \
    -require="github.com/hashicorp/vault/sdk@$SDK_VERSION" \
    -require="github.com/hashicorp/vault/api/auth/kubernetes@$AUTH_K8S_VERSION" \
    -require="github.com/hashicorp/vault/api/auth/approle@$AUTH_APPROLE_VERSION" \
    -require="github.com/hashicorp/vault/api/auth/userpass@$AUTH_USERPASS_VERSION" \
    -replace="github.com/hashicorp/vault/sdk=$SDK_COPY"
  # go:debug: Go >= 1.23 rejects X.509 certificates with negative serial numbers by default, and
  # gosnowflake v1.6.24 (a Vault 1.14 database plugin) panics at start-up parsing its embedded CA
  # bundle without this setting; Vault was released with Go 1.20, which accepted them.
  cat > main.go <<'GO'
//go:debug x509negativeserial=1
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy || fail "go mod tidy failed in $PWD (see output above)"
  drifted=()
  for pin in "${PINS[@]}"; do
    mod="${pin%@*}" want="${pin#*@}"
    # Only a module go.mod requires (one whose packages are built) matters.
    have=$(awk -v m="$mod" '($1 == m) {print $2} ($1 == "require" && $2 == m) {print $3}' go.mod)
    if [[ -n "$have" && "$have" != "$want" ]]; then
      echo "vault-binary: go mod tidy chose $mod $have; pinning $want" >&2
      drifted+=("-require=$pin")
    fi
  done
  if (( ${#drifted[@]} )); then
    go mod edit "${drifted[@]}"
    go mod tidy >/dev/null 2>&1 || go mod tidy || fail "go mod tidy (after pinning) failed in $PWD"
  fi
  echo "building vault $VAULT_VERSION (first build takes minutes and about 4 GB of memory)..." >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" . || fail "go build vault failed (see output above)"
  "$BIN.tmp" version >&2 || fail "the built vault binary does not run"
) >&2

mv "$BIN.tmp" "$BIN"
echo "built vault $VAULT_VERSION in $(( $(date +%s) - start ))s into $BIN" >&2
echo "$BIN"
