"""Multi-process runs for tests: a hang must fail the test, not hang pytest.

`subprocess.run(timeout=...)` kills only the process it started; torchrun (behind `accelerate launch`) starts every
rank in a session of its own, so the ranks of a hung run would outlive the test. `run_process_tree` starts the command
in a new session and, on timeout, kills that session's process group and every descendant found before the kill.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import psutil
import pytest


def run_process_tree(
    command: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd=None
) -> subprocess.CompletedProcess:
    """Run `command` to its end, stdout and stderr together in `.stdout`; fail the test when it outlives `timeout`."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_tree(process.pid)
        output, _ = process.communicate()
        pytest.fail(f"killed after {timeout:.0f} s (a hang?): {' '.join(command)[:300]}\n...{output[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output)


def kill_process_tree(pid: int) -> None:
    """SIGKILL the process group of `pid` (a session leader) and all its descendants, whatever their group."""
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


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1, so that runs of parallel test sessions do not meet on 29500."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
