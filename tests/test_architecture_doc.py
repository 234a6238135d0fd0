"""docs/ARCHITECTURE.md names real things: every module path in its tables exists, and every
function, class or constant it names in a row (`JobState`, `claim()`, `make_celery(settings)`) is
defined in that row's modules. Read from the source; nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
# What a reader would look up: a call `name()` / `name(args)`, or a class or constant (`JobState`,
# `QUEUES`); lower-case words are option values and parameters (`lrelu`, `coarse`), not definitions.
NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\(.*\)$|^([A-Z][A-Za-z0-9_]*[A-Za-z0-9])$")


def rows() -> list[tuple[list[Path], list[str]]]:
    found = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        paths: list[Path] = []
        for spec in re.findall(r"`([^`]+)`", cells[0]):
            # `gan/stylegan2/{mapping,synthesis}.py` names several files.
            if (braces := re.search(r"\{([^}]+)\}", spec)) is not None:
                paths += [ROOT / spec.replace(braces.group(0), part) for part in braces.group(1).split(",")]
            else:
                paths += [ROOT / spec.rstrip("/")]
        names = [m.group(1) or m.group(2) for t in re.findall(r"`([^`]+)`", cells[1]) if (m := NAME.match(t))]
        found.append((paths, names))
    return found


def defined(path: Path) -> set[str]:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    names: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.ImportFrom):  # offered by the module, defined elsewhere
                names |= {alias.asname or alias.name for alias in node.names}
    return names


ROWS = rows()


def test_the_doc_has_tables_to_check() -> None:
    assert len(ROWS) > 20


@pytest.mark.parametrize(("paths", "names"), ROWS, ids=[" ".join(p.name for p in r[0]) for r in ROWS])
def test_each_row_names_existing_modules_and_definitions(paths: list[Path], names: list[str]) -> None:
    missing_paths = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert not missing_paths, f"no such module: {missing_paths}"
    available = set().union(*(defined(p) for p in paths))
    missing = [n for n in names if n not in available and n not in {"True", "False", "None"}]
    assert not missing, f"{[str(p.relative_to(ROOT)) for p in paths]} define none of {missing}"
