"""Where media come from, read safely: a local path (regular files only), a `file://` or `data:` URL, raw base64, an
`http(s)://` URL through the standard library, any other `scheme://` URL (`s3://`, `gs://`, `hf://`, `memory://` ...)
through fsspec; remote files with a TOTAL deadline and a size limit.

Hub payload: standard library only; fsspec and its cloud backends are imported inside the function that reads them.

Why not just `urlopen(url, timeout=...)`: that timeout bounds each socket operation, so a server trickling one byte per
second keeps a download alive for hours. Here a watchdog shuts down every socket of the fetch when its deadline comes,
so a blocked read returns at once and the whole transfer, redirects included, ends within `timeout`. Redirects are
followed at most `MAX_REDIRECTS` times, only to http(s), never from https down to plain http. Proxies from the
environment (`HTTPS_PROXY`, `NO_PROXY` ...) are honoured, as `urllib` does. Error messages show URLs without their
user, password and query string, where signed URLs carry their secret.
"""

from __future__ import annotations

import base64
import io
import os
import re
import socket
import ssl
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from urllib.parse import unquote_to_bytes, urlsplit

DEFAULT_FETCH_TIMEOUT = 60.0  # seconds for one whole file, redirects included
DEFAULT_FETCH_MAX_BYTES = 1 << 30  # 1 GiB: room for a long video, far beyond any image
MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 16
HTTP_SCHEMES = ("http", "https")
# fsspec backends that are packages of their own, and the framelm extra that installs each
BACKEND_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
FRAMELM_EXTRAS = {"s3fs": "s3", "gcsfs": "gcs"}
BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")  # long enough that a short missing file name is not taken
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/[^\s'\"]*")  # a URL in a text, up to a space or a quote
_USERINFO = re.compile(r"(:/{1,2})[^/?#]*@")  # its `//user:password@`
NON_REGULAR = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
               (stat.S_ISBLK, "block device"))  # fmt: skip


@dataclass(frozen=True)
class FetchLimits:
    """How long one remote file may take and how large it may be (the processor's `fetch_timeout` and
    `fetch_max_bytes`, saved in `processor_config.json`)."""

    timeout: float = DEFAULT_FETCH_TIMEOUT
    max_bytes: int = DEFAULT_FETCH_MAX_BYTES

    def __post_init__(self):
        if not self.timeout > 0 or not self.max_bytes > 0:
            raise ValueError(f"fetch limits must be positive; got timeout={self.timeout}, max_bytes={self.max_bytes}")


def is_remote(source: str) -> bool:
    """`scheme://...` other than `file://` (a local path) and `data:` (inline bytes)."""
    scheme = urlsplit(source).scheme
    return "://" in source and len(scheme) > 1 and scheme != "file"


def local_path(source: str) -> str:
    """A `file://` URL -> its path (percent-escapes decoded); anything else unchanged."""
    if source.startswith("file://"):
        return urllib.request.url2pathname(urlsplit(source).path)
    return source


def redact(text: str) -> str:
    """`text` with every URL in it cut to scheme, host and path: no user, password, query or fragment. What error
    messages, logs, run records and model cards may show. Text, not parsing: it cannot fail on a malformed URL
    (`https://[::1`, port 99999), it cleans chained fsspec URLs (`simplecache::s3://key:secret@bucket/x`) and a URL
    a library mangled into a path (`/tmp/https:/user:token@host/x`); text without URLs is returned as it is."""
    return _URL.sub(lambda url: _USERINFO.sub(r"\1", re.split(r"[?#]", url.group(0), maxsplit=1)[0]), text)


def image_source(source: str, limits: FetchLimits) -> tuple[str | io.BytesIO, str]:
    """A string an image was given as -> (a local path or its bytes, how to name it in messages)."""
    if source.startswith("data:"):
        return io.BytesIO(_data_url_bytes(source)), f"data URL ({source[:32]}...)"
    if is_remote(source):
        return io.BytesIO(fetch_bytes(source, limits)), redact(source)
    path = local_path(source)
    data = None if os.path.lexists(path) else _base64_bytes(source)
    if data is None:
        require_regular_file(path, "image")
        return path, path
    return io.BytesIO(data), f"given as base64 ({len(source)} characters; no file has that name)"


@contextmanager
def local_video_path(source: str | bytes, limits: FetchLimits | None) -> Iterator[str]:
    """A local path for a video `source`: the file or frame folder itself, or a temporary file (deleted on exit)
    holding a remote file's download or the bytes of a data URL, a base64 string or a bytes object. Errors name
    inline data by its size, never by its text."""
    inline, shown = _inline_video_bytes(source)
    if inline is not None:
        handle, path = tempfile.mkstemp(prefix="framelm-", suffix=".video")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(inline)
            try:
                yield path
            except ValueError as err:
                raise ValueError(str(err).replace(path, shown)) from err
        finally:
            os.unlink(path)
        return
    if not is_remote(source):
        path = local_path(source)
        if not os.path.exists(path):
            shown = path if len(path) <= 200 else f"{path[:60]}... ({len(path)} characters)"
            raise FileNotFoundError(f"video not found: {shown}")
        if not os.path.isdir(path):
            require_regular_file(path, "video")
        yield path
        return
    with fetched_file(source, limits or FetchLimits()) as path:
        try:
            yield path
        except ValueError as err:  # name the URL, not only the temporary file
            raise ValueError(f"video {redact(source)}: {err}") from err


def _inline_video_bytes(source: str | bytes) -> tuple[bytes | None, str]:
    """(the bytes, how to name them) of a video given inline (bytes, a data URL, base64), else (None, "")."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), f"video of {len(source)} bytes"
    if source.startswith("data:"):
        return _data_url_bytes(source), f"video data URL ({source[:32]}...)"
    if not is_remote(source) and not os.path.lexists(local_path(source)):
        data = _base64_bytes(source)
        if data is not None:
            return data, f"video given as base64 ({len(source)} characters; no file has that name)"
    return None, ""


def require_regular_file(path: str, kind: str) -> None:
    """Refuse what is missing, and what is not a regular file: opening a FIFO blocks until someone writes to it,
    a character device (/dev/zero, /dev/urandom) never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{kind} file not found: {path}") from None
    if stat.S_ISDIR(mode):
        raise FileNotFoundError(f"{kind} file not found: {path} (it is a folder)")
    if not stat.S_ISREG(mode):
        what = next((name for test, name in NON_REGULAR if test(mode)), "special file")
        raise ValueError(f"{kind} {path} is a {what}, not a regular file; reading it could block forever: pass a file")


def _data_url_bytes(url: str) -> bytes:
    """`data:[<media type>][;base64],<data>` -> its bytes."""
    header, comma, payload = url.partition(",")
    if not comma:
        raise ValueError(f"malformed data URL {url[:40]!r}...: no ',' between header and data")
    if not header.endswith(";base64"):
        return unquote_to_bytes(payload)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except ValueError as err:
        raise ValueError(f"data URL {header}: the base64 data does not decode ({err})") from err


def _base64_bytes(text: str) -> bytes | None:
    """The bytes of a raw base64 string (line breaks allowed), or None when `text` is not one."""
    compact = "".join(text.split())
    if not BASE64_TEXT.fullmatch(compact):
        return None
    try:
        return base64.b64decode(compact, validate=True)
    except ValueError:  # binascii.Error: bad padding
        return None


# --- remote files -----------------------------------------------------------------------------------------------


def fetch_bytes(url: str, limits: FetchLimits) -> bytes:
    """The whole content of a remote file, within `limits`."""
    data = bytearray()
    _fetch(url, limits, data.extend)
    return bytes(data)


@contextmanager
def fetched_file(url: str, limits: FetchLimits) -> Iterator[str]:
    """Download `url` into a temporary file (streamed, never whole in memory) and yield its path; the file is deleted
    on exit. For readers that need a path (PyAV, decord)."""
    suffix = os.path.splitext(urlsplit(url).path)[1][:16]
    handle, path = tempfile.mkstemp(prefix="framelm-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            _fetch(url, limits, out.write)
        yield path
    finally:
        os.unlink(path)


def _fetch(url: str, limits: FetchLimits, write: Callable[[bytes], object]) -> None:
    scheme = urlsplit(url).scheme
    if scheme in HTTP_SCHEMES:
        _fetch_http(url, limits, write)
    else:
        _fetch_fsspec(url, limits, write)


# --- http(s) ----------------------------------------------------------------------------------------------------


class SocketDeadline:
    """Shuts down every socket a fetch has opened once its time is up, so that a blocking read returns at once."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> SocketDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def remaining(self) -> float:
        return max(self.end - time.monotonic(), 0.001)

    def passed(self, error: BaseException) -> bool:
        """Whether `error` is the deadline's doing: the watchdog cut a socket, or a socket operation, whose timeout
        is always the time left, timed out (it may beat the watchdog by a hair)."""
        reason = getattr(error, "reason", error)
        return self.expired or isinstance(error, TimeoutError) or isinstance(reason, TimeoutError)

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:  # the plain socket method also for TLS sockets: it ends the fd's reads without touching the TLS state
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _tracked(base: type[HTTPConnection], deadline: SocketDeadline) -> type[HTTPConnection]:
    class TrackedConnection(base):
        def connect(self) -> None:
            self.timeout = deadline.remaining()  # each socket operation, and the connect itself, ends by the deadline
            super().connect()
            deadline.track(self.sock)

    return TrackedConnection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: SocketDeadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_tracked(HTTPConnection, self.deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: SocketDeadline):
        self.tls = ssl.create_default_context()
        super().__init__(context=self.tls)
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_tracked(HTTPSConnection, self.deadline), req, context=self.tls)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urlsplit(req.full_url).scheme, urlsplit(newurl).scheme
        if new not in HTTP_SCHEMES:
            raise urllib.error.URLError(f"redirected to a {new}:// URL; only http(s) redirects are followed")
        if old == "https" and new == "http":
            raise urllib.error.URLError("redirected from https to plain http; refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_http(url: str, limits: FetchLimits, write: Callable[[bytes], object]) -> None:
    shown = redact(url)
    with SocketDeadline(limits.timeout) as deadline:
        opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline), _SafeRedirects())
        request = urllib.request.Request(url, headers={"User-Agent": "framelm", "Accept-Encoding": "identity"})
        try:
            with opener.open(request, timeout=limits.timeout) as response:
                _check_length(response.headers.get("Content-Length"), limits, shown)
                received = 0
                while chunk := response.read(CHUNK_BYTES):
                    received += len(chunk)
                    if received > limits.max_bytes:
                        raise _too_large(shown, limits, f"more than {limits.max_bytes} bytes arrived")
                    write(chunk)
        except urllib.error.HTTPError as err:
            if deadline.passed(err):
                raise _timed_out(shown, limits) from None
            if err.code in (404, 410):
                raise FileNotFoundError(f"remote file not found: {shown} (HTTP {err.code})") from None
            raise OSError(f"cannot fetch {shown}: HTTP {err.code} {err.reason}") from None
        except (OSError, HTTPException) as err:  # URLError, socket errors, TLS errors, a cut-off body
            if deadline.passed(err):
                raise _timed_out(shown, limits) from None
            reason = getattr(err, "reason", err)
            raise OSError(f"cannot fetch {shown}: {reason}") from None
    if deadline.expired:  # the watchdog ended a body of unknown length: what arrived is not the whole file
        raise _timed_out(shown, limits)


def _check_length(header: str | None, limits: FetchLimits, shown: str) -> None:
    if header is not None and header.strip().isdigit() and int(header) > limits.max_bytes:
        raise _too_large(shown, limits, f"the server announces {int(header)} bytes")


def _too_large(shown: str, limits: FetchLimits, what: str) -> ValueError:
    return ValueError(
        f"remote file {shown} is too large: {what}, over the limit of {limits.max_bytes} bytes; raise the "
        "processor's fetch_max_bytes if the file is genuine"
    )


def _timed_out(shown: str, limits: FetchLimits) -> TimeoutError:
    return TimeoutError(
        f"fetching {shown} did not finish within {limits.timeout:g} s; the server is slow or stalled (raise the "
        "processor's fetch_timeout, or copy the file locally)"
    )


# --- fsspec (s3://, gs://, hf://, memory:// ...) ---------------------------------------------------------------


def _fetch_fsspec(url: str, limits: FetchLimits, write: Callable[[bytes], object]) -> None:
    """fsspec backends have no common way to interrupt a read, so the read runs in a daemon thread that is abandoned
    (its buffer dropped) when the deadline passes; the caller gets its TimeoutError on time either way."""
    shown, scheme = redact(url), urlsplit(url).scheme
    try:
        import fsspec
    except ImportError as err:
        raise ImportError(f"reading {scheme}:// URLs needs fsspec: {install_hint(scheme)}") from err
    outcome: dict[str, object] = {}

    def read() -> None:
        try:
            outcome["data"] = _read_limited(fsspec, url, limits, shown)
        except BaseException as err:  # handed over to the calling thread, which raises it
            outcome["error"] = err

    worker = threading.Thread(target=read, name=f"framelm-fetch {shown}", daemon=True)
    worker.start()
    worker.join(limits.timeout)
    if worker.is_alive():
        raise _timed_out(shown, limits)
    error = outcome.get("error")
    if isinstance(error, ImportError):  # fsspec knows the scheme, its backend package is missing
        raise ImportError(f"cannot read {shown}: {error}; {install_hint(scheme)}") from error
    if isinstance(error, ValueError) and "protocol" in str(error).lower():
        raise ValueError(f"cannot read {shown}: fsspec knows no {scheme}:// filesystem ({error})") from error
    if isinstance(error, (OSError, ValueError)):
        raise error
    if error is not None:  # e.g. botocore's NoCredentialsError: still one file that cannot be read
        raise OSError(f"cannot read {shown}: {type(error).__name__}: {error}") from error
    write(outcome["data"])


def _read_limited(fsspec, url: str, limits: FetchLimits, shown: str) -> bytes:
    data = bytearray()
    with fsspec.open(url, "rb") as remote:
        while chunk := remote.read(CHUNK_BYTES):
            data += chunk
            if len(data) > limits.max_bytes:
                raise _too_large(shown, limits, f"more than {limits.max_bytes} bytes arrived")
    return bytes(data)


def install_hint(scheme: str) -> str:
    package = BACKEND_PACKAGES.get(scheme)
    if package is None:
        return f"pip install fsspec and the fsspec backend for {scheme}://"
    return f"pip install {package} (with framelm: pip install 'framelm[{FRAMELM_EXTRAS[package]}]')"
