"""PreferenceCollator: pair rows -> the batch TRL's `DPOTrainer` reads, in DataLoader workers.

Each pair is encoded twice by `FrameLMCollator.encode` (the chat template, the media decoded by the processor, exactly
as SFT and inference do): once as the prompt with the chosen answer, once with the rejected one. The batch is TRL's
layout: the chosen rows first, then the rejected rows in the same order (`input_ids`, `attention_mask`, the pixel
tensors of both halves in that order), and `completion_mask`, which is 1 exactly on the last answer's tokens and its
end of turn (the template's last `{% generation %}` span): the system prompt, the prompt's turns (earlier assistant
turns included), media tokens and padding are never in the loss. Records whose media fail to decode follow the
bad-record policy of SFT (`batches/record_guard.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from framelm.processing import FrameLMProcessor
from framelm.training.batches.collator import FrameLMCollator
from framelm.training.batches.padding import IGNORE_INDEX, collate
from framelm.training.batches.record_guard import encode_rows, nothing_to_learn, with_skip_count
from framelm.training.data.formats.preference import pair_samples
from framelm.training.data.sample import Sample

REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")  # added to the rows by TRL's --precompute_ref_log_probs


@dataclass
class PreferenceCollator:
    processor: FrameLMProcessor
    pad_to_multiple_of: int | None = None
    bad_records: str = "strict"
    _sft: FrameLMCollator = field(init=False, repr=False)

    def __post_init__(self):
        self._sft = FrameLMCollator(self.processor, self.pad_to_multiple_of)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        pairs, skipped = encode_rows(self.encode, rows, self.bad_records)
        if not pairs:  # every pair of the batch was skipped: one pair with nothing to learn (see record_guard.py)
            pairs = [(nothing_to_learn(), nothing_to_learn(), dict.fromkeys(REF_KEYS, 0.0))]
        examples = [chosen for chosen, _, _ in pairs] + [rejected for _, rejected, _ in pairs]
        batch = collate(examples, self.processor.tokenizer.pad_token_id, "right", self.pad_to_multiple_of)
        batch["completion_mask"] = (batch.pop("labels") != IGNORE_INDEX).long()
        if all(key in rows[0] for key in REF_KEYS):
            for key in REF_KEYS:
                batch[key] = torch.tensor([refs[key] for _, _, refs in pairs])
        return with_skip_count(batch, skipped, self.bad_records)

    def encode(self, row: dict) -> tuple[dict, dict, dict]:
        """One pair row -> (chosen, rejected, reference log-probs when precomputed); chosen and rejected each hold
        unpadded `input_ids`, answer-only `labels` and pixel tensors."""
        chosen, rejected = pair_samples(Sample.from_row(row))
        refs = {key: row[key] for key in REF_KEYS if key in row}
        return answer_only(self._sft.encode(chosen.to_row())), answer_only(self._sft.encode(rejected.to_row())), refs


def answer_only(example: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`example` with labels kept on its last labelled span only (the final answer): earlier assistant turns of a
    multi-turn prompt are context, not what the pair compares."""
    labels = example["labels"]
    labelled = torch.nonzero(labels != IGNORE_INDEX).flatten()
    if len(labelled):
        gaps = torch.nonzero(labelled[1:] != labelled[:-1] + 1).flatten()
        start = int(labelled[gaps[-1] + 1]) if len(gaps) else int(labelled[0])
        labels = labels.clone()
        labels[:start] = IGNORE_INDEX
    return example | {"labels": labels}
