"""Training pairs for `framelm dpo`: read and normalize (the same readers and sources as SFT data), measure each pair
by the pair length rule, apply the bad-record policy.

Nothing is dropped silently: records that cannot be read, and pairs that do not fit `max_length` whole
(`data/formats/preference_lengths.py`), stop the run under `--bad_records strict` (with the full list) or are left
out, counted and logged under `--bad_records skip`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import datasets
import numpy as np

from framelm.training.data.arguments import DataArguments
from framelm.training.data.formats.preference_lengths import pair_length_problems
from framelm.training.data.loading import load_samples
from framelm.training.data.media_exists import check_media_exist, require_within_budget
from framelm.training.data.policy import DataError, apply_bad_record_policy, require_records
from framelm.training.dpo.collator import PreferenceCollator

logger = logging.getLogger(__name__)


@dataclass
class PreparedPairs:
    train: datasets.Dataset  # SAMPLE_FEATURES rows, each a pair (`formats/preference.py`)
    eval: datasets.Dataset | None
    collator: PreferenceCollator
    skipped: int  # pairs left out under `--bad_records skip`


def prepare_pairs(
    data: DataArguments,
    processor,
    max_length: int | None,
    eval_dataset: str | None = None,
    pad_to_multiple_of: int | None = None,
) -> PreparedPairs:
    """`data.dataset` (and `eval_dataset`, or `data.val_size` of the training pairs) as pairs that can train."""
    if data.streaming:
        raise ValueError("--streaming: framelm dpo reads its pairs into the Arrow cache; leave the option out")
    if data.val_size and eval_dataset:
        raise ValueError("--val_size and --eval_dataset both give the evaluation pairs: pass one of them")
    train, skipped = load_pairs(data, processor, max_length)
    evaluation = None
    if eval_dataset:
        evaluation, eval_skipped = load_pairs(replace(data, dataset=eval_dataset), processor, max_length)
        skipped += eval_skipped
    elif data.val_size:
        size = data.val_size if data.val_size < 1 else int(data.val_size)
        if len(train) < 2 or (size >= 1 and size >= len(train)):
            raise ValueError(f"--val_size {data.val_size} leaves no training pairs out of {len(train)}")
        split = train.train_test_split(test_size=size, seed=data.sampling_seed)
        train, evaluation = split["train"], split["test"]
    collator = PreferenceCollator(processor, pad_to_multiple_of, data.bad_records)
    return PreparedPairs(train=train, eval=evaluation, collator=collator, skipped=skipped)


def load_pairs(data: DataArguments, processor, max_length: int | None) -> tuple[datasets.Dataset, int]:
    """The pairs of `data.dataset` that can train; and how many records were left out."""
    loaded = load_samples(data)
    not_pairs = {source: name for source, name in loaded.formats.items() if name != "preference"}
    if not_pairs:
        names = ", ".join(f"{source} (read as {name})" for source, name in not_pairs.items())
        raise DataError(
            f"{names}: not preference data; framelm dpo trains on pairs: records with 'chosen' and 'rejected' "
            "answers (TRL's prompt/chosen/rejected, or LLaMA-Factory's conversations/chosen/rejected). Train "
            "conversations with `framelm train`, or pass --data_format preference to see what each record lacks"
        )
    # every local media file exists (a stat each), before any pair is measured: a wrong media folder stops here
    dataset, missing = check_media_exist(loaded.dataset, data.dataset, data.max_bad_fraction, data.bad_records)
    problems = list(loaded.problems) + missing
    if max_length is not None and len(dataset):
        too_long = pair_length_problems(dataset, processor, max_length, data.num_proc)
        problems += [problem for _, problem in too_long]
        if too_long:
            dataset = dataset.select(np.setdiff1d(np.arange(len(dataset)), [row for row, _ in too_long]))
    apply_bad_record_policy(problems, loaded.total, data.dataset, data.bad_records, skip_flag="--bad_records skip")
    require_records(len(dataset), loaded.total, data.dataset)
    cause = ", ".join(sorted({problem.kind for problem in problems}))
    require_within_budget(len(problems), loaded.total, data.dataset, data.max_bad_fraction, cause)
    logger.info("%s: %d records read, %d pairs used, %d skipped", data.dataset, loaded.total, len(dataset),
                len(problems))  # fmt: skip
    return dataset, len(problems)
