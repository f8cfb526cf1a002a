"""`load_samples`: any data source (`sources.py`) -> normalized samples in a `datasets.Dataset`, plus every problem.

Two passes, both through `datasets` and its Arrow cache: stage one (`raw.py`) splits the file into raw record texts
with their line numbers, a thousand records per Arrow row (tables and Hub datasets: their rows), and stage two
(`normalize.py`, `Dataset.map(batched=True, num_proc=...)`) parses each record and runs its format's reader. Media
stay on disk as paths (or as the bytes they came in), so a million LLaVA records take about 25 CPU-seconds (under a
minute on two cores; `bench/data_scale.py`) and a second run of the same file is read from the cache. Media files are
not opened here: `framelm data validate` does that. What happens to the bad records is the caller's choice
(`policy.py`). `framelm data convert` folders and WebDataset shards are already normalized and are read as they are.
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
from framelm.training.data.raw import CHUNK_RECORDS, first_rows, raw_dataset, record_count
from framelm.training.data.sample import SAMPLE_FEATURES, RecordProblem
from framelm.training.data.shards import load_shards
from framelm.training.data.sources import is_saved_dataset, is_shards

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
    """Read `data.dataset` (any source of `sources.py`: a data file, a mixture YAML, a saved or Hub dataset, a
    `framelm data convert` folder, WebDataset shards) into normalized samples.

    Structural problems (JSON syntax, missing keys, role order, placeholder counts, paths escaping their root) are
    returned in `.problems`, one per bad record, never raised. Mixture entries may override the folders, roles and
    format given here. `data.num_proc=None` uses every core for large files and one process for small ones.
    """
    path = data.dataset
    if path is None:
        raise ValueError("no data given: pass the data file or mixture YAML")
    if data.data_format != "auto":
        get_reader(data.data_format)
    if is_shards(path):
        return _limited(load_shards(data), data.max_samples)
    if os.path.isdir(path) and is_saved_dataset(path) and _is_converted(path):
        return _limited(_load_converted(str(path)), data.max_samples)
    entries = mixture_entries(path, data.data_format, data.trust_preprocess_code)
    parts, formats, total = [], {}, 0
    for entry in entries:
        with reading(entry):
            raw = raw_dataset(entry, data)
        records = record_count(raw, entry.is_table)
        sampled = entry.sampling_strategy != SamplingStrategy("all")
        indices = entry.sampling_strategy.indices(records, data.sampling_seed, entry.name) if sampled else None
        if indices is not None:
            logger.info("%s: %s selects %d of %d records", entry.name, entry.sampling_strategy, len(indices), records)
        if data.max_samples is not None:
            indices = (np.arange(records) if indices is None else indices)[: data.max_samples]
        if entry.is_table and indices is not None:  # table rows are records: select before reading them
            raw, records, indices = raw.select(indices), len(indices), None
        elif indices is not None and len(indices) and np.all(np.diff(indices) == 1) and indices[0] == 0:
            raw = raw.select(range(-(-len(indices) // CHUNK_RECORDS)))  # the first records: their chunks only
        job = entry_job(entry, str(path), len(entries), data)
        head = first_rows(raw, DETECT_RECORDS if job.table else 1)
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
        ).with_format(None)  # tables are read in Arrow format (media undecoded); the samples are plain rows
        if indices is not None:  # JSON records are only known one by one after stage two: select their rows now
            rows = rows.select(indices)
        total += len(rows)
        parts.append(rows)
    rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return _split(rows, total, formats, str(path))


def mixture_entries(path: str, format: str = "auto", trust_code: bool = False) -> list[MixtureEntry]:
    """The entries of a mixture YAML, or one entry reading all of a data file or dataset."""
    if is_mixture(path):
        return load_mixture(path, trust_code)
    return [MixtureEntry(name=posixpath.basename(str(path).rstrip("/")), json_path=str(path), format=format)]


def _is_converted(path: str) -> bool:
    """A `framelm data convert` Arrow folder (normalized rows), as opposed to any other saved dataset."""
    saved = datasets.load_from_disk(path)
    if isinstance(saved, datasets.Dataset) and saved.features == SAMPLE_FEATURES:
        return True
    columns = saved.column_names if isinstance(saved, datasets.Dataset) else []
    if {"turns", "media", "where"} <= set(columns):
        raise ValueError(f"{path}: written by an older `framelm data convert` (its columns differ from today's "
                         "SAMPLE_FEATURES); convert the original data again")  # fmt: skip
    return False


def _load_converted(path: str) -> LoadedSamples:
    """A folder written by `framelm data convert` (`save_to_disk`): already normalized and checked."""
    dataset = datasets.load_from_disk(path)
    return LoadedSamples(dataset=dataset, problems=[], total=len(dataset), formats={path: "arrow"})


def _limited(loaded: LoadedSamples, max_samples: int | None) -> LoadedSamples:
    """The first `max_samples` samples of an already normalized source (converted folders, shards)."""
    if max_samples is None or len(loaded.dataset) <= max_samples:
        return loaded
    return replace(loaded, dataset=loaded.dataset.select(range(max_samples)), total=max_samples)


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
