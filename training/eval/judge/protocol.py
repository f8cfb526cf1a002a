"""The LLaVA-Bench judging protocol: the judge prompt's system turn, score parsing, retries and the summary.

Pure functions over `Task`s and replies: `cli.py` wires them to files and to a judge backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from framelm.training.eval.judge.backends import ChatJudge
from framelm.training.eval.judge.inputs import Task

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
