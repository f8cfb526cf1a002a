"""The two judges `framelm judge` can ask: an OpenAI-compatible HTTP endpoint, or a local transformers causal LM.

Both take OpenAI-style messages (`[{"role": "system" | "user" | "assistant", "content": str}]`) and return the reply
text, so the review loop (`protocol.py`) cannot tell them apart. Transport failures are retried here; replies that
cannot be parsed are retried by the review loop, which knows the protocol.
"""

from __future__ import annotations

import copy
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from typing import Protocol

logger = logging.getLogger(__name__)

Message = dict[str, str]


class ChatJudge(Protocol):
    """What the review loop needs from a judge: its name (part of every cache key) and one chat call."""

    name: str

    def chat(self, messages: list[Message]) -> str: ...


class JudgeUnavailableError(RuntimeError):
    """The judge could not be reached or refused the request: the run stops, with its reviews so far saved."""


def chat_completions_url(url: str) -> str:
    """`http://host:8000/v1` -> `http://host:8000/v1/chat/completions`; a full endpoint URL is kept as it is."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # urllib follows a redirect with every header, Authorization included, to any host, and turns the POST into a
    # GET: both are wrong for an API call, so a 3xx answer becomes an error that names the new location.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


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
    """Any OpenAI-compatible `/chat/completions` endpoint: OpenAI, vLLM, TGI, NVIDIA NIM, `transformers serve`.

    Standard-library urllib only: one JSON POST per review does not need an HTTP client dependency. HTTP 5xx, 408
    and 429 answers, timeouts and dropped connections are retried after `backoff`, `2 * backoff`, `4 * backoff` ...
    seconds; other answers stop at once, since repeating a wrong key, URL or model name cannot help. The API key
    goes into the Authorization header and nowhere else: not into log lines, errors, `repr` or the review file.
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
        self.url = chat_completions_url(url)
        self.name = name
        self._api_key = api_key or None
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._opener = urllib.request.build_opener(_RefuseRedirects)

    def __repr__(self) -> str:
        return f"OpenAIChatJudge(url={self.url!r}, name={self.name!r})"

    def _redact(self, text: str) -> str:
        # A server may echo request headers in an error page; the key must not travel on into our logs.
        return text.replace(self._api_key, "***") if self._api_key else text

    def chat(self, messages: list[Message]) -> str:
        body = {"model": self.name, "messages": messages, "temperature": self.temperature}
        body["max_tokens"] = self.max_tokens
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(body).encode("utf-8")
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                logger.warning(
                    "judge at %s: %s; retry %d of %d in %.1f s", self.url, problem, attempt, self.retries, delay
                )
                time.sleep(delay)
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    return self._reply_text(response.read())
            except urllib.error.HTTPError as error:  # before URLError: HTTPError is one
                detail = self._redact(error.read(500).decode("utf-8", "replace").strip())
                if error.code < 500 and error.code not in (408, 429):
                    where = f" to {error.headers.get('Location')}" if 300 <= error.code < 400 else ""
                    raise JudgeUnavailableError(
                        f"{self.url} answered HTTP {error.code}{where}: {detail or error.reason}; {_hint(error.code)}"
                    ) from None
                problem = f"HTTP {error.code} {detail[:200]}".strip()
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
                problem = self._redact(str(getattr(error, "reason", None) or error) or type(error).__name__)
        raise JudgeUnavailableError(
            f"{self.url} failed {self.retries + 1} times (last: {problem}); check that the server is up and "
            "--judge-url, or raise --timeout / --http-retries"
        )

    def _reply_text(self, raw: bytes) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            snippet = self._redact(raw[:300].decode("utf-8", "replace"))
            raise JudgeUnavailableError(
                f"{self.url} did not answer like an OpenAI chat completion (no choices[0].message.content): "
                f"{snippet!r}; check that --judge-url points at a chat-completions endpoint"
            ) from None
        return content or ""  # null content (a refusal, a tool call) is a reply with no scores, not a crash


def fold_system_turn(messages: list[Message]) -> list[Message]:
    """Put the system text at the top of the first user turn, for chat templates that refuse a system role.

    Mistral and Mixtral instruct templates raise on a system turn, and Mixtral is NeMo's judge of choice.
    """
    if not messages or messages[0]["role"] != "system":
        return messages
    system, first, rest = messages[0], messages[1], messages[2:]
    return [{"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}, *rest]


class TransformersChatJudge:
    """A local judge: `AutoModelForCausalLM` and its tokenizer's chat template, greedy unless temperature > 0.

    Loaded once, one review at a time: judge replies are long and few (60 questions in llava-bench), so batching
    would save little and cost padding logic.
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        device: str = "auto",
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not self.tokenizer.chat_template:
            raise ValueError(
                f"{path}: the tokenizer has no chat template; judge with an instruction-tuned model, or add a "
                "chat_template.jinja to the folder"
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device).eval()
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_tokens
        config.do_sample = temperature > 0
        # Greedy: clear the sampling knobs a model's generation_config may carry, so generate() does not warn.
        config.temperature, config.top_p, config.top_k = (temperature, 1.0, None) if temperature > 0 else (None,) * 3
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        self.generation_config = config

    def _encode(self, messages: list[Message]):
        from jinja2.exceptions import TemplateError

        kwargs = {"add_generation_prompt": True, "return_tensors": "pt", "return_dict": True}
        try:
            return self.tokenizer.apply_chat_template(messages, **kwargs)
        except TemplateError as error:
            if messages[0]["role"] != "system":
                raise
            logger.info("the judge's chat template refused a system turn (%s); folding it into the user turn", error)
            return self.tokenizer.apply_chat_template(fold_system_turn(messages), **kwargs)

    def chat(self, messages: list[Message]) -> str:
        import torch

        inputs = self._encode(messages).to(self.model.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.generation_config)  # (1, prompt + new)
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def make_judge(args, url: str | None, name: str) -> ChatJudge:
    """The judge the `framelm judge` options name: HTTP when `url` is set, else the local `--judge-model`."""
    if url:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            logger.info("$%s is not set: requests carry no Authorization header", args.api_key_env)
        return OpenAIChatJudge(
            url,
            name,
            api_key,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            timeout=args.timeout,
            retries=args.http_retries,
            backoff=args.http_backoff,
        )
    return TransformersChatJudge(
        args.judge_model, name, temperature=args.temperature, max_tokens=args.max_tokens, device=args.device
    )
