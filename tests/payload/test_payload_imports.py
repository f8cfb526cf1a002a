"""The Hub payload rule, checked on the source: `modeling/` and `processing/` import only what a saved folder can
resolve where framelm is not installed (CONTRIBUTING.md, "The payload rule").

The checker reads every import statement wherever it sits (in a function, a class, a `try`), plus the ways of
importing that are no statement: `importlib.import_module`, `__import__`, `exec` and `eval` (a string of code can
import anything, so the payload may not run one).
"""

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD_DIRS = ("modeling", "processing")
# `transformers.modeling_outputs` is documented public API (the "Model outputs" reference page), unlike models.*
ALLOWED_ROOTS = {"torch", "numpy"}  # with their submodules (torch.nn, ...)
ALLOWED_TRANSFORMERS = {"transformers", "transformers.modeling_outputs"}
LAZY_MEDIA = {"PIL", "av", "decord", "fsspec"}  # imported inside the function that uses them, never at module level
DYNAMIC_IMPORTS = {"__import__", "import_module", "exec", "eval"}  # called by name or as an attribute


def payload_files() -> list[Path]:
    return sorted(p for d in PAYLOAD_DIRS for p in (ROOT / d).glob("*.py") if p.name != "__init__.py")


def top_module(name: str) -> str:
    return name.split(".")[0]


def forbidden_transformers_module(name: str) -> bool:
    """`utils` or `models` (not `PreTrainedModel`, not `modeling_outputs`): a transformers submodule the payload may
    not reach into, since its contents move between releases."""
    allowed = f"transformers.{name}" in ALLOWED_TRANSFORMERS
    return not allowed and importlib.util.find_spec(f"transformers.{name}") is not None


class _PayloadChecker(ast.NodeVisitor):
    """Collects one problem line per forbidden import; `function_depth` tells module-level code from function code."""

    def __init__(self, siblings: set[str]):
        self.siblings = siblings
        self.function_depth = 0
        self.problems: list[str] = []

    def _report(self, node: ast.AST, problem: str) -> None:
        self.problems.append(f"line {node.lineno}: {problem}")

    def _visit_function(self, node: ast.AST) -> None:
        self.function_depth += 1
        self.generic_visit(node)
        self.function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level > 1:
            self._report(node, f"`from {'.' * node.level}{node.module or ''}` leaves the folder")
        elif node.level == 1 and node.module is None:
            self._report(node, "`from . import` is not followed by the Hub loader")
        elif node.level == 1 and node.module not in self.siblings:
            self._report(node, f"`.{node.module}` is not a sibling *_framelm.py file")
        elif node.level == 0:
            self._check_module(node, node.module)
            if node.module == "transformers":
                for alias in node.names:
                    if forbidden_transformers_module(alias.name):
                        self._report(node, f"imports transformers.{alias.name}, which the payload may not use")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in DYNAMIC_IMPORTS:
            self._report(node, f"calls {name}(), which can import what this check cannot see")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # `transformers.models.llava...` after a plain `import transformers`
        if isinstance(node.value, ast.Name) and node.value.id == "transformers":
            if forbidden_transformers_module(node.attr):
                self._report(node, f"uses transformers.{node.attr}, which the payload may not use")
        self.generic_visit(node)

    def _check_module(self, node: ast.AST, name: str) -> None:
        root = top_module(name)
        if root in sys.stdlib_module_names or root == "__future__":
            return
        if root in LAZY_MEDIA:
            if self.function_depth == 0:  # module level, in a `try` or an `if` too
                self._report(node, f"{name} must be imported inside the function using it")
            return
        if root not in ALLOWED_ROOTS and name not in ALLOWED_TRANSFORMERS:
            self._report(node, f"imports {name}, which the payload may not use")


def import_problems(path: Path) -> list[str]:
    checker = _PayloadChecker(siblings={p.stem for p in path.parent.glob("*_framelm.py")})
    checker.visit(ast.parse(path.read_text()))
    return sorted(checker.problems, key=lambda line: int(line.split(":")[0].split()[1]))


@pytest.mark.parametrize("path", payload_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_payload_file_imports_only_what_a_hub_folder_resolves(path):
    assert import_problems(path) == []


def test_payload_file_names_are_suffixed_and_unique_across_folders():
    names = [p.name for p in payload_files()]
    assert all(name.endswith("_framelm.py") for name in names), names
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "source, problem",
    [
        ("import framelm", "line 1: imports framelm, which the payload may not use"),
        ("from ..training import x", "line 1: `from ..training` leaves the folder"),
        ("from . import good_framelm", "line 1: `from . import` is not followed by the Hub loader"),
        ("from .nope import y", "line 1: `.nope` is not a sibling *_framelm.py file"),
        ("from transformers.models.llava import modeling_llava",
         "line 1: imports transformers.models.llava, which the payload may not use"),
        ("from transformers import utils", "line 1: imports transformers.utils, which the payload may not use"),
        ("from transformers import PreTrainedModel, models",
         "line 1: imports transformers.models, which the payload may not use"),
        ("import transformers\nX = transformers.models.llava.LlavaConfig",
         "line 2: uses transformers.models, which the payload may not use"),
        ("import PIL", "line 1: PIL must be imported inside the function using it"),
        ("try:\n    import av\nexcept ImportError:\n    av = None", "line 2: av must be imported inside the function"
         " using it"),
        ("if True:\n    from decord import VideoReader",
         "line 2: decord must be imported inside the function using it"),
        ("class C:\n    import PIL", "line 2: PIL must be imported inside the function using it"),
        ("import importlib\nm = importlib.import_module('framelm')",
         "line 2: calls import_module(), which can import what this check cannot see"),
        ("from importlib import import_module\ndef f():\n    return import_module('x')",
         "line 3: calls import_module(), which can import what this check cannot see"),
        ("m = __import__('framelm')", "line 1: calls __import__(), which can import what this check cannot see"),
        ("exec('import framelm')", "line 1: calls exec(), which can import what this check cannot see"),
        ("f = lambda: eval('1')", "line 1: calls eval(), which can import what this check cannot see"),
    ],
)  # fmt: skip
def test_the_checker_catches_each_kind_of_violation(tmp_path, source, problem):
    (tmp_path / "good_framelm.py").write_text("")
    bad = tmp_path / "bad_framelm.py"
    bad.write_text(source + "\n")
    assert import_problems(bad) == [problem]


def test_the_checker_accepts_what_the_payload_may_do(tmp_path):
    (tmp_path / "good_framelm.py").write_text("")
    ok = tmp_path / "ok_framelm.py"
    ok.write_text(
        "import json\nimport torch.nn.functional as F\nfrom transformers import PreTrainedModel, BatchFeature\n"
        "from transformers.modeling_outputs import CausalLMOutputWithPast\nfrom .good_framelm import z\n"
        "import importlib.util\n"
        "def load():\n    from PIL import Image\n    try:\n        import decord\n    except ImportError:\n"
        "        decord = None\n    return importlib.util.find_spec('av')\n"
    )
    assert import_problems(ok) == []
