"""The HTTP judge: any OpenAI-compatible `/chat/completions` endpoint, through the `openai` client.

What framelm adds to the client, and why:
  - a deadline on each whole reply (`deadline.py`): the client's timeout bounds each socket read, so a server that
    trickles a byte a second held one review for 113 s under `--timeout 3`;
  - its own retry loop (the client's is switched off): it honours `Retry-After` on 429 and 503 up to
    MAX_RETRY_AFTER, backs off `backoff`, `2 * backoff`, ... seconds otherwise, counts every failure by kind for
    the run's report, and logs each retry with the key redacted;
  - the API key never leaves in anything but the Authorization header: every reply, log line and error message is
    redacted before it is cut or stored, so a server that echoes the key back cannot put it into the review file;
    the URL is shown without its user, password, query (`?api-key=`) and fragment;
  - a cap on each reply, MAX_REPLY_BYTES as sent (compression is declined): a server sending 100 MB is cut off at
    the cap instead of being held whole in memory. A reply over the cap, one that is not UTF-8, or JSON nested too
    deeply to parse is a counted, retried failure ("unreadable reply"), like any other reply that is no completion.
"""

from __future__ import annotations

import base64
import collections
import email.utils
import importlib
import json
import logging
import math
import threading
import time
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from framelm.processing.sources_framelm import redact
from framelm.training.eval.judge.backends import JudgeUnavailableError, Message
from framelm.training.eval.judge.deadline import ReplyDeadline, attach_reply_deadline

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER = 120.0  # seconds: a server asking for a longer wait stops the run (rerun later), no silent sleep
SNIPPET = 300  # characters of a bad reply quoted in an error, cut after redaction
MAX_REPLY_BYTES = 4 << 20  # 4 MiB: a judge reply of --max-tokens 1024 is a few KB; more is a broken or hostile server


class ReplyTooLargeError(Exception):
    """A reply past MAX_REPLY_BYTES: raised inside the HTTP client while the body is read, which stops reading it."""


def _cap_reply(response) -> None:
    """httpx `response` event hook: refuse a declared length over the cap, and count the bytes of the body as they
    arrive so that an undeclared (chunked, or closed-at-end) one stops at the cap too."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_REPLY_BYTES:
        raise ReplyTooLargeError(f"the reply is {int(length):,} bytes, more than the {MAX_REPLY_BYTES:,} accepted")
    http = importlib.import_module(type(response).__module__.split(".")[0])  # httpx or httpx2: the client's own

    class CappedStream(http.SyncByteStream):
        def __init__(self, stream):
            self.stream, self.seen = stream, 0

        def __iter__(self):
            for chunk in self.stream:
                self.seen += len(chunk)
                if self.seen > MAX_REPLY_BYTES:
                    raise ReplyTooLargeError(f"the reply passed the {MAX_REPLY_BYTES:,} bytes accepted")
                yield chunk

        def close(self) -> None:
            self.stream.close()

    response.stream = CappedStream(response.stream)


def _without(text: str, secrets) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class _RedactingFilter(logging.Filter):
    """On the HTTP libraries' loggers: their lines (httpx logs every request URL at INFO, query included) without a
    judge's secrets or any URL's credentials."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(_without(record.getMessage(), set(self.secrets))), None
        return True


_LOG_FILTER = _RedactingFilter()
for _name in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "openai._base_client"):
    logging.getLogger(_name).addFilter(_LOG_FILTER)


class _RetryableFailure(Exception):
    """One failed reply that another try may fix; `kind` is its name in the failure counts."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


def base_url(url: str) -> str:
    """`http://host:8000/v1/chat/completions` -> `http://host:8000/v1`: the client appends the endpoint itself."""
    url = url.rstrip("/")
    return url.removesuffix("/chat/completions")


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header in seconds ("3", "1.5") or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _hint(status: int) -> str:
    """What to check for an HTTP status that retrying cannot fix."""
    if 300 <= status < 400:
        return "the server redirects: pass the final URL as --judge-url"
    if status in (401, 403):
        return "check the API key in the environment variable named by --api-key-env"
    if status == 404:
        return "check --judge-url: the server's base URL, usually ending in /v1"
    return "check --judge-name (the model the server serves) and --max-tokens"


class OpenAIChatJudge:
    """Any OpenAI-compatible endpoint: OpenAI, vLLM, TGI, NVIDIA NIM, `transformers serve`.

    HTTP 5xx, 408, 409 and 429 answers, replies past the deadline, lost connections and replies that are not a chat
    completion are retried `retries` times; other answers (a wrong key, URL or model name) stop at once, since
    repeating them cannot help. Thread-safe: `framelm judge --parallel N` calls `chat` from N threads.
    """

    def __init__(
        self,
        url: str,
        name: str,
        api_key: str | None,
        *,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 1.0,
    ):
        import openai

        parts = urlsplit(url)  # credentials in the URL travel as what they are, never inside the URL it logs
        user = (unquote(parts.username or ""), unquote(parts.password or ""))
        query = dict(parse_qsl(parts.query))  # e.g. ?api-key=... (Azure): sent with every request
        clean = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        self.url = f"{base_url(clean)}/chat/completions"  # as shown in messages
        self.name = name
        self._api_key = api_key or None
        basic = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode() if user[0] else ""
        self._secrets = [s for s in (self._api_key, user[1], basic, *query.values()) if s and len(s) >= 4]
        _LOG_FILTER.secrets.update(self._secrets)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.failures: collections.Counter[str] = collections.Counter()
        self._failures_lock = threading.Lock()
        http_client = openai.DefaultHttpxClient(
            timeout=timeout,
            follow_redirects=False,  # a redirect would carry the key to another host, and turn the POST into a GET
            event_hooks={"request": [attach_reply_deadline], "response": [_cap_reply]},
            auth=user if user[0] else None,
        )
        # The key is always passed: left out, the client would read $OPENAI_API_KEY and send it to this server.
        self._client = openai.OpenAI(
            api_key=self._api_key or "unused",
            base_url=base_url(clean),
            default_query=query or None,
            max_retries=0,
            http_client=http_client,
        )
        # "Connection: close": a fresh connection per request, whose socket the deadline learns when it opens
        self._headers = {"Connection": "close", "Accept-Encoding": "identity"}  # identity: the cap counts real bytes
        self._headers |= {} if self._api_key else {"Authorization": openai.Omit()}

    def __repr__(self) -> str:
        return f"OpenAIChatJudge(url={self.url!r}, name={self.name!r})"

    def redact(self, text: str) -> str:
        """`text` without the API key (nor the URL's password or query values): applied to everything this judge
        returns, raises or logs."""
        return _without(text, self._secrets)

    def _shown(self, text: str) -> str:
        """An error detail as it may be shown: without the key, and its URLs without credentials."""
        return redact(self.redact(text))

    def chat(self, messages: list[Message]) -> str:
        problem, kind = "", ""
        for attempt in range(self.retries + 1):
            try:
                return self._ask(messages)
            except _RetryableFailure as failure:
                with self._failures_lock:
                    self.failures[failure.kind] += 1
                problem, kind = failure.detail, failure.kind
                if attempt == self.retries:
                    break
                delay = self.backoff * 2**attempt if failure.retry_after is None else failure.retry_after
                if delay > MAX_RETRY_AFTER:
                    raise JudgeUnavailableError(
                        f"{self.url} asks to wait {delay:.0f} s before the next request (Retry-After), more than "
                        f"{MAX_RETRY_AFTER:.0f} s: rerun later"
                    ) from None
                logger.warning(
                    "judge at %s: %s; retry %d of %d in %.1f s", self.url, problem, attempt + 1, self.retries, delay
                )
                time.sleep(delay)
        hint = "check that --judge-url is a chat-completions endpoint" if kind == "unreadable reply" else ""
        tries = f"{self.retries + 1} time{'s' if self.retries else ''}"
        raise JudgeUnavailableError(
            f"{self.url} failed {tries} (last: {problem}); {hint or 'check that the server is up'}, or raise "
            "--timeout / --http-retries"
        )

    def _ask(self, messages: list[Message]) -> str:
        """One request under the whole-reply deadline; a failure worth another try raises `_RetryableFailure`."""
        import openai

        with ReplyDeadline(self.timeout) as deadline:
            try:
                completion = self._client.chat.completions.create(
                    model=self.name,
                    messages=messages,
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    extra_headers=self._headers,
                )
            except openai.APIStatusError as error:
                raise self._status_failure(error) from None
            except openai.APIConnectionError as error:
                # the client's own per-read timeout equals the deadline: on a busy machine it can fire first
                if deadline.expired or isinstance(error, openai.APITimeoutError):
                    raise _RetryableFailure("timeout", f"no complete reply within {self.timeout:g} s") from None
                if isinstance(error.__cause__, ReplyTooLargeError):
                    raise _RetryableFailure("unreadable reply", str(error.__cause__)) from None
                reason = str(error.__cause__ or error) or type(error).__name__
                raise _RetryableFailure("connection error", self._shown(reason)) from None
            except ReplyTooLargeError as error:  # raised while the client read the body
                raise _RetryableFailure("unreadable reply", str(error)) from None
            except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested too deeply to parse
                detail = f"the reply cannot be parsed ({type(error).__name__}: {self._shown(str(error))[:SNIPPET]})"
                raise _RetryableFailure("unreadable reply", detail) from None
        return self._reply_text(completion)

    def _status_failure(self, error) -> Exception:
        status = error.status_code
        detail = self._shown(error.response.text.strip())[:SNIPPET]  # redacted first: a cut key would slip through
        if status >= 500 or status in (408, 409, 429):
            wait = retry_after_seconds(error.response.headers.get("retry-after")) if status in (429, 503) else None
            return _RetryableFailure(f"HTTP {status}", f"HTTP {status} {detail}".strip(), wait)
        where = f" to {error.response.headers.get('location')}" if 300 <= status < 400 else ""
        return JudgeUnavailableError(
            f"{self.url} answered HTTP {status}{where}: {detail or 'no details'}; {_hint(status)}"
        )

    def _reply_text(self, completion) -> str:
        """The reply's text, redacted; a body that is no chat completion, or content that is no text, is retried."""
        try:
            if isinstance(completion, str):  # a body the client did not parse: sent without a JSON content type
                content = json.loads(completion)["choices"][0]["message"]["content"]
            else:
                content = completion.choices[0].message.content
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
            snippet = self.redact(completion if isinstance(completion, str) else repr(completion))[:SNIPPET]
            raise _RetryableFailure(
                "unreadable reply", f"the reply is not an OpenAI chat completion: {snippet!r}"
            ) from None
        if isinstance(content, list):  # content parts, as some servers send: keep the text ones
            parts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
            content = "".join(parts) if parts and all(isinstance(part, str) for part in parts) else content
        if content is None:  # a refusal or a tool call: a reply with no scores, unparseable, not a failure
            return ""
        if not isinstance(content, str):
            snippet = self.redact(repr(content))[:SNIPPET]
            raise _RetryableFailure("unreadable reply", f"the reply's content is not text: {snippet}")
        return self.redact(content)
