"""Streaming: data larger than the disk cache, as a `datasets.IterableDataset` read while training goes.

    framelm train --config recipe.yaml --dataset data/wds                  # WebDataset shards always stream
    framelm train --config recipe.yaml --dataset mix.yaml --streaming --max_steps 10000

Data files, mixtures and tables (`sources.py`) are read, parsed and normalized by the same code as `load_samples`
(`loading.py`), chunk by chunk, so a row streamed is the row `load_samples` would have produced, and a mixture's
sampling picks the same records for the same seed. Nothing is cached on disk. Mixture entries are interleaved at
random (seeded) in proportion to their sizes, each record exactly once (`dup:N` entries N times). Shards are read by
`shards.py`. Bad records stop the stream (`strict`, naming the record) or are left out with a warning each (`skip`):
never silently (`PolicyGate`).

Each source is split into shards (JSON Lines byte ranges, tar files) that `datasets` hands out to processes
(accelerate's `IterableDataset.shard`) and DataLoader workers, so that each reads its own part.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace

import datasets
import fsspec
import numpy as np

from framelm.training.data.arguments import DataArguments
from framelm.training.data.jsonio import iter_raw_records, jsonl_shards, sniff_layout
from framelm.training.data.loading import mixture_entries
from framelm.training.data.mixture import MixtureEntry
from framelm.training.data.normalize import LEFT_OUT, PROBLEM_COLUMNS, ROW_FEATURES, detect_batch_format, entry_job
from framelm.training.data.normalize import EntryJob as _Job
from framelm.training.data.normalize import normalize_batch as _normalize_batch
from framelm.training.data.policy import BadRecordsError
from framelm.training.data.raw import CHUNK_RECORDS
from framelm.training.data.sample import RecordProblem
from framelm.training.data.shards import shard_source, stream_shards
from framelm.training.data.sources import is_shards, stream_table_rows

logger = logging.getLogger(__name__)

JSON_SHARDS = 8  # byte ranges a local JSON Lines file is split into, so that DataLoader workers share it


def stream_samples(data: DataArguments) -> datasets.IterableDataset:
    """`data.dataset` (any source) as a stream of `SAMPLE_FEATURES` rows.

    `data.bad_records="strict"` raises `BadRecordsError` at the first record that cannot be used; `"skip"` logs
    each one and goes on. `framelm data validate` lists all of them up front.
    """
    if is_shards(data.dataset):
        files, manifest = shard_source(data.dataset, data.dataset_split)
        rows = stream_shards(files, manifest)
        return rows.take(data.max_samples) if data.max_samples else rows
    entries = mixture_entries(data.dataset, data.data_format, data.trust_preprocess_code)
    parts, sizes = [], []
    for entry in entries:
        job = entry_job(entry, str(data.dataset), len(entries), data)
        if entry.format == "auto":
            head = next(_chunks(entry, data, job, [None], None), None)
            job = replace(job, reader=detect_batch_format(_stage_one(head, job), job) if head else job.reader)
        selection, size = _selection(entry, data, needs_size=len(entries) > 1)
        layout_lines = not entry.is_table and "://" not in entry.json_path and sniff_layout(entry.json_path) == "lines"
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
        logger.info("%s: streaming %s records (%s)", entry.name, f"{size * copies:,}" if size else "all", job.reader)
    if len(parts) == 1:
        rows = parts[0]
    else:
        rows = datasets.interleave_datasets(
            parts,
            probabilities=[size / sum(sizes) for size in sizes],
            seed=data.sampling_seed,
            stopping_strategy="all_exhausted_without_replacement",
        )
    gate = PolicyGate(str(data.dataset), data.bad_records, _row_problem)
    return rows.filter(gate).remove_columns(list(PROBLEM_COLUMNS))


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
    shards: list, entry: MixtureEntry, data: DataArguments, job: _Job, selection: np.ndarray | None, copies: int
):
    """The generator behind each entry's IterableDataset: ROW_FEATURES rows, chunk by chunk."""
    for _ in range(copies):
        for chunk in _chunks(entry, data, job, shards, selection):
            out = _normalize_batch(_stage_one(chunk, job), job)
            for values in zip(*out.values(), strict=True):
                yield dict(zip(out, values, strict=True))


def _stage_one(chunk: dict, job: _Job) -> dict:
    """A chunk as a batch of `load_samples`' stage one: table rows as they are, JSON records as one chunk row."""
    return chunk if job.table else {name: [values] for name, values in chunk.items()}


def _chunks(
    entry: MixtureEntry, data: DataArguments, job: _Job, shards: list, selection: np.ndarray | None
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
