"""The options of `framelm train`: ours (model source, data, stage) next to TRL's `SFTConfig` and `ModelConfig`.

Every field's help text is its documentation: `framelm train --help` prints them all. A YAML recipe sets any of them
by name; command-line flags override the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

STAGES = ("projector", "full", "all")
BAD_RECORD_POLICIES = ("strict", "skip")


@dataclass
class FrameLMArguments:
    """framelm's own options for `framelm train`."""

    # --- model ---
    init_from: list[str] | None = field(
        default=None,
        metadata={
            "help": "Build a new model instead of loading `model_name_or_path`: two values (vision tower, causal LM; "
            "local folders or Hub ids) or the single value `tiny` (a tiny random model, for tests and demos)."
        },
    )
    num_frames: int | None = field(
        default=None,
        metadata={"help": "Frames sampled per video; short videos repeat frames. Default: the model's own setting."},
    )
    # --- data ---
    dataset: str | None = field(
        default=None, metadata={"help": "Training data: a json/jsonl/csv/parquet file or a mixture YAML."}
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "Evaluation data, same forms as `dataset`."})
    data_format: str = field(
        default="auto", metadata={"help": "auto | llava | lmms | sharegpt. auto detects it from the records."}
    )
    image_folder: str | None = field(default=None, metadata={"help": "Root that relative image paths resolve to."})
    video_folder: str | None = field(default=None, metadata={"help": "Root that relative video paths resolve to."})
    user_key: str | None = field(
        default=None, metadata={"help": "Role name of user turns in your data (e.g. `human`, `user`)."}
    )
    assistant_key: str | None = field(
        default=None, metadata={"help": "Role name of assistant turns in your data (e.g. `gpt`, `assistant`)."}
    )
    allow_outside_root: bool = field(
        default=False, metadata={"help": "Accept media paths that escape their root folder (refused by default)."}
    )
    bad_records: str = field(
        default="strict",
        metadata={"help": "strict: stop on the first bad record and list them all; skip: leave them out, count and "
                  "report them in the logs. Never silent."},
    )  # fmt: skip
    # --- what to train ---
    stage: str = field(
        default="full",
        metadata={
            "help": "projector: only the projector trains (LLaVA pretraining); full: projector + LM, tower frozen "
            "(LLaVA fine-tuning); all: the tower too. With --use_peft, LoRA adapts the LM and the projector trains."
        },
    )

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"--stage {self.stage!r} is not one of {STAGES}")
        if self.bad_records not in BAD_RECORD_POLICIES:
            raise ValueError(f"--bad_records {self.bad_records!r} is not one of {BAD_RECORD_POLICIES}")
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

    def __post_init__(self):
        # TRL turns bf16 on by default, which transformers refuses on a machine without a bf16 accelerator; use it
        # where the hardware has it, as TRL intends, and stay in fp32 on CPU-only machines (unless asked explicitly)
        if self.bf16 is None and not self.fp16:
            import torch

            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()
