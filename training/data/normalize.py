"""Stage two of `load_samples`: raw records -> normalized `Sample` rows or `RecordProblem`s, in `Dataset.map` workers.

Each record is parsed (a syntax error costs that record only), passed through its mixture entry's `preprocess_fn`
when it has one, and read by its format's reader (`formats/`). The output row holds either a sample or a problem, so
that one `map` keeps every record in file order and the counts always add up.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import datasets
import pyarrow as pa

from framelm.training.data.arguments import DataArguments
from framelm.training.data.formats import READERS, ReadOptions, detect_format
from framelm.training.data.formats.llava import marks_video_with_image
from framelm.training.data.jsonio import JSONRecordError, find_id, parse_record
from framelm.training.data.mixture import get_preprocess, is_mixture
from framelm.training.data.sample import SAMPLE_FEATURES, RecordProblem, Sample
from framelm.training.data.source_types import MixtureEntry
from framelm.training.data.sources import media_root

CACHE_VERSION = 4  # bump when readers change what they produce, so that old Arrow caches are not reused
DETECT_RECORDS = 100  # records looked at by `--format auto`
PROBLEM_COLUMNS = ("problem", "fix", "kind", "note")
ROW_FEATURES = datasets.Features({**SAMPLE_FEATURES, **{c: datasets.Value("string") for c in PROBLEM_COLUMNS}})
ROW_SCHEMA = ROW_FEATURES.arrow_schema
LEFT_OUT = "left_out"  # `kind` of rows a preprocess_fn returned None for: not samples, not problems
NOTES = {"video_marked_as_image": "records mark their video with <image> (LLaVA-NeXT style); read as <video>"}


@dataclass(frozen=True)
class EntryJob:
    """Everything a `map` worker needs to normalize the rows of one data file."""

    label: str  # the file as named in `where`
    reader: str  # format name
    options: ReadOptions
    table: bool  # csv/parquet rows instead of JSON texts
    preprocess: Callable | None = None
    columns: tuple[str, ...] | None = None
    kwargs: dict = field(default_factory=dict)
    version: int = CACHE_VERSION


def entry_job(entry: MixtureEntry, path: str, n_entries: int, data: DataArguments) -> EntryJob:
    """What stage two needs for one entry; the entry's own folders and role keys win over the run's."""
    options = ReadOptions(
        image_folder=entry.image_folder or data.image_folder,
        video_folder=entry.video_folder or data.video_folder,
        base_dir=media_root(entry.json_path),
        user_key=entry.user_key or data.user_key,
        assistant_key=entry.assistant_key or data.assistant_key,
        allow_outside_root=data.allow_outside_root,
        source=entry.name,
    )
    return EntryJob(
        label=path if n_entries == 1 and not is_mixture(path) else entry.json_path,
        reader="llava" if entry.format == "auto" else entry.format,
        options=options,
        table=entry.is_table,
        preprocess=get_preprocess(entry.preprocess_fn, entry.trust_code) if entry.preprocess_fn else None,
        columns=entry.columns,
        kwargs=entry.kwargs,
    )


def detect_batch_format(head: dict, job: EntryJob) -> str:
    """The format of the first records of a stage-one batch (after the entry's preprocess_fn)."""
    records = (_preprocessed(where, record, job) for where, record in _records(head, job))
    return detect_format(r for r in itertools.islice(records, DETECT_RECORDS) if isinstance(r, dict))


def _records(batch: dict, job: EntryJob) -> Iterator[tuple[str, object]]:
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


def _preprocessed(where: str, record, job: EntryJob):
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


def normalize_table(batch: dict, job: EntryJob) -> pa.Table:
    """`normalize_batch` as the Arrow table `Dataset.map` writes as it is: Python lists returned instead would be
    encoded feature by feature by `datasets` first: 1.5-2 of the 16 us a record stage two cost."""
    return pa.Table.from_pydict(normalize_batch(batch, job), schema=ROW_SCHEMA)


def normalize_batch(batch: dict, job: EntryJob) -> dict[str, list]:
    """`normalize_rows` as columns, the batch a `Dataset.map` function returns."""
    rows = normalize_rows(batch, job)
    return {name: [row[name] for row in rows] for name in ROW_FEATURES}


def normalize_rows(batch: dict, job: EntryJob) -> list[dict]:
    """Parse, preprocess and read each record of a stage-one batch into one ROW_FEATURES row, in file order."""
    if isinstance(batch, pa.Table):  # table rows come in Arrow format, so that media features stay undecoded
        batch = batch.to_pydict()
    read = READERS[job.reader]
    rows = []
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
            row["problem"] = row["fix"] = row["kind"] = ""
        else:
            row = {"id": result.id, "source": job.options.source, "where": result.where, "system": "", "turns": [],
                   "media": [], "problem": result.problem, "fix": result.fix, "kind": result.kind}  # fmt: skip
        row["note"] = note
        rows.append(row)
    return rows
