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
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .judge_backends import ChatJudge, JudgeUnavailableError, make_judge
from .judge_inputs import JudgeInputError, Task, build_tasks, read_contexts, read_questions, read_responses, read_rules

logger = logging.getLogger(__name__)

# LLaVA's system turn for its GPT-4 reviews (llava/eval/eval_gpt_review_bench.py), kept so scores stay comparable.
SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."
SCORE_RANGE = (0.0, 10.0)  # rule.json asks for "a score on a scale of 1 to 10": 0 is tolerated, 85 is no score
RETRY_PROMPT = (
    "Your reply could not be read. Its first line must hold only the two scores, for {role} 1 and {role} 2 in that "
    "order, separated by a space (for example: 8 7). Then give your explanation."
)
FORMULA = """scores, per category over its scored reviews ("all" pools the reviews of every category):
  reference = 10 x mean(reference score), candidate = 10 x mean(candidate score)  (mixtral_eval.py: "all 84.8 72.4")
  relative  = 100 x mean(candidate score) / mean(reference score)                 (LLaVA's summarize_gpt_review.py)
  Unparseable reviews are counted in their own column and left out of the means: never scored 0 or -1."""


@dataclass
class Review:
    """One judged pair, as stored in the output json."""

    question_id: int | str
    category: str  # the rule key, e.g. "llava_bench_conv"
    reference_model: str
    candidate_model: str
    judge: str
    status: str  # "scored", or "unparseable": none of the `attempts` replies had two scores on its first line
    scores: list[float] | None  # [reference, candidate] read from the reply's first line; None when unparseable
    attempts: int  # judge replies asked for: 1 when the first one parsed
    reply: str  # the last raw reply
    rejected_replies: list[str]  # the earlier, unparseable raw replies, oldest first
    prompt_sha256: str  # of the judge prompt: a changed answer, caption or rule makes a cached review stale

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (str(self.question_id), self.reference_model, self.candidate_model, self.judge)


def parse_scores(reply: str) -> list[float] | None:
    """The two scores on the reply's first line ("8 7" or "8, 7"), or None when that line is anything else.

    LLaVA's parse_score rule, plus two checks it lacks: leading blank lines are skipped, and each score must lie in
    SCORE_RANGE (so "nan nan" or "80 70" is unparseable rather than averaged in).
    """
    lines = reply.strip().splitlines()
    parts = lines[0].replace(",", " ").split() if lines else []
    if len(parts) != 2:
        return None
    try:
        scores = [float(part) for part in parts]
    except ValueError:
        return None
    low, high = SCORE_RANGE
    return scores if all(low <= score <= high for score in scores) else None


def review(task: Task, judge: ChatJudge, attempts: int) -> Review:
    """Ask the judge until a reply parses or `attempts` replies were asked for; keep every raw reply."""
    assert attempts >= 1, f"attempts={attempts}: main() checks --attempts >= 1"
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt}]
    rejected: list[str] = []
    for attempt in range(1, attempts + 1):
        reply = judge.chat(messages)
        scores = parse_scores(reply)
        if scores is not None or attempt == attempts:
            break
        rejected.append(reply)
        # A greedy judge answers the same prompt with the same reply, so the retry quotes it back with the format.
        retry = {"role": "user", "content": RETRY_PROMPT.format(role=task.role)}
        messages = [*messages[:2], {"role": "assistant", "content": reply}, retry]
    return Review(
        question_id=task.question.question_id,
        category=task.question.rule,
        reference_model=task.reference_model,
        candidate_model=task.candidate_model,
        judge=task.judge,
        status="unparseable" if scores is None else "scored",
        scores=scores,
        attempts=attempt,
        reply=reply,
        rejected_replies=rejected,
        prompt_sha256=task.prompt_sha256,
    )


def summarize(reviews: list[Review]) -> list[dict]:
    """One row per (reference, candidate) pair and category, "all" first, then categories in name order.

    Over the scored reviews R of a category, with s_ref and s_cand the two scores of a review:
        reference = 10 * mean_R(s_ref)                       (mixtral_eval.py prints these two: "all 84.8 72.4")
        candidate = 10 * mean_R(s_cand)
        relative  = 100 * mean_R(s_cand) / mean_R(s_ref)     (LLaVA summarize_gpt_review.py)
    "all" pools the reviews of every category (a mean over reviews, not over category means). The means are not
    rounded before the ratio (LLaVA rounds them to 3 decimals, which can move the last printed digit). Unparseable
    reviews are counted in `unparseable` and left out of R; with R empty all three are None, as is `relative` when
    mean_R(s_ref) is 0.
    """
    groups: dict[tuple[str, str], dict[str, list[Review]]] = {}
    for item in reviews:
        by_category = groups.setdefault((item.reference_model, item.candidate_model), {"all": []})
        by_category["all"].append(item)
        by_category.setdefault(item.category, []).append(item)
    rows = []
    for (reference_model, candidate_model), by_category in groups.items():
        for category in ["all", *sorted(set(by_category) - {"all"})]:
            group = by_category[category]
            scored = [item.scores for item in group if item.scores is not None]
            reference = sum(s[0] for s in scored) / len(scored) if scored else None
            candidate = sum(s[1] for s in scored) / len(scored) if scored else None
            rows.append(
                {
                    "reference_model": reference_model,
                    "candidate_model": candidate_model,
                    "category": category,
                    "reference": None if reference is None else 10 * reference,
                    "candidate": None if candidate is None else 10 * candidate,
                    "relative": 100 * candidate / reference if scored and reference else None,
                    "scored": len(scored),
                    "unparseable": len(group) - len(scored),
                }
            )
    return rows


def format_table(rows: list[dict], judge: str) -> str:
    """The summary as text: per pair a header line, then `all 84.8 72.4 85.4 60 0`-style rows."""
    width = max(len("category"), *(len(row["category"]) for row in rows))
    lines: list[str] = []
    pair = None
    for row in rows:
        if (row["reference_model"], row["candidate_model"]) != pair:
            pair = (row["reference_model"], row["candidate_model"])
            lines += [f"judge {judge}: reference {pair[0]} vs candidate {pair[1]}"]
            lines += [f"{'category':<{width}}  reference  candidate  relative  scored  unparseable"]
        values = [("n/a" if row[key] is None else f"{row[key]:.1f}") for key in ("reference", "candidate", "relative")]
        lines.append(
            f"{row['category']:<{width}}  {values[0]:>9}  {values[1]:>9}  {values[2]:>8}  "
            f"{row['scored']:>6}  {row['unparseable']:>11}"
        )
    return "\n".join(lines)


def load_reviews(path: Path) -> dict[tuple[str, str, str, str], Review]:
    """The reviews of an earlier run's output json, by cache key; nothing when the file does not exist yet."""
    if not path.exists():
        return {}
    try:
        reviews = [Review(**record) for record in json.loads(path.read_text(encoding="utf-8"))["reviews"]]
    except (ValueError, KeyError, TypeError) as error:
        raise JudgeInputError(
            f"{path}: not a framelm judge review file ({error}); pass a new --output, or delete it to start over"
        ) from None
    return {item.key: item for item in reviews}


def write_output(path: Path, reviews: list[Review], summary: list[dict]) -> None:
    """Write the review json through a temporary file and a rename: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # same folder: os.replace is atomic only within one file system
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"summary": summary, "reviews": [asdict(item) for item in reviews]}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def fresh_reviews(tasks: list[Task], reviews: dict) -> list[Review]:
    """The reviews that answer these tasks as they are now (same prompt), in task order."""
    found = [(reviews.get(task.key), task) for task in tasks]
    return [item for item, task in found if item and item.prompt_sha256 == task.prompt_sha256]


def run_reviews(
    tasks: list[Task], pending: list[Task], judge: ChatJudge, reviews: dict, args: argparse.Namespace
) -> None:
    """Review `pending` into `reviews`, saving every `args.save_every` reviews and on the way out, error or not."""
    from tqdm import tqdm

    try:
        for done, task in enumerate(tqdm(pending, desc=f"judge {judge.name}", unit="review"), 1):
            reviews[task.key] = review(task, judge, args.attempts)
            if done % args.save_every == 0:
                write_output(args.output, list(reviews.values()), summarize(fresh_reviews(tasks, reviews)))
    finally:
        write_output(args.output, list(reviews.values()), summarize(fresh_reviews(tasks, reviews)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framelm judge",
        description=__doc__,
        epilog=FORMULA,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        default="OPENAI_API_KEY",
        metavar="VAR",
        help="Environment variable holding "
        "the API key: sent as a Bearer token, never logged or saved (unset: no Authorization header).",
    )
    http.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait for one judge reply.")
    http.add_argument(
        "--http-retries",
        type=int,
        default=5,
        metavar="N",
        help="Retries after HTTP 5xx/408/429, timeouts or lost connections (other errors stop at once).",
    )
    http.add_argument(
        "--http-backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="Wait before the first retry, doubled before each next one.",
    )
    local = parser.add_argument_group("local judge")
    local.add_argument(
        "--device", default="auto", help="Device for --judge-model (auto: cuda if available, else cpu)."
    )
    return parser


def _load_tasks(args, names: list[str], judge_name: str) -> list[Task]:
    for path in [args.question_file, args.context_file, args.rule_file, *args.responses_list]:
        if not path.is_file():
            raise JudgeInputError(f"{path}: no such file")
    rules = read_rules(args.rule_file)
    contexts = read_contexts(args.context_file)
    questions = read_questions(args.question_file, contexts, args.context_file, rules, args.rule_file)
    answers = {name: read_responses(path, questions) for name, path in zip(names, args.responses_list, strict=True)}
    return build_tasks(questions, rules, answers, judge_name)


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
    if min(args.attempts, args.save_every) < 1:
        parser.error("--attempts and --save-every must be at least 1")
    names = args.model_name_list or [path.stem for path in args.responses_list]
    if len(names) != len(args.responses_list) or len(set(names)) != len(names):
        parser.error(f"model names {names} must be unique, one per response file: pass --model-name-list")
    judge_name = args.judge_name or args.judge_model
    try:
        tasks = _load_tasks(args, names, judge_name)
        reviews = load_reviews(args.output)
    except JudgeInputError as error:
        print(f"framelm judge: error: {error}", file=sys.stderr)
        return 2

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
            run_reviews(tasks, pending, make_judge(args, url, judge_name), reviews, args)
        except (JudgeUnavailableError, KeyboardInterrupt) as error:
            reason = str(error) or "interrupted"
            print(
                f"framelm judge: {reason}\nthe reviews so far are in {args.output}: rerun to resume", file=sys.stderr
            )
            return 1
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
