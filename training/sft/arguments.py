"""The options of `framelm train`: ours (model source, frames, stage) and the data options (`DataArguments`) next to
TRL's `SFTConfig` and `ModelConfig`.

Every field's help text is its documentation: `framelm train --help` prints them all. A YAML recipe sets any of them
by name; command-line flags override the recipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from trl import SFTConfig

from framelm.training.data.arguments import FramesArguments

Stage = Literal["projector", "full", "all"]
STAGES: tuple[str, ...] = get_args(Stage)


@dataclass
class FrameLMArguments(FramesArguments):
    """framelm's own options for `framelm train` (the data options are `DataArguments`)."""

    _argument_group_name = "framelm"

    init_from: list[str] | None = field(
        default=None,
        metadata={
            "help": "Build a new model instead of loading `model_name_or_path`: two values (vision tower, causal LM; "
            "local folders or Hub ids) or the single value `tiny` (a tiny random model, for tests and demos)."
        },
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Evaluation data, same forms as `dataset`, read with the same options."}
    )
    stage: Stage = field(
        default="full",
        metadata={
            "help": "projector: only the projector trains (LLaVA pretraining); full: projector + LM, tower frozen "
            "(LLaVA fine-tuning); all: the tower too. With --use_peft, LoRA adapts the LM and the projector trains."
        },
    )

    plot_loss: bool = field(
        default=False,
        metadata={"help": "At the end of training, draw the loss curve (and the eval loss) into output_dir as "
                  "training_loss.png (`framelm plot RUN_DIR` draws it at any time)."},
    )  # fmt: skip
    chat_template: str | None = field(
        default=None,
        metadata={"help": "With --init_from VISION LM: the chat template, as `framelm init --chat-template` takes it "
                  "(default: the LM's own, made trainable; `chatml`; or a Jinja FILE)."},
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in STAGES:  # a YAML recipe's values are not checked by argparse
            raise ValueError(f"--stage {self.stage!r} is not one of {STAGES}")
        if self.init_from is not None and len(self.init_from) not in (1, 2):
            raise ValueError("--init_from takes `tiny` or two values: VISION_TOWER CAUSAL_LM")
        if self.init_from is not None and len(self.init_from) == 1 and self.init_from[0] != "tiny":
            raise ValueError(f"--init_from {self.init_from[0]!r}: pass `tiny`, or a vision tower and a causal LM")


@dataclass
class FrameLMSFTConfig(SFTConfig):
    """TRL's `SFTConfig` with the defaults a multimodal run needs (each differs from TRL's for the reason given)."""

    # the collator needs the raw sample columns (turns, media); TRL would drop them as "unused" by the model
    remove_unused_columns: bool = False
    # our collator tokenizes and decodes media on the fly; TRL's text preparation must not run
    dataset_kwargs: dict[str, Any] | str | None = field(default_factory=lambda: {"skip_prepare_dataset": True})
    # media are decoded in DataLoader workers, never in the training process
    dataloader_num_workers: int = 2
    # an 8-frame video of 256-token frames alone is 2048 tokens: TRL's 1024 would cut most video samples
    max_length: int | None = 4096
    report_to: None | str | list[str] = "tensorboard"
    # every trainable parameter gets a gradient in every batch (text-only batches included, see FrameLMModel), so
    # DDP need not search the graph for unused parameters on each step (transformers turns that search on by default)
    ddp_find_unused_parameters: bool | None = False
    # TRL's packing fields, done by framelm for multimodal samples (training/batches/packing.py): the same names and
    # defaults, help that says what they do here
    packing: bool = field(
        default=False,
        metadata={
            "help": "Pack whole samples, media included, into rows of up to max_length tokens (best fit decreasing "
            "on the measured token counts; never split across rows). per_device_train_batch_size then counts rows. "
            "Each sample keeps its own position ids and attends only to itself (SDPA, eager, flash-attention)."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Flatten each batch (its samples, or its packed rows) into one row without padding. Best with "
            "flash-attention; with SDPA or eager, attention then spans the whole flattened row, so --packing alone "
            "(rows of max_length) is usually faster there."
        },
    )

    def __post_init__(self):
        # TRL turns bf16 on by default, which transformers refuses on a machine without a bf16 accelerator; use it
        # where the hardware has it, as TRL intends, and stay in fp32 on CPU-only machines (unless asked explicitly)
        if self.bf16 is None and not self.fp16:
            import torch

            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()
        if self.resume_from_checkpoint is not None:  # a string to transformers: "true" would be a folder name
            self.resume_from_checkpoint = checkpoint_to_resume(self.resume_from_checkpoint, self.output_dir)
        if (self.packing or self.eval_packing) and self.packing_strategy != "bfd":
            raise ValueError(
                f"--packing_strategy {self.packing_strategy!r} cuts samples across rows, which would part media "
                "tokens from their pixels and replies from their questions; framelm packs whole samples: use bfd"
            )
        if (self.packing or self.eval_packing) and self.max_length is None:
            raise ValueError("--packing fills rows up to max_length: set --max_length (e.g. 4096)")


def checkpoint_to_resume(value, output_dir: str | None) -> str | None:
    """`--resume_from_checkpoint` as a folder, checked when the options are parsed instead of when training starts:
    `true` (or `last`) is the newest `checkpoint-N` in `output_dir`, `false` is none, anything else must be a folder.
    """
    text = str(value).strip()
    if text.lower() in ("false", "no", "none", ""):
        return None
    if text.lower() in ("true", "yes", "last"):
        from framelm.training.sft.checkpoints import last_complete_checkpoint  # a torn newest one is passed over

        last = last_complete_checkpoint(output_dir) if output_dir and os.path.isdir(output_dir) else None
        if last is None:
            raise ValueError(
                f"--resume_from_checkpoint {text}: --output_dir {output_dir} holds no checkpoint-N folder to resume "
                "from; name a checkpoint folder, or leave the option out to start afresh"
            )
        return last
    if not os.path.isdir(text):
        raise ValueError(
            f"--resume_from_checkpoint {text!r} is not a folder; name a checkpoint-N folder of an earlier run, or "
            "pass `true` for the newest one in --output_dir"
        )
    return text
