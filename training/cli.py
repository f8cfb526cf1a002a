"""The `framelm` command: ONE table of every command (nested `data` commands included) and the one place errors
are printed.

    framelm init --tiny --out OUT          # a tiny random model for tests and demos
    framelm data validate train.json       # check every record before training
    framelm train --config recipe.yaml     # TRL SFT, under `accelerate launch` for many GPUs
    framelm demo --out OUT                 # the README's main job
    framelm env                            # versions and devices, for bug reports

A command is `module[:function]` under framelm.training, called with its arguments and returning an exit code. A
user's mistake is a `FrameLMError` (training/errors.py), printed here as one line,
`framelm <command>: error: <what> (<fix>)`, with its class's exit code (2 usage, 1 input, 3 setup). Heavy libraries
(torch, transformers, trl) are imported inside each command, so `framelm --help` and `framelm <command> --help` are
fast.
"""

from __future__ import annotations

import importlib
import sys

from framelm.training.env import framelm_version
from framelm.training.errors import UsageError, did_you_mean, run_command

# command -> ("module[:function]" under framelm.training, one-line description), or a group of such commands
COMMANDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "init": (
        "model.init",
        "New FrameLM: a vision tower + a causal LM, an imported llava-hf VLM (--from-llava), or --tiny.",
    ),
    "data": {
        "validate": ("data.commands:validate_main", "Check every record; summary of errors and warnings, a report."),
        "stats": ("data.commands:stats_main", "Tokens per record and per modality, steps per epoch, max_length."),
        "convert": ("data.commands:convert_main", "Write the normalized Arrow dataset or WebDataset shards."),
        "extract-frames": ("data.commands:extract_frames_main", "Videos -> folders of JPEG frames plus <video>.json."),
    },
    "train": ("sft.train", "Fine-tune with TRL's SFTTrainer from a YAML recipe (runs under `accelerate launch`)."),
    "plot": ("sft.plot", "Draw a run's loss curve (and eval loss) as PNG files, from its trainer_state.json."),
    "dpo": ("dpo.train", "Preference-tune (DPO) on image, video and text pairs with TRL's DPOTrainer."),
    "demo": ("demo.demo", "Generate a synthetic task, train a tiny FrameLM on CPU and report accuracy before/after."),
    "dpo-demo": ("demo.dpo_demo", "Proof on CPU that `framelm dpo` learns from pixels: image and video pairs."),
    "generate": ("eval.generate_args", "Batch inference from a NeVA-style prompt jsonl."),
    "serve": ("serve.serve", "Serve a FrameLM with vLLM's OpenAI-compatible server (images and videos)."),
    "chat": ("serve.chat", "Chat with a FrameLM in the terminal; /image and /video attach media."),
    "judge": ("eval.judge.cli", "Pairwise LLM-as-judge scoring of response files (llava-bench-in-the-wild style)."),
    "export": ("hub.export", "Write a complete Hub folder with weights, remote code, processor and model card."),
    "push": ("hub.push", "Upload an exported folder to the Hugging Face Hub."),
    "estimate-memory": (
        "model.memory",
        "Parameters, trainable parameters and training memory per method (full, LoRA, QLoRA).",
    ),
    "env": ("env", "Print the versions of framelm and its libraries and the devices seen, for bug reports."),
}
GROUP_HELP = {"data": "Validate, inspect, convert datasets and extract video frames."}


def _usage(table: dict = COMMANDS, prefix: str = "framelm") -> str:
    width = max(len(name) for name in table)
    lines = [f"usage: {prefix} <command> [options]" + ("    (framelm --version: the installed version)"
                                                       if table is COMMANDS else ""), "", "commands:"]  # fmt: skip
    for name, entry in table.items():
        description = GROUP_HELP.get(name, "") if isinstance(entry, dict) else entry[1]
        lines.append(f"  {name:<{width}}  {description}")
    lines += ["", f"Run `{prefix} <command> --help` for the options of one command."]
    if table is not COMMANDS:
        module = importlib.import_module("framelm.training." + next(iter(table.values()))[0].split(":")[0])
        lines += ["", (module.__doc__ or "").strip()]
    return "\n".join(lines)


def resolve(argv: list[str]) -> tuple[str, str | None, list[str]]:
    """(command name as shown in messages, "module[:function]" or None for a group's help, remaining arguments)."""
    table, name, rest = COMMANDS, "", list(argv)
    while True:
        if not rest or rest[0] in ("-h", "--help"):
            print(_usage(table, f"framelm {name}".strip()))
            return name, None, []
        word, rest = rest[0], rest[1:]
        if word not in table:
            hint = did_you_mean(word, table)
            where = f"`framelm {name} --help`".replace("framelm  ", "framelm ")
            raise UsageError(f"unknown command {word!r}" + (f"; {hint}" if hint else ""), f"see {where} for the list")
        name = f"{name} {word}".strip()
        if isinstance(table[word], dict):
            table = table[word]
            continue
        return name, table[word][0], rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-V", "--version"):
        return run_command("", lambda _: print(f"framelm {framelm_version()}"), [])
    named = [""]  # the command's name once known, for the error line

    def dispatch(_) -> int:
        named[0], target, rest = resolve(argv)
        if target is None:
            return 0
        module_name, _, function = target.partition(":")
        module = importlib.import_module(f"framelm.training.{module_name}")
        return getattr(module, function or "main")(rest)

    return run_command(lambda: named[0], dispatch, argv)


def data_main(argv: list[str]) -> int:
    """`framelm data ...` called from Python (tests, notebooks)."""
    return main(["data", *argv])


if __name__ == "__main__":
    sys.exit(main())
