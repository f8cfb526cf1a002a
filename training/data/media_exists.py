"""Before the first training step: does every local media file a record names exist? A stat per file, in a thread
pool, with a progress bar; decoding stays lazy (the collator's job, `data validate`'s check).

A wrong `--image_folder` makes every image path miss: this check finds that in seconds, before GPU-hours go into a
text-only model. `--max_bad_fraction` is the budget of unusable records a run accepts (under `--bad_records skip`;
`strict` accepts none): past it the run stops, before training and while training (`sft/trainer.py`), with one line
naming the cause and pointing at `framelm data validate`. `framelm train`, `framelm generate` and `framelm dpo` all
use `check_media_exist` / `require_within_budget` here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from framelm.training.data.paths import is_remote
from framelm.training.data.policy import BadRecordsError
from framelm.training.data.sample import RecordProblem

logger = logging.getLogger(__name__)

DEFAULT_MAX_BAD_FRACTION = 0.01
STAT_THREADS = 32  # stats wait on the disk (or a network file system), not the CPU


def local_paths(media: Iterable[dict]) -> list[str]:
    """The local files and frame folders one record's media rows name (URLs and embedded bytes have none)."""
    paths = []
    for item in media or ():
        if item.get("bytes") is not None:
            continue
        frames = item.get("frames") or ()
        if frames:
            paths += [
                f["path"] for f in frames if f.get("bytes") is None and f.get("path") and not is_remote(f["path"])
            ]
        elif item.get("path") and not is_remote(item["path"]):
            paths.append(item["path"])
    return paths


def existing(paths: Iterable[str], progress: bool = True, desc: str = "checking media files") -> set[str]:
    """Which of `paths` exist (a stat each, in parallel)."""
    unique = sorted(set(paths))
    if not unique:
        return set()
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(min(STAT_THREADS, len(unique))) as pool:
        found = tqdm(pool.map(os.path.exists, unique, chunksize=64), total=len(unique), desc=desc, unit="file",
                     disable=not progress or len(unique) < 1000, leave=False)  # fmt: skip
        return {path for path, there in zip(unique, found, strict=True) if there}


def missing_media_problems(rows: Iterable[dict], progress: bool = True) -> dict[int, RecordProblem]:
    """{row index: its problem} for the rows (dicts with `media`, `where`, `id`) that name a missing local file."""
    rows = list(rows)
    per_row = [local_paths(row.get("media")) for row in rows]
    there = existing((path for paths in per_row for path in paths), progress)
    problems = {}
    for index, (row, paths) in enumerate(zip(rows, per_row, strict=True)):
        missing = [path for path in paths if path not in there]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            problems[index] = RecordProblem(
                row.get("where", ""),
                f"media file {missing[0]} does not exist{more}",
                "check the path and --image_folder/--video_folder",
                id=row.get("id", "") or "",
                kind="missing_media",
            )
    return problems


def require_within_budget(
    bad: int, total: int, source: str, max_bad_fraction: float, cause: str, stopped: str = "nothing was trained"
) -> None:
    """Stop when more than `max_bad_fraction` of `total` records are unusable: one line, the cause and the fix."""
    if total and bad > max_bad_fraction * total:
        raise BadRecordsError(
            f"{source}: {bad} of {total} records ({bad / total:.0%}) cannot be used ({cause}), more than "
            f"--max_bad_fraction {max_bad_fraction:g}; {stopped}",
            f"`framelm data validate {source}` names each one; a wrong --image_folder/--video_folder is the usual "
            "cause",
        )


def check_media_exist(dataset, source: str, max_bad_fraction: float, policy: str, progress: bool = True):
    """(`dataset` without the records whose local media are missing, their problems). Raises `BadRecordsError`
    when more than `max_bad_fraction` of the records miss media; `strict` leaves the problems to the bad-record
    policy of its caller (which refuses any)."""
    if "media" not in dataset.column_names or len(dataset) == 0:
        return dataset, []
    rows = dataset.select_columns([c for c in ("media", "where", "id") if c in dataset.column_names])
    problems = missing_media_problems(rows, progress)
    if not problems:
        return dataset, []
    first = next(iter(problems.values()))
    cause = f"missing media files, first {first.where}: {first.problem}"
    require_within_budget(len(problems), len(dataset), source, max_bad_fraction, cause)
    if policy == "skip":
        keep = [index for index in range(len(dataset)) if index not in problems]
        dataset = dataset.select(keep)
    return dataset, list(problems.values())
