"""Kill a child process at a chosen file-system step, to test that a command which replaces data on disk leaves no
half-written result that looks complete, whatever the step it dies at.

`run_killed_at(code, k)` runs `code` in a fresh interpreter whose file-system calls (mkdir, rename, replace, remove,
unlink, rmdir, opening a file for writing, saving an image) are counted; just before step k the child SIGKILLs
itself, as an out-of-memory killer or a pre-empted job would. When the code finishes first, the number of steps it
took is returned, so a test can walk k over every step, or sample some.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

PREAMBLE = """
import builtins, os, signal, sys

KILL_AT = int(os.environ["FRAMELM_TEST_KILL_AT"])
steps = 0

def counted(function, writes_only=False):
    def step(*args, **kwargs):
        global steps
        mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
        if not writes_only or any(flag in str(mode) for flag in "wxa+"):
            if steps == KILL_AT:
                os.kill(os.getpid(), signal.SIGKILL)
            steps += 1
        return function(*args, **kwargs)
    return step

for name in ("mkdir", "rename", "replace", "remove", "unlink", "rmdir"):
    setattr(os, name, counted(getattr(os, name)))
builtins.open = counted(builtins.open, writes_only=True)
from PIL import Image
Image.Image.save = counted(Image.Image.save)
"""
EPILOGUE = '\nprint(f"steps={steps}")\n'


@dataclass
class KilledRun:
    killed: bool
    steps: int | None  # the steps of a run that was not killed
    stderr: str


def run_killed_at(code: str, kill_at: int, timeout: float = 300) -> KilledRun:
    """Run `code` in a child (its own process group, killed whole on timeout) that dies before step `kill_at`."""
    env = {**os.environ, "FRAMELM_TEST_KILL_AT": str(kill_at)}
    process = subprocess.Popen(
        [sys.executable, "-c", PREAMBLE + code + EPILOGUE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"the child did not finish in {timeout} s") from None
    if process.returncode == -signal.SIGKILL:
        return KilledRun(killed=True, steps=None, stderr=err)
    assert process.returncode == 0, err[-3000:]
    return KilledRun(killed=False, steps=int(out.rsplit("steps=", 1)[1]), stderr=err)
