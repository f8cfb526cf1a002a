"""FrameLMTrainer: TRL's SFTTrainer plus the throughput and data-loss numbers a multimodal run needs in its logs, and
framelm's own packing in place of TRL's."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from trl import SFTTrainer

from framelm.training.batches.packing import count_samples_and_tokens
from framelm.training.batches.record_guard import SKIPPED_KEY, is_nothing_to_learn
from framelm.training.data.media_exists import require_within_budget

STREAM_BUDGET_FLOOR = 1000  # a stream's budget counts at least this many records: one early skip must not stop it


class FrameLMTrainer(SFTTrainer):
    """Adds `samples_per_second`, `tokens_per_second`, `media_tokens_per_second` (summed over all ranks, between two
    log lines) and `skipped_records` to every training log line: the records left out by `--bad_records skip` before
    training, plus those whose media failed to decode in a DataLoader worker during training (`record_guard.py`).
    Samples and tokens are real ones: a packed row counts its samples, padding counts for nothing.

    `args.packing` and `args.padding_free` are framelm's to do (`packing.py`: `pack_rows` before training, the
    collator for each batch); TRL's constructor must not see them, as its own padding-free path takes only its text
    collator and refuses any other."""

    def __init__(
        self,
        *args,
        skipped_records: int = 0,
        max_bad_fraction: float | None = None,
        records: int | None = None,
        source: str = "the training data",
        **kwargs,
    ):
        """`max_bad_fraction`: stop training once more than this share of the records (`records` used plus the
        `skipped_records` left out before training; for a stream, those seen, at least STREAM_BUDGET_FLOOR) were
        skipped; None: no budget."""
        with _packing_left_to_framelm(kwargs["args"]):
            super().__init__(*args, **kwargs)
        self.skipped_before_training = skipped_records
        self.max_bad_fraction, self.records, self.source = max_bad_fraction, records, source
        self._records_seen = 0
        self.card_facts = None  # set by `framelm train`: () -> the run record so far, for the model card
        self.skipped_in_training = 0  # records left out of their batch by the collator, summed over steps and ranks
        self._throughput = torch.zeros(3, dtype=torch.float64)  # samples, tokens, media tokens since the last log
        self._throughput_since = time.perf_counter()
        processor = self.processing_class
        self._media_token_ids = torch.tensor([processor.image_token_id, processor.video_token_id])
        self._pad_token_id = processor.tokenizer.pad_token_id

    @property
    def skipped_records(self) -> int:
        return self.skipped_before_training + self.skipped_in_training

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        skipped = inputs.pop(SKIPPED_KEY, None)  # present on every batch under --bad_records skip, on no batch else
        learns = not is_nothing_to_learn(inputs)
        if self.model.training or skipped is not None:  # the same on every rank: the reduce below is collective
            input_ids = inputs["input_ids"]
            zero = input_ids.new_zeros(())
            samples, tokens = count_samples_and_tokens(inputs, self._pad_token_id) if learns else (zero, zero)
            counts = torch.stack(
                [
                    samples.to(zero),
                    tokens.to(zero),
                    torch.isin(input_ids, self._media_token_ids.to(input_ids.device)).sum(),
                    skipped.sum() if skipped is not None else zero,
                ]
            )
            counts = self.accelerator.reduce(counts, "sum").cpu().double()
            if self.model.training:
                self._throughput += counts[:3]
                self._records_seen += int(counts[0]) + int(counts[3])
            self.skipped_in_training += int(counts[3])
            if counts[3] > 0 and self.model.training:
                self._check_skip_budget()
        if not learns:  # every record of the batch was skipped: a forward pass (each rank must run one), no loss
            outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
            loss = outputs.logits.sum() * 0.0
            return (loss, outputs) if return_outputs else loss
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def create_model_card(self, model_name: str | None = None, *args, **kwargs) -> None:
        """framelm's card (model/card.py), not TRL's stock one: TRL calls this at each checkpoint (and on
        `push_to_hub`); `framelm train` once more at the end. `self.card_facts()` gives the run record so far."""
        from framelm.training.model.card import write_card

        if not self.is_world_process_zero():
            return
        run = self.card_facts() if self.card_facts is not None else None
        model = self.accelerator.unwrap_model(self.model)
        os.makedirs(self.args.output_dir, exist_ok=True)
        write_card(model, self.processing_class, Path(self.args.output_dir),
                   repo_id=self.args.hub_model_id or model_name or Path(self.args.output_dir).name,
                   license_id="apache-2.0", datasets=(run or {}).get("datasets", []), run=run,
                   evaluation=None)  # fmt: skip

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)  # TRL writes the card into output_dir first; the checkpoint gets it too
        if self.is_world_process_zero():
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            card = Path(self.args.output_dir) / "README.md"
            if folder.is_dir() and card.is_file():
                shutil.copyfile(card, folder / "README.md")

    def _check_skip_budget(self) -> None:
        """The same decision on every rank (the counts were summed over ranks): the run stops as a whole."""
        if self.max_bad_fraction is None:
            return
        used = self.records if self.records is not None else max(self._records_seen, STREAM_BUDGET_FLOOR)
        require_within_budget(self.skipped_records, used + self.skipped_before_training, self.source,
                              self.max_bad_fraction, "media that failed to decode while training",
                              f"training stopped at step {self.state.global_step}")  # fmt: skip

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


@contextmanager
def _packing_left_to_framelm(args) -> Iterator[None]:
    """`args.packing` and `args.padding_free` off while TRL's constructor runs, as set again after it (the run record
    and anyone reading `trainer.args` see what the user asked for)."""
    asked = args.packing, args.padding_free
    args.packing = args.padding_free = False
    try:
        yield
    finally:
        args.packing, args.padding_free = asked
