#!/usr/bin/env bash
# Regenerate requirements.lock, what the image installs (pip --require-hashes): every runtime
# dependency of pyproject.toml and its build requirements ([build-system] requires, so ferry
# itself builds without fetching anything unpinned), with the hashes of every file on PyPI.
#
# uv's universal resolution keeps environment markers, so the lock is right for any Python 3.11.x
# (e.g. redis needs async-timeout below 3.11.3: Debian bookworm has 3.11.2, python:3.11-slim
# newer); pip-compile would resolve for the Python it runs on only.
#
# Usage: scripts/lock-requirements.sh      (needs PyPI; takes about a minute)
set -euo pipefail

UV_VERSION=0.13.9
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
python3 - "$REPO/pyproject.toml" > "$tmp/build-requirements.in" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
PY
cd "$REPO"
"$tmp/venv/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
  --no-annotate --custom-compile-command "scripts/lock-requirements.sh" \
  --output-file requirements.lock pyproject.toml "$tmp/build-requirements.in"
echo "lock-requirements: wrote requirements.lock" >&2
