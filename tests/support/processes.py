"""Child processes for tests: a hang fails the test (the whole process group is killed), never CI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path


def run_process(
    argv: list[str], cwd: str | Path, timeout: float, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `argv` in its own session; on timeout kill its whole group (launchers start grandchildren) and fail."""
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{argv[:4]} still running after {timeout}s; killed:\n{stderr[-4000:]}") from None
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def run_without_framelm(code: str, cwd: str | Path, timeout: float = 300) -> dict:
    """Run `code` in a fresh interpreter where `import framelm` fails; it prints one json line, returned parsed.

    `cwd` must be outside the repository, so that no stray `modeling/` folder is importable."""
    child = "import sys\nsys.modules['framelm'] = None  # any `import framelm` now raises\n" + textwrap.dedent(code)
    result = run_process([sys.executable, "-c", child], cwd=cwd, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
