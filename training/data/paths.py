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
    if path.startswith("{"):
        for marker in FOLDER_MARKERS:
            if path.startswith(marker):
                path = path[len(marker) :]
                break
    if is_url(path):
        return path
    if is_url(root):
        return _join_remote(path, root, allow_outside_root)
    if path.startswith("/"):
        resolved = posixpath.normpath(path)
    elif _NEEDS_NORMALIZING.search(path):
        resolved = posixpath.normpath(posixpath.join(_normalized(root), path))
    else:  # the common case, a plain relative path: no normalizing needed (a million records cost little)
        resolved = f"{_normalized(root).rstrip('/')}/{path}" if root else path
    if not allow_outside_root:
        real = _real(resolved)
        if not _inside(real, _real_folder(root)[0]):
            raise OutsideRootError(path, real, root)
    return resolved


def _join_remote(path: str, root: str, allow_outside_root: bool) -> str:
    relative = posixpath.normpath(path)
    escapes = path.startswith("/") or relative == ".." or relative.startswith("../")
    if escapes and not allow_outside_root:
        raise OutsideRootError(path, relative, root)
    return path if path.startswith("/") else f"{root.rstrip('/')}/{relative}"


def _real(path: str) -> str:
    """The real location of `path`: its folder's realpath plus its own name, followed when that name is a symlink."""
    folder, _, name = path.rpartition("/")
    real_folder, links = _real_folder(folder or ("/" if path.startswith("/") else ""))
    if not name:
        return real_folder
    real = f"{real_folder.rstrip('/')}/{name}"
    return os.path.realpath(real) if name in links else real


def _real_folder(folder: str) -> tuple[str, frozenset[str]]:
    """(realpath, names of the symlinks in it). Absolute folders are cached: records share a few folders, so a
    million paths cost a few directory reads instead of a million `lstat`s. A relative folder depends on the working
    directory and is looked up each time."""
    return _absolute_folder(folder) if folder.startswith("/") else _folder_info(folder or ".")


@functools.lru_cache(maxsize=4096)
def _absolute_folder(folder: str) -> tuple[str, frozenset[str]]:
    return _folder_info(folder)


def _folder_info(folder: str) -> tuple[str, frozenset[str]]:
    try:
        with os.scandir(folder) as entries:
            links = frozenset(entry.name for entry in entries if entry.is_symlink())
    except OSError:  # missing, not a folder, or unreadable: nothing in it can point elsewhere
        links = frozenset()
    return os.path.realpath(folder), links


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


@functools.lru_cache(maxsize=64)
def _normalized(root: str) -> str:
    return posixpath.normpath(root) if root else root


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_DATA_FILE_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".csv", ".parquet", ".arrow", ".tar", ".txt", ".tsv")


def is_hub_id(name: str) -> bool:
    """`me/my-data` or `gpt2`: a Hub repository id, not a local path (absolute, `./x`, `a/b/c`, `x.jsonl`)."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and not name.lower().endswith(_DATA_FILE_SUFFIXES)


def require_local_or_hub(name: str, option: str) -> str:
    """A model or data name as given to `option`: an existing local path, or a Hub id. A path-like name that does
    not exist (`./my-model`, `runs/a/b`, `~/x`, `C:\\x`) is refused here, never looked up on the Hub."""
    from framelm.training.errors import InputError

    expanded = os.path.expanduser(name)
    if os.path.exists(expanded):
        return expanded
    path_like = name.startswith((".", "/", "~", "\\")) or "\\" in name or ":" in name or not is_hub_id(name)
    if path_like:
        raise InputError(f"{option} {name}: no such folder", "check the path; a Hub id is written ORG/NAME")
    return name
