"""`load_samples`: a data file or a mixture YAML -> normalized samples in a `datasets.Dataset`, plus every problem.

Two passes, both through `datasets` and its Arrow cache: `Dataset.from_generator` splits the file into raw record
texts with their line numbers, a thousand records per Arrow row (`jsonio.py`; large JSON Lines files are split by
byte range across processes), then `Dataset.map(batched=True, num_proc=...)` parses each record and runs its
format's reader. Media stay on disk as paths, so a million LLaVA records take about 25 CPU-seconds (under a minute
on two cores; `bench/data_scale.py`) and a second run of the same file is read from the cache. Media files are not
opened here: `framelm data validate` does that. `streaming.py` reads the same records without the cache.
"""

from __future__ import annotations

import itertools
import logging
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import datasets
import numpy as np
import pyarrow.compute as pc

from framelm.training.data.formats import READERS, ReadOptions, detect_format, get_reader
from framelm.training.data.formats.llava import marks_video_with_image
from framelm.training.data.jsonio import (
    JSONRecordError,
    file_stamp,
    find_id,
    iter_raw_records,
    jsonl_shards,
    parse_record,
    sniff_layout,
)
from framelm.training.data.mixture import MixtureEntry, SamplingStrategy, get_preprocess, is_mixture, load_mixture
from framelm.training.data.sample import SAMPLE_FEATURES, RecordProblem, Sample

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when readers change what they produce, so that old Arrow caches are not reused
DETECT_RECORDS = 100  # records looked at by `--format auto`
PARALLEL_MIN_RECORDS = 50_000  # below this, worker processes cost more than they save
CHUNK_RECORDS = 1000  # raw JSON records per stage-one row
RAW_FEATURES = datasets.Features(
    {
        "line": datasets.List(datasets.Value("int64")),  # 1-based line where each record starts
        "column": datasets.List(datasets.Value("int64")),
        "text": datasets.List(datasets.Value("binary")),  # the record's JSON text, parsed in stage two
        "error": datasets.List(datasets.Value("string")),  # set when the file's structure is broken there
    }
)
PROBLEM_COLUMNS = ("problem", "fix", "kind", "note")
ROW_FEATURES = datasets.Features({**SAMPLE_FEATURES, **{c: datasets.Value("string") for c in PROBLEM_COLUMNS}})
LEFT_OUT = "left_out"  # `kind` of rows a preprocess_fn returned None for: not samples, not problems
SHOWN_PROBLEMS = 20  # problems listed in a strict run's error before "... and N more"
BAD_RECORD_POLICIES = ("strict", "skip")
NOTES = {"video_marked_as_image": "records mark their video with <image> (LLaVA-NeXT style); read as <video>"}


@dataclass
class LoadedSamples:
    """What `load_samples` read: usable samples, the problems of the others, and the counts that add up."""

    dataset: datasets.Dataset  # SAMPLE_FEATURES
    problems: list[RecordProblem]
    total: int  # records read (after mixture sampling): len(dataset) + len(problems) + left_out
    left_out: int = 0  # rows a mixture's preprocess_fn left out on purpose (e.g. below `aes_cutoff`)
    formats: dict[str, str] = field(default_factory=dict)  # source -> format used


@dataclass(frozen=True)
class _Job:
    """Everything a `map` worker needs to normalize the rows of one data file."""

    label: str  # the file as named in `where`
    reader: str  # format name
    options: ReadOptions
    table: bool  # csv/parquet rows instead of JSON texts
    preprocess: Callable | None = None
    columns: tuple[str, ...] | None = None
    kwargs: dict = field(default_factory=dict)
    version: int = CACHE_VERSION


def load_samples(
    path: str,
    *,
    format: str = "auto",
    image_folder: str | None = None,
    video_folder: str | None = None,
    user_key: str | None = None,
    assistant_key: str | None = None,
    num_proc: int | None = None,
    seed: int = 0,
    allow_outside_root: bool = False,
    cache_dir: str | None = None,
) -> LoadedSamples:
    """Read a json/jsonl/csv/parquet file, a mixture YAML or a `framelm data convert` folder into normalized samples.

    Structural problems (JSON syntax, missing keys, role order, placeholder counts, paths escaping their root) are
    returned in `.problems`, one per bad record, never raised. Mixture entries may override the folders, roles and
    format given here. `num_proc=None` uses every core for large files and one process for small ones.
    """
    if format != "auto":
        get_reader(format)
    if os.path.isdir(path):
        return _load_converted(str(path))
    entries = mixture_entries(path, format)
    parts, formats, total = [], {}, 0
    for entry in entries:
        raw = _raw_dataset(entry.json_path, entry.is_table, num_proc, cache_dir)
        records = _record_count(raw, entry.is_table)
        sampled = entry.sampling_strategy != SamplingStrategy("all")
        indices = entry.sampling_strategy.indices(records, seed, entry.name) if sampled else None
        if indices is not None:
            logger.info("%s: %s selects %d of %d records", entry.name, entry.sampling_strategy, len(indices), records)
            if entry.is_table:  # table rows are records: select before reading, so unselected rows cost nothing
                raw, records, indices = raw.select(indices), len(indices), None
        job = entry_job(
            entry, str(path), len(entries), image_folder, video_folder, user_key, assistant_key, allow_outside_root
        )
        head = raw.select(range(min(DETECT_RECORDS if job.table else 1, len(raw)))).to_dict()
        name = entry.format if entry.format != "auto" else detect_batch_format(head, job)
        job = replace(job, reader=name)
        formats[entry.name] = name
        rows = raw.map(
            _normalize_batch,
            batched=True,
            batch_size=1000 if entry.is_table else 1,  # a JSON row is already a chunk of CHUNK_RECORDS records
            num_proc=_workers(num_proc, records, len(raw)),
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


def _raw_dataset(path: str, table: bool, num_proc: int | None, cache_dir: str | None) -> datasets.Dataset:
    """Stage one: the file's records as they are.

    Table files give one row per record (plus its row number). JSON files give one row per chunk of
    `CHUNK_RECORDS` raw record texts with their lines and columns: Arrow writes a few large rows far faster than a
    million small ones (5x for LLaVA records), and stage two expands each chunk back into records.
    """
    if table:
        builder = "csv" if path.lower().endswith(".csv") else "parquet"
        raw = datasets.load_dataset(builder, data_files=path, split="train", cache_dir=cache_dir)
        return raw.add_column("__row__", np.arange(len(raw)))
    stamp = file_stamp(path)
    workers = num_proc if num_proc is not None else (os.cpu_count() or 1)
    big = stamp[1] > 64 * 1024 * 1024  # only large files are worth splitting across processes
    shards = jsonl_shards(path, workers) if big and workers > 1 and sniff_layout(path) == "lines" else [None]
    return datasets.Dataset.from_generator(
        _generate_raw,
        features=RAW_FEATURES,
        gen_kwargs={"shards": shards, "path": path, "stamp": stamp},
        num_proc=len(shards) if len(shards) > 1 else None,
        cache_dir=cache_dir,
        split="train",
        writer_batch_size=16,  # chunks held in memory before a write: 16 x 1,000 records
    )


def _generate_raw(shards: list, path: str, stamp: tuple):
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


def _record_count(raw: datasets.Dataset, table: bool) -> int:
    if table:
        return len(raw)
    return int(pc.sum(pc.list_value_length(raw.data.column("line"))).as_py() or 0)


def mixture_entries(path: str, format: str = "auto") -> list[MixtureEntry]:
    """The entries of a mixture YAML, or one entry reading all of a data file."""
    if is_mixture(path):
        return load_mixture(path)
    return [MixtureEntry(name=posixpath.basename(str(path)), json_path=str(path), format=format)]


def entry_job(
    entry: MixtureEntry,
    path: str,
    n_entries: int,
    image_folder: str | None,
    video_folder: str | None,
    user_key: str | None,
    assistant_key: str | None,
    allow_outside_root: bool,
) -> _Job:
    """What stage two needs for one entry; the entry's own folders and role keys win over the run's."""
    options = ReadOptions(
        image_folder=entry.image_folder or image_folder,
        video_folder=entry.video_folder or video_folder,
        base_dir=_folder_of(entry.json_path),
        user_key=entry.user_key or user_key,
        assistant_key=entry.assistant_key or assistant_key,
        allow_outside_root=allow_outside_root,
        source=entry.name,
    )
    return _Job(
        label=path if n_entries == 1 and not is_mixture(path) else entry.json_path,
        reader="llava" if entry.format == "auto" else entry.format,
        options=options,
        table=entry.is_table,
        preprocess=get_preprocess(entry.preprocess_fn) if entry.preprocess_fn else None,
        columns=entry.columns,
        kwargs=entry.kwargs,
    )


def detect_batch_format(head: dict, job: _Job) -> str:
    """The format of the first records of a stage-one batch (after the entry's preprocess_fn)."""
    records = (_preprocessed(where, record, job) for where, record in _records(head, job))
    return detect_format(r for r in itertools.islice(records, DETECT_RECORDS) if isinstance(r, dict))


def _records(batch: dict, job: _Job) -> Iterator[tuple[str, object]]:
    """(where, record) for every record of a stage-one batch: the parsed JSON value or table row, or the
    RecordProblem of a syntax error."""
    if job.table:
        columns = [c for c in batch if c != "__row__"]
        for i, row in enumerate(batch["__row__"]):
            yield f"{job.label}:row {row + 1}", {c: batch[c][i] for c in columns}
        return
    for lines, columns, texts, errors in zip(
        batch["line"], batch["column"], batch["text"], batch["error"], strict=True
    ):
        for line, column, text, error in zip(lines, columns, texts, errors, strict=True):
            where = f"{job.label}:{line}"
            if error:
                yield where, RecordProblem(where, error, "fix the JSON structure there", kind="json_syntax")
                continue
            try:
                yield where, parse_record(text, line, column)
            except JSONRecordError as err:
                yield where, RecordProblem(where, err.problem, err.fix, id=find_id(text), kind="json_syntax")


def _preprocessed(where: str, record, job: _Job):
    """The record through the entry's preprocess_fn: a JSON value for the reader, a Sample, None (left out by the
    preprocess_fn) or a RecordProblem (its failure)."""
    if job.preprocess is None or not isinstance(record, dict):
        return record
    row = {c: record.get(c) for c in job.columns} if job.columns else record
    try:
        return job.preprocess(row, **job.kwargs)
    except Exception as err:  # user code: its failure is this record's problem, reported with the others
        problem = f"preprocess_fn failed: {type(err).__name__}: {err}"
        return RecordProblem(where, problem, "fix the row or the preprocess_fn", kind="preprocess_error")


def _normalize_batch(batch: dict, job: _Job) -> dict[str, list]:
    """Stage two (in `map` workers): parse, preprocess and read each record into one ROW_FEATURES row."""
    out = {name: [] for name in ROW_FEATURES}
    read = READERS[job.reader]
    for where, parsed in _records(batch, job):
        record = parsed if isinstance(parsed, RecordProblem) else _preprocessed(where, parsed, job)
        note = ""
        if record is None and job.preprocess is not None:
            result = RecordProblem(where, "left out by the preprocess_fn", "", kind=LEFT_OUT)
        elif isinstance(record, Sample):
            result = replace(record, where=where, source=job.options.source)
        elif isinstance(record, RecordProblem):
            result = record
        else:
            result = read(record, where, job.options)
            # a Sample means the record is a dict; the "video" check keeps the scan to video records
            llava_video = isinstance(result, Sample) and job.reader == "llava" and "video" in record
            if llava_video and marks_video_with_image(record):
                note = "video_marked_as_image"
        if isinstance(result, Sample):
            row = result.to_row()
            for name in SAMPLE_FEATURES:
                out[name].append(row[name])
            problem = ("", "", "")
        else:
            for name, value in (("id", result.id), ("source", job.options.source), ("where", result.where)):
                out[name].append(value)
            out["system"].append("")
            out["turns"].append([])
            out["media"].append([])
            problem = (result.problem, result.fix, result.kind)
        for name, value in zip(PROBLEM_COLUMNS, (*problem, note), strict=True):
            out[name].append(value)
    return out


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


def _folder_of(path: str) -> str:
    if "://" in path:
        return path.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(path))


def _workers(num_proc: int | None, records: int, rows: int) -> int | None:
    """Processes for stage two: every core for large inputs, one for small ones (workers cost ~1 s to start)."""
    if num_proc is None:
        num_proc = (os.cpu_count() or 1) if records >= PARALLEL_MIN_RECORDS else 1
    num_proc = min(num_proc, rows)
    return num_proc if num_proc > 1 else None


def apply_bad_record_policy(
    loaded: LoadedSamples, path: str, policy: str, skip_flag: str = "--bad-records skip"
) -> None:
    """`strict`: raise, listing the problems; `skip`: log each one and the count. Never silent.

    `skip_flag` is how the calling command spells the switch to `skip`, named in the error.
    """
    if policy not in BAD_RECORD_POLICIES:
        raise ValueError(f"bad records policy {policy!r} is not one of {BAD_RECORD_POLICIES}")
    problems = loaded.problems
    if not problems:
        return
    if policy == "strict":
        listed = "\n".join(f"  {p.where} (id={p.id}): {p.problem} -> {p.fix}" for p in problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise ValueError(
            f"{path}: {len(problems)} of {loaded.total} records cannot be used:\n{listed}{more}\n"
            f"Fix them (`framelm data validate {path} --report bad.jsonl` lists every one), or pass {skip_flag} to "
            "go on without them."
        )
    for problem in problems:
        logger.warning("skipping %s (id=%s): %s", problem.where, problem.id, problem.problem)
    logger.warning("%s: skipped %d of %d records", path, len(problems), loaded.total)
