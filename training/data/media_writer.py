"""Write videos and frame folders: for `framelm data extract-frames`, the demo's synthetic data and the benches."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from framelm.training.atomic_write import write_text_atomically


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
        write_text_atomically(folder.with_name(folder.name + ".json"), json.dumps({"fps": fps}))
    return folder
