"""Stage one of `load_samples`: a data file's records as they are, before any parsing, in a cached Arrow dataset.

Tables (csv, parquet and arrow files, saved datasets, Hub datasets: `sources.py`) give one row per record plus its
row number. JSON files give one row per chunk of
`CHUNK_RECORDS` raw record texts with their lines and columns (`jsonio.py` splits them): Arrow writes a few large rows
far faster than a million small ones (5x for LLaVA records), and stage two (`normalize.py`) expands each chunk back
into records. Large JSON Lines files are split by byte range across processes.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

import datasets
import pyarrow.compute as pc

from framelm.training.data.arguments import DataArguments
from framelm.training.data.jsonio import file_stamp, iter_raw_records, jsonl_shards, sniff_layout
from framelm.training.data.source_types import MixtureEntry
from framelm.training.data.sources import table_rows
from framelm.training.env import usable_cores

COLLECT_EVERY = (20_000, 20, 20)  # `gc.set_threshold` during a pass over the records (Python's default: 700, 10, 10)
PARALLEL_MIN_RECORDS = 50_000  # below this, worker processes cost more than they save
CHUNK_RECORDS = 1000  # raw JSON records per stage-one row
PARALLEL_BYTES = 64 * 1024 * 1024  # only JSON Lines files larger than this are split across processes
RAW_FEATURES = datasets.Features(
    {
        "line": datasets.List(datasets.Value("int64")),  # 1-based line where each record starts
        "column": datasets.List(datasets.Value("int64")),
        "text": datasets.List(datasets.Value("binary")),  # the record's JSON text, parsed in stage two
        "error": datasets.List(datasets.Value("string")),  # set when the file's structure is broken there
    }
)


def raw_dataset(entry: MixtureEntry, data: DataArguments) -> datasets.Dataset:
    """The records of one data source: table rows with `__row__` (in Arrow format: media features stay undecoded),
    or chunks of raw JSON texts (`RAW_FEATURES`)."""
    path = entry.json_path
    if entry.is_table:
        return table_rows(entry, data)
    stamp = file_stamp(path)
    workers = data.num_proc if data.num_proc is not None else usable_cores()
    big = stamp[1] > PARALLEL_BYTES
    shards = jsonl_shards(path, workers) if big and workers > 1 and sniff_layout(path) == "lines" else [None]
    return datasets.Dataset.from_generator(
        _generate_raw,
        features=RAW_FEATURES,
        gen_kwargs={"shards": shards, "path": path, "stamp": stamp},
        num_proc=len(shards) if len(shards) > 1 else None,
        cache_dir=data.cache_dir,
        split="train",
        writer_batch_size=16,  # chunks held in memory before a write: 16 x 1,000 records
    )


def _generate_raw(shards: list, path: str, stamp: tuple):
    """`stamp` (path, size, mtime) is unused here but part of the cache key: a changed file is read again."""
    chunk, yielded = _empty_chunk(), False
    for shard in shards:
        for record in iter_raw_records(path, shard):
            chunk["line"].append(record.line)
            chunk["column"].append(record.column)
            chunk["text"].append(record.text)
            chunk["error"].append(record.error)
            if len(chunk["line"]) == CHUNK_RECORDS:
                yield chunk
                chunk, yielded = _empty_chunk(), True
    if chunk["line"] or not yielded:  # an empty file is one empty chunk: `datasets` refuses a generator of nothing
        yield chunk


def _empty_chunk() -> dict[str, list]:
    return {name: [] for name in RAW_FEATURES}


def record_count(raw: datasets.Dataset, table: bool) -> int:
    """Records in a stage-one dataset (a JSON row holds up to `CHUNK_RECORDS` of them)."""
    if table:
        return len(raw)
    return int(pc.sum(pc.list_value_length(raw.data.column("line"))).as_py() or 0)


def first_rows(raw: datasets.Dataset, count: int) -> dict[str, list]:
    """The first `count` rows of a stage-one dataset as Python columns (media features not decoded)."""
    return raw.with_format("arrow")[: min(count, len(raw))].to_pydict()


def map_workers(num_proc: int | None, records: int, rows: int) -> int | None:
    """Processes for work over `records` records in `rows` pieces (a `Dataset.map`'s batches, convert's shards):
    every core for large inputs, one for small ones (workers cost ~1 s to start); `num_proc` when the user set it.
    None means one (as `Dataset.map` takes it)."""
    if num_proc is None:
        num_proc = usable_cores() if records >= PARALLEL_MIN_RECORDS else 1
    num_proc = min(num_proc, rows)
    return num_proc if num_proc > 1 else None


def forked_pool(processes: int) -> ProcessPoolExecutor:
    """Worker processes that fork from this one at the first submit, so that they inherit what it holds (the rows
    to write, the media to check) instead of receiving it pickled. A process pool, never threads, for per-record
    Python work; `ProcessPoolExecutor`, never `multiprocessing.Pool`: a worker killed by a signal raises
    `BrokenProcessPool` in the caller, where `Pool` would wait for its lost task forever."""
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"))


@contextmanager
def few_collections() -> Iterator[None]:
    """Python's cyclic collector set for a pass over a million records: every record makes a few dozen containers
    that die young, and at the default threshold a collection runs every 700 of them, scanning what is alive (a
    tenth of the time goes there). Inside, what exists already (modules, the dataset objects) is frozen out of the
    scans and a collection runs every `COLLECT_EVERY[0]` new containers; the process's settings are restored after.
    `Dataset.map` and convert's workers fork from inside and inherit it. Loading 1M LLaVA records: 14.5 -> 12.4 s."""
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.freeze()
    gc.set_threshold(*COLLECT_EVERY)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if not frozen:  # a freeze made before (by the caller, or an outer pass) stays
            gc.unfreeze()
