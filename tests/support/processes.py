"""Child processes for tests: a hang fails the test (the whole process tree is killed), never CI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil


def run_process(
    argv: list[str], cwd: str | Path, timeout: float, env: dict | None = None, stdin_text: str | None = None
) -> subprocess.CompletedProcess:
    """Run `argv` in its own session (fed `stdin_text` if given); on timeout kill its process tree (launchers start
    grandchildren) and fail."""
    stdin = subprocess.PIPE if stdin_text is not None else None
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(input=stdin_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_tree(process.pid)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{argv[:4]} still running after {timeout}s; killed:\n{stderr[-4000:]}") from None
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def kill_process_tree(pid: int) -> None:
    """SIGKILL the process group of `pid` (a session leader) and every descendant, whatever its group: torchrun
    (behind `accelerate launch`) starts each rank in a session of its own, out of reach of the group kill."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)  # before any kill: orphans lose their parent
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(descendants, timeout=10)


def run_without_framelm(code: str, cwd: str | Path, timeout: float = 300) -> dict:
    """Run `code` in a fresh interpreter where `import framelm` fails; it prints one json line, returned parsed.

    `cwd` must be outside the repository, so that no stray `modeling/` folder is importable."""
    child = "import sys\nsys.modules['framelm'] = None  # any `import framelm` now raises\n" + textwrap.dedent(code)
    result = run_process([sys.executable, "-c", child], cwd=cwd, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1, so that parallel test runs do not all meet on 29500."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
