"""The import contract, read from the source (no module is imported): dependencies point one way,
gan <- worker <- api; inside worker/ they follow settings -> db -> job kinds -> jobs -> tasks -> celery
app -> runner; no module takes part in a cycle; and project modules are imported at the top of a module,
where a reader sees them, not inside functions where they hide cycles.

A function-level import is allowed only for a heavy third-party module on a start-up path, and the
`stylegan` command (api/cli.py, gan/cli.py, gan/commands/) defers even project modules so that `--help`
stays quick. `if TYPE_CHECKING:` blocks are type hints only and are not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gan", "worker", "api")
# Which top-level packages each may import.
ALLOWED = {"gan": {"gan"}, "worker": {"gan", "worker"}, "api": {"gan", "worker", "api"}}
# Command-line entry points: their handlers import what they need when they run.
LAZY_ENTRY_POINTS = ("api/cli.py", "gan/cli.py", "gan/commands/")
# Inside worker/: a module may import modules of its own layer or of layers listed before it.
WORKER_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "settings",
        (
            "worker.settings",
            "worker.embedded",
            "worker.supervisor",
            "worker.net",
            "worker.storage",
            "worker.catalog",
            "worker.devices",
            "worker.wire",
        ),
    ),
    ("db", ("worker.db", "worker.events", "worker.webhooks", "worker.artifacts", "worker.directions")),
    ("job kinds", ("worker.job_kinds",)),
    ("jobs", ("worker.jobs", "worker.presence")),
    (
        "tasks",
        (
            "worker.tasks",
            "worker.inference",
            "worker.model_import",
            "worker.inspect_model",
            "worker.demo_model",
        ),
    ),
    ("celery app", ("worker.celery_app", "worker.health")),
    ("runner", ("worker.runner", "worker.__main__")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


MODULES = project_modules()


def resolve(name: str) -> str | None:
    """The project module an imported name refers to (`worker.jobs.JobState` -> `worker.jobs`)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> Iterator[tuple[str, bool, int]]:
    """(imported project module, imported inside a function?, line) for each project import."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool, int]]:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if (target := resolve(alias.name)) is not None:
                        yield target, in_function, child.lineno
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1] + ([base] if base else []))
                for alias in child.names:
                    target = resolve(f"{base}.{alias.name}") or resolve(base)
                    if target is not None:
                        yield target, in_function, child.lineno
            yield from visit(child, nested)

    yield from visit(tree, False)


GRAPH = {name: list(imports(path)) for name, path in MODULES.items()}


def layer_of(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(WORKER_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def test_packages_import_only_downwards() -> None:
    wrong = [
        f"{module}:{line} imports {target}"
        for module, edges in GRAPH.items()
        for target, _, line in edges
        if target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert not wrong, "gan <- worker <- api only:\n" + "\n".join(wrong)


def test_every_worker_module_has_a_layer() -> None:
    assert [m for m in MODULES if m.startswith("worker") and m != "worker" and layer_of(m) is None] == []


def test_worker_layers_import_only_their_own_or_lower_layers() -> None:
    wrong = []
    for module, edges in GRAPH.items():
        here = layer_of(module)
        if here is None:
            continue
        for target, _, line in edges:
            there = layer_of(target)
            if target.startswith("worker") and (there is None or there > here):
                wrong.append(f"{module} ({WORKER_LAYERS[here][0]}):{line} imports {target}")
    assert not wrong, "settings -> db -> job kinds -> jobs -> tasks -> celery app -> runner:\n" + "\n".join(
        wrong
    )


def test_project_imports_sit_at_the_top_of_modules() -> None:
    lazy = [
        f"{module}:{line} imports {target} inside a function"
        for module, edges in GRAPH.items()
        if not str(MODULES[module].relative_to(ROOT)).startswith(LAZY_ENTRY_POINTS)
        for target, in_function, line in edges
        if in_function
    ]
    assert not lazy, "move these to the top (a cycle they hide is the bug):\n" + "\n".join(lazy)


def test_no_module_is_part_of_an_import_cycle() -> None:
    """Tarjan's strongly connected components over every project import, deferred ones included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _, _ in GRAPH[node]:
            if target == node:
                continue
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            connect(node)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_parses(module: str) -> None:
    ast.parse(MODULES[module].read_text())
