"""The Hub payload rule, checked on the source: `modeling/` and `processing/` import only what a saved folder can
resolve where framelm is not installed (see STYLE.md, "The one important rule")."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD_DIRS = ("modeling", "processing")
# `transformers.modeling_outputs` is documented public API (the "Model outputs" reference page), unlike models.*
ALLOWED_ROOTS = {"torch", "numpy"}  # with their submodules (torch.nn, ...)
ALLOWED_TRANSFORMERS = {"transformers", "transformers.modeling_outputs"}
LAZY_MEDIA = {"PIL", "av", "decord", "fsspec"}  # imported inside the function that uses them, never at module level


def payload_files() -> list[Path]:
    return sorted(p for d in PAYLOAD_DIRS for p in (ROOT / d).glob("*.py") if p.name != "__init__.py")


def top_module(name: str) -> str:
    return name.split(".")[0]


def import_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    siblings = {p.stem for p in path.parent.glob("*_framelm.py")}
    module_level = set(tree.body)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                problems.append(f"line {node.lineno}: `from {'.' * node.level}{node.module or ''}` leaves the folder")
                continue
            if node.level == 1:
                if node.module is None:
                    problems.append(f"line {node.lineno}: `from . import` is not followed by the Hub loader")
                elif node.module not in siblings:
                    problems.append(f"line {node.lineno}: `.{node.module}` is not a sibling *_framelm.py file")
                continue
            names = [node.module]
        else:
            continue
        for name in names:
            root = top_module(name)
            if root in sys.stdlib_module_names or root == "__future__":
                continue
            if root in LAZY_MEDIA:
                if node in module_level:
                    problems.append(f"line {node.lineno}: {name} must be imported inside the function using it")
                continue
            if root not in ALLOWED_ROOTS and name not in ALLOWED_TRANSFORMERS:
                problems.append(f"line {node.lineno}: imports {name}, which the payload may not use")
    return problems


@pytest.mark.parametrize("path", payload_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_payload_file_imports_only_what_a_hub_folder_resolves(path):
    assert import_problems(path) == []


def test_payload_file_names_are_suffixed_and_unique_across_folders():
    names = [p.name for p in payload_files()]
    assert all(name.endswith("_framelm.py") for name in names), names
    assert len(names) == len(set(names))


def test_the_checker_catches_each_kind_of_violation(tmp_path):
    bad = tmp_path / "bad_framelm.py"
    (tmp_path / "good_framelm.py").write_text("")
    bad.write_text(
        "import framelm\nfrom ..training import x\nfrom . import good_framelm\nfrom .nope import y\n"
        "from transformers.models.llava import modeling_llava\nimport PIL\nfrom .good_framelm import z\n"
        "def f():\n    import av\n"
    )
    assert import_problems(bad) == [
        "line 1: imports framelm, which the payload may not use",
        "line 2: `from ..training` leaves the folder",
        "line 3: `from . import` is not followed by the Hub loader",
        "line 4: `.nope` is not a sibling *_framelm.py file",
        "line 5: imports transformers.models.llava, which the payload may not use",
        "line 6: PIL must be imported inside the function using it",
    ]
