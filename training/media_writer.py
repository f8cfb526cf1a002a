"""Write synthetic videos and frame folders for the tests, the demo and the benches.

`pattern_frames` draws frames that say which frame they are: an 8-bit binary code of the frame index in a stripe of
black and white blocks along the top, which survives lossy compression, over a smooth moving texture that gives the
encoder real work. `read_pattern_index` reads the code back, so a test can check *which* frame a decoder returned.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

CODE_BITS = 8  # frame index modulo 256 is written in the top stripe
MIN_WIDTH = 32  # 4-pixel code blocks at least: smaller ones blur away in 4:2:0 H.264


def _code_geometry(height: int, width: int) -> tuple[int, int]:
    """(stripe height, block width) of the index code for a frame of this size."""
    if width < MIN_WIDTH or height < 16:
        raise ValueError(f"pattern frames need at least {MIN_WIDTH}x16 pixels to hold the index; got {width}x{height}")
    return max(8, height // 8), width // CODE_BITS


def pattern_frame(index: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frame `index` of the pattern video: uint8 (height, width, 3), the index code on top of a moving texture."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.02, 0.06, size=(3, 2))  # cycles per pixel of each channel's sinusoid along (y, x)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), dtype=np.uint8)
    for channel in range(3):
        wave = np.sin(2 * np.pi * (freq[channel, 0] * yy + freq[channel, 1] * (xx + 2.0 * index)) + phase[channel])
        frame[..., channel] = (128 + 90 * wave).astype(np.uint8)  # pans 2 pixels per frame
    stripe, block = _code_geometry(height, width)
    for bit in range(CODE_BITS):
        frame[:stripe, bit * block : (bit + 1) * block] = 255 if (index >> bit) & 1 else 0
    return frame


def pattern_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (num_frames, height, width, 3) frames that stay identifiable after compression (`read_pattern_index`)."""
    return np.stack([pattern_frame(i, height, width, seed) for i in range(num_frames)])


def read_pattern_index(frame: np.ndarray) -> int:
    """The frame index (modulo 256) coded in a decoded `pattern_frame` (H, W, 3): each block's mean brightness."""
    frame = np.asarray(frame)
    stripe, block = _code_geometry(frame.shape[0], frame.shape[1])
    index = 0
    for bit in range(CODE_BITS):
        centre = frame[2 : stripe - 2, bit * block + 1 : (bit + 1) * block - 1]  # away from blurred block edges
        index |= int(centre.mean() > 128) << bit
    return index


def write_mp4(
    path: str | Path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 8,
    codec: str = "libx264",
    gop: int = 12,
    crf: int = 23,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 RGB frames (F, H, W, 3), or an iterable of (H, W, 3) frames, with PyAV in 4:2:0.

    `gop` is the exact keyframe interval: scene-cut keyframes are turned off so that benches control the GOP size.
    `codec` is "libx264" (an .mp4 or .mkv) or "libvpx-vp9" (a .webm or .mkv); `options` go to the encoder as is,
    `container_options` to the muxer (e.g. {"movflags": "faststart"} puts the MP4 index first).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "libx264":
        defaults = {"crf": str(crf), "sc_threshold": "0"}
    elif codec == "libvpx-vp9":
        # constant quality (b=0 with crf); realtime speed settings, as generating a bench video must not take minutes
        defaults = {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        defaults |= {"kf_min_dist": str(gop)}  # keyframes exactly every `gop` frames, as for H.264
    else:
        raise ValueError(f"codec={codec!r} is not supported; choose 'libx264' or 'libvpx-vp9'")
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.gop_size = gop
                stream.options = defaults | (options or {})
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        container.mux(stream.encode(None))  # flush the encoder's delayed frames
    return path


def write_frame_folder(
    folder: str | Path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float | str | None = "2.0",
    ext: str = "jpg",
) -> Path:
    """Write frames as `folder/00001.jpg, 00002.jpg, ...` and the frame rate to the sibling `<folder>.json`.

    This is the layout Pai-Megatron-Patch extracts videos to. `fps` is written as given: a string such as "2.0"
    (Pai-Megatron-Patch's form) stays a JSON string, a number stays a number; None writes no json at all.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    quality = {"quality": 95} if ext.lower() in ("jpg", "jpeg") else {}
    for number, frame in enumerate(frames, start=1):
        Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(folder / f"{number:05d}.{ext}", **quality)
    if fps is not None:
        folder.with_name(folder.name + ".json").write_text(json.dumps({"fps": fps}))
    return folder
