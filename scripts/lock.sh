#!/usr/bin/env bash
# Refresh the locks that every install reads (scripts/install.sh, the Dockerfiles): the exact versions,
# with hashes, of everything pyproject.toml needs on Linux x86_64 / CPython 3.11.
#   requirements-runtime.lock   what `stylegan serve` needs (the service, no test tools)
#   requirements-test.lock      the same plus the `test` extra
# torch itself is left out of both (--no-emit-package): it is pinned in scripts/install.sh, where the
# CPU build is chosen, while a CUDA image keeps its own build. Its dependencies are locked like any other.
# Needs uv (`pip install uv`). Run it after changing pyproject.toml's dependencies, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==${TORCH_VERSION}" >"$constraints"
common=(
    --python-version 3.11 --python-platform x86_64-manylinux_2_28
    --generate-hashes --no-emit-package torch --quiet --custom-compile-command scripts/lock.sh
    # Resolve torch's dependencies against the CPU build the install step will take (no CUDA packages).
    --constraint "$constraints"
)
# A wheel folder the machine's pip is pointed at (PIP_FIND_LINKS) holds that CPU build; uv reads no pip
# configuration, so it is passed on.
[[ -n "${PIP_FIND_LINKS:-}" ]] && common+=(--find-links "$PIP_FIND_LINKS")

uv pip compile pyproject.toml "${common[@]}" -o requirements-runtime.lock
# The test lock keeps the runtime lock's versions, so the tests run what a user's service gets.
uv pip compile pyproject.toml --extra test "${common[@]}" --constraint requirements-runtime.lock -o requirements-test.lock
echo "locked: $(grep -c '==' requirements-runtime.lock) runtime, $(grep -c '==' requirements-test.lock) test packages"
