#!/usr/bin/env bash
# Install the project into .venv from the lock: `scripts/install.sh runtime` (what the service needs,
# used by scripts/serve.sh) or `scripts/install.sh test` (that plus the test tools, scripts/test.sh).
# The versions are exactly those in requirements-<which>.lock (hash-checked); refresh them with
# scripts/lock.sh. STYLEGAN_VENV names another environment folder (the tests build throwaway ones).
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:?usage: scripts/install.sh runtime|test}
lock="requirements-${which}.lock"
[[ -f "$lock" ]] || { echo "scripts/install.sh: no lock $lock (runtime or test)" >&2; exit 2; }
venv=${STYLEGAN_VENV:-.venv}
# The CPU build: this exact pin resolves to it in this machine's wheel store, while an unpinned torch
# would pull several gigabytes of CUDA packages. Its dependencies come from the lock.
TORCH_PIN=torch==2.13.0

[[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip --quiet)
"${pip[@]}" install --require-hashes -r "$lock"
"${pip[@]}" install --no-deps "$TORCH_PIN"
"${pip[@]}" install --no-deps -e .
# Everything installed agrees with everything's declared requirements (a lock that misses one fails here).
"$venv/bin/python" -m pip check
