"""What `framelm data validate` opens: each media file read the way training will read it, every problem named.

Training decodes, in DataLoader workers, exactly the frames `sample_frame_indices` picks from each video, every pixel
of each image, and remote media through the processor's fetcher. A check that decodes less (one frame, a header) lets
records through that then stop a run mid-epoch, so this module decodes the same frames with the same loaders and the
same fetch limits, plus two cheap checks training would only meet by chance: the header of every frame of a frame
folder (a corrupt frame, frames of mixed sizes, a folder named like a frame) and the frame rate file of the folder.
"""

from __future__ import annotations

import inspect
import os
from collections import Counter
from dataclasses import dataclass, field

from framelm.processing.sources_framelm import FetchLimits, image_source, local_video_path, redact
from framelm.training.data.paths import is_remote

# PIL modes a model expects (RGB) or that carry no surprise when converted (YCbCr, LAB stay 3-channel colour)
PLAIN_MODES = {"RGB", "YCbCr", "LAB", "HSV"}
MODE_NAMES = {"1": "black and white", "L": "grayscale", "LA": "grayscale with alpha", "I": "32-bit grayscale",
              "I;16": "16-bit grayscale", "F": "float grayscale", "P": "palette", "PA": "palette with alpha",
              "RGBA": "RGBA (with alpha)", "CMYK": "CMYK"}  # fmt: skip
# the record trains (framelm converts or keeps it), or was not looked at on request: warnings, not errors
WARNING_KINDS = frozenset({"unusual_mode", "tiny_image", "remote_not_checked"})
REPLACE_FRAMES = "re-extract the frames (framelm data extract-frames --overwrite) or replace the file"

Problem = tuple[str, str, str]  # (kind, problem, fix)


@dataclass(frozen=True)
class MediaCheck:
    """How training will read the media: frames per video and the processor's fetch limits for URLs."""

    num_frames: int | None = None  # None: the processor's own default (`default_num_frames`)
    limits: FetchLimits = field(default_factory=FetchLimits)
    remote: bool = True  # fetch URLs; False reports each one as a `remote_not_checked` warning


def check_media_file(kind: str, path: str, check: MediaCheck | None = None) -> list[Problem]:
    """(kind, problem, fix) for each thing wrong with one media item; an empty list when it is fine. Any failure to
    open it, of any type, is its problem: one reference never stops the check of the others."""
    try:
        return _check_one(kind, path, check or MediaCheck())
    except Exception as err:  # noqa: BLE001 - a backend's own error (botocore's NoCredentialsError ...)
        return [("fetch_failed" if is_remote(path) else "undecodable",
                 f"cannot read {kind} {redact(path)}: {type(err).__name__}: {err}",
                 "check the file or URL (and credentials), or remove the record")]  # fmt: skip


def _check_one(kind: str, path: str, check: MediaCheck) -> list[Problem]:
    if is_remote(path):
        if not check.remote:
            return [("remote_not_checked", f"remote {kind} {redact(path)} was not fetched (--no-remote-media-check)",
                     "validate without --no-remote-media-check to fetch it, as training will")]  # fmt: skip
        return _check_image(path, check) if kind == "image" else _check_video(path, check)
    if kind == "frames":
        if not os.path.isdir(path):
            fix = "fix the path or --video-folder, or extract the frames (framelm data extract-frames)"
            return [("missing_file", f"frame folder not found: {path}", fix)]
        return _frame_headers(path) or _check_video(path, check)
    folder = "--image-folder" if kind == "image" else "--video-folder"
    if not os.path.isfile(path):  # missing, a folder, or not a regular file (a FIFO would block the decoder)
        if os.path.isdir(path):
            return [("missing_file", f"{kind} {path} is a folder, not a file", f"fix the path or {folder}")]
        if os.path.exists(path):
            return [("not_a_file", f"{kind} {path} is not a regular file (a pipe or a device?)", "pass a file")]
        return [("missing_file", f"{kind} file not found: {path}", f"fix the path or {folder}")]
    return _check_image(path, check) if kind == "image" else _check_video(path, check)


def _fetch_problem(kind: str, source: str, err: Exception) -> Problem:
    """A remote file that could not be fetched: not found, too slow, too large, or no fsspec backend for it."""
    if isinstance(err, FileNotFoundError):  # "remote file not found: <url> (HTTP 404)"
        return "missing_file", f"{kind}: {err}", "fix the URL"
    fix = "install what the message names" if isinstance(err, ImportError) else "check the URL and the server"
    return "fetch_failed", f"cannot fetch {kind} {redact(source)}: {err}", f"{fix}, or copy the file locally"


def _check_video(path: str, check: MediaCheck) -> list[Problem]:
    """Decode the `num_frames` frames training will decode (a video file, a frame folder or a URL)."""
    try:
        with local_video_path(path, check.limits) as local:  # a download for a URL, within the fetch limits
            return _decode_video(local, path, check.num_frames)
    except (OSError, ImportError, ValueError) as err:  # raised before decoding: the fetch (or a vanished file)
        return [_fetch_problem("video", path, err)]


def default_num_frames() -> int:
    """Frames per video when no model says: the processor's own default. Read when a video is checked, not at import:
    the payload's media readers bring torch, which `validate --no-media-check`, `stats` and `convert` never need."""
    from framelm.processing import FrameLMProcessor

    return inspect.signature(FrameLMProcessor.__init__).parameters["num_frames"].default


def _decode_video(local: str, shown: str, num_frames: int | None) -> list[Problem]:
    from framelm.processing.media_framelm import load_video

    num_frames = num_frames or default_num_frames()
    try:
        clip = load_video(local, num_frames=num_frames)
    except (ValueError, OSError) as err:
        fix = REPLACE_FRAMES if os.path.isdir(local) else "re-encode or replace the video (truncated or corrupt?)"
        return [("undecodable", f"cannot decode the {num_frames} frames training reads from {shown}: {err}", fix)]
    if clip.fps is None and os.path.isdir(local):
        fps_file = os.path.normpath(local) + ".json"
        return [("missing_fps", f"frame folder {local} has no frame rate file {fps_file}",
                 'write {"fps": "2.0"} (the rate the frames were taken at) to that file')]  # fmt: skip
    return []


def _frame_headers(folder: str) -> list[Problem]:
    """Every frame of a folder is a readable image file of one size (headers only: cheap, and training may pick any
    frame when `num_frames` changes)."""
    from PIL import Image

    from framelm.processing.media_framelm import _frame_names

    try:
        names = _frame_names(folder)
    except ValueError as err:
        return [("undecodable", str(err), "extract the frames (framelm data extract-frames)")]
    found, sizes = [], {}
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):  # a folder named "x.jpg", or a pipe, which would block the decoder
            found.append(("undecodable", f"frame {path} is not a file", f"remove or rename it; {REPLACE_FRAMES}"))
            continue
        try:
            with Image.open(path) as image:
                sizes[name] = image.size
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            found.append(("undecodable", f"frame {path} cannot be opened: {err}", REPLACE_FRAMES))
    if len(set(sizes.values())) > 1:
        (common, count), *_ = Counter(sizes.values()).most_common(1)
        odd = [f"{n} is {w}x{h}" for n, (w, h) in sizes.items() if (w, h) != common]
        shown = ", ".join(odd[:3]) + (f" and {len(odd) - 3} more" if len(odd) > 3 else "")
        found.append(("mixed_frame_sizes", f"frames of {folder} differ in size: {count} are {common[0]}x{common[1]}, "
                      f"{shown}", "resize them to one size, or re-extract the frames"))  # fmt: skip
    return found


def _check_image(path: str, check: MediaCheck) -> list[Problem]:
    """Decode it as training does (`load_image`'s decode, then its conversion to RGB), opened once: the mode and size
    looked at are the stored ones, before the conversion."""
    from PIL import Image

    from framelm.processing.media_framelm import decode_image, to_rgb

    try:
        source, shown = image_source(path, check.limits)  # the bytes of a URL, fetched within the limits
    except (OSError, ImportError, ValueError) as err:
        return [_fetch_problem("image", path, err)]
    try:
        image = decode_image(source, shown)
    except ValueError as err:
        if isinstance(err.__cause__, Image.DecompressionBombError):  # more pixels than PIL (and training) decode
            return [("undecodable", str(err), "downscale it; training refuses it as it is")]
        return [("undecodable", str(err), "replace the file with a valid image")]
    found = []
    mode, size = image.mode, image.size
    if min(size) <= 1:
        found.append(("tiny_image", f"image {shown} is {size[0]}x{size[1]} pixels",
                      "replace it: a one-pixel image holds no content (often a failed download)"))  # fmt: skip
    if mode not in PLAIN_MODES:
        fix = ("framelm converts it to RGB when loading (alpha composited on white, gray copied to 3 channels); "
               "convert it yourself if that is not what you want, or pass --ignore unusual_mode")  # fmt: skip
        found.append(("unusual_mode", f"image {shown} is {MODE_NAMES.get(mode, mode)} (mode {mode})", fix))
    try:
        to_rgb(image)
    except (ValueError, OSError) as err:
        found.append(("undecodable", f"cannot convert image {shown} to RGB: {err}", "replace the file"))
    return found
