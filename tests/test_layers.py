"""The workbench's layers point one way and no module imports itself back, function-local imports included.

Layers, lowest first (CONTRIBUTING.md): shared leaves at the root of `training/` -> data -> model -> batches ->
the methods (sft, dpo, eval, serve, hub) -> demo -> cli. A module may import its own room and any room of a lower
layer, never a higher one nor a sibling room of its own layer (leaves excepted: the circle test keeps them apart).
`test_payload_imports.py` holds the payload's rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parents[1] / "training"
PACKAGE = "framelm.training"
LAYERS = {  # room -> layer; a root module is its own room
    "errors": 0, "env": 0, "atomic_write": 0, "run_record": 0, "launch": 0, "recipe": 0,
    "data": 1,
    "model": 2,
    "batches": 3,
    "sft": 4, "dpo": 4, "eval": 4, "serve": 4, "hub": 4,
    "demo": 5,
    "cli": 6,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(TRAINING).with_suffix("").parts
    return ".".join((PACKAGE, *parts[:-1])) if parts[-1] == "__init__" else ".".join((PACKAGE, *parts))


MODULES = {module_name(path): path for path in sorted(TRAINING.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The framelm.training modules `name` imports anywhere in its file (module level, in functions, TYPE_CHECKING)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([node.module] if node.module else []))
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in MODULES and c != name)
    return found


def room(name: str) -> str:
    return name.removeprefix(PACKAGE + ".").split(".")[0]


def test_every_room_has_a_layer():
    assert sorted({room(name) for name in MODULES if name != PACKAGE} - set(LAYERS)) == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != PACKAGE))
def test_imports_point_down(name):
    here = room(name)
    wrong = sorted(
        target
        for target in imports_of(name)
        if room(target) != here and LAYERS[room(target)] >= LAYERS[here] > 0  # leaves may use each other
    )
    assert wrong == [], f"{name} (layer {LAYERS[here]}) imports up or sideways: {wrong}"


def test_no_import_circles():
    graph = {name: imports_of(name) for name in MODULES}
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                circles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)
