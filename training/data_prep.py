"""Training data for `framelm train`: read and normalize, apply the bad-record policy, build the collator.

Nothing is dropped silently: records that cannot be read, and records whose first exchange does not fit
`max_length`, stop the run under `--bad_records strict` (with the full list) or are left out, counted and logged
under `--bad_records skip`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets

from framelm.training.collator import FrameLMCollator, TruncationError
from framelm.training.data.loading import apply_bad_record_policy, load_samples
from framelm.training.data.sample import RecordProblem, Sample

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    train: datasets.Dataset
    eval: datasets.Dataset | None
    collator: FrameLMCollator
    skipped: int  # records left out under `--bad_records skip`


def prepare_datasets(script_args, processor, max_length: int | None, seed: int) -> PreparedData:
    collator = FrameLMCollator(processor, max_length=max_length, num_frames=script_args.num_frames)
    train, skipped = _load(script_args.dataset, script_args, collator, seed)
    evaluation = None
    if script_args.eval_dataset:
        evaluation, eval_skipped = _load(script_args.eval_dataset, script_args, collator, seed)
        skipped += eval_skipped
    return PreparedData(train=train, eval=evaluation, collator=collator, skipped=skipped)


def _load(path: str, script_args, collator: FrameLMCollator, seed: int) -> tuple[datasets.Dataset, int]:
    loaded = load_samples(
        path,
        format=script_args.data_format,
        image_folder=script_args.image_folder,
        video_folder=script_args.video_folder,
        user_key=script_args.user_key,
        assistant_key=script_args.assistant_key,
        seed=seed,
        allow_outside_root=script_args.allow_outside_root,
    )
    dataset = loaded.dataset
    if collator.max_length is not None:
        errors = dataset.map(
            lambda row: {"fit_error": _fit_error(collator, row)},
            desc="checking max_length",
            load_from_cache_file=False,
        )["fit_error"]
        too_long = [i for i, error in enumerate(errors) if error]
        loaded.problems += [
            RecordProblem(dataset[i]["where"], errors[i], "raise max_length or use fewer frames",
                          id=dataset[i]["id"], kind="too_long")
            for i in too_long
        ]  # fmt: skip
        loaded.dataset = dataset = dataset.select(sorted(set(range(len(dataset))) - set(too_long)))
    apply_bad_record_policy(loaded, path, script_args.bad_records, skip_flag="--bad_records skip")
    logger.info("%s: %d records read, %d used, %d skipped", path, loaded.total, len(dataset), len(loaded.problems))
    return dataset, len(loaded.problems)


def _fit_error(collator: FrameLMCollator, row: dict) -> str:
    try:
        collator.fit(Sample.from_row(row))
    except TruncationError as err:
        return str(err)
    return ""
