"""Media decoding: any image -> RGB PIL image, and fixed-frame video sampling from a file or a folder of frames.

Hub payload: imports the standard library, numpy, torch and its siblings only; PIL, av and decord are imported inside
the functions that use them, so the model loads without them until media must be decoded. Where media come from
(paths, URLs, data URLs, base64) and the limits on remote files are `sources_framelm.py`'s job.

Videos follow NeMo Video-NeVA: every video gives exactly `num_frames` frames, the centres of `num_frames` equal
segments; a short video repeats frames instead of padding. Three readers: PyAV, decord and a folder of frame images
(as Pai-Megatron-Patch extracts them, with the frame rate in a sibling `<folder>.json`). PyAV and decord return
pixel-identical frames (FFmpeg's RGB24 conversion) except on open-GOP streams (x265's default, some cameras), where
decord 0.6 returns neighbouring frames; PyAV counts frames by pts and is right there too, hence the "auto" default.
The PyAV reader decodes only the GOPs that hold a wanted frame, each once.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .sources_framelm import FetchLimits, image_source, local_video_path
from .video_pyav_framelm import read_pyav

logger = logging.getLogger(__name__)

VIDEO_BACKENDS = ("auto", "pyav", "decord", "frames")
SPLICE_CHOICES = ("first", "middle", "last")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# "auto" tries these in order on a file. PyAV first, measured by bench/frame_sampling.py (2 cores, 30 cases: 10/60 s,
# 480p/720p, H.264 GOP 30/250, VP9, N = 8/16/32): framelm's decord reader took 1.92x the time of its PyAV reader at
# the median (1.93x on H.264, where PyAV skips the non-reference frames it does not return; 0.96-1.10x on VP9, where
# both decode the same frames). PyAV is also right on open-GOP streams, where decord 0.6 returns neighbouring frames.
AUTO_FILE_BACKENDS = ("pyav", "decord")
_INSTALL = {"pyav": "pip install av", "decord": "pip install decord"}
# Pixels per video frame accepted, read from the stream header before anything is decoded: a 414 KB mp4 of
# 12000x12000 frames decodes to 432 MB per RGB frame. 8K UHD (7680x4320) fits; the processor's `max_frame_pixels`.
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320
# Frame rates a frame folder's `<folder>.json` may give: one frame per 1000 s to 1000 frames per second.
FOLDER_FPS_RANGE = (1e-3, 1e3)
# Formats data images are opened with: rasters only. Never EPS/PS (Pillow runs Ghostscript on them), nor the
# other formats that hand the data to external programs or parse vector/script content.
RASTER_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "TGA", "ICO", "DIB", "PCX", "SGI", "QOI")


# --- images -----------------------------------------------------------------------------------------------------


def load_image(source, limits: FetchLimits | None = None) -> PIL.Image.Image:  # noqa: F821 - PIL is lazy (payload)
    """Any image a user or a harness sends -> an RGB PIL image.

    Accepted: a path or `file://` URL; an `http(s)://` URL or any fsspec URL (`s3://`, `gs://` ...), fetched within
    `limits`; a `data:` URL; a raw base64 string; bytes; a PIL image; a uint8 array/tensor (H, W), (H, W, 1|3|4) or a
    16-bit array. transformers' `image_utils.load_image` reads the string forms too, but it converts to RGB before
    returning (dropping transparency, clipping 16 bit) and downloads with a per-read timeout and no size limit, so
    the forms are read here, with the same mode fixes for all of them (training, serving, validation):
    transparency is composited on white (a transparent logo on black is unreadable), 16-bit gray is scaled to 8 bit
    (PIL's own conversion clips it to white), CMYK, palette, 1-bit and gray become RGB. EXIF orientation is applied,
    as transformers does.
    """
    from PIL import Image

    if isinstance(source, (str, os.PathLike)):
        return to_rgb(decode_image(*image_source(os.fspath(source), limits or FetchLimits())))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return to_rgb(decode_image(io.BytesIO(source), f"of {len(source)} bytes"))
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return to_rgb(_array_to_image(source))
    raise TypeError(
        f"cannot read {type(source).__name__} as an image: pass a path, URL, data URL, base64 string, bytes, "
        "PIL image, array or tensor"
    )


def decode_image(source, where: str):
    """A path or file object -> its image as stored (mode unchanged, EXIF orientation applied), every pixel decoded
    now: a truncated file fails here, not later inside a collator. `where` names the image in the errors
    (ValueError; a decompression bomb's has the `DecompressionBombError` as its cause)."""
    from PIL import Image, ImageOps

    try:
        Image.init()  # every plugin registered, so the list below names only formats this Pillow has
        image = Image.open(source, formats=[name for name in RASTER_FORMATS if name in Image.OPEN])
        image.load()
    except Image.DecompressionBombError as err:  # the header claims more pixels than PIL will allocate
        raise ValueError(
            f"image {where} is too large to decode safely: {err}; downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS "
            "if you trust it"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError and "image file is truncated"
        raise ValueError(
            f"cannot decode image {where}: {err}; replace the file (truncated, or not a raster image: "
            f"{', '.join(RASTER_FORMATS)} are read)"
        ) from err
    ImageOps.exif_transpose(image, in_place=True)
    return image


def _array_to_image(array: np.ndarray):
    from PIL import Image

    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"image arrays must be (H, W) or (H, W, 1|3|4) channels-last; got shape {array.shape}")
    if array.dtype == np.uint16:
        array = _scale_16bit(array)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 (or uint16, bool); got {array.dtype}: convert it first")
    return Image.fromarray(np.ascontiguousarray(array))


def _scale_16bit(array: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (65535 -> 255, 257 -> 1); values outside 16 bit are clipped first."""
    wide = np.clip(array, 0, 65535).astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def composite_on_white(rgba: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 4) -> uint8 (..., 3): each colour "over" a white background, c * a/255 + 255 * (1 - a/255),
    rounded to nearest. In integers the exact value is never a tie (that would need 255 to divide 2 * numerator), so
    this equals transformers' float64 `convert_to_rgb` blend for every colour and alpha."""
    wide = rgba.to(torch.int32)
    alpha = wide[..., 3:]
    return ((wide[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).to(torch.uint8)


def to_rgb(image):
    """A decoded image of any mode -> RGB, with the fixes `load_image` describes."""
    from PIL import Image

    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info
    if image.mode == "RGB" and not has_alpha:
        return image
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        return Image.fromarray(_scale_16bit(np.asarray(image))).convert("RGB")
    if has_alpha:
        rgba = torch.from_numpy(np.array(image.convert("RGBA")))  # (H, W, 4)
        return Image.fromarray(composite_on_white(rgba).numpy())
    return image.convert("RGB")  # L, 1, opaque P, CMYK (PIL: (255 - C) * (255 - K) / 255), YCbCr, F (clipped)


# --- frame sampling ---------------------------------------------------------------------------------------------


def sample_frame_indices(total: int, num_frames: int) -> list[int]:
    """Centre of each of `num_frames` equal segments of `total` frames; short videos repeat frames, never pad.

    >>> sample_frame_indices(10, 4), sample_frame_indices(2, 4)
    ([1, 3, 6, 8], [0, 0, 1, 1])
    """
    _check_count("total", total)
    _check_count("num_frames", num_frames)
    return [min(total - 1, int((i + 0.5) * total / num_frames)) for i in range(num_frames)]


def select_frame_indices(total: int, num_frames: int, splice_single_frame: str | None = None) -> list[int]:
    """`sample_frame_indices`, or one frame ("first" | "middle" | "last") as NeVA's `splice_single_frame` keeps."""
    if splice_single_frame is None:
        return sample_frame_indices(total, num_frames)
    _check_count("total", total)
    if splice_single_frame not in SPLICE_CHOICES:
        raise ValueError(f"splice_single_frame={splice_single_frame!r}; choose one of {SPLICE_CHOICES} or None")
    return [{"first": 0, "middle": total // 2, "last": total - 1}[splice_single_frame]]


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


# --- videos -----------------------------------------------------------------------------------------------------


@dataclass
class VideoClip:
    """The frames sampled from one video and where they sit in it."""

    frames: torch.Tensor  # (F, H, W, 3) uint8, channels-last as decoded
    timestamps: list[float] | None  # seconds from the first frame; None for a frame folder without a frame rate
    duration: float | None  # seconds from the first frame's start to the last one's end; None without a frame rate
    fps: float | None
    total_frames: int
    backend: str


def load_video(
    source: str | os.PathLike,
    num_frames: int = 8,
    splice_single_frame: str | None = None,
    backend: str = "auto",
    limits: FetchLimits | None = None,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> VideoClip:
    """Decode the `num_frames` frames `select_frame_indices` picks from a video file or a folder of frame images.

    Args:
        source: a file or frame folder, a `file://` URL, or an `http(s)://` / fsspec URL (downloaded to a temporary
            file within `limits` first, and deleted after decoding).
        backend: "pyav", "decord", "frames" (a folder) or "auto" (a folder -> frames; a file -> PyAV, else decord).
        max_frame_pixels: frames larger than this (width * height, from the stream header) are refused before any
            is decoded.
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; choose one of {VIDEO_BACKENDS}")
    _check_count("num_frames", num_frames)
    select_frame_indices(1, num_frames, splice_single_frame)  # reject a bad choice before opening anything

    def choose(total: int) -> list[int]:
        return select_frame_indices(total, num_frames, splice_single_frame)

    source = source if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    with local_video_path(source, limits) as path:
        if os.path.isdir(path):
            if backend not in ("auto", "frames"):
                raise ValueError(f"{path} is a folder of frames: use backend='frames' or 'auto', not {backend!r}")
            return _read_frame_folder(path, choose)
        if backend == "frames":
            raise ValueError(f"backend='frames' reads a folder of frame images, but {path} is a file")
        name = _available_backend(path) if backend == "auto" else backend
        return _READERS[name](path, choose, max_frame_pixels)


def probe_video(source: str | os.PathLike, limits: FetchLimits | None = None) -> dict:
    """{"total_frames", "fps", "duration", "width", "height"} of a video file or frame folder, decoding one frame.

    Reads the whole packet index of a file, so a truncated file raises ValueError here rather than in training.
    """
    with local_video_path(os.fspath(source), limits) as path:
        clip = load_video(path, num_frames=1, splice_single_frame="first")
    height, width = clip.frames.shape[1:3]
    return {"total_frames": clip.total_frames, "fps": clip.fps, "duration": clip.duration, "width": int(width),
            "height": int(height)}  # fmt: skip


def _available_backend(path: str) -> str:
    import importlib.util

    for name in AUTO_FILE_BACKENDS:
        if importlib.util.find_spec("av" if name == "pyav" else name) is not None:
            return name
    raise ImportError(f"cannot decode {path}: no video library; `{_INSTALL['pyav']}` (or `{_INSTALL['decord']}`)")


def _clip(
    frames: dict[int, np.ndarray], wanted: list[int], timestamps, duration, fps, total: int, backend: str
) -> VideoClip:
    stacked = torch.from_numpy(np.stack([frames[i] for i in wanted]))  # (F, H, W, 3)
    return VideoClip(stacked, timestamps, duration, fps, total, backend)


# --- frame folders ----------------------------------------------------------------------------------------------


def _natural_key(name: str) -> list:
    """Natural order: "frame_2.jpg" before "frame_10.jpg"; zero-padded names keep plain file-name order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _frame_names(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if n.lower().endswith(FRAME_EXTENSIONS) and not n.startswith(".")]
    if not names:
        raise ValueError(f"frame folder {folder} holds no images ({', '.join(FRAME_EXTENSIONS)})")
    return sorted(names, key=_natural_key)


def _folder_fps(folder: str) -> float | None:
    """The frame rate from the sibling `<folder>.json` ({"fps": 2.0} or {"fps": "2.0"}); None without one."""
    json_path = os.path.normpath(folder) + ".json"
    if not os.path.isfile(json_path):
        return None
    try:
        with open(json_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the frame rate file {json_path}: {err}") from err
    if not isinstance(meta, dict) or meta.get("fps") is None:
        return None
    try:
        fps = float(meta["fps"])
    except (TypeError, ValueError):
        fps = float("nan")
    low, high = FOLDER_FPS_RANGE
    if not low <= fps <= high:
        raise ValueError(
            f"{json_path}: 'fps' must be a number from {low:g} to {high:g} like 2.0 or \"2.0\"; got {meta['fps']!r}"
        )
    return fps


def _read_frame_folder(folder: str, choose: Callable[[int], list[int]]) -> VideoClip:
    names = _frame_names(folder)
    fps = _folder_fps(folder)
    wanted = choose(len(names))
    frames = {i: np.asarray(load_image(os.path.join(folder, names[i]))) for i in sorted(set(wanted))}
    sizes = {frame.shape for frame in frames.values()}
    if len(sizes) > 1:
        raise ValueError(f"frames in {folder} differ in size {sorted(sizes)}; resize them to one size")
    timestamps, duration = ([i / fps for i in wanted], len(names) / fps) if fps else (None, None)
    return _clip(frames, wanted, timestamps, duration, fps, len(names), "frames")


# --- decord -----------------------------------------------------------------------------------------------------


def check_frame_pixels(path: str, width: int, height: int, max_frame_pixels: int) -> None:
    if width * height > max_frame_pixels:
        raise ValueError(
            f"video {path} has {width}x{height} frames ({width * height} pixels), above the limit of "
            f"{max_frame_pixels} pixels per frame; downscale it (ffmpeg -vf scale=...), or raise the processor's "
            "max_frame_pixels if you trust it"
        )


def _read_decord(path: str, choose: Callable[[int], list[int]], max_frame_pixels: int) -> VideoClip:
    """decord's `get_batch`: for environments without PyAV. On open-GOP streams (x265's default, `open-gop=1` in
    x264) decord 0.6 returns neighbouring frames instead of the wanted ones; use PyAV there."""
    try:
        import decord
    except ImportError as err:
        raise ImportError(f"backend='decord' needs decord: `{_INSTALL['decord']}`") from err
    try:
        _check_header_with_pyav(path, max_frame_pixels)
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
        total = len(reader)
        wanted = choose(total)
        unique = sorted(set(wanted))
        batch = reader.get_batch(unique).asnumpy()  # (U, H, W, 3)
        times = reader.get_frame_timestamp([0, *unique, total - 1])  # (U + 2, 2): start and end of each frame
        fps = float(reader.get_avg_fps()) or None
    except (decord.DECORDError, RuntimeError) as err:  # decord raises RuntimeError when it cannot open a file
        raise ValueError(f"cannot decode video {path} with decord: {err}; re-encode or replace the file") from err
    first = times[0, 0]
    seconds = dict(zip(unique, (float(t - first) for t in times[1:-1, 0]), strict=True))
    frames = dict(zip(unique, batch, strict=True))
    duration = float(times[-1, 1] - first)
    return _clip(frames, wanted, [seconds[i] for i in wanted], duration, fps, total, "decord")


def _check_header_with_pyav(path: str, max_frame_pixels: int) -> None:
    """decord has no way to read the frame size without decoding a frame: read it from the header with PyAV when
    it is installed (without PyAV, decord's frames are not bounded before decoding)."""
    try:
        import av
    except ImportError:
        return
    try:
        with av.open(path) as container:
            if container.streams.video:
                codec = container.streams.video[0].codec_context
                check_frame_pixels(path, codec.width, codec.height, max_frame_pixels)
    except av.FFmpegError:
        return  # decord reports unreadable files itself


def _read_pyav(path: str, choose: Callable[[int], list[int]], max_frame_pixels: int) -> VideoClip:
    frames, wanted, timestamps, duration, fps, total = read_pyav(
        path, choose, lambda width, height: check_frame_pixels(path, width, height, max_frame_pixels)
    )
    return _clip(frames, wanted, timestamps, duration, fps, total, "pyav")


_READERS = {"pyav": _read_pyav, "decord": _read_decord}
