"""What the two judges `framelm judge` can ask have in common: an OpenAI-compatible HTTP endpoint (`http_judge.py`)
or a local transformers causal LM (`local_judge.py`). Types only: the factory choosing one lives in `cli.py`, its
only caller, so this module imports neither judge and they import it without a circle.

Both take OpenAI-style messages (`[{"role": "system" | "user" | "assistant", "content": str}]`) and return the reply
text, so the review loop (`protocol.py`) cannot tell them apart. Transport failures are retried by the HTTP judge;
replies that cannot be parsed are retried by the review loop, which knows the protocol.
"""

from __future__ import annotations

import collections
from typing import Protocol

Message = dict[str, str]


class ChatJudge(Protocol):
    """What the review loop needs from a judge: its name (part of every cache key) and one chat call."""

    name: str
    failures: collections.Counter[str]  # failed replies by kind ("HTTP 500", "timeout", ...), each retried or fatal

    def chat(self, messages: list[Message]) -> str: ...


class JudgeUnavailableError(RuntimeError):
    """The judge could not be reached or refused the request: the run stops, with its reviews so far saved."""
