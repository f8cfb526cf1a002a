"""The one rule from a media path as written in a record (or a prompt file) to the path that is opened.

- A relative path resolves against its root: `--image-folder` / `--video-folder` for training data, `--media-base-path`
  for `framelm generate`, or the data file's own folder when no root is given.
- NeVA writes `{video_folder}/clip.mp4` (and `{image_folder}/...`): the marker means "under the root" and is dropped.
- A path whose real location (symlinks followed) is outside the root is refused: absolute paths elsewhere, `..`
  that climbs out, a symlink pointing out. `allow_outside_root` accepts them. This keeps a data file from reading
  `/etc/passwd` or a colleague's home folder by accident.
- URLs (`scheme://...`) pass through unchanged; a remote root (`s3://bucket/data`) is joined as text.

Training (the readers in `formats/`), `data validate`, `generate`, the demo and the pipelines all resolve here.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re

FOLDER_MARKERS = ("{image_folder}/", "{video_folder}/")
# "." or ".." components, empty components or a trailing "/": a relative path that needs normalizing
_NEEDS_NORMALIZING = re.compile(r"(?:^|/)\.\.?(?:/|$)|//|/$")


class OutsideRootError(ValueError):
    """A media path whose real location is outside its root folder (and `allow_outside_root` is off)."""

    def __init__(self, path: str, real: str, root: str):
        super().__init__(f"path {path!r} leads to {real!r}, outside its root folder {root or os.getcwd()!r}")
        self.path, self.real, self.root = path, real, root


def is_url(path: str) -> bool:
    return "://" in path


def resolve_media_path(path: str, root: str, allow_outside_root: bool = False) -> str:
    """`path` joined to `root` and normalized (symlinks are kept as written); raises `OutsideRootError` when its real
    location is outside `root`. `root=""` is the current folder."""
    for marker in FOLDER_MARKERS:
        if path.startswith(marker):
            path = path[len(marker) :]
            break
    if is_url(path):
        return path
    if is_url(root):
        return _join_remote(path, root, allow_outside_root)
    if posixpath.isabs(path):
        resolved = posixpath.normpath(path)
    elif _NEEDS_NORMALIZING.search(path):
        resolved = posixpath.normpath(posixpath.join(_normalized(root), path))
    else:  # the common case, a plain relative path: no normalizing needed (a million records cost little)
        resolved = f"{_normalized(root).rstrip('/')}/{path}" if root else path
    if not allow_outside_root:
        real = _real(resolved)
        if not _inside(real, _real_folder(root)):
            raise OutsideRootError(path, real, root)
    return resolved


def _join_remote(path: str, root: str, allow_outside_root: bool) -> str:
    relative = posixpath.normpath(path)
    escapes = posixpath.isabs(path) or relative == ".." or relative.startswith("../")
    if escapes and not allow_outside_root:
        raise OutsideRootError(path, relative, root)
    return path if posixpath.isabs(path) else f"{root.rstrip('/')}/{relative}"


def _real(path: str) -> str:
    """The real location of `path`: its folder's realpath (cached: records share folders) plus its own name,
    followed when it is itself a symlink. One `lstat` per path."""
    folder, name = posixpath.split(path)
    real = posixpath.join(_real_folder(folder), name) if name else _real_folder(folder)
    return os.path.realpath(real) if name and os.path.islink(real) else real


def _real_folder(folder: str) -> str:
    # only absolute folders are cached: a relative one depends on the working directory
    return _real_absolute_folder(folder) if posixpath.isabs(folder) else os.path.realpath(folder or ".")


@functools.lru_cache(maxsize=4096)
def _real_absolute_folder(folder: str) -> str:
    return os.path.realpath(folder)


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


@functools.lru_cache(maxsize=64)
def _normalized(root: str) -> str:
    return posixpath.normpath(root) if root else root
