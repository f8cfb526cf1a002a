"""`framelm train ... --accelerate_config NAME --num_processes N`: the same run, started by `accelerate launch`.

    framelm train --config recipe.yaml --accelerate_config zero3 --num_processes 8      # 8 GPUs, DeepSpeed ZeRO-3
    framelm train --config recipe.yaml --accelerate_config ddp --num_processes 16 --num_machines 2 \\
        --machine_rank 0 --main_process_ip 10.0.0.1 --main_process_port 29500           # run on each machine
    framelm train --config recipe.yaml --accelerate_config zero2 --num_processes 2      # no GPU: 2 CPU processes

NAME is a config packaged with framelm (`ddp`, `fsdp`, `zero2`, `zero3`) or the path of any accelerate config file,
so a pip install needs no source checkout (as `trl sft --accelerate_config zero3`). The command re-runs itself as
`accelerate launch --config_file ... -m framelm.training.sft.train` with every other option unchanged, so
`accelerate launch ... -m framelm.training.sft.train` written by hand works the same. On a machine without a GPU it
adds what CPU processes need (see `cpu_settings`); with one, accelerate's and the config's settings stand.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

PACKAGED_CONFIGS = ("ddp", "fsdp", "zero2", "zero3")
# set in every process that `accelerate launch` (or torchrun) starts
LAUNCHED_ENV = ("ACCELERATE_MIXED_PRECISION", "LOCAL_RANK")


@dataclass
class LaunchArguments:
    """Options of `framelm train` that go to `accelerate launch`, not to the training script (command line only)."""

    accelerate_config: str | None = field(
        default=None,
        metadata={
            "help": f"Start the run under `accelerate launch` with this config: one of {', '.join(PACKAGED_CONFIGS)} "
            "(packaged with framelm) or the path of an accelerate config file. Default with --num_processes: ddp."
        },
    )
    num_processes: int | None = field(
        default=None,
        metadata={"help": "Processes over ALL machines. Default: every GPU of every machine; required without GPUs."},
    )
    num_machines: int | None = field(default=None, metadata={"help": "Machines taking part (default: the config's)."})
    machine_rank: int | None = field(default=None, metadata={"help": "This machine's rank, 0 on the main machine."})
    main_process_ip: str | None = field(default=None, metadata={"help": "IP address of the machine of rank 0."})
    main_process_port: int | None = field(
        default=None, metadata={"help": "Port of the main process (accelerate's default: 29500)."}
    )

    def requested(self) -> bool:
        return any(value is not None for value in asdict(self).values())


def run_method(argv: list[str], module: str, parse_args: Callable, run: Callable) -> int:
    """The `main` of a training method (`framelm train`, `framelm dpo`): under `accelerate launch` when asked, else
    here; the recipe checked before heavy imports; every rank waits before leaving the process group."""
    from framelm.training.recipe import check_recipe

    if (exit_code := launch_if_asked(argv, module)) is not None:  # --accelerate_config, --num_processes
        return exit_code
    check_recipe(argv)
    trainer = run(*parse_args(argv))
    trainer.accelerator.wait_for_everyone()  # rank 0 may still be writing the card: nobody leaves the group early
    trainer.end()  # finish the trackers and leave the process group, last, as TRL's scripts do
    return 0


def launch_if_asked(argv: list[str], module: str = "framelm.training.sft.train") -> int | None:
    """Run `module` (`framelm train`'s by default) under `accelerate launch` when launcher options are given and
    return its exit code; return None when none are given, so that the caller trains in this process."""
    parser = _parser()
    options, training_argv = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    if "-h" in argv or "--help" in argv:
        print(parser.format_help())  # followed by the training options' help
        return None
    if not options.requested():
        return None
    if any(name in os.environ for name in LAUNCHED_ENV):
        raise ValueError(
            "this process was already started by a launcher (accelerate launch or torchrun): pass "
            "--accelerate_config/--num_processes/machine options either to `framelm train` alone or to the launcher"
        )
    command, env = launch_command(options, training_argv, _local_accelerators(), dict(os.environ), module)
    print(f"framelm train: starting {shlex.join(command)}", file=sys.stderr, flush=True)
    return subprocess.call(command, env=env)


def launch_command(
    options: LaunchArguments,
    training_argv: list[str],
    accelerators: int,
    env: dict[str, str],
    module: str = "framelm.training.sft.train",
) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command line and its environment, from this one's (`env`) and the number of GPUs (or
    other accelerators) on this machine."""
    config = resolve_accelerate_config(options.accelerate_config or "ddp")
    num_processes = options.num_processes
    if num_processes is None:
        if not accelerators:
            raise ValueError("no GPU here: say how many CPU processes to start with --num_processes N")
        num_processes = accelerators * (options.num_machines or 1)
    launch = ["--config_file", str(config), "--num_processes", str(num_processes)]
    for name in ("num_machines", "machine_rank", "main_process_ip", "main_process_port"):
        if (value := getattr(options, name)) is not None:
            launch += [f"--{name}", str(value)]
    if not accelerators:
        cpu_launch, cpu_training, env = cpu_settings(_distributed_type(config), training_argv, env)
        launch, training_argv = launch + cpu_launch, training_argv + cpu_training
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", module]
    return command + training_argv, env


def cpu_settings(
    distributed_type: str, training_argv: list[str], env: dict[str, str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """What a config needs to run as CPU processes over gloo: (launch args, training args, environment).

    - Mixed precision off: the configs' bf16 clashes with the Trainer, which runs fp32 on CPU.
    - One torch thread per process unless OMP_NUM_THREADS says otherwise (torchrun's own default): processes
      that together ask for more threads than there are cores spin against each other.
    - DeepSpeed: its CPU accelerator (`DS_ACCELERATOR=cpu`), which talks gloo when oneCCL is absent; the Trainer must
      ask for gloo too (`--ddp_backend gloo`), else accelerate finds no backend, starts one process and DeepSpeed
      fails its batch-size check. `ACCELERATE_USE_CPU` must be unset: it turns DeepSpeed off.
    - DDP: `ACCELERATE_USE_CPU=true`, which makes accelerate run data parallelism on CPU over gloo.
    - FSDP: refused; accelerate runs FSDP on GPUs only and on CPU would quietly fall back to plain data parallelism.
    """
    env = {"OMP_NUM_THREADS": "1"} | env
    training = []
    if distributed_type == "DEEPSPEED":
        env["DS_ACCELERATOR"] = "cpu"
        env.pop("ACCELERATE_USE_CPU", None)
        if not any(arg.split("=")[0] in ("--ddp_backend", "--ddp-backend") for arg in training_argv):
            training = ["--ddp_backend", "gloo"]
    elif distributed_type == "FSDP":
        raise ValueError(
            "accelerate runs FSDP on GPUs only (on CPU it would quietly run plain data parallelism): "
            "use --accelerate_config zero3 (parameters sharded too) or ddp on this machine"
        )
    else:
        env["ACCELERATE_USE_CPU"] = "true"
    return ["--mixed_precision", "no"], training, env


def resolve_accelerate_config(name: str) -> Path:
    """A file path as given, or a config packaged with framelm by name (`zero3`: accelerate_configs/zero3.yaml)."""
    if Path(name).is_file():
        return Path(name)
    if name in PACKAGED_CONFIGS:
        return Path(str(resources.files("framelm.training").joinpath("accelerate_configs", f"{name}.yaml")))
    raise ValueError(
        f"--accelerate_config {name!r} is neither a file nor a packaged config; "
        f"pass one of {', '.join(PACKAGED_CONFIGS)} or the path of an accelerate config file"
    )


def _distributed_type(config: Path) -> str:
    with open(config, encoding="utf-8") as f:  # YAML, or JSON (a subset of YAML): accelerate writes both
        return str(yaml.safe_load(f).get("distributed_type", "NO"))


def _local_accelerators() -> int:
    import torch

    if hasattr(torch, "accelerator"):  # torch >= 2.6: CUDA, ROCm, XPU, MPS... alike
        return torch.accelerator.device_count() if torch.accelerator.is_available() else 0
    return torch.cuda.device_count()


def _parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(
        LaunchArguments,
        prog="framelm train",
        add_help=False,
        allow_abbrev=False,  # `--num` must not pass for --num_processes: the other options belong to the script
        description="Launch options (handled before the training options below):",
    )
