"""`framelm judge`: pairwise LLM-as-judge scoring of response files, the LLaVA-Bench (in the wild) protocol.

    framelm judge --question-file llava-bench-in-the-wild/questions.jsonl \\
        --context-file llava-bench-in-the-wild/context.jsonl --rule-file rule.json \\
        --responses-list llava-bench-in-the-wild/answers_gpt4.jsonl ours.jsonl --output reviews.json \\
        --judge-url http://127.0.0.1:8000/v1 --judge-name mistralai/Mixtral-8x7B-Instruct-v0.1
    framelm judge ... --judge-model path/to/instruct-lm      # no server: a local transformers causal LM

For each question and each response file after the first, the judge reads the captions of the question's image,
the question, the reference answer (first file) and the candidate answer, and replies with two scores on its first
line ("8 7") and then an explanation. Where this departs from NeMo's `mixtral_eval.py`, and why:
  - answers are matched to questions by id, not by line, so a reordered or partial file cannot pair the wrong
    texts; a question without an answer is an error, not a silently skipped line;
  - an unparseable reply is asked again (--attempts), then kept in the review file as "unparseable" and counted in
    the summary; mixtral_eval.py scored it (-1, -1), which pulled the means down without a word;
  - the review file is a cache keyed by (question id, reference model, candidate model, judge), rewritten
    atomically every --save-every reviews, so an interrupted run resumes and a finished one costs no calls.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from framelm.processing.sources_framelm import redact
from framelm.training.errors import FrameLMParser, InputError
from framelm.training.eval.judge.backends import ChatJudge, JudgeUnavailableError
from framelm.training.eval.judge.inputs import (
    JudgeInputError,
    Task,
    build_tasks,
    read_contexts,
    read_questions,
    read_responses,
    read_rules,
)
from framelm.training.eval.judge.protocol import FORMULA, format_table, summarize
from framelm.training.eval.judge.store import fresh_reviews, load_reviews, run_reviews, write_output

logger = logging.getLogger(__name__)

OPENAI_HOST = "api.openai.com"  # the one server $OPENAI_API_KEY goes to without --api-key-env
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = FrameLMParser(
        prog="framelm judge",
        description=__doc__,
        epilog=FORMULA,
    )
    data = parser.add_argument_group("inputs (llava-bench-in-the-wild layout)")
    data.add_argument(
        "--question-file",
        type=Path,
        required=True,
        metavar="JSONL",
        help="Lines of {question_id, text, category, image}; a NeMo prompt file's 'video' may stand for 'image'.",
    )
    data.add_argument(
        "--context-file",
        type=Path,
        required=True,
        metavar="JSONL",
        help="Lines of {image, caption}: what the judge knows of each image (caption: text or lines).",
    )
    data.add_argument(
        "--rule-file",
        type=Path,
        required=True,
        metavar="JSON",
        help='Rule key -> {"role": "Assistant", "prompt": ...}; category "conv" uses key "llava_bench_conv" '
        '(as LLaVA and NeMo do), else "conv".',
    )
    data.add_argument(
        "--responses-list",
        type=Path,
        nargs="+",
        required=True,
        metavar="JSONL",
        help="Two or more answer files, the reference first, each judged against it; lines of "
        "{question_id, text} (llava-bench answers) or {response_id, response} (NeMo), matched by id.",
    )
    data.add_argument(
        "--model-name-list",
        nargs="+",
        metavar="NAME",
        help="A name per response file (default: the file names without extension).",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--output",
        type=Path,
        required=True,
        metavar="JSON",
        help="Review json (summary + every review); the reviews already in it are reused, so a rerun "
        "resumes and costs no judge call for what is done. Delete it to start a new comparison.",
    )
    out.add_argument(
        "--save-every",
        type=int,
        default=10,
        metavar="N",
        help="Rewrite --output (atomically) after every N new reviews, and at the end or on an error.",
    )
    judge = parser.add_argument_group("judge: an OpenAI-compatible server or a local model")
    judge.add_argument(
        "--judge-url",
        metavar="URL",
        help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (default: $FRAMELM_JUDGE_URL).",
    )
    judge.add_argument(
        "--judge-model",
        metavar="PATH",
        help="Folder or Hub id of a local instruction-tuned causal LM to judge with, no server.",
    )
    judge.add_argument(
        "--judge-name",
        metavar="NAME",
        help="The judge's model id: sent as 'model' to the server "
        "(required with --judge-url) and part of every review's cache key (default: --judge-model).",
    )
    gen = parser.add_argument_group("judging")
    gen.add_argument("--max-tokens", type=int, default=1024, help="Longest judge reply, in tokens (LLaVA: 1024).")
    gen.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0 = greedy, reproducible reviews (LLaVA and NeMo sampled at 0.2).",
    )
    gen.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="Replies to ask for per review until one has two "
        "scores on its first line; then the review is 'unparseable': reported, never scored.",
    )
    gen.add_argument(
        "--retry-unparseable",
        action="store_true",
        help="Ask again for cached reviews that were unparseable (default: reuse them as they are).",
    )
    http = parser.add_argument_group("HTTP judge")
    http.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="Environment variable holding the API key, sent as a Bearer token, never logged or saved. Without it, "
        f"${DEFAULT_KEY_ENV} is sent to https://{OPENAI_HOST} only, and no key to any other server. A key never "
        "goes over plain http except to this machine (127.0.0.1, ::1, localhost).",
    )
    http.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="Deadline for one whole judge reply, from connecting to its last byte (a retry gets a new one).",
    )
    http.add_argument(
        "--http-retries",
        type=int,
        default=5,
        metavar="N",
        help="Retries after HTTP 5xx/408/409/429, a reply past --timeout, a lost connection or a reply that is no "
        "chat completion (other errors stop at once).",
    )
    http.add_argument(
        "--http-backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="Wait before the first retry, doubled before each next one; a 429 or 503 answer's Retry-After wins.",
    )
    http.add_argument(
        "--parallel",
        type=int,
        default=4,
        metavar="N",
        help="Judge requests in flight at once (the local --judge-model judges one at a time).",
    )
    local = parser.add_argument_group("local judge")
    local.add_argument(
        "--device", default="auto", help="Device for --judge-model (auto: cuda if available, else cpu)."
    )
    return parser


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


def _on_this_machine(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def api_key_for(url: str, api_key_env: str | None) -> str | None:
    """The key to send to `url`: from `$api_key_env` when the user named one, else `$OPENAI_API_KEY` for the OpenAI
    API only. ValueError when a key would cross the network in clear text (plain http to another machine)."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
    except ValueError as err:
        raise ValueError(f"--judge-url {redact(url)} is not a URL ({err})") from None
    if api_key_env is None and not (scheme == "https" and host == OPENAI_HOST):
        if os.environ.get(DEFAULT_KEY_ENV):
            logger.info("$%s is not sent to %s, which is not the OpenAI API: pass --api-key-env %s to send it",
                        DEFAULT_KEY_ENV, redact(url), DEFAULT_KEY_ENV)  # fmt: skip
        return None
    env = api_key_env or DEFAULT_KEY_ENV
    key = read_api_key(env)
    if key is None:
        logger.info("$%s is not set: requests carry no Authorization header", env)
    elif scheme != "https" and not _on_this_machine(host):
        raise ValueError(
            f"${env} would travel in clear text to {redact(url)}: use an https URL, or a server on this machine "
            "(127.0.0.1); a key is never sent over plain http to another host"
        )
    return key


def make_judge(args: argparse.Namespace, url: str | None, name: str) -> ChatJudge:
    """The HTTP judge at `url` (with the key `api_key_for` allows), or else the local causal LM `--judge-model`."""
    if url:
        from framelm.training.eval.judge.http_judge import OpenAIChatJudge

        return OpenAIChatJudge(
            url,
            name,
            api_key_for(url, args.api_key_env),
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            timeout=args.timeout,
            retries=args.http_retries,
            backoff=args.http_backoff,
        )
    from framelm.training.eval.judge.local_judge import TransformersChatJudge

    assert args.judge_model, "make_judge needs url or judge_model: main checks one is given"
    return TransformersChatJudge(
        args.judge_model, name, temperature=args.temperature, max_tokens=args.max_tokens, device=args.device
    )


def _load_tasks(args, names: list[str], judge_name: str) -> list[Task]:
    for path in [args.question_file, args.context_file, args.rule_file, *args.responses_list]:
        if not path.is_file():
            raise JudgeInputError(f"{path}: no such file")
    rules = read_rules(args.rule_file)
    contexts = read_contexts(args.context_file)
    questions = read_questions(args.question_file, contexts, args.context_file, rules, args.rule_file)
    answers = {name: read_responses(path, questions) for name, path in zip(names, args.responses_list, strict=True)}
    return build_tasks(questions, rules, answers, judge_name)


def failure_counts(judge) -> str:
    """One line counting the judge's failed replies by kind (each retried, or the one that stopped the run)."""
    if not judge.failures:
        return ""
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(judge.failures.items()))
    return f"judge failures: {sum(judge.failures.values())} replies failed ({kinds})\n"


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    url = args.judge_url or (None if args.judge_model else os.environ.get("FRAMELM_JUDGE_URL"))
    if url and args.judge_model:
        parser.error("pass --judge-url or --judge-model, not both")
    if not url and not args.judge_model:
        parser.error("no judge: pass --judge-url (or set FRAMELM_JUDGE_URL) or --judge-model")
    if url and not args.judge_name:
        parser.error("--judge-url needs --judge-name: the model id the server expects in each request")
    if len(args.responses_list) < 2:
        parser.error("--responses-list needs a reference file and at least one file to judge against it")
    if min(args.attempts, args.save_every, args.parallel) < 1:
        parser.error("--attempts, --save-every and --parallel must be at least 1")
    if not (args.timeout > 0 and math.isfinite(args.timeout)) or args.http_retries < 0 or not args.http_backoff >= 0:
        parser.error("--timeout must be a positive number of seconds, --http-retries and --http-backoff at least 0")
    names = args.model_name_list or [path.stem for path in args.responses_list]
    if len(names) != len(args.responses_list) or len(set(names)) != len(names):
        parser.error(f"model names {names} must be unique, one per response file: pass --model-name-list")
    judge_name = args.judge_name or args.judge_model
    try:
        tasks = _load_tasks(args, names, judge_name)
        reviews = load_reviews(args.output)
    except JudgeInputError as error:
        raise InputError(str(error)) from error

    fresh = {item.key for item in fresh_reviews(tasks, reviews)}
    redo = {key for key in fresh if args.retry_unparseable and reviews[key].status == "unparseable"}
    pending = [task for task in tasks if task.key not in fresh or task.key in redo]
    stale = sum(task.key in reviews and task.key not in fresh for task in tasks)
    logger.info(
        "%d reviews: %d cached in %s, %d to ask (%d stale: prompt changed; %d unparseable asked again)",
        len(tasks),
        len(tasks) - len(pending),
        args.output,
        len(pending),
        stale,
        len(redo),
    )
    if pending:
        try:
            judge = make_judge(args, url, judge_name)
        except ValueError as error:  # a key no header can carry or sent in clear, a judge without a chat template
            raise InputError(redact(str(error))) from error
        try:
            run_reviews(
                tasks,
                pending,
                judge,
                reviews,
                output=args.output,
                attempts=args.attempts,
                save_every=args.save_every,
                parallel=args.parallel if url else 1,
            )
        except (JudgeUnavailableError, KeyboardInterrupt) as error:
            reason = redact(str(error)) or "interrupted"
            print(
                f"framelm judge: {reason}\n{failure_counts(judge)}the reviews so far are in {args.output}: rerun to "
                "resume",
                file=sys.stderr,
            )
            return 1
        print(failure_counts(judge), end="")
    current = fresh_reviews(tasks, reviews)
    rows = summarize(current)
    write_output(args.output, list(reviews.values()), rows)
    print(format_table(rows, judge_name))
    unparseable = [item.question_id for item in current if item.status == "unparseable"]
    counts = f"{len(current)} reviews ({len(pending)} new, {len(current) - len(pending)} cached), "
    counts += f"{len(unparseable)} unparseable"
    if unparseable:
        counts += f" (question ids {unparseable[:20]}): not scored, status 'unparseable' in {args.output}; "
        counts += "--retry-unparseable asks again"
    print(counts)
    return 0
