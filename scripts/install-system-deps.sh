#!/usr/bin/env bash
# Install the system packages Ferry's local stack needs (Debian): PostgreSQL server and Redis.
# Idempotent and quick when they are already there. The Go toolchain is expected on PATH (the
# control-plane binaries are built with it); we check and say so clearly.
set -euo pipefail

need=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)

if ((${#need[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "install-system-deps: missing ${need[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
  fi
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "install-system-deps: installing ${need[*]} from Debian's packages..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
  echo "install-system-deps: no Go toolchain on PATH; the control-plane binaries are built from Go modules: install Go >= 1.24" >&2
  exit 1
fi
