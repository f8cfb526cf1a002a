"""The two judges `framelm judge` can ask: an OpenAI-compatible HTTP endpoint (`http_judge.py`) or a local
transformers causal LM (`local_judge.py`).

Both take OpenAI-style messages (`[{"role": "system" | "user" | "assistant", "content": str}]`) and return the reply
text, so the review loop (`protocol.py`) cannot tell them apart. Transport failures are retried by the HTTP judge;
replies that cannot be parsed are retried by the review loop, which knows the protocol.
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Protocol

logger = logging.getLogger(__name__)

Message = dict[str, str]


class ChatJudge(Protocol):
    """What the review loop needs from a judge: its name (part of every cache key) and one chat call."""

    name: str
    failures: collections.Counter[str]  # failed replies by kind ("HTTP 500", "timeout", ...), each retried or fatal

    def chat(self, messages: list[Message]) -> str: ...


class JudgeUnavailableError(RuntimeError):
    """The judge could not be reached or refused the request: the run stops, with its reviews so far saved."""


def read_api_key(env_var: str) -> str | None:
    """The API key in `$env_var`, stripped (a key read from a CRLF file ends in "\\r"); None when unset or empty.

    A key with a character an HTTP header cannot carry is refused by position, never echoed: the HTTP library's own
    error would quote the whole header value.
    """
    key = os.environ.get(env_var, "").strip()
    bad = next((index for index, char in enumerate(key) if not 33 <= ord(char) <= 126), None)
    if bad is not None:
        raise ValueError(
            f"${env_var} holds a space, control or non-ASCII character at position {bad} of the key: "
            "set it to the key alone"
        )
    return key or None


def make_judge(
    *,
    name: str,
    url: str | None = None,
    judge_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    temperature: float = 0.0,
    max_tokens: int = 1024,
    timeout: float = 120.0,
    retries: int = 5,
    backoff: float = 1.0,
    device: str = "auto",
) -> ChatJudge:
    """The HTTP judge at `url` (key from `$api_key_env`), or else the local causal LM at `judge_model`."""
    if url:
        from framelm.training.eval.judge.http_judge import OpenAIChatJudge

        api_key = read_api_key(api_key_env)
        if not api_key:
            logger.info("$%s is not set: requests carry no Authorization header", api_key_env)
        return OpenAIChatJudge(
            url,
            name,
            api_key,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
        )
    from framelm.training.eval.judge.local_judge import TransformersChatJudge

    assert judge_model, "make_judge needs url or judge_model: cli.main checks one is given"
    return TransformersChatJudge(judge_model, name, temperature=temperature, max_tokens=max_tokens, device=device)
