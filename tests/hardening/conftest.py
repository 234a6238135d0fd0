"""Fixtures of the hardening tests: `stack` (embedded and PostgreSQL + Redis, tests/hardening/stacks.py)
for the fault tests, and the API tests' `make_client` (in-process apps on migrated SQLite files)."""

from tests.api.conftest import make_client  # noqa: F401
from tests.hardening.stacks import stack  # noqa: F401
