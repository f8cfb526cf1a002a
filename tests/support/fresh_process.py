"""Run code in a fresh interpreter where `import framelm` fails, as on a machine that only has a saved folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap


def run_without_framelm(code: str, cwd, timeout: float = 300) -> dict:
    """Run `code` (which prints one json line last) with framelm unimportable, in `cwd` (outside the repository, so
    no stray `modeling/` is found). A hang kills the child's whole process group and fails the test."""
    child = "import sys\nsys.modules['framelm'] = None  # any `import framelm` now raises\n" + textwrap.dedent(code)
    process = subprocess.Popen(
        [sys.executable, "-c", child],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"the child process ran past {timeout} s and was killed") from None
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])
