"""The one media-reference policy: what a path or URL written in a record (or a prompt file) may name, and the path
or URL that is opened. Every reader resolves here: training records (`formats/`), `framelm data validate` and
`convert` (through them), `framelm generate` prompt files, mixture entries and shard manifests. No other code decides
"local or remote".

A reference resolves to one of two things, or is refused with a reason (`RefusedReference`, which readers turn into
that record's problem):

- **a local path inside its root**, after resolving every symlink: `--image-folder` / `--video-folder` for training
  data, `--media-base-path` for `framelm generate`, or the data file's own folder when no root is given. A relative
  path joins the root; NeVA's `{video_folder}/clip.mp4` (and `{image_folder}/...`) marker means "under the root" and
  is dropped; a `file://` URL becomes its path and is checked the same way. Absolute paths elsewhere, `..` that
  climbs out and symlinks pointing out are refused (`OutsideRootError`), and so are devices, FIFOs and sockets. A
  frame folder is checked member by member: a frame that is a symlink leading out of the root, or not a regular
  file, refuses the whole folder. `allow_outside_root` (`--allow-outside-root`) accepts paths outside the root;
  nothing accepts devices or FIFOs.
- **a remote URL whose scheme is allowed**: http, https, s3, gs, hf (`REMOTE_SCHEMES`), well formed (a host, a port
  that exists, no spaces or control characters). A remote root (`s3://bucket/data`) is joined as text and `..` may
  not climb out of it.

Every other form is refused: other fsspec protocols (`local://`, `memory://`, `reference://`, `dir://`, `zip://`),
chained URLs (`simplecache::file://...`), `file://` URLs with a host, malformed URLs (`https://[::1`, a port over
65535), NUL characters.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import stat
import urllib.request
from urllib.parse import urlsplit

FOLDER_MARKERS = ("{image_folder}/", "{video_folder}/")
REMOTE_SCHEMES = ("http", "https", "s3", "gs", "hf")
# "." or ".." components, empty components or a trailing "/": a relative path that needs normalizing
_NEEDS_NORMALIZING = re.compile(r"(?:^|/)\.\.?(?:/|$)|//|/$")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PROTOCOL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)(://|::)")  # fsspec chains protocols with "::"
# an allowed scheme, a plain host name and port, a path without ":" (so no chained protocol) or control characters
_PLAIN_URL = re.compile(r"(?i:(https?|s3|gs|hf))://[A-Za-z0-9][A-Za-z0-9.-]*(?::(\d{1,5}))?(?:/[^\x00-\x20\x7f:]*)?")
_CHAINED = re.compile(r"::[A-Za-z][A-Za-z0-9+.-]*(?:://|::)")
_UNSAFE_URL_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")
REFERENCE_FIX = (
    "use a path under the root folder, or an http(s)://, s3://, gs:// or hf:// URL "
    "(copy other files under the root first)"
)


class RefusedReference(ValueError):
    """A media reference the policy refuses: why (`reason`), and what to do instead (`fix`)."""

    kind = "refused_reference"

    def __init__(self, reference: str, reason: str, fix: str = REFERENCE_FIX):
        super().__init__(f"reference {shown_reference(reference)!r} is refused: {reason}")
        self.reference, self.reason, self.fix = reference, reason, fix


class OutsideRootError(RefusedReference):
    """A media path whose real location is outside its root folder (and `allow_outside_root` is off)."""

    kind = "outside_root"

    def __init__(self, path: str, real: str, root: str):
        ValueError.__init__(self, f"path {path!r} leads to {real!r}, outside its root folder {root or os.getcwd()!r}")
        self.reference, self.reason = path, "outside its root folder"
        self.fix = "move the file under the root folder, fix the path, or pass --allow-outside-root"
        self.path, self.real, self.root = path, real, root


def shown_reference(reference: str) -> str:
    """A reference as messages may show it: a URL without user, password, query and fragment (signed URLs carry
    their secret there), cut to 200 characters. Never raises, whatever the text."""
    text = str(reference)
    match = _SCHEME.match(text)
    if match:
        rest = text[match.end() :]
        host, _, path = rest.partition("/")
        host = host.rpartition("@")[2]
        text = f"{match.group(1)}://{host}/{path}" if _ else f"{match.group(1)}://{host}"
        text = re.split(r"[?#]", text, maxsplit=1)[0]
    return text if len(text) <= 200 else text[:200] + "..."


def remote_scheme(reference: str) -> str | None:
    """The scheme of an allowed, well-formed remote URL (`https`, `s3` ...); None for anything else. Never raises."""
    if not looks_like_url(reference):  # a local path, the common case: no refusal built and thrown away
        return None
    try:
        return _check_remote(reference)
    except RefusedReference:
        return None


def is_remote(reference: str) -> bool:
    """Whether `reference` is a remote URL the policy allows (and so is fetched, not opened as a file)."""
    return remote_scheme(reference) is not None


def looks_like_url(reference: str) -> bool:
    """`scheme://...` (or anything holding `://`): a URL to the policy, allowed or not; else a local path."""
    return "://" in reference


def _check_remote(url: str) -> str:
    """`url`'s scheme when it is an allowed, well-formed remote URL; raises RefusedReference saying why not."""
    plain = _PLAIN_URL.fullmatch(url)  # the common case, decided without urlsplit (a million URLs cost little)
    if plain and (not plain.group(2) or int(plain.group(2)) <= 65535):
        return plain.group(1).lower()
    match = _PROTOCOL.match(url)
    if not match:
        raise RefusedReference(url, "not a path and not a URL of the form scheme://host/path")
    scheme = match.group(1).lower()
    if scheme not in REMOTE_SCHEMES:
        raise RefusedReference(url, f"the {scheme}:// scheme is not allowed (allowed: {', '.join(REMOTE_SCHEMES)})")
    if match.group(2) == "::" or _CHAINED.search(url):
        raise RefusedReference(url, "a chained fsspec URL (`a::b://...`) is not allowed")
    if _UNSAFE_URL_CHARACTERS.search(url):
        raise RefusedReference(url, "a URL may not hold spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as err:
        raise RefusedReference(url, f"malformed URL ({err})", "fix the URL") from None
    if not parts.netloc or not parts.hostname:
        raise RefusedReference(url, "the URL names no host (or bucket)", "fix the URL")
    return scheme


def resolve_media_path(path: str, root: str, allow_outside_root: bool = False) -> str:
    """The path or URL that is opened for the reference `path` under `root` (`root=""`: the current folder).

    Local paths are joined to `root` and normalized (symlinks are kept as written, `file://` URLs become paths);
    raises `OutsideRootError` when the real location is outside `root`, `RefusedReference` for every other form the
    policy refuses (see the module docstring)."""
    if not isinstance(path, str) or not path:
        raise RefusedReference(str(path), "an empty reference", "give a path or URL")
    if "\x00" in path or "\x00" in root:
        raise RefusedReference(path.replace("\x00", "\\0"), "a NUL character", "fix the path")
    if path.startswith("{"):
        for marker in FOLDER_MARKERS:
            if path.startswith(marker):
                path = path[len(marker) :]
                break
    if looks_like_url(path):
        if path[:7].lower() != "file://":
            _check_remote(path)
            return path
        path = _file_url_path(path)
    if looks_like_url(root):
        _check_remote(root)
        return _join_remote(path, root, allow_outside_root)
    if path.startswith("/"):
        resolved = posixpath.normpath(path)
    elif _NEEDS_NORMALIZING.search(path):
        resolved = posixpath.normpath(posixpath.join(_normalized(root), path))
    else:  # the common case, a plain relative path: no normalizing needed (a million records cost little)
        resolved = f"{_normalized(root).rstrip('/')}/{path}" if root else path
    real, what = _real(resolved)
    real_root = _real_folder(root)[0]
    if not allow_outside_root and not _inside(real, real_root):
        raise OutsideRootError(path, real, root)
    if what == "other":
        raise RefusedReference(path, f"{real} is not a regular file (a device, FIFO or socket)", "pass a file")
    if what == "dir" or (not what and not posixpath.splitext(resolved)[1] and os.path.isdir(resolved)):
        _check_members(path, resolved, real_root, root, allow_outside_root)
    return resolved


def _file_url_path(url: str) -> str:
    """A `file://` URL's local path; refused when it names a host (`file://server/x`: not this machine)."""
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise RefusedReference(url, f"malformed URL ({err})", "fix the URL") from None
    if parts.netloc not in ("", "localhost"):
        raise RefusedReference(url, f"a file:// URL naming the host {parts.netloc!r}", "write file:///absolute/path")
    path = urllib.request.url2pathname(parts.path)
    if not path.startswith("/") or "\x00" in path:
        raise RefusedReference(url, "a file:// URL must hold an absolute path", "write file:///absolute/path")
    return path


def _join_remote(path: str, root: str, allow_outside_root: bool) -> str:
    relative = posixpath.normpath(path)
    escapes = path.startswith("/") or relative == ".." or relative.startswith("../")
    if escapes and not allow_outside_root:
        raise OutsideRootError(path, relative, root)
    if path.startswith("/"):
        raise RefusedReference(path, f"a local path under the remote root {shown_reference(root)}",
                               "give a path relative to the root, or a URL")  # fmt: skip
    joined = f"{root.rstrip('/')}/{relative}"
    _check_remote(joined)
    return joined


def _check_members(path: str, folder: str, real_root: str, root: str, allow_outside_root: bool) -> None:
    """Every member of a frame folder: a symlink must lead inside the root to a regular file; devices, FIFOs and
    sockets are refused. Members are what `load_video` and `convert` read, each one."""
    try:
        entries = list(os.scandir(folder))
    except OSError:  # unreadable: the readers report it
        return
    for entry in entries:
        member = f"{path.rstrip('/')}/{entry.name}"
        try:
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                if not allow_outside_root and not _inside(real, real_root):
                    raise OutsideRootError(member, real, root)
                mode = os.stat(real).st_mode if os.path.exists(real) else stat.S_IFREG
            elif entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
                continue
            else:
                mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise RefusedReference(member, "a frame that is not a regular file (a device, FIFO or socket)",
                                   "remove it from the frame folder")  # fmt: skip


def _real(path: str) -> tuple[str, str]:
    """(the real location of `path`, what is there: "file", "dir", "other" or "" when nothing is known). Its folder's
    realpath plus its own name, followed when that name is a symlink."""
    folder, _, name = path.rpartition("/")
    real_folder, odd = _real_folder(folder or ("/" if path.startswith("/") else ""))
    if not name:
        return real_folder, "dir"
    real = f"{real_folder.rstrip('/')}/{name}"
    what = odd.get(name) or ("file" if name in odd.names else "")
    if not what:  # created after the folder was listed, or missing: look at it
        try:
            mode = os.lstat(real).st_mode
        except (OSError, ValueError):
            return real, ""
        what = "link" if stat.S_ISLNK(mode) else _kind(mode)
    if what == "link":
        real = os.path.realpath(real)
        try:
            mode = os.stat(real).st_mode
        except (OSError, ValueError):
            return real, ""
        what = _kind(mode)
    return real, what


def _kind(mode: int) -> str:
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


class _Listing(dict):
    """{name: "link" | "dir" | "other"} of what in a folder is not a regular file; `names`: every name in it."""

    names: frozenset[str] = frozenset()


def _real_folder(folder: str) -> tuple[str, _Listing]:
    """(realpath, its listing). Absolute folders are cached: records share a few folders, so a million paths cost a
    few directory reads instead of a million `lstat`s (a name the listing lacks is looked at on its own). A relative
    folder depends on the working directory and is looked up each time."""
    return _absolute_folder(folder) if folder.startswith("/") else _folder_info(folder or ".")


@functools.lru_cache(maxsize=1024)
def _absolute_folder(folder: str) -> tuple[str, _Listing]:
    return _folder_info(folder)


def _folder_info(folder: str) -> tuple[str, _Listing]:
    odd, names = _Listing(), []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                names.append(entry.name)
                if entry.is_symlink():
                    odd[entry.name] = "link"
                elif entry.is_dir(follow_symlinks=False):
                    odd[entry.name] = "dir"
                elif not entry.is_file(follow_symlinks=False):
                    odd[entry.name] = "other"
    except (OSError, ValueError):  # missing, not a folder, or unreadable: nothing in it can point elsewhere
        pass
    odd.names = frozenset(names)
    return os.path.realpath(folder), odd


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
