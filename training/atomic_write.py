"""Writes that replace data on disk: the new data goes beside the target, then a rename swaps it in; and the one rule
for what framelm may replace.

A process killed at any point leaves either the old target or the new one, never a half-written result that looks
complete; what it leaves beside the target (`.NAME.partial-*`, `.NAME.replaced-*`) is removed by the next run. A rename
is atomic only within one file system, hence "beside": same folder, never a system temp folder.

Every name written beside a target is created exclusively (`tempfile.mkstemp` / `mkdtemp`: `O_CREAT | O_EXCL`, random
suffix), never opened by a predictable name: a symlink planted at `.NAME.tmp` would otherwise be followed and the file
it points to overwritten.

Ownership: a folder written by `folder_written_beside` carries `WRITTEN_RECORD`, the list of the files framelm wrote
into it. Replacing an existing folder is allowed only when every file in it is on that list (an earlier output of the
same command, unchanged in kind); anything else in it (`.git`, a LICENSE, a user's annotations) makes the write stop
before any work, unless the caller passes `overwrite=True` (the user's `--overwrite`).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from framelm.training.errors import InputError

WRITTEN_RECORD = ".framelm-written.json"  # inside each folder framelm wrote: {"written_by": ..., "files": [...]}
LISTED = 5  # foreign names quoted in a refusal before "... and N more"

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, which are then given the permissions `open` would give


class NotWrittenByFramelmError(InputError, ValueError):
    """A write would replace or delete something framelm did not write; the message names it and the way out."""


def write_text_atomically(path: str | Path, text: str, errors: str = "strict") -> None:
    """Write `text` to `path` through an exclusively created temporary file in the same folder, flushed to disk, then
    renamed; `errors` as for `open` (how characters UTF-8 cannot encode, such as lone surrogates, are written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", errors=errors) as out:
            os.fchmod(out.fileno(), 0o666 & ~_UMASK)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)  # replaces a symlink at `path` itself, never the file it points to
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def path_written_beside(path: str | Path) -> Iterator[Path]:
    """For writers that need a file name (PyAV, `save_pretrained`): yield a fresh, exclusively created empty file
    beside `path` to write to by name; when the block ends without an error it is renamed to `path`, otherwise
    removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.fchmod(handle, 0o666 & ~_UMASK)
    os.close(handle)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def foreign_entries(target: str | Path, written_by: str) -> list[str]:
    """What in `target` the command `written_by` did not write (paths relative to it, sorted): nothing when it does
    not exist or is an empty folder; every file when its `WRITTEN_RECORD` is missing or names another command (an
    exported model is not a convert output); a file or symlink in place of a folder is foreign."""
    target = Path(target)
    if not os.path.lexists(target):
        return []
    if target.is_symlink() or not target.is_dir():
        return [target.name]
    try:
        record = json.loads((target / WRITTEN_RECORD).read_text(encoding="utf-8"))
        listed = set(record["files"]) if record["written_by"] == written_by else set()
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    found = []
    for folder, dirs, files in os.walk(target):
        relative = Path(folder).relative_to(target)
        links = [name for name in dirs if os.path.islink(os.path.join(folder, name))]  # never descended into
        for name in files + links:
            entry = (relative / name).as_posix()
            if entry != WRITTEN_RECORD and (entry not in listed or os.path.islink(os.path.join(folder, name))):
                found.append(entry)
        if not dirs and not files and folder != str(target):
            found.append(relative.as_posix() + "/")  # an empty folder framelm never makes
    return sorted(found)


def refuse_foreign(target: str | Path, written_by: str, fix: str) -> None:
    """Raise NotWrittenByFramelmError when `target` holds anything `written_by` did not write; `fix` ends the
    message."""
    found = foreign_entries(target, written_by)
    if found:
        more = f" and {len(found) - LISTED} more" if len(found) > LISTED else ""
        raise NotWrittenByFramelmError(
            f"{target} holds what `{written_by}` did not write ({', '.join(found[:LISTED])}{more}), which framelm "
            f"never replaces or deletes: {fix}"
        )


@contextmanager
def folder_written_beside(
    target: str | Path, written_by: str, *, overwrite: bool = False, resume_key: str | None = None
) -> Iterator[Path]:
    """Yield an empty folder beside `target` to write into; when the block ends without an error, it becomes `target`.

    `written_by` names the command (e.g. "framelm export"), recorded in the folder. Without `overwrite`, an existing
    `target` holding anything that command did not write is refused before the block runs
    and again before the swap (NotWrittenByFramelmError). An error inside the block removes the new folder and leaves
    `target` untouched. The swap renames the old `target` away, the new folder in, and only then deletes the old one.

    With `resume_key` (a digest of the inputs and options), the folder is `.NAME.partial-KEY` and survives an error or
    a kill: the next run with the same key gets it back with what was finished in it (a resumable `convert`); a
    partial folder of another key is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fix = "choose another folder, or move those files away"
    if not overwrite:
        refuse_foreign(target, written_by, fix)
    partial = target.with_name(f".{target.name}.partial-{resume_key}") if resume_key else None
    _remove_leftovers(target, keep=partial)
    if partial is None:
        partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    elif not _own_folder(partial):
        partial.mkdir(mode=0o777 & ~_UMASK)  # exclusive: fails on anything planted under that name
    elif os.path.lexists(partial / WRITTEN_RECORD):
        os.unlink(partial / WRITTEN_RECORD)  # a run killed just before its swap: written again at the end
    os.chmod(partial, 0o777 & ~_UMASK)
    try:
        yield partial
        if not overwrite:
            refuse_foreign(target, written_by, fix)  # again: the folder may have changed while the block wrote
    except BaseException:
        if resume_key is None:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    files = sorted(p.relative_to(partial).as_posix() for p in partial.rglob("*") if p.is_file() or p.is_symlink())
    record = partial / WRITTEN_RECORD
    with open(record, "x", encoding="utf-8") as out:  # "x": in a folder only this process knows
        json.dump({"written_by": written_by, "files": files}, out, indent=1)
    holder = None
    if os.path.lexists(target):
        holder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.replaced-"))
        os.rename(target, holder / target.name)
    os.rename(partial, target)
    if holder is not None:
        shutil.rmtree(holder)


def _remove_leftovers(target: Path, keep: Path | None = None) -> None:
    """Folders a killed run left beside `target` (created above: real folders, never symlinks), but `keep`."""
    for pattern in (f".{target.name}.partial-*", f".{target.name}.replaced-*"):
        for path in target.parent.glob(pattern):
            if path != keep and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)


def _own_folder(path: Path) -> bool:
    """Whether `path` is a real folder (not a symlink) of this user: one a run of ours may have left to resume."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
