"""Media broken in the ways that pass a quick look and fail a full read: a PNG header claiming ten billion pixels, a
video whose middle packets are zeroed (its index and first frames are fine)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims `width` x `height` pixels and holds none (a decompression bomb's first bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def zero_middle_packets(video: Path, out: Path) -> Path:
    """A copy of `video` whose packets from the middle to three quarters are zeroed: the container and its index
    stay valid and the first frames decode, frames picked from the middle do not."""
    import av

    with av.open(str(video)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    start, end = packets[len(packets) // 2][0], packets[3 * len(packets) // 4][0]
    data = Path(video).read_bytes()
    out.write_bytes(data[:start] + bytes(end - start) + data[end:])
    return out
