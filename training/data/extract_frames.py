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
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from framelm.training.atomic_write import folder_written_beside, write_text_atomically

if TYPE_CHECKING:  # numpy, PIL and tqdm load when frames are extracted, not when `framelm data` builds its parser
    import numpy as np

logger = logging.getLogger(__name__)

INTERVAL_RANGE = (0.001, 86_400.0)  # seconds between kept frames: 1000 per second at most, one per day at least
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".gif")


@dataclass
class ExtractionReport:
    done: list[str] = field(default_factory=list)  # videos extracted by this run
    skipped: list[str] = field(default_factory=list)  # videos already extracted (their folder and .json exist)
    failed: dict[str, str] = field(default_factory=dict)  # video -> why


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


def find_videos(inputs: list[str]) -> list[tuple[str, str]]:
    """(video, root it is relative to) for each video file given or found (recursively) in a folder given."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            for folder, _, files in os.walk(item):
                found += [(os.path.join(folder, f), item) for f in sorted(files) if f.lower().endswith(VIDEO_SUFFIXES)]
        elif os.path.isfile(item):
            found.append((item, os.path.dirname(item)))
        else:
            raise FileNotFoundError(f"{item}: no such video file or folder")
    return sorted(found)


def frame_folder(video: str, root: str, out_root: str | None = None) -> str:
    """Where the frames of `video` go: beside it, or at the same relative path under `out_root`."""
    stem = os.path.splitext(video)[0]
    return stem if out_root is None else os.path.join(out_root, os.path.relpath(stem, root))


def extract_video(video: str, folder: str, interval: float) -> int:
    """Write the frames of one video at `interval` seconds into `folder`, then its marker; returns the frames written.

    Atomic as the module docstring says: whatever happens, a marker describes the folder beside it.
    """
    from framelm.training.data.media_writer import write_frame_folder

    times: list[float] = []
    with folder_written_beside(folder) as partial:
        write_frame_folder(partial, _frames_every(video, interval, times), fps=None)  # the rate is known at the end
        if not times:
            raise ValueError(f"{video} has no frames")
        if os.path.exists(marker_path(folder)):
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
    for video, root in find_videos(inputs):
        folder = frame_folder(video, root, out_root)
        if not overwrite and os.path.exists(marker_path(folder)) and os.path.isdir(folder):
            report.skipped.append(video)
        else:
            todo.append((video, folder))
    with ProcessPoolExecutor(max_workers=num_proc or os.cpu_count() or 1) as pool:
        futures = {pool.submit(extract_video, video, folder, interval): video for video, folder in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="extracting frames", unit="video"):
            video = futures[future]
            try:
                future.result()
            except ValueError as err:
                report.failed[video] = str(err)
                continue
            report.done.append(video)
    logger.info("%d videos extracted, %d already done, %d failed", len(report.done), len(report.skipped),
                len(report.failed))  # fmt: skip
    return report
