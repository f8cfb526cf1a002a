"""Which `checkpoint-N` folder `--resume_from_checkpoint true` resumes from: the newest COMPLETE one.

A run killed while saving (or a disk that filled up) leaves the newest folder torn: created, but without its
weights or its `trainer_state.json`. transformers' `get_last_checkpoint` picks it by number alone, and the resume then
fails deep inside the Trainer. Here a checkpoint counts only with its trainer state and its weights (every shard an
index names); a torn one is passed over with a warning that names it.
"""

from __future__ import annotations

import json
import logging
import os
import re

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FOLDERS = ("pytorch_model_fsdp", "global_step")  # FSDP sharded state, DeepSpeed's per-rank states


def missing_parts(folder: str) -> list[str]:
    """What a resume would need from `folder` and does not find there (empty: the checkpoint is complete)."""
    names = set(os.listdir(folder))
    missing = [] if os.path.isfile(os.path.join(folder, TRAINER_STATE)) else [TRAINER_STATE]
    if any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES):
        return missing
    if any(name.startswith(WEIGHT_FOLDERS) and os.path.isdir(os.path.join(folder, name)) for name in names):
        return missing
    for index in WEIGHT_INDEXES:
        if index in names:
            try:
                with open(os.path.join(folder, index), encoding="utf-8") as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return [*missing, f"a readable {index}"]
            return missing + [shard for shard in shards if not os.path.isfile(os.path.join(folder, shard))]
    return [*missing, "the model weights"]


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The complete `checkpoint-N` of `output_dir` with the largest N; each newer, torn one is logged as skipped."""
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT.match(name))]
    for _, name in sorted(found, reverse=True):
        path = os.path.join(output_dir, name)
        if not os.path.isdir(path):
            continue
        missing = missing_parts(path)
        if not missing:
            return path
        logger.warning("%s is torn (no %s): resuming from an earlier complete checkpoint", path, ", ".join(missing))
    return None
