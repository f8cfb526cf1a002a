"""Separate virtual environments for tests that need other package versions than the main one (the lowest
transformers a saved folder must load on, vLLM with its own pinned transformers).

Each is built once from the package registry with pip, under `FRAMELM_TEST_VENVS` (default
`~/.cache/framelm-test-venvs/<name>`), and reused while its requirements are unchanged: a marker file written last
holds them, so an interrupted build is redone, never reused half-installed. Builds run under a file lock (parallel
test processes wait rather than build twice) and within a deadline; a hung pip is killed with its process group.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.processes import run_process

MARKER = ".framelm-venv.json"


def venv_root() -> Path:
    return Path(os.environ.get("FRAMELM_TEST_VENVS") or Path.home() / ".cache" / "framelm-test-venvs")


def venv_python(name: str, requirements: list[str], remove: tuple[str, ...] = (), timeout: float = 1800) -> Path:
    """The python of venv `name` with `requirements` installed (one `pip install`, as a user would) and the packages
    in `remove` uninstalled after; built now if missing or built for other requirements."""
    root = venv_root() / name
    spec = {"requirements": list(requirements), "remove": list(remove), "python": sys.version.split()[0]}
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = root / MARKER
        if marker.is_file() and json.loads(marker.read_text()) == spec:
            return root / "bin" / "python"
        shutil.rmtree(root, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)  # not this venv's python: a plain venv
        _run([base, "-m", "venv", str(root)], timeout=120)
        python = root / "bin" / "python"
        _run([str(python), "-m", "pip", "install", "--no-input", *requirements], timeout=timeout)
        if remove:
            _run([str(python), "-m", "pip", "uninstall", "-y", *remove], timeout=300)
        marker.write_text(json.dumps(spec))
        return python


def _run(argv: list[str], timeout: float) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = run_process(argv, cwd=venv_root(), timeout=timeout, env=env)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:6])} failed (rc {result.returncode}):\n{result.stderr[-4000:]}")


def installed_version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
