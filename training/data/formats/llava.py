"""LLaVA / NeVA / Video-NeVA records: `{"id", "image" | "video", "conversations": [{"from", "value"}, ...]}`.

The lmms-finetune format is a superset of this one (lists of paths, `system_prompt`, configurable roles), so a
LLaVA record is read by `read_lmms` with one addition: LLaVA-NeXT's own video data marks the video with `<image>`
(its code treats every visual as an image). A record with a `video`, no `image` and only `<image>` placeholders, as
many as its videos, is read as if it said `<video>`; the loader says once in the log how many records did so.
"""

from __future__ import annotations

from framelm.training.data.formats.common import ReadOptions, as_path_list
from framelm.training.data.formats.lmms import read_lmms
from framelm.training.data.sample import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, RecordProblem, Sample


def read_llava(record, where: str, options: ReadOptions) -> Sample | RecordProblem:
    if marks_video_with_image(record):
        turns = [
            turn | {"value": turn["value"].replace(IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)}
            if isinstance(turn, dict) and isinstance(turn.get("value"), str)
            else turn
            for turn in record["conversations"]
        ]
        record = record | {"conversations": turns}
    return read_lmms(record, where, options)


def marks_video_with_image(record) -> bool:
    """LLaVA-NeXT video data: a `video`, no `image`, no `<video>` and as many `<image>` placeholders as videos."""
    if not isinstance(record, dict) or not record.get("video") or record.get("image"):
        return False
    turns, videos = record.get("conversations"), as_path_list(record["video"], "video", video=True)
    if not isinstance(turns, list) or isinstance(videos, str):
        return False
    texts = [t["value"] for t in turns if isinstance(t, dict) and isinstance(t.get("value"), str)]
    return not any(VIDEO_PLACEHOLDER in t for t in texts) and sum(t.count(IMAGE_PLACEHOLDER) for t in texts) == len(
        videos
    )
