#!/usr/bin/env bash
# Install what the tests need on a fresh Debian/Ubuntu machine, then run the whole suite, integration
# tests included (they start their own throwaway PostgreSQL and Redis; they fail, never skip, when
# those cannot start). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if ((${#missing[@]})); then
    sudo=""
    [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

[[ -x .venv/bin/python ]] || "${PYTHON:-python3}" -m venv .venv
# torch first and pinned: that pin resolves to the CPU build in this machine's wheel store, while an
# unpinned torch would pull several gigabytes of CUDA packages.
.venv/bin/pip install torch==2.13.0
.venv/bin/pip install -e '.[test]'

# `exec` hands pytest's exit status straight to the caller (and so to CI). With no arguments pytest
# runs pyproject's testpaths (all of tests/); arguments narrow it (`scripts/test.sh tests/api -x`).
exec .venv/bin/python -m pytest "$@"
