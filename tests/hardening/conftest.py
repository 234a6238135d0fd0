"""The `stack` fixture (embedded and PostgreSQL + Redis) for the fault tests: tests/hardening/stacks.py."""

from tests.hardening.stacks import stack  # noqa: F401
