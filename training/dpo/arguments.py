"""The options of `framelm dpo`: ours (model source, frames, stage) and the data options (`DataArguments`) next to
TRL's `DPOConfig` (`--beta`, `--loss_type`, `--precompute_ref_log_probs`, ...) and `ModelConfig` (LoRA, QLoRA).

Every field's help text is its documentation: `framelm dpo --help` prints them all. A YAML recipe sets any of them by
name; command-line flags override the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from trl import DPOConfig

from framelm.training.data.arguments import FramesArguments

Stage = Literal["projector", "full", "all"]
STAGES: tuple[str, ...] = get_args(Stage)


@dataclass
class DPOArguments(FramesArguments):
    """framelm's own options for `framelm dpo` (the data options are `DataArguments`)."""

    _argument_group_name = "framelm"

    eval_dataset: str | None = field(
        default=None, metadata={"help": "Evaluation pairs, same forms as `dataset`, read with the same options."}
    )
    stage: Stage = field(
        default="full",
        metadata={
            "help": "projector: only the projector trains; full: projector + LM, tower frozen; all: the tower too. "
            "With --use_peft, LoRA adapts the LM and the projector trains; the reference is then the model with "
            "the adapter disabled (no second copy)."
        },
    )
    init_from = None  # `framelm train` builds models; preference tuning starts from a trained one

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in STAGES:  # a YAML recipe's values are not checked by argparse
            raise ValueError(f"--stage {self.stage!r} is not one of {STAGES}")


@dataclass
class FrameLMDPOConfig(DPOConfig):
    """TRL's `DPOConfig` with the defaults a multimodal run needs (each differs from TRL's for the reason given)."""

    # the collator needs the raw pair columns (turns, media); TRL would drop them as "unused" by the model
    remove_unused_columns: bool = False
    # media are decoded in DataLoader workers, never in the training process
    dataloader_num_workers: int = 2
    # an 8-frame video of 256-token frames alone is 2048 tokens: TRL's 1024 would cut most video pairs. A pair that
    # does not fit whole is a bad record (`data/formats/preference_lengths.py`): never cut, never dropped silently
    max_length: int | None = 4096
    report_to: None | str | list[str] = "tensorboard"
    # every trainable parameter gets a gradient in every batch (text-only batches included, see FrameLMModel)
    ddp_find_unused_parameters: bool | None = False

    def __post_init__(self):
        # TRL turns bf16 on by default, which transformers refuses on a machine without a bf16 accelerator
        if self.bf16 is None and not self.fp16:
            import torch

            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()
        if self.padding_free:
            raise ValueError(
                "--padding_free: TRL's DPOTrainer has it switched off, and framelm does not pack pairs; leave it out"
            )
        if self.truncation_mode != "keep_start":
            raise ValueError(
                f"--truncation_mode {self.truncation_mode}: framelm never cuts a pair (one that does not fit "
                "max_length is a bad record, see `framelm data validate --max-length`); leave it at keep_start"
            )
