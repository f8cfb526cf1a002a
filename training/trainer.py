"""FrameLMTrainer: TRL's SFTTrainer plus the throughput and data-loss numbers a multimodal run needs in its logs."""

from __future__ import annotations

import time

import torch
from trl import SFTTrainer


class FrameLMTrainer(SFTTrainer):
    """Adds `samples_per_second`, `tokens_per_second`, `media_tokens_per_second` (summed over all ranks, between two
    log lines) and `skipped_records` (left out by `--bad_records skip`) to every training log line."""

    def __init__(self, *args, skipped_records: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_records = skipped_records
        self._throughput = torch.zeros(3, dtype=torch.float64)  # samples, tokens, media tokens since the last log
        self._throughput_since = time.perf_counter()
        processor = self.processing_class
        self._media_token_ids = torch.tensor([processor.image_token_id, processor.video_token_id])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.model.training:
            input_ids = inputs["input_ids"]
            counts = torch.stack(
                [
                    torch.tensor(input_ids.shape[0], device=input_ids.device),
                    inputs["attention_mask"].sum(),
                    torch.isin(input_ids, self._media_token_ids.to(input_ids.device)).sum(),
                ]
            )
            self._throughput += self.accelerator.gather_for_metrics(counts.unsqueeze(0)).sum(0).cpu().double()
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            elapsed = max(time.perf_counter() - self._throughput_since, 1e-9)
            samples, tokens, media = (self._throughput / elapsed).tolist()
            logs.update(
                samples_per_second=round(samples, 3),
                tokens_per_second=round(tokens, 1),
                media_tokens_per_second=round(media, 1),
                skipped_records=self.skipped_records,
            )
            self._throughput.zero_()
            self._throughput_since = time.perf_counter()
        super().log(logs, start_time)
