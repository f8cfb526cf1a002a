"""FrameLMDPOTrainer: TRL's DPOTrainer on framelm's pairs (images and videos), with framelm's collator and
bad-record accounting.

TRL's own path handles images only (its vision collator renders `images` and treats a `videos` column as text) and
tokenizes text pairs before training. Here the pairs stay normalized samples until the collator
(`collator.py`) renders and decodes them in DataLoader workers, so TRL's dataset preparation does not run; everything
else (the losses, the reference model or the disabled adapter, precomputed reference log-probs, metrics) is TRL's.
"""

from __future__ import annotations

import torch
from trl import DPOTrainer

from framelm.training.batches.record_guard import SKIPPED_KEY


class FrameLMDPOTrainer(DPOTrainer):
    """Adds `skipped_records` to every training log line: the pairs left out by `--bad_records skip` before training,
    plus those whose media failed to decode in a DataLoader worker during training (`record_guard.py`)."""

    def __init__(self, *args, skipped_records: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_before_training = skipped_records
        self.skipped_in_training = 0

    @property
    def skipped_records(self) -> int:
        return self.skipped_before_training + self.skipped_in_training

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # the collator renders, tokenizes and decodes each pair in the DataLoader workers

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        skipped = inputs.pop(SKIPPED_KEY, None)  # present on every batch under --bad_records skip, on no batch else
        if skipped is not None:  # the same on every rank: the reduce is collective
            self.skipped_in_training += int(self.accelerator.reduce(skipped.sum(), "sum"))
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if bool(inputs["completion_mask"].any()):
            return result
        # every pair of the batch was skipped: the forward ran (each rank must run one), but nothing is learnt
        if return_outputs:
            return result[0] * 0.0, result[1]
        return result * 0.0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            logs["skipped_records"] = self.skipped_records
        super().log(logs, start_time)


def sequence_log_probs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of each row's completion tokens (`completion_mask`) under `model`: the quantity DPO
    compares, for evaluation (chosen rows first, then rejected, as the collator lays them out)."""
    inputs = {k: v.to(model.device) for k, v in batch.items() if k not in ("completion_mask", SKIPPED_KEY)}
    inputs = {k: v for k, v in inputs.items() if not k.startswith("ref_")}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits.float()
    targets = inputs["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].to(logits.device).bool()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(dim=1)
