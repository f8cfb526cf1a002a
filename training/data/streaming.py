"""Streaming: data files, mixtures and WebDataset shards larger than memory, as a `datasets.IterableDataset`.

    rows = stream_samples("mix.yaml", seed=0, bad_records="skip")   # SAMPLE_FEATURES rows, read as iterated
    rows = stream_samples("data/wds/train-*.tar")                    # shards written by `framelm data convert`

Records are read, parsed and normalized by the same code as `load_samples` (`loading.py`), chunk by chunk, so a row
streamed is the row `load_samples` would have produced, and a mixture's sampling picks the same records for the same
seed. Nothing is cached on disk. Mixture entries are interleaved at random (seeded) in proportion to their sizes,
each record exactly once (`dup:N` entries N times). Bad records stop the stream (`strict`, naming the record) or are
left out with a warning each (`skip`): never silently.
"""

from __future__ import annotations

import glob
import itertools
import logging
from collections.abc import Iterator
from dataclasses import replace

import datasets
import fsspec
import numpy as np

from framelm.training.data.arguments import BAD_RECORD_POLICIES, DataArguments
from framelm.training.data.jsonio import iter_raw_records, jsonl_shards, sniff_layout
from framelm.training.data.loading import mixture_entries
from framelm.training.data.mixture import MixtureEntry
from framelm.training.data.normalize import LEFT_OUT, PROBLEM_COLUMNS, ROW_FEATURES, detect_batch_format, entry_job
from framelm.training.data.normalize import EntryJob as _Job
from framelm.training.data.normalize import normalize_batch as _normalize_batch
from framelm.training.data.raw import CHUNK_RECORDS
from framelm.training.data.sample import SAMPLE_FEATURES

logger = logging.getLogger(__name__)

JSON_SHARDS = 8  # byte ranges a local JSON Lines file is split into, so that DataLoader workers share it


def stream_samples(
    path: str,
    *,
    format: str = "auto",
    image_folder: str | None = None,
    video_folder: str | None = None,
    user_key: str | None = None,
    assistant_key: str | None = None,
    seed: int = 0,
    allow_outside_root: bool = False,
    bad_records: str = "strict",
) -> datasets.IterableDataset:
    """A data file, a mixture YAML or WebDataset shards (`*.tar`, globs allowed) as a stream of SAMPLE_FEATURES rows.

    `bad_records="strict"` raises `ValueError` at the first record that cannot be used; `"skip"` logs each one and
    goes on. `framelm data validate` lists all of them up front.
    """
    if bad_records not in BAD_RECORD_POLICIES:
        raise ValueError(f"bad_records={bad_records!r} is not one of {BAD_RECORD_POLICIES}")
    if str(path).endswith(".tar"):
        return _stream_webdataset(str(path))
    entries = mixture_entries(path, format)
    parts, sizes = [], []
    for entry in entries:
        roots = DataArguments(image_folder=image_folder, video_folder=video_folder, user_key=user_key,
                              assistant_key=assistant_key, allow_outside_root=allow_outside_root)  # fmt: skip
        job = entry_job(entry, str(path), len(entries), roots)
        if entry.format == "auto":
            head = next(_chunks(entry, job, [None], None), None)
            job = replace(job, reader=detect_batch_format(_stage_one(head, job), job) if head else job.reader)
        selection, size = _selection(entry, seed, needs_size=len(entries) > 1)
        layout_lines = not entry.is_table and "://" not in entry.json_path and sniff_layout(entry.json_path) == "lines"
        shards = jsonl_shards(entry.json_path, JSON_SHARDS) if selection is None and layout_lines else [None]
        copies = int(entry.sampling_strategy.amount) if entry.sampling_strategy.kind == "dup" else 1
        parts.append(
            datasets.IterableDataset.from_generator(
                _stream_rows,
                features=ROW_FEATURES,
                gen_kwargs={"shards": shards, "entry": entry, "job": job, "selection": selection, "copies": copies},
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
            seed=seed,
            stopping_strategy="all_exhausted_without_replacement",
        )
    return rows.filter(_BadRecordGate(str(path), bad_records)).remove_columns(list(PROBLEM_COLUMNS))


def _selection(entry: MixtureEntry, seed: int, needs_size: bool) -> tuple[np.ndarray | None, int]:
    """(sorted record indices to keep or None for all, records streamed per copy; 0 when not counted).

    The indices are those `load_samples` selects, so streaming and loading agree. Counting reads the file once
    (Parquet: its metadata); it is only done when the strategy or the mixture's proportions need it.
    """
    strategy = entry.sampling_strategy
    if strategy.kind == "first" and not strategy.percent:
        return np.arange(int(strategy.amount)), int(strategy.amount)  # may be fewer: the file ends first
    if strategy.kind in ("all", "dup") and not needs_size:
        return None, 0
    n = _count_records(entry)
    if strategy.kind in ("all", "dup"):
        return None, n
    indices = strategy.indices(n, seed, entry.name)
    return indices, len(indices)


def _count_records(entry: MixtureEntry) -> int:
    if entry.json_path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        with fsspec.open(entry.json_path, "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows
    if entry.is_table:
        return sum(len(batch["__row__"]) for batch in _table_chunks(entry.json_path))
    return sum(1 for _ in iter_raw_records(entry.json_path))


def _stream_rows(shards: list, entry: MixtureEntry, job: _Job, selection: np.ndarray | None, copies: int):
    """The generator behind each entry's IterableDataset: ROW_FEATURES rows, chunk by chunk."""
    for _ in range(copies):
        for chunk in _chunks(entry, job, shards, selection):
            out = _normalize_batch(_stage_one(chunk, job), job)
            for values in zip(*out.values(), strict=True):
                yield dict(zip(out, values, strict=True))


def _stage_one(chunk: dict, job: _Job) -> dict:
    """A chunk as a batch of `load_samples`' stage one: table rows as they are, JSON records as one chunk row."""
    return chunk if job.table else {name: [values] for name, values in chunk.items()}


def _chunks(entry: MixtureEntry, job: _Job, shards: list, selection: np.ndarray | None) -> Iterator[dict]:
    """Up to CHUNK_RECORDS records at a time, as columns (row numbers or lines and texts), keeping only the selected
    record indices."""
    if job.table:
        batches = _table_chunks(entry.json_path)
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


def _table_chunks(path: str) -> Iterator[dict]:
    """Rows of a csv/parquet file read by the same `datasets` builder `load_samples` uses, with their row numbers."""
    builder = "csv" if path.lower().endswith(".csv") else "parquet"
    rows = datasets.load_dataset(builder, data_files=path, split="train", streaming=True)
    start = 0
    for batch in rows.iter(batch_size=CHUNK_RECORDS):
        size = len(next(iter(batch.values()), []))
        yield {"__row__": list(range(start, start + size)), **batch}
        start += size


class _BadRecordGate:
    """The stream's filter: passes samples, drops rows a preprocess_fn left out, and applies the bad-record policy."""

    def __init__(self, path: str, policy: str):
        self.path, self.policy, self.skipped = path, policy, 0

    def __call__(self, row: dict) -> bool:
        if not row["kind"]:
            return True
        if row["kind"] == LEFT_OUT:
            return False
        if self.policy == "strict":
            raise ValueError(
                f"{row['where']} (id={row['id']}): {row['problem']} -> {row['fix']}\n"
                f"Fix it (`framelm data validate {self.path} --report bad.jsonl` lists every bad record), or stream "
                "with bad_records='skip' to go on without such records."
            )
        self.skipped += 1
        logger.warning("skipping %s (id=%s): %s (%d skipped so far)", row["where"], row["id"], row["problem"],
                       self.skipped)  # fmt: skip
        return False


def _stream_webdataset(pattern: str) -> datasets.IterableDataset:
    """Shards written by `framelm data convert --to webdataset`: each `<key>.json` is a normalized row."""
    files = sorted(glob.glob(pattern)) if "://" not in pattern else [pattern]
    if not files:
        raise FileNotFoundError(f"{pattern}: no WebDataset shards found")
    shards = datasets.load_dataset("webdataset", data_files={"train": files}, split="train", streaming=True)
    return shards.map(lambda example: example["json"], remove_columns=list(shards.column_names or ["json"]),
                      features=SAMPLE_FEATURES)  # fmt: skip
