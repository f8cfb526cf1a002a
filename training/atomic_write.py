"""Writes that replace data on disk: the new data goes beside the target, then a rename swaps it in.

A process killed at any point leaves either the old target or the new one, never a half-written result that looks
complete; what it leaves beside the target (`.NAME.partial`, `.NAME.replaced`) is removed by the next run. A rename is
atomic only within one file system, hence "beside": same folder, never a system temp folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_text_atomically(path: str | Path, text: str, errors: str = "strict") -> None:
    """Write `text` to `path` through a temporary file in the same folder, flushed to disk, then renamed; `errors`
    as for `open` (how characters UTF-8 cannot encode, such as lone surrogates, are written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", errors=errors) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextmanager
def folder_written_beside(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `target` to write into; when the block ends without an error, it becomes `target`.

    An error inside the block removes the new folder and leaves `target` untouched. The swap renames the old
    `target` away, the new folder in, and only then deletes the old one.
    """
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    _remove(partial)  # left by a run killed while writing
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        _remove(partial)
        raise
    replaced = target.with_name(f".{target.name}.replaced")
    _remove(replaced)  # left by a run killed between the two renames below
    if target.exists() or target.is_symlink():
        os.rename(target, replaced)
    os.rename(partial, target)
    _remove(replaced)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
