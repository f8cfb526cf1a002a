"""One padder for training and inference: unpadded examples -> one batch, padded on the side the caller needs.

Training pads on the tokenizer's side (right, usually); generation pads on the left, so that every prompt of a batch
ends where generation starts.
"""

from __future__ import annotations

from typing import Literal

import torch

IGNORE_INDEX = -100  # label of the tokens that carry no loss (the value torch's cross entropy ignores)
PIXEL_KEYS = ("pixel_values", "pixel_values_videos")


def pad_sequences(
    sequences: list[torch.Tensor], value: int, side: Literal["left", "right"], pad_to_multiple_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D sequences -> (padded (B, L), attention mask (B, L)); L is the longest length, rounded up to a multiple."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side {side!r} is not 'left' or 'right'")
    length = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    padded = torch.full((len(sequences), length), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(length - len(seq), length)
        padded[row, span] = seq
        mask[row, span] = 1
    return padded, mask


def collate(
    examples: list[dict[str, torch.Tensor]],
    pad_token_id: int,
    side: Literal["left", "right"],
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Examples with 1-D `input_ids` (and `labels`, padded with IGNORE_INDEX) plus pixel tensors -> a batch.

    The pixel tensors of all examples are concatenated in order (`media_of`): the model scatters them into the
    placeholder positions of the whole batch in order of appearance.
    """
    input_ids, mask = pad_sequences([e["input_ids"] for e in examples], pad_token_id, side, pad_to_multiple_of)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if "labels" in examples[0]:
        batch["labels"] = pad_sequences([e["labels"] for e in examples], IGNORE_INDEX, side, pad_to_multiple_of)[0]
    return batch | media_of(examples)


def media_of(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The pixel tensors of all examples, concatenated in order (the order the model fills placeholders in)."""
    joined = {key: [e[key] for e in examples if key in e] for key in PIXEL_KEYS}
    return {key: torch.cat(tensors) for key, tensors in joined.items() if tensors}
