"""A deadline on one whole HTTP exchange of the judge's httpx client, from connect to the last byte of the reply.

httpx's timeouts (and so the openai client's `timeout`) bound each socket operation: a server that trickles one byte a
second never trips a 3 s read timeout, and one 114-byte reply took 113 s under `--timeout 3`. `ReplyDeadline` learns
the socket of the request it guards from httpcore's `trace` request extension and, when the deadline passes, shuts
the socket down: the blocked read returns at once, httpx raises, and the judge reports a timeout. `shutdown` (not
`close`) is what wakes a read blocked in another thread, and it never frees the file descriptor for reuse while that
read still holds it.

    client = httpx2.Client(event_hooks={"request": [attach_reply_deadline]}, limits=httpx2.Limits(
        max_keepalive_connections=0))  # a fresh connection per request: its socket is the one the trace reports
    with ReplyDeadline(3.0) as deadline:
        client.post(...)  # raises an httpx error at 3 s at the latest; deadline.expired says it was the deadline
"""

from __future__ import annotations

import contextvars
from typing import Any

from framelm.processing.sources_framelm import SocketDeadline

_CURRENT: contextvars.ContextVar[ReplyDeadline | None] = contextvars.ContextVar("framelm_reply_deadline", default=None)
# httpcore trace events whose return value is the network stream of a new connection (TLS wraps the TCP stream)
_STREAM_EVENTS = ("connection.connect_tcp.complete", "connection.start_tls.complete")


class ReplyDeadline(SocketDeadline):
    """The payload's fetch watchdog (`SocketDeadline`: a timer that shuts down the sockets it tracks), fed by httpx:
    it shuts down the sockets of the requests sent inside `with ReplyDeadline(seconds):` once `seconds` have passed.

    One per request, in the thread that sends it (a context variable ties the request to its deadline), so parallel
    judge calls each keep their own.
    """

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self._token: contextvars.Token | None = None

    def __enter__(self) -> ReplyDeadline:
        self._token = _CURRENT.set(self)
        super().__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        super().__exit__(*exc_info)
        with self._lock:
            self._sockets.clear()  # a timer firing now must not touch a socket that may serve another request
        _CURRENT.reset(self._token)

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's `trace` callback: track the socket of each new connection (shut at once if already expired)."""
        if event not in _STREAM_EVENTS or info.get("return_value") is None:
            return
        sock = info["return_value"].get_extra_info("socket")
        if sock is not None:
            self.track(sock)


def attach_reply_deadline(request) -> None:
    """httpx `request` event hook: hand the request's connection events to the deadline active in this thread."""
    deadline = _CURRENT.get()
    if deadline is not None:
        request.extensions["trace"] = deadline.trace
