"""`framelm data extract-frames`: videos -> folders of JPEG frames taken every `interval` seconds.

    framelm data extract-frames /data/videos --interval 0.5 --num-proc 8

`clip.mp4` becomes `clip/00001.jpg, 00002.jpg, ...` (time order = name order) plus `clip.json` holding the real frame
rate, `{"fps": "2.0"}`: the layout Pai-Megatron-Patch and framelm's frame-folder loader read. The rate is measured
from the frames kept (a 1 fps video sampled every 0.5 s is still 1 fps).

`clip.json` is the "done" marker: a video whose `.json` and folder exist is skipped when the command runs again.
So nothing may ever leave a marker beside frames it does not describe. The frames are written into `.clip.partial/`
beside the target; with `--overwrite`, the old marker is removed only once they are all written; then the folder is
swapped in, and the new marker written last. A run killed at any point leaves either a complete folder with its
marker, or no marker (and the video is extracted again).

What it never touches without `--overwrite` (video2dataset and WebVid layouts keep captions in `<stem>.json`): a
`<stem>/` folder it did not write (judged by the record `atomic_write.py` keeps in each folder it writes) and a
`<stem>.json` that is not its own marker (`{"fps": "..."}` beside such a folder). Such a video is refused, by name and
reason, and counted as failed. So are two videos with the same stem in one folder (`clip.mp4` and `clip.mkv` would
share `clip/`): both are refused, as neither can be told apart by its frame folder; rename one. Only regular files
are videos (a FIFO named `*.mp4` would block the run forever), and an error of one video (OSError included) is that
video's failure, not the run's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import stat
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from framelm.training.atomic_write import folder_written_beside, foreign_entries, write_text_atomically
from framelm.training.env import usable_cores

if TYPE_CHECKING:  # numpy, PIL and tqdm load when frames are extracted, not when `framelm data` builds its parser
    import numpy as np

logger = logging.getLogger(__name__)

INTERVAL_RANGE = (0.001, 86_400.0)  # seconds between kept frames: 1000 per second at most, one per day at least
WRITTEN_BY = "framelm data extract-frames"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".gif")


@dataclass
class ExtractionReport:
    done: list[str] = field(default_factory=list)  # videos extracted by this run
    skipped: list[str] = field(default_factory=list)  # videos already extracted (their folder and .json exist)
    failed: dict[str, str] = field(default_factory=dict)  # video -> why (refusals to touch a user's files included)


def check_interval(interval: float) -> float:
    """`interval` if it is a number of seconds in INTERVAL_RANGE (so not nan, inf, 0 or 1e-300), else ValueError."""
    low, high = INTERVAL_RANGE
    if not (math.isfinite(interval) and low <= interval <= high):
        raise ValueError(f"interval must be a number of seconds from {low:g} to {high:g}, not {interval}")
    return interval


def interval_seconds(text: str) -> float:
    """argparse `type` of `--interval`: the same check, as a usage error before any video is opened."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    try:
        return check_interval(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def marker_path(folder: str) -> str:
    """`clip/` -> `clip.json`: the frame rate, and the sign that the folder is complete."""
    return os.path.normpath(folder) + ".json"


def find_videos(inputs: list[str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """((video, root it is relative to) for each regular video file given or found recursively in a folder given,
    {path: why} for each entry with a video suffix that is not a regular file (a FIFO, a device, a dangling link)."""
    found, refused = [], {}
    for item in inputs:
        if os.path.isdir(item):
            for folder, _, files in os.walk(item):
                for name in sorted(files):
                    if name.lower().endswith(VIDEO_SUFFIXES):
                        _add_video(os.path.join(folder, name), item, found, refused)
        elif os.path.lexists(item):
            _add_video(item, os.path.dirname(item), found, refused)
        else:
            raise FileNotFoundError(f"{item}: no such video file or folder")
    return sorted(found), refused


def _add_video(path: str, root: str, found: list, refused: dict) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        refused[path] = f"cannot read it ({err.strerror or err})"
        return
    if stat.S_ISREG(mode):
        found.append((path, root))
    else:
        refused[path] = "not a regular file (a FIFO, socket or device would block the run): pass a video file"


def own_marker(folder: str) -> bool:
    """Whether `<folder>.json` is a marker this command wrote: `{"fps": "..."}` beside a folder it wrote."""
    try:
        with open(marker_path(folder), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and set(marker) == {"fps"} and _own_folder(folder)


def _own_folder(folder: str) -> bool:
    return os.path.isdir(folder) and not os.path.islink(folder) and not foreign_entries(folder, WRITTEN_BY)


def user_files_in_the_way(folder: str) -> str | None:
    """Why extracting into `folder` would replace or delete a file this command did not write; None when it would
    not."""
    marker = marker_path(folder)
    if os.path.lexists(marker) and not own_marker(folder):
        return (
            f"{marker} exists and is not a marker `extract-frames` wrote (captions of a video2dataset or WebVid "
            "layout live there): pass --out to write the frames elsewhere, or --overwrite to replace it"
        )
    if os.path.lexists(folder) and not _own_folder(folder):
        found = foreign_entries(folder, WRITTEN_BY)
        return (
            f"{folder} exists and holds what `extract-frames` did not write ({', '.join(found[:3])}"
            f"{' ...' if len(found) > 3 else ''}): pass --out to write the frames elsewhere, or --overwrite to "
            "replace it"
        )
    return None


def frame_folder(video: str, root: str, out_root: str | None = None) -> str:
    """Where the frames of `video` go: beside it, or at the same relative path under `out_root`."""
    stem = os.path.splitext(video)[0]
    return stem if out_root is None else os.path.join(out_root, os.path.relpath(stem, root))


def extract_video(video: str, folder: str, interval: float, overwrite: bool = False) -> int:
    """Write the frames of one video at `interval` seconds into `folder`, then its marker; returns the frames written.

    Atomic as the module docstring says: whatever happens, a marker describes the folder beside it. Without
    `overwrite`, a folder or marker this command did not write is refused (ValueError), checked again at the swap.
    """
    from framelm.training.data.media_writer import write_frame_folder

    if not overwrite and (reason := user_files_in_the_way(folder)):
        raise ValueError(reason)
    times: list[float] = []
    with folder_written_beside(folder, WRITTEN_BY, overwrite=overwrite) as partial:
        write_frame_folder(partial, _frames_every(video, interval, times), fps=None)  # the rate is known at the end
        if not times:
            raise ValueError(f"{video} has no frames")
        if not overwrite and (reason := user_files_in_the_way(folder)):
            raise ValueError(reason)  # again: a marker may have appeared while the frames were written
        if os.path.lexists(marker_path(folder)):
            os.remove(marker_path(folder))  # from here to the new marker, the video counts as not extracted
    span = times[-1] - times[0]
    fps = (len(times) - 1) / span if len(times) > 1 and span > 0 else 1 / interval
    write_text_atomically(marker_path(folder), json.dumps({"fps": str(round(fps, 3))}))  # a string, as Pai writes it
    return len(times)


def _frames_every(video: str, interval: float, times: list[float]) -> Iterator[np.ndarray]:
    """Decoded RGB frames (H, W, 3) at least `interval` seconds apart; their timestamps are appended to `times`."""
    import av
    import av.error

    try:
        with av.open(video) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or 25)
            next_time = 0.0
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.time is not None else index / rate
                if time + 1e-6 < next_time:
                    continue
                times.append(time)
                yield frame.to_ndarray(format="rgb24")
                while next_time <= time + 1e-6:
                    next_time += interval
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot decode {video}: {err}") from None


def extract_frames(
    inputs: list[str],
    interval: float = 0.5,
    out_root: str | None = None,
    num_proc: int | None = None,
    overwrite: bool = False,
) -> ExtractionReport:
    """Extract every video under `inputs` in parallel, skipping finished ones unless `overwrite`."""
    from tqdm.auto import tqdm

    check_interval(interval)
    report, todo = ExtractionReport(), []
    videos, report.failed = find_videos(inputs)
    by_folder = defaultdict(list)
    for video, root in videos:
        by_folder[os.path.normpath(frame_folder(video, root, out_root))].append(video)
    for folder, same in sorted(by_folder.items()):
        if len(same) > 1:  # clip.mp4 and clip.mkv: one folder cannot hold both, and neither may silently win
            for video in same:
                report.failed[video] = (
                    f"{' and '.join(same)} would all be extracted to {folder}/: rename all but one (or extract them "
                    "into different --out folders)"
                )
        elif not overwrite and own_marker(folder):
            report.skipped.append(same[0])
        elif not overwrite and (reason := user_files_in_the_way(folder)):
            report.failed[same[0]] = reason
        else:
            todo.append((same[0], folder))
    with ProcessPoolExecutor(max_workers=num_proc or usable_cores()) as pool:
        futures = {pool.submit(extract_video, video, folder, interval, overwrite): video for video, folder in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="extracting frames", unit="video"):
            video = futures[future]
            try:
                future.result()
            except (ValueError, OSError) as err:  # this video's failure: the others go on
                report.failed[video] = str(err)
                continue
            report.done.append(video)
    logger.info("%d videos extracted, %d already done, %d failed", len(report.done), len(report.skipped),
                len(report.failed))  # fmt: skip
    return report
