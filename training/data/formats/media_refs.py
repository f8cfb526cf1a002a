"""A record's media field in every form the ecosystem writes it: what `image`/`images`/`video`/`videos` may hold.

- a path or URL string (LLaVA, ShareGPT, lmms-finetune), or a list of them;
- a `data:` URL (OpenAI-style messages): its bytes are embedded;
- a `datasets.Image`/`datasets.Video` feature read without decoding, `{"bytes": ..., "path": ...}` (TRL's format and
  most Hub VLM datasets; parquet files keep the bytes), or raw bytes: embedded; a feature with only a path is a path;
- for videos, a list of frame images (each any of the above but a list) in place of a file, so `videos` is then a list
  of lists: LLaMA-Factory's frame lists and `datasets.List(datasets.List(datasets.Image()))` columns.

Paths stay strings here and are resolved with every other path (`common.build_sample`); embedded media become
`Media` with their bytes (`sample.py`), which never touch the disk before the collator.
"""

from __future__ import annotations

from framelm.training.data.embedded import data_url_bytes
from framelm.training.data.formats.shown import short_repr
from framelm.training.data.paths import looks_like_url, resolve_media_path
from framelm.training.data.sample import Media

MediaRef = str | Media  # a path as written, or embedded media (kind image, video or frames)


class NotMedia(ValueError):
    """A media field holding something that is not media; the message says what (the record's `bad_media_path`)."""


def media_list(value, key: str, video: bool) -> list[MediaRef] | str:
    """The media of one field, in order; a message saying what is wrong instead when it holds something else."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    try:
        return [
            _frame_list(item, key) if video and isinstance(item, list) else _one(item, key, video) for item in items
        ]
    except NotMedia as err:
        return str(err)


def _one(item, key: str, video: bool) -> MediaRef:
    """A path string or embedded `Media`."""
    kind = "video" if video else "image"
    if isinstance(item, str) and item:
        if not item.startswith("data:"):
            return item
        try:
            return Media(kind, "data URL", data_url_bytes(item))
        except ValueError as err:
            raise NotMedia(f"'{key}' holds a data URL that does not decode: {err}") from None
    if isinstance(item, (bytes, bytearray)) and item:
        return Media(kind, "", bytes(item))
    if isinstance(item, dict) and item and set(item) <= {"bytes", "path"}:  # a datasets Image/Video feature
        data, path = item.get("bytes"), item.get("path")
        if isinstance(data, (bytes, bytearray)) and data:
            return Media(kind, path if isinstance(path, str) else "", bytes(data))
        if isinstance(path, str) and path:
            return path
    raise NotMedia(
        f"'{key}' must be a path or a list of non-empty paths (or URLs, data URLs, image/video features "
        f"{{'bytes', 'path'}}), not {short_repr(item)}"
    )


def _frame_list(frames: list, key: str) -> Media:
    """One video given as its frame images, in time order."""
    if not frames:
        raise NotMedia(f"'{key}' holds an empty list of frames")
    parts = []
    for frame in frames:
        if isinstance(frame, list):
            raise NotMedia(f"'{key}' holds a frame that is a list: a video's frames are images")
        ref = _one(frame, key, video=False)
        if isinstance(ref, str) and looks_like_url(ref):
            raise NotMedia(f"'{key}' lists frames by URL ({ref[:60]}); give the video file or frame folder instead")
        parts.append(ref if isinstance(ref, Media) else Media("image", ref))
    return Media("frames", "", frames=tuple(parts))


def resolve_embedded(media: Media, root: str, allow_outside_root: bool) -> Media:
    """`media` with its frame paths resolved against `root` by the one path rule (`OutsideRootError` when one leads
    outside it); embedded bytes need no resolving."""
    if not media.frames or all(f.data is not None for f in media.frames):
        return media
    frames = tuple(
        f if f.data is not None else Media("image", resolve_media_path(f.path, root, allow_outside_root))
        for f in media.frames
    )
    return Media(media.kind, media.path, media.data, frames, media.fps)
