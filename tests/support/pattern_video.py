"""Frames that say which frame they are, so a test can check *which* frame a decoder returned.

`pattern_frames` draws an 8-bit binary code of the frame index in a stripe of black and white blocks along the top,
which survives lossy compression, over a smooth moving texture that gives the encoder real work.
`read_pattern_index` reads the code back.
"""

from __future__ import annotations

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
