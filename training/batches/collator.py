"""FrameLMCollator: normalized samples -> a padded or packed batch with assistant-only labels, in DataLoader workers.

Media are decoded here (the collator runs inside the DataLoader workers), through the same
`processor.apply_chat_template` that inference and `pipeline()` use, so training and serving cannot disagree. How
much of each conversation fits `max_length` was decided once, before training (`data/budget.py`): the collator only
keeps the `kept_turns` leading turns of each row. Rows packed by `packing.pack_rows` (and every batch under
`padding_free`) become padding-free batches (`packing.collate_packed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framelm.processing import FrameLMProcessor
from framelm.training.batches.packing import PACKED_COLUMN, collate_packed
from framelm.training.batches.padding import IGNORE_INDEX, PIXEL_KEYS, collate
from framelm.training.batches.record_guard import encode_rows, nothing_to_learn, with_skip_count
from framelm.training.data.sample import Sample


@dataclass
class FrameLMCollator:
    """Rows with the `SAMPLE_FEATURES` columns (and, after `measure_lengths`, `kept_turns`) -> `input_ids`,
    `attention_mask`, `labels`, `pixel_values`, `pixel_values_videos`; packed rows (a `samples` column, see
    `packing.pack_rows`), or any rows with `padding_free=True`, -> `input_ids`, `labels`, `position_ids` and the
    varlen attention arguments, without padding between samples and without `attention_mask`.

    Labels keep exactly the tokens inside the chat template's `{% generation %}` spans (assistant replies and their
    end-of-turn); the system prompt, user turns, media tokens and padding are -100. A row's `kept_turns` leading
    turns are encoded, with the media their placeholders use; `len(input_ids)` of a row before padding is its
    `num_tokens`. Frames per video are the processor's (`processor.num_frames`).
    """

    processor: FrameLMProcessor
    pad_to_multiple_of: int | None = None
    padding_free: bool = False  # every batch becomes one row: its samples (or packed rows) one after the other
    bad_records: str = "strict"  # a record whose media fail to decode here: stop, or skip it (`record_guard.py`)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        pad_token_id = self.processor.tokenizer.pad_token_id
        if PACKED_COLUMN in rows[0]:
            groups = [row[PACKED_COLUMN] for row in rows]
        elif self.padding_free:
            groups = [rows]
        else:
            side = "left" if self.processor.tokenizer.padding_side == "left" else "right"
            encoded, skipped = encode_rows(self.encode, rows, self.bad_records)
            batch = collate(encoded or [nothing_to_learn()], pad_token_id, side, self.pad_to_multiple_of)
            return with_skip_count(batch, skipped, self.bad_records)
        packed, skipped = [], 0
        for group in groups:
            encoded, left_out = encode_rows(self.encode, group, self.bad_records)
            packed.append(encoded or [nothing_to_learn()])
            skipped += left_out
        if self.padding_free:
            packed = [[sample for row in packed for sample in row]]
        batch = collate_packed(packed, pad_token_id, self.pad_to_multiple_of)
        return with_skip_count(batch, skipped, self.bad_records)

    def encode(self, row: dict) -> dict[str, torch.Tensor]:
        """One row -> unpadded `input_ids` and `labels` (1-D) plus its pixel tensors."""
        sample = Sample.from_row(row)
        if "kept_turns" in row:
            assert row["kept_turns"] > 0, f"{sample.where}: a record that cannot fit max_length reached the collator"
            sample = sample.truncated(row["kept_turns"])
        out = self.processor.apply_chat_template(
            sample.to_messages(),
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors="pt",
        )
        input_ids = out["input_ids"][0]
        labels = torch.where(out["assistant_masks"][0].bool(), input_ids, IGNORE_INDEX)
        media_ids = torch.tensor([self.processor.image_token_id, self.processor.video_token_id])
        labels[torch.isin(input_ids, media_ids)] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels} | {key: out[key] for key in PIXEL_KEYS if key in out}
