#!/usr/bin/env bash
# Install the service into .venv and start it on the embedded default (SQLite + embedded Redis +
# local storage, all under ./data): http://127.0.0.1:8000/docs. Extra arguments go to `stylegan serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ -x .venv/bin/python ]] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/pip install torch==2.13.0 -e .
exec .venv/bin/stylegan serve "$@"
