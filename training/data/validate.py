"""`framelm data validate`: every record of a data file or mixture checked without training, every problem reported.

Three layers, each optional after the first:
1. structure, by the same readers training uses (`load_samples`): JSON syntax with line and column, required keys,
   role order, placeholder/media counts, paths escaping their root;
2. media (`check_media=True`): files missing, undecodable or truncated (a frame is decoded), images of unusual
   modes or of one pixel, frame folders without their `<folder>.json` frame rate;
3. length (`max_length` and a processor): records whose first exchange, media included, does not fit, which
   training could only cut inside media (the one length rule of `budget.py`, which training applies too).
A problem is an **error** (the record cannot train) or a **warning** (it trains, but look: an image converted to RGB
from grayscale or CMYK, a one-pixel image). Only errors make `framelm data validate` exit non-zero. A record with
several problems is reported once per problem; the counts of records always add up to the total.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow.compute as pc
from tqdm.auto import tqdm

from framelm.training.data.arguments import DataArguments
from framelm.training.data.budget import measure_lengths, too_long_problems, truncation_counts
from framelm.training.data.embedded import check_embedded, embedded_positions
from framelm.training.data.loading import LoadedSamples, load_samples
from framelm.training.data.sample import Media, RecordProblem

logger = logging.getLogger(__name__)

# PIL modes a model expects (RGB) or that carry no surprise when converted (YCbCr, LAB stay 3-channel colour)
PLAIN_MODES = {"RGB", "YCbCr", "LAB", "HSV"}
MODE_NAMES = {"1": "black and white", "L": "grayscale", "LA": "grayscale with alpha", "I": "32-bit grayscale",
              "I;16": "16-bit grayscale", "F": "float grayscale", "P": "palette", "PA": "palette with alpha",
              "RGBA": "RGBA (with alpha)", "CMYK": "CMYK"}  # fmt: skip
WARNING_KINDS = frozenset({"unusual_mode", "tiny_image"})  # the record trains (framelm converts or keeps it)


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
    unchecked_media: int = 0  # remote (URL) media paths, which are not opened

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
        if self.unchecked_media:
            rows.append(("remote media not opened", self.unchecked_media))
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
        with open(path, "w", encoding="utf-8") as f:
            for problem in self.problems:
                f.write(json.dumps(problem.to_report(), ensure_ascii=False) + "\n")


def validate(
    data: DataArguments,
    *,
    check_media: bool = True,
    max_length: int | None = None,
    processor=None,
    ignore: Iterable[str] = (),
) -> ValidationReport:
    """Check every record of `data.dataset` (a data file or a mixture YAML); `max_length` needs the model's
    `processor` to count tokens."""
    if max_length is not None and processor is None:
        raise ValueError("checking max_length needs the model's processor (--model DIR) to count tokens")
    loaded = load_samples(data)
    report = ValidationReport(path=str(data.dataset), total=loaded.total, left_out=loaded.left_out)
    # (record, problem) pairs; a record is its dataset row, or -1 - i for the i-th record that failed to read
    found = [(-1 - i, problem) for i, problem in enumerate(loaded.problems)]
    if check_media:
        problems, report.unchecked_media = media_problems(loaded, num_workers=data.num_proc)
        found += problems
    if max_length is not None:
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
    loaded: LoadedSamples, num_workers: int | None = None
) -> tuple[list[tuple[int, RecordProblem]], int]:
    """Open every distinct media file once (in threads: decoders release the GIL) and report it for each record.

    Returns (dataset row, problem) pairs and the number of remote paths left unopened.
    """
    table = loaded.dataset.select_columns(["where", "id", "media"]).with_format("arrow")[:]
    media = table.column("media")
    flat = pc.list_flatten(media)
    rows = pc.list_parent_indices(media).to_numpy()
    kinds, paths = pc.struct_field(flat, "kind").to_pylist(), pc.struct_field(flat, "path").to_pylist()
    embedded = embedded_positions(flat)  # media that came inside the data: each checked, read when it is
    keys = [("embedded", j) if j in embedded else (k, p) for j, (k, p) in enumerate(zip(kinds, paths, strict=True))]
    distinct = sorted({(k, p) for k, p in keys if k != "embedded" and "://" not in p})
    remote = sum(k != "embedded" and "://" in p for k, p in keys)
    jobs = dict(zip(distinct, distinct, strict=True)) | {("embedded", j): j for j in embedded}

    def check(job) -> list[tuple[str, str, str]]:
        if isinstance(job, int):
            return check_embedded(Media.from_row(flat[job].as_py()), check_media_file)
        return check_media_file(*job)

    workers = num_workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = dict(
            zip(jobs, tqdm(pool.map(check, jobs.values()), total=len(jobs), desc="checking media", unit="file"),
                strict=True)
        )  # fmt: skip
    where, ids = table.column("where").to_pylist(), table.column("id").to_pylist()
    problems = []
    for row, key in zip(rows, keys, strict=True):
        for problem_kind, text, fix in results.get(key, ()):
            severity = "warning" if problem_kind in WARNING_KINDS else "error"
            problem = RecordProblem(where[row], text, fix, id=ids[row], kind=problem_kind, severity=severity)
            problems.append((int(row), problem))
    return problems, remote


def check_media_file(kind: str, path: str) -> list[tuple[str, str, str]]:
    """(kind, problem, fix) for each thing wrong with one media item; an empty list when it is fine."""
    if kind == "frames":
        if not os.path.isdir(path):
            fix = "fix the path or --video-folder, or extract the frames (framelm data extract-frames)"
            return [("missing_file", f"frame folder not found: {path}", fix)]
        return _probe(path)
    if not os.path.isfile(path):
        folder = "--image-folder" if kind == "image" else "--video-folder"
        found = f"{kind} {path} is a folder, not a file" if os.path.isdir(path) else f"{kind} file not found: {path}"
        return [("missing_file", found, f"fix the path or {folder}")]
    return _check_image(path) if kind == "image" else _probe(path)


def _probe(path: str) -> list[tuple[str, str, str]]:
    from framelm.processing.media_framelm import probe_video

    try:
        info = probe_video(path)
    except (ValueError, OSError) as err:
        return [("undecodable", f"cannot decode {path}: {err}", "re-encode or replace the video (truncated file?)")]
    if not info.get("total_frames"):
        return [("undecodable", f"{path} has no frames", "re-encode or replace the video")]
    if info.get("fps") is None and os.path.isdir(path):
        fps_file = os.path.normpath(path) + ".json"
        return [("missing_fps", f"frame folder {path} has no frame rate file {fps_file}",
                 'write {"fps": "2.0"} (the rate the frames were taken at) to that file')]  # fmt: skip
    return []


def _check_image(path: str) -> list[tuple[str, str, str]]:
    from PIL import Image, UnidentifiedImageError

    from framelm.processing.media_framelm import load_image

    found = []
    try:
        with Image.open(path) as image:  # reads the header only: the mode as stored, before any conversion
            mode, size = image.mode, image.size
    except (UnidentifiedImageError, OSError) as err:
        return [("undecodable", f"cannot open image {path}: {err}", "replace the file with a valid image")]
    if min(size) <= 1:
        found.append(("tiny_image", f"image {path} is {size[0]}x{size[1]} pixels",
                      "replace it: a one-pixel image holds no content (often a failed download)"))  # fmt: skip
    if mode not in PLAIN_MODES:
        fix = ("framelm converts it to RGB when loading (alpha composited on white, gray copied to 3 channels); "
               "convert it yourself if that is not what you want, or pass --ignore unusual_mode")  # fmt: skip
        found.append(("unusual_mode", f"image {path} is {MODE_NAMES.get(mode, mode)} (mode {mode})", fix))
    try:
        load_image(path)
    except (ValueError, OSError) as err:
        found.append(("undecodable", f"cannot decode image {path}: {err}", "replace the file (truncated?)"))
    return found
