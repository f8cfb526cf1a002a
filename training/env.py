"""`framelm env`: the versions and devices to paste into a bug report (as `trl env` and `accelerate env` print).

framelm env
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

from framelm.training.errors import SetupError

LIBRARIES = ("torch", "transformers", "trl", "accelerate", "datasets", "peft", "deepspeed", "av", "decord",
             "huggingface_hub", "bitsandbytes")  # fmt: skip


def framelm_version() -> str:
    try:
        return version("framelm")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def report() -> dict[str, str]:
    """Name -> value: platform, Python, framelm and each library ("not installed" when absent), and the devices."""
    info = {"platform": platform.platform(), "python": sys.version.split()[0], "framelm": framelm_version()}
    for name in LIBRARIES:
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = "not installed"
    info["devices"] = devices()
    return info


def devices() -> str:
    """The accelerators torch sees (name and memory of each), or the CPU with its core count."""
    import torch

    found = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append(f"cuda:{index} {props.name} ({props.total_memory / 2**30:.0f} GiB)")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    found.append(f"cpu ({usable_cores()} cores{'' if found else ', no accelerator'})")
    return ", ".join(found)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or `taskset` narrows; `os.cpu_count()`
    counts the machine's): every "use all cores" default in framelm counts these."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: framelm env    (prints versions and devices; takes no options)")
        return 0
    if argv:
        from framelm.training.errors import UsageError

        raise UsageError(f"unrecognized arguments: {' '.join(argv)}", "`framelm env` takes no options")
    info = report()
    width = max(len(name) for name in info) + 1
    for name, value in info.items():
        print(f"- {name + ':':<{width}} {value}")
    return 0


def require_reporters(report_to) -> None:
    """`--report_to wandb` without wandb installed: one line before anything loads, not a traceback at step 0."""
    import importlib.util

    packages = {"wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "neptune": "neptune",
                "clearml": "clearml", "tensorboard": "tensorboard", "trackio": "trackio", "swanlab": "swanlab",
                "dvclive": "dvclive", "aim": "aim"}  # fmt: skip
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        package = packages.get(name)
        if package is None:
            continue
        installed = sys.modules[package] is not None if package in sys.modules else importlib.util.find_spec(package)
        if not installed:
            raise SetupError(f"--report_to {name}: the {package} library is not installed",
                             f"pip install {package}, or pass --report_to none")  # fmt: skip
