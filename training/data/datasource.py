"""One path from a data source to samples: each kind of source is one class with one small interface, chosen once
by `open_source`.

    source = open_source(data)      # what `data.dataset` names, decided here and nowhere else
    source.load(data)               # -> LoadedSamples: samples in the Arrow cache, plus every record's problem
    source.stream(data)             # -> IterableDataset of SAMPLE_FEATURES rows, read while training goes

The kinds: `Shards` (WebDataset shards of `framelm data convert --to webdataset`: their folder, a `.tar` or a glob),
`ConvertedFolder` (`framelm data convert` Arrow output), and the sources read record by record through the format
readers: `DataFile` (json / jsonl), `Table` (csv / parquet / arrow file, `save_to_disk` folder, folder of data files,
Hub dataset id) and `Mixture` (a YAML of such entries). A record source is a list of `MixtureEntry`s (one for a
file), read in two stages through `datasets` (`raw.py` then `normalize.py`); loading and streaming share those stages,
so a row streamed is the row `load` would have produced and a mixture's sampling picks the same records.

Loading: stage one splits a file into raw record texts with their line numbers, a thousand records per Arrow row
(tables and Hub datasets: their rows), and stage two (`Dataset.map(batched=True, num_proc=...)`) parses each record
and runs its format's reader. Media stay on disk as paths (or as the bytes they came in), so a million LLaVA records
take about 25 CPU-seconds and a second run of the same file is read from the cache. Media files are not opened here.

Streaming: nothing is cached on disk. Mixture entries are interleaved at random (seeded) in proportion to their
sizes, each record exactly once (`dup:N` entries N times). Bad records stop the stream (`strict`, naming the record)
or are left out with a warning each (`skip`): never silently (`PolicyGate`). Each source is split into shards (JSON
Lines byte ranges, tar files) that `datasets` hands out to processes and DataLoader workers.
"""

from __future__ import annotations

import itertools
import logging
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import replace

import datasets
import fsspec
import numpy as np
import pyarrow.compute as pc

from framelm.training.data.arguments import DataArguments
from framelm.training.data.formats import get_reader
from framelm.training.data.jsonio import iter_raw_records, jsonl_shards, sniff_layout
from framelm.training.data.mixture import is_mixture, load_mixture, reading
from framelm.training.data.normalize import (
    DETECT_RECORDS,
    LEFT_OUT,
    NOTES,
    PROBLEM_COLUMNS,
    ROW_FEATURES,
    EntryJob,
    detect_batch_format,
    entry_job,
    normalize_rows,
    normalize_table,
)
from framelm.training.data.paths import looks_like_url
from framelm.training.data.policy import BadRecordsError
from framelm.training.data.raw import CHUNK_RECORDS, first_rows, map_workers, raw_dataset, record_count
from framelm.training.data.sample import SAMPLE_FEATURES, RecordProblem
from framelm.training.data.shards import load_shards, shard_source, split_records, stream_shards
from framelm.training.data.source_types import LoadedSamples, MixtureEntry, SamplingStrategy
from framelm.training.data.sources import is_saved_dataset, is_shards, stream_table_rows

logger = logging.getLogger(__name__)

JSON_SHARDS = 8  # byte ranges a local JSON Lines file is split into, so that DataLoader workers share it


def open_source(data: DataArguments) -> DataSource:
    """The one place that decides what `data.dataset` is."""
    path = data.dataset
    if path is None:
        raise ValueError("no data given: pass the data file or mixture YAML")
    path = str(path)
    if data.data_format != "auto":
        get_reader(data.data_format)
    if is_shards(path):
        return Shards(path)
    if os.path.isdir(path) and is_saved_dataset(path) and _is_converted(path):
        return ConvertedFolder(path)
    if is_mixture(path):
        return Mixture(path, load_mixture(path, data.trust_preprocess_code))
    entry = MixtureEntry(name=posixpath.basename(path.rstrip("/")), json_path=path, format=data.data_format)
    return (Table if entry.is_table else DataFile)(path, [entry])


class DataSource:
    """A source of samples: `load` into the Arrow cache, or `stream` while training goes."""

    path: str
    always_streams = False  # read as a stream by `framelm train` even without --streaming

    def load(self, data: DataArguments) -> LoadedSamples:
        raise NotImplementedError

    def stream(self, data: DataArguments) -> datasets.IterableDataset:
        raise NotImplementedError

    def records(self, data: DataArguments) -> int | None:
        """Records a stream of it holds, when known without reading it (shard manifests count them)."""
        return None


class Shards(DataSource):
    """WebDataset shards written by `framelm data convert --to webdataset`: already normalized, media inside."""

    always_streams = True

    def __init__(self, path: str):
        self.path = path

    def load(self, data: DataArguments) -> LoadedSamples:
        return _limited(load_shards(data), data.max_samples)

    def stream(self, data: DataArguments) -> datasets.IterableDataset:
        files, manifest = shard_source(self.path, data.dataset_split)
        rows = stream_shards(files, manifest)
        return rows.take(data.max_samples) if data.max_samples else rows

    def records(self, data: DataArguments) -> int | None:
        return split_records(self.path, data.dataset_split)


class ConvertedFolder(DataSource):
    """A folder written by `framelm data convert` (`save_to_disk`): already normalized and checked."""

    def __init__(self, path: str):
        self.path = path

    def load(self, data: DataArguments) -> LoadedSamples:
        dataset = datasets.load_from_disk(self.path)
        loaded = LoadedSamples(dataset=dataset, problems=[], total=len(dataset), formats={self.path: "arrow"})
        return _limited(loaded, data.max_samples)

    def stream(self, data: DataArguments) -> datasets.IterableDataset:
        rows = datasets.load_from_disk(self.path).to_iterable_dataset()
        return rows.take(data.max_samples) if data.max_samples else rows


class RecordSource(DataSource):
    """Records read through the format readers, one `MixtureEntry` per data file, table or Hub dataset."""

    def __init__(self, path: str, entries: list[MixtureEntry]):
        self.path, self.entries = path, entries

    def load(self, data: DataArguments) -> LoadedSamples:
        """Structural problems (JSON syntax, missing keys, role order, placeholder counts, references the policy
        refuses) are returned in `.problems`, one per bad record, never raised. `data.num_proc=None` uses every core
        for large files and one process for small ones."""
        entries = self.entries
        parts, formats, total = [], {}, 0
        for entry in entries:
            with reading(entry):
                raw = raw_dataset(entry, data)
            records = record_count(raw, entry.is_table)
            sampled = entry.sampling_strategy != SamplingStrategy("all")
            indices = entry.sampling_strategy.indices(records, data.sampling_seed, entry.name) if sampled else None
            if indices is not None:
                logger.info("%s: %s selects %d of %d records", entry.name, entry.sampling_strategy, len(indices),
                            records)  # fmt: skip
            if data.max_samples is not None:
                indices = (np.arange(records) if indices is None else indices)[: data.max_samples]
            if entry.is_table and indices is not None:  # table rows are records: select before reading them
                raw, records, indices = raw.select(indices), len(indices), None
            elif indices is not None and len(indices) and np.all(np.diff(indices) == 1) and indices[0] == 0:
                raw = raw.select(range(-(-len(indices) // CHUNK_RECORDS)))  # the first records: their chunks only
            job = entry_job(entry, self.path, len(entries), data)
            head = first_rows(raw, DETECT_RECORDS if job.table else 1)
            name = entry.format if entry.format != "auto" else detect_batch_format(head, job)
            job = replace(job, reader=name)
            formats[entry.name] = name
            rows = raw.map(
                normalize_table,
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
        return _split(rows, total, formats, self.path)

    def stream(self, data: DataArguments) -> datasets.IterableDataset:
        """`data.bad_records="strict"` raises `BadRecordsError` at the first record that cannot be used; `"skip"`
        logs each one and goes on. `framelm data validate` lists all of them up front."""
        entries = self.entries
        parts, sizes = [], []
        for entry in entries:
            job = entry_job(entry, self.path, len(entries), data)
            if entry.format == "auto":
                head = next(_chunks(entry, data, job, [None], None), None)
                job = replace(job, reader=detect_batch_format(_stage_one(head, job), job) if head else job.reader)
            selection, size = _selection(entry, data, needs_size=len(entries) > 1)
            local = not entry.is_table and not looks_like_url(entry.json_path)
            layout_lines = local and sniff_layout(entry.json_path) == "lines"
            shards = jsonl_shards(entry.json_path, JSON_SHARDS) if selection is None and layout_lines else [None]
            copies = int(entry.sampling_strategy.amount) if entry.sampling_strategy.kind == "dup" else 1
            parts.append(
                datasets.IterableDataset.from_generator(
                    _stream_rows,
                    features=ROW_FEATURES,
                    gen_kwargs={
                        "shards": shards,
                        "entry": entry,
                        "data": data,
                        "job": job,
                        "selection": selection,
                        "copies": copies,
                    },
                )
            )
            sizes.append(size * copies)
            shown = f"{size * copies:,}" if size else "all"
            logger.info("%s: streaming %s records (%s)", entry.name, shown, job.reader)
        if len(parts) == 1:
            rows = parts[0]
        else:
            rows = datasets.interleave_datasets(
                parts,
                probabilities=[size / sum(sizes) for size in sizes],
                seed=data.sampling_seed,
                stopping_strategy="all_exhausted_without_replacement",
            )
        gate = PolicyGate(self.path, data.bad_records, _row_problem)
        return rows.filter(gate).remove_columns(list(PROBLEM_COLUMNS))


class DataFile(RecordSource):
    """A json / jsonl file of records (JSON Lines or one array), read record by record with line numbers."""


class Table(RecordSource):
    """A csv / parquet / arrow file, a `save_to_disk` folder, a folder of data files or a Hub dataset id: one record
    per row, read by `datasets` (`sources.py`), media features undecoded."""


class Mixture(RecordSource):
    """A mixture YAML (`mixture.py`): its entries, each sampled, read and normalized on its own."""


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


def _selection(entry: MixtureEntry, data: DataArguments, needs_size: bool) -> tuple[np.ndarray | None, int]:
    """(sorted record indices to keep or None for all, records streamed per copy; 0 when not counted).

    The indices are those `load_samples` selects (`max_samples` included), so streaming and loading agree. Counting
    reads the file once (Parquet: its metadata); it is only done when the strategy or the mixture's proportions need
    it.
    """
    strategy, limit = entry.sampling_strategy, data.max_samples
    if strategy.kind == "first" and not strategy.percent:
        first = int(strategy.amount) if limit is None else min(int(strategy.amount), limit)
        return np.arange(first), first  # may be fewer: the file ends first
    if strategy.kind in ("all", "dup") and limit is not None and not needs_size:
        return np.arange(limit), limit
    if strategy.kind in ("all", "dup") and not needs_size:
        return None, 0
    n = _count_records(entry, data)
    if strategy.kind in ("all", "dup"):
        indices = None if limit is None else np.arange(min(limit, n))
    else:
        indices = strategy.indices(n, data.sampling_seed, entry.name)[:limit]
    return indices, n if indices is None else len(indices)


def _count_records(entry: MixtureEntry, data: DataArguments) -> int:
    path = entry.json_path
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        with fsspec.open(path, "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows
    if entry.is_table:
        return sum(len(batch["__row__"]) for batch in _table_chunks(entry, data))
    return sum(1 for _ in iter_raw_records(path))


def _stream_rows(
    shards: list, entry: MixtureEntry, data: DataArguments, job: EntryJob, selection: np.ndarray | None, copies: int
):
    """The generator behind each entry's IterableDataset: ROW_FEATURES rows, chunk by chunk."""
    for _ in range(copies):
        for chunk in _chunks(entry, data, job, shards, selection):
            yield from normalize_rows(_stage_one(chunk, job), job)


def _stage_one(chunk: dict, job: EntryJob) -> dict:
    """A chunk as a batch of `load_samples`' stage one: table rows as they are, JSON records as one chunk row."""
    return chunk if job.table else {name: [values] for name, values in chunk.items()}


def _chunks(
    entry: MixtureEntry, data: DataArguments, job: EntryJob, shards: list, selection: np.ndarray | None
) -> Iterator[dict]:
    """Up to CHUNK_RECORDS records at a time, as columns (row numbers or lines and texts), keeping only the selected
    record indices."""
    if job.table:
        batches = _table_chunks(entry, data)
    else:
        batches = _json_chunks(entry.json_path, shards)
    if selection is None:
        yield from batches
        return
    start, last = 0, int(selection[-1]) if len(selection) else -1
    for batch in batches:
        size = len(batch["__row__"] if job.table else batch["line"])
        # selection is sorted: the part of it inside this chunk, as positions in the chunk
        lo, hi = np.searchsorted(selection, [start, start + size])
        keep = (selection[lo:hi] - start).tolist()
        if keep:
            yield {name: [values[i] for i in keep] for name, values in batch.items()}
        start += size
        if start > last:
            return


def _json_chunks(path: str, shards: list) -> Iterator[dict]:
    records = (record for shard in shards for record in iter_raw_records(path, shard))
    while chunk := list(itertools.islice(records, CHUNK_RECORDS)):
        yield {
            "line": [r.line for r in chunk],
            "column": [r.column for r in chunk],
            "text": [r.text for r in chunk],
            "error": [r.error for r in chunk],
        }


def _table_chunks(entry: MixtureEntry, data: DataArguments) -> Iterator[dict]:
    """Rows of a table source, read by the same `datasets` call `load_samples` uses but streaming, with their row
    numbers; media features stay undecoded."""
    rows = stream_table_rows(entry, data)
    start = 0
    for batch in rows.iter(batch_size=CHUNK_RECORDS):
        size = len(next(iter(batch.values()), []))
        yield {"__row__": list(range(start, start + size)), **batch}
        start += size


def _row_problem(row: dict) -> RecordProblem | None:
    """The problem of a streamed `ROW_FEATURES` row (None for a sample)."""
    if not row["kind"]:
        return None
    return RecordProblem(row["where"], row["problem"], row["fix"], id=row["id"], kind=row["kind"])


class PolicyGate:
    """An `IterableDataset.filter` applying the bad-record policy to a stream: usable rows pass; a row with a problem
    stops the stream (`strict`, naming the record) or is left out with a warning (`skip`); rows a preprocess_fn left
    out are dropped. `problem_of(row)` says what is wrong with a row, None when nothing is."""

    def __init__(self, path: str, policy: str, problem_of: Callable[[dict], RecordProblem | None]):
        self.path, self.policy, self.problem_of, self.skipped = path, policy, problem_of, 0

    def __call__(self, row: dict) -> bool:
        problem = self.problem_of(row)
        if problem is None:
            return True
        if problem.kind == LEFT_OUT:
            return False
        if self.policy == "strict":
            raise BadRecordsError(
                f"{problem.where} (id={problem.id}): {problem.problem} -> {problem.fix}\n"
                f"Fix it (`framelm data validate {self.path} --report bad.jsonl` lists every bad record), or pass "
                "--bad_records skip to go on without such records."
            )
        self.skipped += 1
        logger.warning("skipping %s (id=%s): %s (%d skipped so far in this process)", problem.where, problem.id,
                       problem.problem, self.skipped)  # fmt: skip
        return False
