"""The locks that every install reads cover pyproject.toml's dependencies (a dependency added to
pyproject without `scripts/lock.sh` would otherwise fail `pip check` only at install time)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Pinned in scripts/install.sh rather than in the locks (the CPU build here, a CUDA image's own there).
INSTALLED_APART = {"torch"}


def pinned(lock: str) -> dict[str, str]:
    text = (ROOT / f"requirements-{lock}.lock").read_text()
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)
    }


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("runtime", PYPROJECT["project"]["dependencies"]),
        (
            "test",
            PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"],
        ),
    ],
)
def test_every_dependency_is_locked_at_a_version_it_accepts(lock: str, requirements: list[str]) -> None:
    versions = pinned(lock)
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name in INSTALLED_APART:
            assert name not in versions, f"{name} is installed apart and must stay out of {lock}.lock"
            continue
        assert name in versions, f"{requirement.name} is not in requirements-{lock}.lock: run scripts/lock.sh"
        assert requirement.specifier.contains(versions[name], prereleases=True), (
            f"{lock}.lock pins {name}=={versions[name]}, outside {requirement.specifier}: run scripts/lock.sh"
        )


def test_every_locked_line_is_hash_checked() -> None:
    for lock in ("runtime", "test"):
        text = (ROOT / f"requirements-{lock}.lock").read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9._-]+==)", text.split("\n", 2)[2])
        assert blocks and all("--hash=sha256:" in block for block in blocks), f"{lock}.lock has unhashed pins"


def test_the_runtime_lock_is_the_test_locks_subset_at_the_same_versions() -> None:
    """So the tests run the versions a user's service gets."""
    runtime, test = pinned("runtime"), pinned("test")
    assert {name: test.get(name) for name in runtime} == runtime
