"""`load_samples`: a data file or a mixture YAML -> normalized samples in a `datasets.Dataset`, plus every problem.

Two passes, both through `datasets` and its Arrow cache: stage one (`raw.py`) splits the file into raw record texts
with their line numbers, a thousand records per Arrow row, and stage two (`normalize.py`,
`Dataset.map(batched=True, num_proc=...)`) parses each record and runs its format's reader. Media stay on disk as
paths, so a million LLaVA records take about 25 CPU-seconds (under a minute on two cores; `bench/data_scale.py`) and
a second run of the same file is read from the cache. Media files are not opened here: `framelm data validate` does
that. What happens to the bad records is the caller's choice (`policy.py`).
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass, field, replace

import datasets
import numpy as np
import pyarrow.compute as pc

from framelm.training.data.arguments import DataArguments
from framelm.training.data.formats import get_reader
from framelm.training.data.mixture import MixtureEntry, SamplingStrategy, is_mixture, load_mixture, reading
from framelm.training.data.normalize import (
    DETECT_RECORDS,
    LEFT_OUT,
    NOTES,
    PROBLEM_COLUMNS,
    ROW_FEATURES,
    detect_batch_format,
    entry_job,
    normalize_batch,
)
from framelm.training.data.raw import raw_dataset, record_count
from framelm.training.data.sample import SAMPLE_FEATURES, RecordProblem

logger = logging.getLogger(__name__)

PARALLEL_MIN_RECORDS = 50_000  # below this, worker processes cost more than they save


@dataclass
class LoadedSamples:
    """What `load_samples` read: usable samples, the problems of the others, and the counts that add up."""

    dataset: datasets.Dataset  # SAMPLE_FEATURES
    problems: list[RecordProblem]
    total: int  # records read (after mixture sampling): len(dataset) + len(problems) + left_out
    left_out: int = 0  # rows a mixture's preprocess_fn left out on purpose (e.g. below `aes_cutoff`)
    formats: dict[str, str] = field(default_factory=dict)  # source -> format used


def load_samples(data: DataArguments) -> LoadedSamples:
    """Read `data.dataset` (a json/jsonl/csv/parquet file, a mixture YAML or a `framelm data convert` folder) into
    normalized samples.

    Structural problems (JSON syntax, missing keys, role order, placeholder counts, paths escaping their root) are
    returned in `.problems`, one per bad record, never raised. Mixture entries may override the folders, roles and
    format given here. `data.num_proc=None` uses every core for large files and one process for small ones.
    """
    path = data.dataset
    if path is None:
        raise ValueError("no data given: pass the data file or mixture YAML")
    if data.data_format != "auto":
        get_reader(data.data_format)
    if os.path.isdir(path):
        return _load_converted(str(path))
    entries = mixture_entries(path, data.data_format)
    parts, formats, total = [], {}, 0
    for entry in entries:
        with reading(entry):
            raw = raw_dataset(entry.json_path, entry.is_table, data.num_proc, data.cache_dir)
        records = record_count(raw, entry.is_table)
        sampled = entry.sampling_strategy != SamplingStrategy("all")
        indices = entry.sampling_strategy.indices(records, data.sampling_seed, entry.name) if sampled else None
        if indices is not None:
            logger.info("%s: %s selects %d of %d records", entry.name, entry.sampling_strategy, len(indices), records)
            if entry.is_table:  # table rows are records: select before reading, so unselected rows cost nothing
                raw, records, indices = raw.select(indices), len(indices), None
        job = entry_job(entry, str(path), len(entries), data)
        head = raw.select(range(min(DETECT_RECORDS if job.table else 1, len(raw)))).to_dict()
        name = entry.format if entry.format != "auto" else detect_batch_format(head, job)
        job = replace(job, reader=name)
        formats[entry.name] = name
        rows = raw.map(
            normalize_batch,
            batched=True,
            batch_size=1000 if entry.is_table else 1,  # a JSON row is already a chunk of CHUNK_RECORDS records
            num_proc=map_workers(data.num_proc, records, len(raw)),
            fn_kwargs={"job": job},
            features=ROW_FEATURES,
            remove_columns=raw.column_names,
            desc=f"reading {entry.name} ({name})",
        )
        if indices is not None:  # JSON records are only known one by one after stage two: select their rows now
            rows = rows.select(indices)
        total += len(rows)
        parts.append(rows)
    rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return _split(rows, total, formats, str(path))


def mixture_entries(path: str, format: str = "auto") -> list[MixtureEntry]:
    """The entries of a mixture YAML, or one entry reading all of a data file."""
    if is_mixture(path):
        return load_mixture(path)
    return [MixtureEntry(name=posixpath.basename(str(path)), json_path=str(path), format=format)]


def _load_converted(path: str) -> LoadedSamples:
    """A folder written by `framelm data convert` (`save_to_disk`): already normalized and checked."""
    try:
        dataset = datasets.load_from_disk(path)
    except FileNotFoundError:
        raise ValueError(f"{path} is a folder but not a saved dataset; pass a data file, a mixture YAML or the "
                         "output folder of `framelm data convert`") from None  # fmt: skip
    if not isinstance(dataset, datasets.Dataset) or dataset.features != SAMPLE_FEATURES:
        raise ValueError(f"{path}: not a framelm dataset (its columns differ from SAMPLE_FEATURES); convert it with "
                         "`framelm data convert`")  # fmt: skip
    return LoadedSamples(dataset=dataset, problems=[], total=len(dataset), formats={path: "arrow"})


def _split(rows: datasets.Dataset, total: int, formats: dict, path: str) -> LoadedSamples:
    """Good rows become the dataset (without the problem columns); the others become RecordProblems."""
    kinds = rows.with_format("arrow")["kind"]
    bad = np.asarray(pc.not_equal(kinds, "").to_numpy(zero_copy_only=False), dtype=bool)
    notes = rows.with_format("arrow")["note"]
    for note, count in zip(*_value_counts(notes), strict=True):
        if note:
            logger.warning("%s: %d %s", path, count, NOTES[note])
    dataset = rows.select(np.flatnonzero(~bad)) if bad.any() else rows
    dataset = dataset.remove_columns(list(PROBLEM_COLUMNS))
    problems, left_out = [], 0
    if bad.any():
        for row in rows.select(np.flatnonzero(bad)).select_columns(["where", "id", "problem", "fix", "kind"]):
            if row["kind"] == LEFT_OUT:
                left_out += 1
            else:
                problems.append(RecordProblem(**row))
    logger.info(
        "%s: %d records read, %d samples, %d with problems, %d left out by preprocess_fn",
        path, total, len(dataset), len(problems), left_out,
    )  # fmt: skip
    assert len(dataset) + len(problems) + left_out == total, "every record is a sample, a problem or left out"
    return LoadedSamples(dataset=dataset, problems=problems, total=total, left_out=left_out, formats=formats)


def _value_counts(column) -> tuple[list, list]:
    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def map_workers(num_proc: int | None, records: int, rows: int) -> int | None:
    """Processes for a `Dataset.map` over `records` in `rows` batches: every core for large inputs, one for small
    ones (workers cost ~1 s to start); `num_proc` when the user set it."""
    if num_proc is None:
        num_proc = (os.cpu_count() or 1) if records >= PARALLEL_MIN_RECORDS else 1
    num_proc = min(num_proc, rows)
    return num_proc if num_proc > 1 else None
