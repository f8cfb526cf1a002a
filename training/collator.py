"""FrameLMCollator: normalized samples -> a padded batch with assistant-only labels, decoded in DataLoader workers.

Media are decoded here (the collator runs inside the DataLoader workers), through the same
`processor.apply_chat_template` that inference and `pipeline()` use, so training and serving cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framelm.processing.processing_framelm import FrameLMProcessor
from framelm.training.data.sample import Sample

IGNORE_INDEX = -100


class TruncationError(ValueError):
    """A record whose first exchange (with its media) does not fit `max_length`: it cannot be shortened at a turn
    boundary, and cutting inside a media span would feed the model a broken image or video."""


@dataclass
class FrameLMCollator:
    """Rows with the `SAMPLE_FEATURES` columns -> `input_ids`, `attention_mask`, `labels`, `pixel_values`,
    `pixel_values_videos`.

    Labels keep exactly the tokens inside the chat template's `{% generation %}` spans (assistant replies and their
    end-of-turn); the system prompt, user turns, media tokens and padding are -100. A conversation longer than
    `max_length` loses whole trailing (user, assistant) exchanges, and their media with them; one whose first exchange
    does not fit raises `TruncationError` (`framelm data validate --max-length` finds those before training).
    """

    processor: FrameLMProcessor
    max_length: int | None = None
    num_frames: int | None = None  # frames per video; None = the processor's default
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(Sample.from_row(row)) for row in rows]
        batch = self._pad([e["input_ids"] for e in encoded], self.processor.tokenizer.pad_token_id)
        batch["labels"] = self._pad([e["labels"] for e in encoded], IGNORE_INDEX)["input_ids"]
        for key in ("pixel_values", "pixel_values_videos"):
            tensors = [e[key] for e in encoded if key in e]
            if tensors:
                batch[key] = torch.cat(tensors)
        return batch

    def encode(self, sample: Sample) -> dict[str, torch.Tensor]:
        """One sample -> unpadded `input_ids` and `labels` (1-D) plus its pixel tensors."""
        messages = self.fit(sample)
        processor_kwargs = {"num_frames": self.num_frames} if self.num_frames else {}
        out = self.processor.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors="pt",
            processor_kwargs=processor_kwargs,
        )
        input_ids = out["input_ids"][0]
        labels = torch.where(out["assistant_masks"][0].bool(), input_ids, IGNORE_INDEX)
        media_ids = torch.tensor([self.processor.image_token_id, self.processor.video_token_id])
        labels[torch.isin(input_ids, media_ids)] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels} | {
            key: out[key] for key in ("pixel_values", "pixel_values_videos") if key in out
        }

    def fit(self, sample: Sample) -> list[dict]:
        """The longest prefix of whole exchanges that fits `max_length`, counted without decoding any media."""
        messages = sample.to_messages()
        if self.max_length is None:
            return messages
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        ends = {i + 1 for i, m in enumerate(messages) if m["role"] == "assistant" and i > first_user}
        needed = None
        for end in sorted(ends | {len(messages)}, reverse=True):  # whole conversation first, then fewer exchanges
            needed = self.length(messages[:end])
            if needed <= self.max_length:
                return messages[:end]
        raise TruncationError(
            f"{sample.where or sample.id}: the first exchange needs {needed} tokens (media included) but "
            f"max_length is {self.max_length}; raise max_length, use fewer frames, or drop the record "
            f"(bad_records: skip)"
        )

    def length(self, messages: list[dict]) -> int:
        text = self.processor.apply_chat_template(messages, tokenize=False)
        ids = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        per_video = (self.num_frames or self.processor.num_frames) * self.processor.tokens_per_frame
        return (
            len(ids)
            + text.count(self.processor.image_token) * (self.processor.tokens_per_image - 1)
            + text.count(self.processor.video_token) * (per_video - 1)
        )

    def _pad(self, sequences: list[torch.Tensor], value: int) -> dict[str, torch.Tensor]:
        length = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        padded = torch.full((len(sequences), length), value, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        right = self.processor.tokenizer.padding_side != "left"
        for row, seq in enumerate(sequences):
            span = slice(0, len(seq)) if right else slice(length - len(seq), length)
            padded[row, span] = seq
            mask[row, span] = 1
        return {"input_ids": padded, "attention_mask": mask}
