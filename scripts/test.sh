#!/usr/bin/env bash
# Install what the tests need on a fresh Debian/Ubuntu machine, then run the whole suite, integration
# tests included (they start their own throwaway PostgreSQL and Redis; they fail, never skip, when
# those cannot start). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v docker-compose >/dev/null || missing+=(docker-compose)
# The browser tests (tests/browser) drive Debian's chromium through Playwright; no `playwright install`.
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
    sudo=""
    [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The test lock: the runtime lock's versions plus the test tools (scripts/install.sh says how).
scripts/install.sh test

# Lint, format and types first: each is seconds, and a failure here names the line at once.
.venv/bin/ruff check gan worker api tests bench scripts
.venv/bin/ruff format --check gan worker api tests bench scripts
.venv/bin/mypy  # [tool.mypy] in pyproject.toml: --strict over gan, worker and api

# `exec` hands pytest's exit status straight to the caller (and so to CI). With no arguments pytest
# runs pyproject's testpaths (all of tests/); arguments narrow it (`scripts/test.sh tests/api -x`).
exec .venv/bin/python -m pytest "$@"
