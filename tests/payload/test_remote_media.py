"""The remote fetcher of the payload (`sources_framelm.py`) against a real HTTP server on 127.0.0.1 and fsspec's own
filesystems: total deadlines, size limits, safe redirects, proxies, redacted errors, missing backends."""

import io
import os
import sys
import time
import urllib.request

import fsspec
import pytest
from fsspec.spec import AbstractFileSystem
from support.media_server import serve_media

from framelm.processing.media_framelm import load_image
from framelm.processing.sources_framelm import FetchLimits, _SafeRedirects, fetch_bytes, fetched_file, redact

LIMITS = FetchLimits(timeout=2.0, max_bytes=10_000)


class SlowFileSystem(AbstractFileSystem):
    """A filesystem whose reads stall, as a cloud store can: the deadline must not wait for it."""

    protocol = "framelm-slow"

    def _open(self, path, mode="rb", **kwargs):
        return StalledFile()


class StalledFile(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        time.sleep(30)
        return 0


def test_bytes_arrive_whole_and_a_temporary_file_is_removed_after_use():
    body = bytes(range(256)) * 20  # 5120 bytes
    with serve_media({"/blob.bin": body}) as server:
        assert fetch_bytes(server.url("/blob.bin"), LIMITS) == body
        with fetched_file(server.url("/blob.bin"), LIMITS) as path:
            assert path.endswith(".bin") and open(path, "rb").read() == body
    assert not os.path.exists(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", ["/silent", "/trickle/50"])
def test_the_deadline_bounds_the_whole_transfer(route):
    with serve_media() as server:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"did not finish within 2 s.*fetch_timeout"):
            fetch_bytes(server.url(route), LIMITS)
        assert time.monotonic() - started < 8  # 2 s deadline; a per-read timeout would take 50 s on the trickle


def test_redirects_are_followed_a_few_times_and_only_to_http():
    with serve_media({"/a.bin": b"payload"}) as server:
        assert fetch_bytes(server.url("/redirect?to=/a.bin"), LIMITS) == b"payload"
        with pytest.raises(OSError, match="redirect error that would lead to an infinite loop"):
            fetch_bytes(server.url("/loop"), LIMITS)
        with pytest.raises(OSError, match="file:///etc/passwd' is not allowed"):
            fetch_bytes(server.url("/redirect?to=file:///etc/passwd"), LIMITS)
        assert server.requests.count("/loop") <= 5
    request = urllib.request.Request("https://media.example/a.png")
    with pytest.raises(OSError, match="from https to plain http; refused"):
        _SafeRedirects().redirect_request(request, None, 302, "Found", {}, "http://media.example/a.png")
    with pytest.raises(OSError, match="redirected to a ftp:// URL"):
        _SafeRedirects().redirect_request(request, None, 302, "Found", {}, "ftp://media.example/a.png")


def test_errors_name_the_url_without_its_secrets():
    assert redact("https://user:hunter2@host:8443/a/b.png?X-Amz-Signature=abc#frag") == "https://host:8443/a/b.png"
    with serve_media() as server:
        with pytest.raises(FileNotFoundError) as missing:
            fetch_bytes(server.url("/nope.png?token=hunter2"), LIMITS)
    assert str(missing.value) == f"remote file not found: {server.url('/nope.png')} (HTTP 404)"
    assert "hunter2" not in str(missing.value) and missing.value.__cause__ is None


def test_environment_proxies_are_used(monkeypatch):
    with serve_media({"/a.bin": b"via proxy"}) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url(""))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert fetch_bytes("http://media.invalid/a.bin", LIMITS) == b"via proxy"
    assert proxy.requests == ["http://media.invalid/a.bin"]  # the absolute URL, as a proxy receives it


def test_fsspec_urls_are_read_within_the_limits(make_image):
    data = make_image("a.png", size=(5, 4)).read_bytes()
    fs = fsspec.filesystem("memory")
    fs.pipe("/framelm-test/a.png", data)
    fs.pipe("/framelm-test/big.bin", bytes(20_000))
    try:
        assert load_image("memory://framelm-test/a.png").size == (5, 4)
        with pytest.raises(ValueError, match="memory://framelm-test/big.bin is too large"):
            fetch_bytes("memory://framelm-test/big.bin", LIMITS)
        with pytest.raises(FileNotFoundError):
            fetch_bytes("memory://framelm-test/missing.png", LIMITS)
    finally:
        fs.rm("/framelm-test", recursive=True)


@pytest.mark.timeout(60)
def test_a_stalled_fsspec_read_ends_at_the_deadline():
    fsspec.register_implementation(SlowFileSystem.protocol, SlowFileSystem, clobber=True)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="framelm-slow://stalled.bin did not finish within 2 s"):
        fetch_bytes("framelm-slow://stalled.bin", LIMITS)
    assert time.monotonic() - started < 8


def test_a_missing_fsspec_backend_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as on a machine without it, even where it is installed
    with pytest.raises(
        ImportError, match=r"s3://bucket/a.png.*pip install s3fs \(with framelm: pip install 'framelm\[s3\]'\)"
    ):
        fetch_bytes("s3://bucket/a.png", LIMITS)
    with pytest.raises(ValueError, match="fsspec knows no nosuchscheme:// filesystem"):
        fetch_bytes("nosuchscheme://bucket/a.png", LIMITS)


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="fetch limits must be positive"):
        FetchLimits(timeout=0)
