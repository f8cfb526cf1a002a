"""Padding-free packing: several whole samples per row, position ids restarting at each sample, no attention mask.

    framelm train --config recipe.yaml --packing true          # rows of whole samples, filled up to max_length
    framelm train --config recipe.yaml --padding_free true     # each batch flattened into one row, no padding

How a packed row keeps its samples apart, on every attention implementation (transformers 5.24):
- SDPA and eager: with `attention_mask=None`, `position_ids` given and no KV cache, `masking_utils` finds where the
  position ids restart (`find_packed_sequence_indices`) and builds a block-diagonal causal mask. A KV cache switches
  this off, and a Llama-style LM creates one whenever `use_cache` is on, its config default: `FrameLMModel` therefore
  builds no cache for a batch without mask but with position ids, and TRL passes `use_cache=False` in training.
- flash-attention (varlen): `cu_seq_lens_q/k` and `max_length_q/k`, computed here on the CPU over the flattened batch,
  go to `flash_attn_varlen_func` (from `position_ids` alone, transformers derives them only for a single row).
- `sdpa_varlen` (`varlen_attention.py`), which `framelm train` puts in place of SDPA when it packs: the boundaries of
  transformers' packed mask, one SDPA call per sample, so that no masked block is computed.
- The vision tower sees the batch's images and frames in order of appearance, row after row: the same tensors, in the
  same order, as the unpacked batch, scattered into the same placeholder tokens.
- Labels keep the assistant-only rule of each sample; the first token of each sample is -100, so the last token of
  the previous sample is never trained to predict it (the causal-LM loss shifts labels across the whole row).

Loss normalisation: the mean over every label token of the batch (transformers' `ForCausalLMLoss` and TRL's
`num_items_in_batch`), the same packed or padded, so a packed batch has the loss and gradients of the padded one.
"""

from __future__ import annotations

import bisect
import logging

import datasets
import numpy as np
import pyarrow as pa
import torch

from framelm.training.batches.padding import IGNORE_INDEX, media_of, pad_sequences

logger = logging.getLogger(__name__)


PACKED_COLUMN = "samples"  # a packed row: its samples, each one row of the measured dataset
PACKING_WINDOW = 2000  # samples packed together (one batched map step); rows fill as well as a global packing would


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of total length <= `capacity`, longest first, each into the open bin
    with the least room that still fits it (best fit decreasing); a stable sort, so ties keep their input order.

    `bisect` over the distinct amounts of room left (at most `capacity` of them) finds that bin in O(log capacity).
    """
    if len(lengths) and int(lengths.max()) > capacity:
        raise ValueError(f"a sample of {int(lengths.max())} tokens cannot fit a row of max_length={capacity}")
    bins: list[list[int]] = []
    rooms: list[int] = []  # sorted distinct room left in the open bins
    bins_with_room: dict[int, list[int]] = {}  # room left -> open bins with exactly that room
    for index in np.argsort(-lengths, kind="stable").tolist():
        need = int(lengths[index])
        at = bisect.bisect_left(rooms, need)
        if at < len(rooms):
            room = rooms[at]
            chosen = bins_with_room[room].pop()
            if not bins_with_room[room]:
                del bins_with_room[room], rooms[at]
        else:
            room, chosen = capacity, len(bins)
            bins.append([])
        bins[chosen].append(index)
        room -= need
        if room > 0:
            if room not in bins_with_room:
                bisect.insort(rooms, room)
                bins_with_room[room] = []
            bins_with_room[room].append(chosen)
    return bins


def pack_rows(dataset: datasets.Dataset, max_length: int, seed: int) -> datasets.Dataset:
    """A measured dataset (`data/budget.py` columns) -> packed rows: column `samples` (the rows packed together, all
    their columns) and `num_tokens` (their sum, <= max_length). Samples are never split across rows.

    The samples are shuffled with `seed` (which samples meet in a window, and the order of equal lengths), then
    packed by `best_fit_decreasing` on their `num_tokens` (the one length rule), `PACKING_WINDOW` at a time: the
    same seed gives the same rows, and `datasets` caches them beside the measured data.
    """
    if "num_tokens" not in dataset.column_names:
        raise ValueError("pack_rows needs the num_tokens column of measure_lengths (data/budget.py)")
    features = datasets.Features(
        {PACKED_COLUMN: datasets.List(dataset.features), "num_tokens": datasets.Value("int64")}
    )
    packed = dataset.shuffle(seed=seed).with_format("arrow")
    packed = packed.map(
        _pack_window,
        batched=True,
        batch_size=PACKING_WINDOW,
        remove_columns=dataset.column_names,
        features=features,
        fn_kwargs={"max_length": max_length},
        desc="packing rows",
    )
    tokens = packed.data.column("num_tokens").to_numpy()
    logger.info("packed %d samples into %d rows of at most %d tokens (%.1f%% filled)", len(dataset), len(packed),
                max_length, 100 * tokens.sum() / max(1, len(packed) * max_length))  # fmt: skip
    return packed.with_format(None)


def _pack_window(window: pa.Table, max_length: int) -> pa.Table:
    lengths = window.column("num_tokens").to_numpy()
    bins = best_fit_decreasing(lengths, max_length)
    order = pa.array([index for row in bins for index in row], pa.int64())
    samples = pa.StructArray.from_arrays(
        [column.combine_chunks().take(order) for column in window.columns], names=window.column_names
    )
    offsets = pa.array(np.cumsum([0] + [len(row) for row in bins]), pa.int32())
    totals = pa.array([int(lengths[row].sum()) for row in bins], pa.int64())
    return pa.table({PACKED_COLUMN: pa.ListArray.from_arrays(offsets, samples), "num_tokens": totals})


def collate_packed(
    rows: list[list[dict[str, torch.Tensor]]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Rows of encoded samples (1-D `input_ids`, `labels`, pixel tensors) -> one padding-free batch.

    Each row is its samples one after the other; rows shorter than the longest (rounded up to `pad_to_multiple_of`)
    end with a padding segment: pad tokens, labels -100, position ids 0, 1, ... of their own, so it is one more
    "sample" that no real token attends to. Returns `input_ids`, `labels`, `position_ids` (B, L), the varlen
    attention arguments over the flattened batch (`cu_seq_lens_q/k`, `max_length_q/k`) and the pixel tensors of
    every sample in row order. No `attention_mask`: transformers reads the sample boundaries from `position_ids`.
    """
    samples = [sample for row in rows for sample in row]
    joined = {key: [torch.cat([s[key] for s in row]) for row in rows] for key in ("input_ids", "labels")}
    input_ids, _ = pad_sequences(joined["input_ids"], pad_token_id, "right", pad_to_multiple_of)  # (B, L)
    labels, _ = pad_sequences(joined["labels"], IGNORE_INDEX, "right", pad_to_multiple_of)  # (B, L)
    width = input_ids.shape[1]
    segments = [[len(s["input_ids"]) for s in row] for row in rows]  # tokens of each sample, per row
    for lengths in segments:
        if sum(lengths) < width:
            lengths.append(width - sum(lengths))  # the padding segment
    flat = torch.tensor([length for lengths in segments for length in lengths])  # (segments,)
    starts = torch.cumsum(flat, 0) - flat
    position_ids = (torch.arange(len(rows) * width) - starts.repeat_interleave(flat)).view(len(rows), width)
    labels[position_ids == 0] = IGNORE_INDEX  # never a target of the previous sample's last token
    cu_seq_lens = torch.cat([torch.zeros(1, dtype=torch.int32), torch.cumsum(flat, 0, dtype=torch.int32)])
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
             "cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens,
             "max_length_q": int(flat.max()), "max_length_k": int(flat.max())}  # fmt: skip
    return batch | media_of(samples)


def count_samples_and_tokens(batch: dict[str, torch.Tensor], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, real tokens) of a batch, padded (an `attention_mask`) or packed (`position_ids`): in a packed batch
    each sample starts at position 0, and the padding segment of a row (`collate_packed`) is the one made of pad
    tokens alone; a sample never is, as its chat template adds tokens of its own."""
    if "attention_mask" in batch:
        mask = batch["attention_mask"]
        return torch.tensor(mask.shape[0], device=mask.device), mask.sum()
    starts = batch["position_ids"] == 0  # (B, L)
    segment = starts.cumsum(-1)
    last = segment == segment[:, -1:]  # the tokens of each row's last segment
    padded = ((batch["input_ids"] == pad_token_id) | ~last).all(-1)  # (B,) rows that end in a padding segment
    return starts.sum() - padded.sum(), starts.numel() - (last.sum(-1) * padded).sum()
