"""`framelm_run.json`: what a `framelm train` run was (stage, data, hyperparameters, counts), written beside the model
so that `framelm export` can fill the model card from facts instead of asking for them again."""

from __future__ import annotations

import json
from pathlib import Path

from framelm.processing.sources_framelm import redact
from framelm.training.atomic_write import write_text_atomically

RUN_RECORD = "framelm_run.json"
CARD_HYPERPARAMETERS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "packing", "padding_free", "bf16",
    "activation_checkpointing", "seed",
)  # fmt: skip


def write_run_record(
    output_dir: str,
    script_args,
    data_args,
    training_args,
    model_args,
    trainer,
    skipped: int,
    extra: dict | None = None,
) -> Path:
    """`trainer.processing_class` is the processor saved with the model: its `num_frames` is what training used.
    `extra`: what a method adds to the record (`framelm dpo`: `method` and its `dpo` settings)."""
    record = run_record(script_args, data_args, training_args, model_args, trainer, skipped, extra)
    path = Path(output_dir) / RUN_RECORD
    write_text_atomically(path, json.dumps(record, indent=2) + "\n")
    return path


def run_record(
    script_args, data_args, training_args, model_args, trainer, skipped: int, extra: dict | None = None
) -> dict:
    """The record as it stands (also at a checkpoint, for the card written there)."""
    args = training_args.to_dict()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    record = {
        "stage": script_args.stage,
        "use_peft": bool(model_args.use_peft),
        "lora_r": model_args.lora_r if model_args.use_peft else None,
        "num_frames": trainer.processing_class.num_frames,
        "datasets": [redact(d) for d in (data_args.dataset, script_args.eval_dataset) if d],  # no token, no signature
        "skipped_records": skipped,
        "hyperparameters": {key: args[key] for key in CARD_HYPERPARAMETERS if key in args}
        | {
            "num_processes": trainer.accelerator.num_processes,
            "global_steps": trainer.state.global_step,
            "distributed_type": trainer.accelerator.distributed_type.value,
        },
        "final_train_loss": losses[-1] if losses else None,
    } | (extra or {})
    return record


def read_run_record(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / RUN_RECORD
    return json.loads(path.read_text()) if path.exists() else None
