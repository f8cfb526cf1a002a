"""Training data for `framelm train`: read and normalize, measure against `max_length`, apply the bad-record policy.

Nothing is dropped silently: records that cannot be read, and records whose first exchange does not fit
`max_length` (`data/budget.py`, the one length rule), stop the run under `--bad_records strict` (with the full list)
or are left out, counted and logged under `--bad_records skip`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import datasets
import numpy as np

from framelm.training.collator import FrameLMCollator
from framelm.training.data.arguments import DataArguments
from framelm.training.data.budget import kept_turns, measure_lengths, too_long_problems
from framelm.training.data.loading import load_samples
from framelm.training.data.policy import apply_bad_record_policy, require_records
from framelm.training.packing import BatchLayout

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    train: datasets.Dataset  # SAMPLE_FEATURES + LENGTH_FEATURES, only records that can train (or rows of them packed)
    eval: datasets.Dataset | None
    collator: FrameLMCollator
    skipped: int  # records left out under `--bad_records skip`


def prepare_datasets(
    data: DataArguments,
    processor,
    max_length: int | None,
    eval_dataset: str | None = None,
    layout: BatchLayout | None = None,
) -> PreparedData:
    """`data.dataset` (and `eval_dataset`, read with the same options) as measured datasets (packed into rows if
    `layout` says so) and their collator."""
    train, skipped = load_for_training(data, processor, max_length)
    evaluation = None
    if eval_dataset:
        evaluation, eval_skipped = load_for_training(replace(data, dataset=eval_dataset), processor, max_length)
        skipped += eval_skipped
    layout = layout or BatchLayout()
    collator = FrameLMCollator(processor, layout.pad_to_multiple_of, layout.padding_free)
    train, evaluation = layout.rows(train, max_length), layout.rows(evaluation, max_length, evaluation=True)
    return PreparedData(train=train, eval=evaluation, collator=collator, skipped=skipped)


def load_for_training(data: DataArguments, processor, max_length: int | None) -> tuple[datasets.Dataset, int]:
    """The records of `data.dataset` that can train, measured; and how many were left out."""
    loaded = load_samples(data)
    dataset = measure_lengths(loaded.dataset, processor, max_length, data.num_proc)
    problems = list(loaded.problems)
    if max_length is not None:
        too_long = too_long_problems(dataset, max_length)
        problems += [problem for _, problem in too_long]
        if too_long:
            dataset = dataset.select(np.flatnonzero(kept_turns(dataset) > 0))
    apply_bad_record_policy(problems, loaded.total, data.dataset, data.bad_records, skip_flag="--bad_records skip")
    require_records(len(dataset), loaded.total, data.dataset)
    logger.info("%s: %d records read, %d used, %d skipped", data.dataset, loaded.total, len(dataset), len(problems))
    return dataset, len(problems)
