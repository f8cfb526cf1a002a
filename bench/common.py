"""Shared by every bench script: machine description, library versions, and writing `bench/results/<name>.json`.

Absolute times on a shared 2-core machine are noise; every script therefore times framelm and its peers on the same
inputs in the same run and reports ratios. This module only records the context those ratios were measured in.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LIBRARIES = ("torch", "transformers", "datasets", "trl", "accelerate", "av", "decord", "pillow", "numpy")


def machine_info() -> dict:
    """Where the numbers come from: `framelm env`'s report (platform, Python, framelm and library versions, devices),
    the CPU model and core count, and the load average when the results were written (the machine may be shared)."""
    from framelm.training.env import LIBRARIES as ENV_LIBRARIES
    from framelm.training.env import report

    env = report()
    info = {
        "date": datetime.date.today().isoformat(),
        "platform": env["platform"],
        "processor": _cpu_model(),
        "cores": os.cpu_count(),
        "python": env["python"],
        "framelm": env["framelm"],
        "devices": env["devices"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": {},
    }
    for name in dict.fromkeys(ENV_LIBRARIES + LIBRARIES):
        found = env.get(name)
        if found is None:
            try:
                found = metadata.version(name)
            except metadata.PackageNotFoundError:
                found = "not installed"
        info["versions"][name] = None if found == "not installed" else found
    if env["devices"].startswith("cuda"):
        info["accelerator"] = env["devices"].split(",")[0]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Minimum wall time of `repeats` calls, in seconds: the least noisy estimate on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(name: str, cases: list[dict], summary: dict, quick: bool) -> Path:
    """Write `bench/results/<name>.json`: machine, per-case measurements and the targets with met/not met.

    `summary` maps a target name to {"target": str, "measured": float, "met": bool}.
    """
    from framelm.training.atomic_write import write_text_atomically

    path = RESULTS_DIR / f"{name}{'.quick' if quick else ''}.json"
    payload = {"name": name, "quick": quick, "machine": machine_info(), "cases": cases, "summary": summary}
    write_text_atomically(path, json.dumps(payload, indent=2) + "\n")  # beside, then renamed: never half a file
    return path


def print_verdicts(summary: dict) -> None:
    """One line per target of a summary: measured value, target, met / NOT MET (rows marked "reported" say so)."""
    for name, row in summary.items():
        if isinstance(row, dict) and "target" in row:
            verdict = "reported" if row["target"] == "reported" else "met" if row["met"] else "NOT MET"
            print(f"{name}: {row['measured']} (target {row['target']}): {verdict}")


def tiny_model(work: Path) -> Path:
    """A tiny random FrameLM (its processor counts tokens as a real one would, with a small vocabulary), built once."""
    folder = work / "tiny"
    if not (folder / "config.json").exists():
        from framelm.training.model.tiny import build_tiny_framelm

        build_tiny_framelm(folder)
    return folder


def train_step_rate() -> tuple[float | None, str]:
    """Fastest framelm training step of bench 3 in samples/s, and what it was read from."""
    path = RESULTS_DIR / "train_step.json"
    if not path.exists():
        return None, "bench 3 not run yet"
    try:
        cases = json.loads(path.read_text())["cases"]
        rates = {c["case"]: c["batch_size"] / c["framelm"]["median_s"] for c in cases if c.get("framelm")}
        fastest = max(rates, key=rates.get)
        return rates[fastest], f"{path.name} {fastest}"
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        return None, f"bench 3 result unreadable ({type(err).__name__}: {err})"
