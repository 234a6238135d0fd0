#!/usr/bin/env bash
# Install the service into .venv (runtime lock, no test tools) and start it on the embedded default
# (SQLite + embedded Redis + local storage, all under ./data): http://127.0.0.1:8000/docs.
# Extra arguments go to `stylegan serve` (`scripts/serve.sh --port 8080 --data-dir /srv/stylegan`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh runtime
exec "${STYLEGAN_VENV:-.venv}/bin/stylegan" serve "$@"
