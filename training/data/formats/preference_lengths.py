"""The length rule for preference pairs: `budget.py`'s rule applied to the chosen and to the rejected conversation.

A pair trains only whole: the two conversations differ in their last answer alone, so dropping trailing exchanges
(what SFT does with a long conversation) would leave two identical sequences and a loss that teaches nothing. A pair
whose chosen or rejected conversation does not fit `max_length` whole is therefore a bad record, reported with the
token counts and the fixes (never cut, never dropped silently): `pair_too_long` when even the first exchange, media
included, does not fit, `pair_truncated` when only the last exchange (where the answers differ) would be cut.
"""

from __future__ import annotations

import datasets
import numpy as np

from framelm.training.data.budget import measure_lengths
from framelm.training.data.formats.preference import pair_samples
from framelm.training.data.sample import SAMPLE_FEATURES, RecordProblem, Sample

_FIX = "raise max_length, use fewer frames per video (num_frames)"


def _side(row: dict, side: int) -> dict:
    return pair_samples(Sample.from_row(row))[side].to_row()


def measure_pairs(dataset: datasets.Dataset, processor, max_length: int | None, num_proc: int | None = None):
    """(chosen, rejected): `dataset` (pair samples) as its chosen and its rejected conversations, each measured by
    `measure_lengths` (`kept_turns`, `num_tokens`, ... columns); cached like it."""
    sides = []
    for side, name in enumerate(("chosen", "rejected")):
        rows = dataset.select_columns(list(SAMPLE_FEATURES)).map(
            _side, fn_kwargs={"side": side}, features=SAMPLE_FEATURES, desc=f"{name} conversations"
        )
        sides.append(measure_lengths(rows, processor, max_length, num_proc))
    return tuple(sides)


def pair_length_problems(
    dataset: datasets.Dataset, processor, max_length: int, num_proc: int | None = None
) -> list[tuple[int, RecordProblem]]:
    """(row, problem) for every pair whose chosen or rejected conversation does not fit `max_length` whole."""
    chosen, rejected = measure_pairs(dataset, processor, max_length, num_proc)
    turns = np.array([len(t) - 1 for t in dataset.with_format("arrow")["turns"].to_pylist()], dtype=np.int64)
    kept_c, kept_r = (np.asarray(side.with_format("numpy")["kept_turns"]) for side in (chosen, rejected))
    tokens_c, tokens_r = (np.asarray(side.with_format("numpy")["num_tokens"]) for side in (chosen, rejected))
    totals_c, totals_r = (np.asarray(side.with_format("numpy")["total_tokens"]) for side in (chosen, rejected))
    problems = []
    for row in np.flatnonzero((kept_c < turns) | (kept_r < turns)).tolist():
        record = dataset[row]
        if min(kept_c[row], kept_r[row]) == 0:
            need = max(tokens_c[row] if kept_c[row] == 0 else 0, tokens_r[row] if kept_r[row] == 0 else 0)
            problem = RecordProblem(
                record["where"],
                f"the prompt and its answer need {need} tokens (media included) but max_length is {max_length}: "
                "the pair cannot train without cutting inside its media or its answers",
                f"{_FIX}, or shorten the prompt",
                id=record["id"],
                kind="pair_too_long",
            )
        else:
            problem = RecordProblem(
                record["where"],
                f"the chosen and rejected conversations need {totals_c[row]} and {totals_r[row]} tokens but "
                f"max_length is {max_length}: cut to fit, they would differ only in the part cut off",
                f"{_FIX}, or drop earlier exchanges of the prompt",
                id=record["id"],
                kind="pair_truncated",
            )
        problems.append((row, problem))
    return problems
