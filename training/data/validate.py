"""`framelm data validate`: every record of a data file or mixture checked without training, every problem reported.

Three layers, each optional after the first:
1. structure, by the same readers training uses (`load_samples`): JSON syntax with line and column, required keys,
   role order, placeholder/media counts, paths escaping their root;
2. media (`check_media=True`, `media_check.py`): each file read as training will read it (every pixel of an image,
   the frames training picks from a video, URLs through the processor's fetcher), the header of every frame of a
   frame folder, images of unusual modes or of one pixel, frame folders without their `<folder>.json` frame rate;
3. length (`max_length` and a processor): records whose first exchange, media included, does not fit, which
   training could only cut inside media (the one length rule of `budget.py`, which training applies too).
A problem is an **error** (the record cannot train) or a **warning** (it trains, but look: an image converted to RGB
from grayscale or CMYK, a one-pixel image, a URL not fetched on request). Only errors make `framelm data validate`
exit non-zero, unless `--strict` makes warnings count too. A record with
several problems is reported once per problem; the counts of records always add up to the total.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from framelm.training.atomic_write import write_text_atomically
from framelm.training.data.arguments import DataArguments
from framelm.training.data.budget import measure_lengths, too_long_problems, truncation_counts
from framelm.training.data.embedded import check_embedded, embedded_positions
from framelm.training.data.loading import LoadedSamples, load_samples
from framelm.training.data.media_check import WARNING_KINDS, MediaCheck, check_media_file
from framelm.training.data.paths import is_remote
from framelm.training.data.raw import forked_pool
from framelm.training.data.sample import Media, RecordProblem
from framelm.training.env import usable_cores
from framelm.training.errors import InputError

logger = logging.getLogger(__name__)

FETCH_THREADS = 8  # downloads of remote media at a time: they wait on the network, not on a core
PROCESS_MIN_FILES = 500  # below this, forking the check processes (~50 ms) costs more than they save


@dataclass
class ValidationReport:
    """Counts and problems of one validation run; `problems` holds one entry per problem (errors and warnings)."""

    path: str
    total: int
    problems: list[RecordProblem] = field(default_factory=list)
    bad_records: int = 0  # records with at least one error: they cannot train
    warned_records: int = 0  # records with at least one warning (and maybe errors too)
    left_out: int = 0
    truncated: int = 0  # records that fit only after dropping trailing exchanges (not a problem)

    @property
    def good_records(self) -> int:
        return self.total - self.left_out - self.bad_records

    @property
    def errors(self) -> list[RecordProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[RecordProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed): every record can train."""
        return not self.errors

    def table(self) -> str:
        """The summary printed by the CLI: record counts, then problems per kind with one example each."""
        rows = [("records read", self.total), ("usable", self.good_records), ("with errors", self.bad_records),
                ("with warnings", self.warned_records)]  # fmt: skip
        if self.left_out:
            rows.append(("left out by preprocess_fn", self.left_out))
        if self.truncated:
            rows.append(("shortened to fit max_length", self.truncated))
        lines = [f"{self.path}"] + [f"  {label:<28}{count:>10,}" for label, count in rows]
        for title, problems in (("error", self.errors), ("warning", self.warnings)):
            if not problems:
                continue
            lines += ["", f"  {title:<28}{'count':>10}  example"]
            examples = {}
            for p in problems:
                examples.setdefault(p.kind, p)
            for kind, count in Counter(p.kind for p in problems).most_common():
                example = examples[kind]
                lines.append(f"  {kind:<28}{count:>10,}  {example.where}: {example.problem}")
        return "\n".join(lines)

    def write_report(self, path: str) -> None:
        """One JSON object per problem: where, id, problem, fix, kind and severity."""
        lines = "".join(json.dumps(problem.to_report(), ensure_ascii=False) + "\n" for problem in self.problems)
        write_text_atomically(path, lines, errors="backslashreplace")


def validate(
    data: DataArguments,
    *,
    check_media: bool = True,
    media: MediaCheck | None = None,
    max_length: int | None = None,
    processor=None,
    ignore: Iterable[str] = (),
) -> ValidationReport:
    """Check every record of `data.dataset` (a data file or a mixture YAML); `max_length` needs the model's
    `processor` to count tokens. `media` says how training will read the media (frames per video, fetch limits);
    by default the `processor`'s settings, or the processor defaults without one."""
    if max_length is not None and processor is None:
        raise ValueError("checking max_length needs the model's processor (--model DIR) to count tokens")
    if media is None:
        media = MediaCheck(processor.num_frames, processor.fetch_limits) if processor is not None else MediaCheck()
    loaded = load_samples(data)
    report = ValidationReport(path=str(data.dataset), total=loaded.total, left_out=loaded.left_out)
    # (record, problem) pairs; a record is its dataset row, or -1 - i for the i-th record that failed to read
    found = [(-1 - i, problem) for i, problem in enumerate(loaded.problems)]
    if check_media:
        found += media_problems(loaded, media, num_workers=data.num_proc)
    if max_length is not None and "preference" in loaded.formats.values():  # pairs train whole, or not at all
        from framelm.training.data.formats.preference_lengths import pair_length_problems

        found += pair_length_problems(loaded.dataset, processor, max_length, data.num_proc)
    elif max_length is not None:
        measured = measure_lengths(loaded.dataset, processor, max_length, data.num_proc)
        found += too_long_problems(measured, max_length)
        report.truncated = truncation_counts(measured)[0]
    ignored = set(ignore)
    found = sorted(((r, p) for r, p in found if p.kind not in ignored), key=lambda pair: _file_order(pair[1].where))
    report.problems = [problem for _, problem in found]
    report.bad_records = len({record for record, p in found if p.severity == "error"})
    report.warned_records = len({record for record, p in found if p.severity == "warning"})
    logger.info("%s: %d records, %d usable, %d with errors, %d with warnings", data.dataset, report.total,
                report.good_records, report.bad_records, report.warned_records)  # fmt: skip
    return report


def _file_order(where: str) -> tuple[str, int]:
    """ "a.jsonl:12" and "b.parquet:row 3" -> (file, number), to list problems in file order."""
    file, _, position = where.rpartition(":")
    digits = position.removeprefix("row ")
    return file, int(digits) if digits.isdigit() else 0


def media_problems(
    loaded: LoadedSamples, media: MediaCheck, num_workers: int | None = None
) -> list[tuple[int, RecordProblem]]:
    """Open every distinct media item once and report it for each record that uses it, as (dataset row, problem)
    pairs. Local files and embedded media are checked in worker processes (`num_workers`, default every core):
    decoding a small image is mostly Python work around a short decode, and threads on it wait for each other
    (100,000 32x32 JPEGs on 2 cores: 3,200-3,500 files/s in 4 threads, 6,900 in one, 15,300-16,200 in 2 processes).
    URLs are fetched in threads. A process killed by a signal (a decoder crashing on a file) is an error naming the
    file it was checking, never a hang."""
    global _CHECKS
    table = loaded.dataset.select_columns(["where", "id", "media"]).with_format("arrow")[:]
    where, ids = table.column("where").to_pylist(), table.column("id").to_pylist()
    column = table.column("media")
    flat = pc.list_flatten(column)
    rows = pc.list_parent_indices(column).to_numpy()
    kinds, paths = pc.struct_field(flat, "kind").to_pylist(), pc.struct_field(flat, "path").to_pylist()
    embedded = embedded_positions(flat)  # media that came inside the data: each checked, read when it is
    keys = [("embedded", j) if j in embedded else (k, p) for j, (k, p) in enumerate(zip(kinds, paths, strict=True))]
    distinct = sorted({key for key in keys if key[0] != "embedded"})
    local = [key for key in distinct if not is_remote(key[1])] + [("embedded", j) for j in sorted(embedded)]
    order = local + [key for key in distinct if is_remote(key[1])]
    processes = num_workers or usable_cores()
    forked = processes > 1 and len(local) >= PROCESS_MIN_FILES
    marks = multiprocessing.RawArray("b", len(local)) if forked else None
    _CHECKS = _Checks(flat, media, [key[1] if key[0] == "embedded" else key for key in order], marks)
    results, pool = [], None
    try:
        if forked:  # the processes fork at the first submit: before the progress bar's and the fetches' threads start
            pool = forked_pool(processes)
            checked = pool.map(_check_item, range(len(local)), chunksize=max(1, min(256, len(local) // 16)))
        else:
            checked = map(_check_item, range(len(local)))
        with (
            tqdm(total=len(order), desc="checking media", unit="file") as progress,
            ThreadPoolExecutor(FETCH_THREADS) as threads,
        ):
            for found in itertools.chain(checked, threads.map(_check_item, range(len(local), len(order)))):
                results.append(found)
                progress.update()
    except BrokenProcessPool:  # a process killed by a signal: a decoder's crash on a file, or the OOM killer
        named = [f"the embedded media of {where[rows[local[i][1]]]}" if local[i][0] == "embedded" else local[i][1]
                 for i, mark in enumerate(marks) if mark == STARTED]  # fmt: skip
        if not named:  # killed between two files (by the OOM killer, or by hand): no file to blame
            raise InputError(
                "a media check process was killed by a signal between two files (out of memory?)",
                "run validate again, with fewer processes (--num-proc 1) if memory is short",
            ) from None
        raise InputError(
            f"a media check process died while checking {' or '.join(named)}: the file may crash its decoder, or "
            "memory ran out",
            "open the file with PIL or ffprobe to see, or remove its record",
        ) from None
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        _CHECKS = None
    by_key = dict(zip(order, results, strict=True))
    problems = []
    for row, key in zip(rows, keys, strict=True):
        for problem_kind, text, fix in by_key[key]:
            severity = "warning" if problem_kind in WARNING_KINDS else "error"
            problem = RecordProblem(where[row], text, fix, id=ids[row], kind=problem_kind, severity=severity)
            problems.append((int(row), problem))
    return problems


STARTED, DONE = 1, 2  # an item's mark while it is checked, and after


@dataclass(frozen=True)
class _Checks:
    """What the check processes inherit when they fork (and the fetch threads read)."""

    flat: pa.ChunkedArray  # the media of every record, flattened: embedded items are read from it
    media: MediaCheck
    items: list  # (kind, path or URL), or the position in `flat` of embedded media: local ones first, then URLs
    marks: Any  # a shared byte per local item, STARTED then DONE, to name the file a crashed process held; or None


_CHECKS: _Checks | None = None


def _check_item(index: int) -> list[tuple[str, str, str]]:
    """The problems of the `index`-th media item."""
    checks = _CHECKS
    if checks.marks is not None and index < len(checks.marks):
        checks.marks[index] = STARTED
    item = checks.items[index]
    if isinstance(item, int):
        found = check_embedded(
            Media.from_row(checks.flat[item].as_py()), lambda k, p: check_media_file(k, p, checks.media)
        )
    else:
        found = check_media_file(*item, checks.media)
    if checks.marks is not None and index < len(checks.marks):
        checks.marks[index] = DONE
    return found
