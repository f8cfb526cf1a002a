"""Media that travel inside the data (bytes of an image or video file, or a video's frame images) instead of as paths.

Where they come from: a `datasets.Image`/`Video` feature's bytes (TRL's format, most Hub VLM datasets), a `data:` URL,
a member of a `framelm data convert` shard. An image's bytes go to the processor as they are: `load_image` decodes
bytes, so they reach the collator without touching the disk. A video is different: the processor's decoders sample
`num_frames` frames from a file or a frame folder and never decode the rest, which needs a path. So an embedded video
is written to a temporary folder when the collator builds the sample's messages (`temporary_video`), owned by the
messages list and deleted with it (`MessagesWithFiles`): the paths themselves are plain strings that any cache may
keep. Counting tokens (`Sample.to_messages(media=False)`) writes nothing.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from framelm.processing.sources_framelm import _data_url_bytes  # the processor's own reading of data URLs
from framelm.training.data.media import Media

# leading bytes -> the extension a file of that type carries (decoders look at the content; people and tools look
# at the name)
MAGIC_EXTENSIONS = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"\x1aE\xdf\xa3", ".mkv"),  # Matroska and WebM
)


def extension_of(data: bytes, name: str = "", default: str = ".bin") -> str:
    """The file extension for `data`: its name's own extension when it has one, else one read from its first bytes."""
    suffix = posixpath.splitext(name)[1].lower()
    if suffix and len(suffix) <= 6 and suffix[1:].isalnum():
        return suffix
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[4:8] == b"ftyp":
        return ".mp4"
    for magic, extension in MAGIC_EXTENSIONS:
        if head.startswith(magic):
            return extension
    return default


def data_url_bytes(url: str) -> bytes:
    """The bytes of a `data:` URL (`ValueError` when it is malformed)."""
    return _data_url_bytes(url)


def write_media(media: Media, folder: str) -> str:
    """Write embedded `media` under `folder` as the processor's loaders expect it; return its path.

    A file (image or video) keeps its extension. A frame list becomes a frame folder `frames/00001.jpg ...` in list
    order (frames given as paths are linked, not copied), with its frame rate in `frames.json` when known, the layout
    of `framelm data extract-frames`.
    """
    if media.data is not None:
        path = os.path.join(folder, "media" + extension_of(media.data, media.path))
        with open(path, "wb") as f:
            f.write(media.data)
        return path
    frames = os.path.join(folder, "frames")
    os.mkdir(frames)
    for number, frame in enumerate(media.frames, start=1):
        if frame.data is None:
            target = os.path.join(frames, f"{number:05d}{extension_of(b'', frame.path, '.jpg')}")
            os.symlink(os.path.abspath(frame.path), target)
            continue
        with open(os.path.join(frames, f"{number:05d}{extension_of(frame.data, frame.path, '.jpg')}"), "wb") as f:
            f.write(frame.data)
    if media.fps:
        with open(frames + ".json", "w", encoding="utf-8") as f:
            f.write(f'{{"fps": {media.fps!r}}}')
    return frames


@contextmanager
def materialized(media: Media) -> Iterator[str]:
    """A path holding embedded `media` for the duration of the block (for checks that open files)."""
    folder = tempfile.mkdtemp(prefix="framelm-media-")
    try:
        yield write_media(media, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class MessagesWithFiles(list):
    """Messages (a plain list to every reader) owning the temporary folders their embedded videos were written to;
    the folders are deleted with the list, once the processor is done with it."""

    def __init__(self, messages: list[dict], folders: list[tempfile.TemporaryDirectory]):
        super().__init__(messages)
        self.folders = folders


def temporary_video(media: Media, folders: list[tempfile.TemporaryDirectory]) -> str:
    """An embedded video written to a new temporary folder (appended to `folders`, which owns it), as the
    processor's video loaders read it: its file, or its frames as a frame folder."""
    folder = tempfile.TemporaryDirectory(prefix="framelm-video-")
    folders.append(folder)
    return write_media(media, folder.name)


def embedded_positions(items: pa.Array | pa.ChunkedArray) -> set[int]:
    """Positions of the embedded items in a flat Arrow array of `SAMPLE_FEATURES` media structs."""
    inline = pc.or_(
        pc.is_valid(pc.struct_field(items, "bytes")),
        pc.greater(pc.fill_null(pc.list_value_length(pc.struct_field(items, "frames")), 0), 0),
    )
    return set(np.flatnonzero(inline.to_numpy(zero_copy_only=False)).tolist())


def check_embedded(media: Media, check: Callable[[str, str], list]) -> list[tuple[str, str, str]]:
    """`check(kind, path)` (validate's check of one media file) on embedded media, through a temporary copy; the
    problems name the media as it came (its name, or "embedded image") instead of the temporary path."""
    with materialized(media) as path:
        found = check(media.kind, path)
    name = f"{media.path} (embedded)" if media.path else f"embedded {media.kind}"
    # a frame list carries no frame rate unless the data gave one: nothing to fix
    return [(kind, text.replace(path, name), fix) for kind, text, fix in found
            if not (kind == "missing_fps" and media.frames and media.fps is None)]  # fmt: skip
