"""`framelm data extract-frames`: videos -> folders of JPEG frames taken every `interval` seconds.

    framelm data extract-frames /data/videos --interval 0.5 --num-proc 8

`clip.mp4` becomes `clip/00001.jpg, 00002.jpg, ...` (time order = name order) plus `clip.json` holding the real frame
rate, `{"fps": "2.0"}`: the layout Pai-Megatron-Patch and framelm's frame-folder loader read. The rate is measured
from the frames kept (a 1 fps video sampled every 0.5 s is still 1 fps). `clip.json` is written last, so a video
whose `.json` exists is finished and skipped when the command is run again after an interruption.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from framelm.training.data.media_writer import write_frame_folder

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".gif")


@dataclass
class ExtractionReport:
    done: list[str] = field(default_factory=list)  # videos extracted by this run
    skipped: list[str] = field(default_factory=list)  # videos already extracted (their .json exists)
    failed: dict[str, str] = field(default_factory=dict)  # video -> why


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
    """Write the frames of one video at `interval` seconds, then `<folder>.json`; returns the frames written."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # frames of an interrupted run, possibly at another interval
        if name.endswith(".jpg") and name[:-4].isdigit():
            os.remove(os.path.join(folder, name))
    times: list[float] = []
    write_frame_folder(folder, _frames_every(video, interval, times), fps=None)  # the rate is known only at the end
    if not times:
        raise ValueError(f"{video} has no frames")
    span = times[-1] - times[0]
    fps = (len(times) - 1) / span if len(times) > 1 and span > 0 else 1 / interval
    with open(os.path.normpath(folder) + ".json", "w", encoding="utf-8") as f:
        json.dump({"fps": str(round(fps, 3))}, f)  # a string, as Pai-Megatron-Patch writes it
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
    if interval <= 0:
        raise ValueError(f"interval must be a positive number of seconds, not {interval}")
    report, todo = ExtractionReport(), []
    for video, root in find_videos(inputs):
        folder = frame_folder(video, root, out_root)
        if not overwrite and os.path.exists(folder + ".json"):
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
