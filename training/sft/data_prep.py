"""Training data for `framelm train`: read and normalize, measure against `max_length`, apply the bad-record policy.

Nothing is dropped silently: records that cannot be read, and records whose first exchange does not fit
`max_length` (`data/budget.py`, the one length rule), stop the run under `--bad_records strict` (with the full list)
or are left out, counted and logged under `--bad_records skip`.

Two ways in: the records into the Arrow cache first (a `datasets.Dataset`, the default), or streamed while training
(a `datasets.IterableDataset`: WebDataset shards always, any other source with `--streaming`). A stream is measured
and checked record by record as it is read, by the same rule, and each process and DataLoader worker reads its own
shards. Resuming from a checkpoint re-reads the stream from its start and skips the batches already trained (the
Trainer's `skip_first_batches`): the batches trained after a resume are exactly those the uninterrupted run would
have trained, as long as the checkpoint falls within the first pass over the data (a stream has no length, so the
Trainer cannot tell where a later pass began); the skipped batches are read and collated again, not trained.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import datasets
import numpy as np

from framelm.training.batches.collator import FrameLMCollator
from framelm.training.batches.layout import BatchLayout
from framelm.training.data.arguments import DataArguments
from framelm.training.data.budget import kept_turns, measure_lengths, too_long_problem, too_long_problems
from framelm.training.data.loading import load_samples
from framelm.training.data.media_exists import check_media_exist, require_within_budget
from framelm.training.data.policy import BadRecordsError, DataError, apply_bad_record_policy, require_records
from framelm.training.data.shards import split_records
from framelm.training.data.sources import is_shards
from framelm.training.data.streaming import PolicyGate, stream_samples

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    train: datasets.Dataset | datasets.IterableDataset  # SAMPLE_FEATURES + LENGTH_FEATURES, records that can train
    eval: datasets.Dataset | datasets.IterableDataset | None
    collator: FrameLMCollator
    skipped: int  # records left out under `--bad_records skip` (a stream logs them as it meets them)
    streamed: bool = False
    records: int | None = None  # training records of a stream, when known (shard manifests count them)


def prepare_datasets(
    data: DataArguments,
    processor,
    max_length: int | None,
    eval_dataset: str | None = None,
    layout: BatchLayout | None = None,
) -> PreparedData:
    """`data.dataset` (and `eval_dataset`, read with the same options) as measured datasets (packed into rows if
    `layout` says so) and their collator; `data.val_size` carves the evaluation records out of the training ones
    instead. A stream is shuffled with `layout.seed`."""
    layout = layout or BatchLayout()
    if data.val_size and eval_dataset:
        raise ValueError("--val_size and --eval_dataset both give the evaluation records: pass one of them")
    if streams(data):
        return _prepare_stream(data, processor, max_length, eval_dataset, layout)
    train, skipped = load_for_training(data, processor, max_length)
    evaluation = None
    if eval_dataset:
        evaluation, eval_skipped = load_for_training(replace(data, dataset=eval_dataset), processor, max_length)
        skipped += eval_skipped
    elif data.val_size:
        train, evaluation = hold_out(train, data.val_size, data.sampling_seed)
    collator = layout.collator(processor, data.bad_records)
    train, evaluation = layout.rows(train, max_length), layout.rows(evaluation, max_length, evaluation=True)
    return PreparedData(train=train, eval=evaluation, collator=collator, skipped=skipped)


def load_for_training(data: DataArguments, processor, max_length: int | None) -> tuple[datasets.Dataset, int]:
    """The records of `data.dataset` that can train, measured; and how many were left out."""
    loaded = load_samples(data)
    if pairs := [source for source, name in loaded.formats.items() if name == "preference"]:
        raise DataError(f"{', '.join(pairs)}: preference pairs (chosen/rejected); tune on them with `framelm dpo`")
    present, missing = check_media_exist(loaded.dataset, data.dataset, data.max_bad_fraction, data.bad_records)
    dataset = measure_lengths(present, processor, max_length, data.num_proc)
    problems = list(loaded.problems) + missing
    if max_length is not None:
        too_long = too_long_problems(dataset, max_length)
        problems += [problem for _, problem in too_long]
        if too_long:
            dataset = dataset.select(np.flatnonzero(kept_turns(dataset) > 0))
    apply_bad_record_policy(problems, loaded.total, data.dataset, data.bad_records, skip_flag="--bad_records skip")
    require_records(len(dataset), loaded.total, data.dataset)
    cause = ", ".join(sorted({problem.kind for problem in problems}))
    require_within_budget(len(problems), loaded.total, data.dataset, data.max_bad_fraction, cause)
    logger.info("%s: %d records read, %d used, %d skipped", data.dataset, loaded.total, len(dataset), len(problems))
    return dataset, len(problems)


def hold_out(train: datasets.Dataset, val_size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training, evaluation) records: `val_size` of them (a share below 1, else a count) chosen with `seed`."""
    size = val_size if val_size < 1 else int(val_size)
    if len(train) < 2 or (size >= 1 and size >= len(train)):
        raise ValueError(f"--val_size {val_size} leaves no training records out of {len(train)}")
    split = train.train_test_split(test_size=size, seed=seed)
    logger.info("held out %d of %d records for evaluation (--val_size %s)", len(split["test"]), len(train), val_size)
    return split["train"], split["test"]


# --- streaming --------------------------------------------------------------------------------------------------


def streams(data: DataArguments) -> bool:
    """Whether `data` is read as a stream: WebDataset shards always, any other source with `--streaming`."""
    return data.streaming or is_shards(data.dataset)


def _prepare_stream(
    data: DataArguments, processor, max_length: int | None, eval_dataset: str | None, layout: BatchLayout
) -> PreparedData:
    if layout.packing or layout.eval_packing:
        raise ValueError(
            "--packing sorts all the records by length before training, which a stream (WebDataset shards, "
            "--streaming) cannot do: pass --padding_free true instead (each batch one row without padding), or "
            "train from the records in the Arrow cache (a data file, not shards, without --streaming)"
        )
    if data.val_size:
        raise ValueError(
            "--val_size needs the records in the Arrow cache, not a stream; give the evaluation records with "
            "--eval_dataset (`framelm data convert` writes a val split: --eval_dataset SHARDS/val-*.tar)"
        )
    train = stream_for_training(data, processor, max_length, seed=layout.seed)
    evaluation = None
    if eval_dataset:
        evaluation = stream_for_training(replace(data, dataset=eval_dataset), processor, max_length)
    records = split_records(data.dataset, data.dataset_split)
    if records is not None and data.max_samples:
        records = min(records, data.max_samples)
    return PreparedData(train=train, eval=evaluation, collator=layout.collator(processor, data.bad_records), skipped=0,
                        streamed=True, records=records)  # fmt: skip


def stream_for_training(
    data: DataArguments, processor, max_length: int | None, seed: int | None = None
) -> datasets.IterableDataset:
    """The records of `data.dataset` as a measured stream of records that can train, shuffled with `seed` (shard
    order and a `data.shuffle_buffer` of records; None: in stored order). Fails now when no record can train."""
    rows = stream_samples(data)
    if seed is not None and data.shuffle_buffer:
        rows = rows.shuffle(seed=seed, buffer_size=data.shuffle_buffer)
    rows = measure_lengths(rows, processor, max_length)
    if max_length is not None:
        too_long = PolicyGate(str(data.dataset), data.bad_records, lambda row: too_long_problem(row, max_length))
        rows = rows.filter(too_long)
    if next(iter(rows), None) is None:  # reads up to the first usable record (all of them if none is)
        raise BadRecordsError(
            f"{data.dataset}: no usable record in the stream (all of them skipped, or none at all); "
            f"`framelm data validate {data.dataset}` says what is wrong with each one"
        )
    logger.info("%s: streaming (records are checked and measured as they are read)", data.dataset)
    return rows


def configure_for_stream(training_args, records: int | None) -> None:
    """Trainer settings a stream needs: each process reads its own shards (accelerate's default for an iterable
    dataset is the main process reading for all and sending batches), and `max_steps` when it was not given: the
    steps of `num_train_epochs` passes over the `records` a shard manifest counts."""
    training_args.accelerator_config.dispatch_batches = False
    if training_args.max_steps > 0:
        return
    if records is None:
        raise ValueError("a stream has no length: pass --max_steps (WebDataset shard folders count their records)")
    per_step = training_args.per_device_train_batch_size * training_args.world_size
    per_step *= training_args.gradient_accumulation_steps
    training_args.max_steps = math.ceil(math.ceil(records / per_step) * training_args.num_train_epochs)
    logger.info("max_steps %d: %s pass(es) over %d records, %d per optimizer step", training_args.max_steps,
                training_args.num_train_epochs, records, per_step)  # fmt: skip
