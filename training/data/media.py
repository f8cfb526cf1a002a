"""One media item of a sample: a path (file, frame folder or URL) or media that came inside the data (its bytes, or a
video's frame images). A leaf: `sample.py` builds samples of them and `embedded.py` writes the embedded ones out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Media:
    kind: str  # "image" | "video" | "frames"
    path: str  # a file, frame folder or URL; for embedded media, the name it had
    data: bytes | None = None  # the whole file (an image or a video) when it came inside the data
    frames: tuple[Media, ...] = ()  # kind "frames" given as a list of frame images (each a path or bytes)
    fps: float | None = None  # frame rate of `frames`, when known

    @property
    def embedded(self) -> bool:
        """Whether the content travels with the record (no file at `path` to open)."""
        return self.data is not None or bool(self.frames)

    def to_row(self) -> dict:
        return {
            "kind": self.kind,
            "path": self.path,
            "bytes": self.data,
            "frames": [{"path": f.path, "bytes": f.data} for f in self.frames],
            "fps": self.fps,
        }

    @classmethod
    def from_row(cls, row: dict) -> Media:
        frames = tuple(cls("image", f["path"] or "", f["bytes"]) for f in row.get("frames") or ())
        return cls(row["kind"], row["path"], row.get("bytes"), frames, row.get("fps"))
