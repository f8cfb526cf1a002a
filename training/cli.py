"""The `framelm` command: one subcommand per job, each living in its own module.

    framelm init --tiny OUT            # a tiny random model for tests and demos
    framelm data validate train.json   # check every record before training
    framelm train --config recipe.yaml # TRL SFT, under `accelerate launch` for many GPUs
    framelm demo --out OUT             # the README's main job
    framelm env                        # versions and devices, for bug reports

Heavy libraries (torch, transformers, trl) are imported inside each subcommand, so `framelm --help` is instant.
"""

from __future__ import annotations

import importlib
import sys

from framelm.training.env import framelm_version

# subcommand -> (module under framelm.training, one-line description shown by `framelm --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": (
        "model.init",
        "New FrameLM: a vision tower + a causal LM, an imported llava-hf VLM (--from-llava), or --tiny.",
    ),
    "data": ("data.cli", "Validate, inspect, convert datasets and extract video frames."),
    "train": ("sft.train", "Fine-tune with TRL's SFTTrainer from a YAML recipe (runs under `accelerate launch`)."),
    "dpo": ("dpo.train", "Preference-tune (DPO) on image, video and text pairs with TRL's DPOTrainer."),
    "demo": ("demo.demo", "Generate a synthetic task, train a tiny FrameLM on CPU and report accuracy before/after."),
    "dpo-demo": ("demo.dpo_demo", "Proof on CPU that `framelm dpo` learns from pixels: image and video pairs."),
    "generate": ("eval.generate", "Batch inference from a NeVA-style prompt jsonl."),
    "judge": ("eval.judge.cli", "Pairwise LLM-as-judge scoring of response files (llava-bench-in-the-wild style)."),
    "export": ("hub.export", "Write a complete Hub folder with weights, remote code, processor and model card."),
    "push": ("hub.push", "Upload an exported folder to the Hugging Face Hub."),
    "env": ("env", "Print the versions of framelm and its libraries and the devices seen, for bug reports."),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: framelm <command> [options]    (framelm --version: the installed version)", "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "Run `framelm <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"framelm {framelm_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"framelm: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"framelm.training.{COMMANDS[name][0]}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
