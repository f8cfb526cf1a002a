"""The inputs of `framelm judge`: question, context, rule and response files, read and paired into judge prompts.

Every reader raises `JudgeInputError` naming the file (and line), what is wrong and how to fix it: a judge run that
silently paired the wrong texts would report scores for answers nobody gave.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class JudgeInputError(ValueError):
    """An input file the run cannot use; the message names the file (and line), what is wrong and the fix."""


@dataclass(frozen=True)
class Question:
    """One question, with what the judge reads besides the answers."""

    question_id: int | str
    text: str
    rule: str  # rule.json key: the category, prefixed with "llava_bench_" as LLaVA does ("conv" -> "llava_bench_conv")
    context: str  # the captions of the question's image, one per line


@dataclass(frozen=True)
class Task:
    """One review to get: a question, the reference answer and one candidate answer, rendered as the judge prompt."""

    question: Question
    reference_model: str
    candidate_model: str
    judge: str
    role: str  # the rule's name for the answerers ("Assistant"), used again when a reply has to be asked for again
    prompt: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (str(self.question.question_id), self.reference_model, self.candidate_model, self.judge)

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line of a jsonl file."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise JudgeInputError(
                    f"{path}:{line_no}: not valid JSON ({error.msg}); write one object per line"
                ) from None
            if not isinstance(record, dict):
                raise JudgeInputError(f"{path}:{line_no}: expected a JSON object, found {type(record).__name__}")
            records.append((line_no, record))
    return records


def read_contexts(path: Path) -> dict[str, str]:
    """llava-bench `context.jsonl`: image name -> its captions, one per line."""
    contexts = {}
    for line_no, record in read_jsonl(path):
        media, caption = record.get("image", record.get("video")), record.get("caption")
        if media is None or caption is None:
            raise JudgeInputError(
                f"{path}:{line_no}: a context needs 'image' (or 'video') and 'caption'; found keys {sorted(record)}"
            )
        contexts[str(media)] = "\n".join(map(str, caption)) if isinstance(caption, list) else str(caption)
    return contexts


def read_rules(path: Path) -> dict[str, dict[str, str]]:
    """LLaVA `rule.json`: rule key -> {"role": "Assistant", "prompt": "..."}."""
    try:
        rules = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise JudgeInputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(rules, dict):
        raise JudgeInputError(f"{path}: expected an object of rules keyed by category, as LLaVA's rule.json")
    for key, rule in rules.items():
        if not (isinstance(rule, dict) and isinstance(rule.get("role"), str) and isinstance(rule.get("prompt"), str)):
            raise JudgeInputError(f"{path}: rule {key!r} needs string fields 'role' and 'prompt'")
    return rules


def read_questions(path: Path, contexts: dict[str, str], context_path: Path, rules: dict, rule_path: Path):
    """The questions in file order, each with its rule key and the captions of its image."""
    questions: list[Question] = []
    seen: set[str] = set()
    for line_no, record in read_jsonl(path):
        where = f"{path}:{line_no}"
        media = record.get("image", record.get("video"))
        missing = [key for key in ("question_id", "text", "category") if key not in record]
        missing += ["image"] if media is None else []
        if missing:
            raise JudgeInputError(f"{where}: missing {missing}; a question needs question_id, text, category, image")
        question_id, category = record["question_id"], str(record["category"])
        if str(question_id) in seen:
            raise JudgeInputError(
                f"{where}: question_id {question_id!r} appears twice; give every question its own id"
            )
        seen.add(str(question_id))
        # LLaVA's rule.json holds both "llava_bench_conv" and "conv" (its COCO review prompt, with bounding boxes):
        # llava-bench questions must get the first, so the prefixed key wins and the bare category is the fallback.
        rule = next((key for key in (f"llava_bench_{category}", category) if key in rules), None)
        if rule is None:
            raise JudgeInputError(
                f"{where}: category {category!r} has no rule: neither 'llava_bench_{category}' nor {category!r} is "
                f"in {rule_path} (it has {sorted(rules)}); add that rule or fix the category"
            )
        if str(media) not in contexts:
            raise JudgeInputError(
                f"{where}: {media!r} has no caption in {context_path}; add a line "
                f'{{"image": "{media}", "caption": [...]}} there'
            )
        questions.append(Question(question_id, str(record["text"]), rule, contexts[str(media)]))
    if not questions:
        raise JudgeInputError(f"{path}: no questions")
    return questions


def read_responses(path: Path, questions: list[Question]) -> dict[str, str]:
    """Question id (as text) -> answer, from llava-bench answers or NeMo responses, matched by id, not by line."""
    texts: dict[str, str] = {}
    for line_no, record in read_jsonl(path):
        if "response_id" in record and "response" in record:
            response_id, text = record["response_id"], record["response"]
        elif "question_id" in record and "text" in record:
            response_id, text = record["question_id"], record["text"]
        else:
            raise JudgeInputError(
                f"{path}:{line_no}: a response needs 'question_id' and 'text' (llava-bench answers) or "
                f"'response_id' and 'response' (NeMo responses); found keys {sorted(record)}"
            )
        if not isinstance(text, str):
            raise JudgeInputError(f"{path}:{line_no}: the answer must be a string, found {type(text).__name__}")
        if str(response_id) in texts:
            raise JudgeInputError(f"{path}:{line_no}: a second answer to question {response_id!r}; keep one")
        texts[str(response_id)] = text
    missing = [question.question_id for question in questions if str(question.question_id) not in texts]
    if missing:
        raise JudgeInputError(
            f"{path}: no answer to {len(missing)} of {len(questions)} questions (question ids {missing[:10]}); "
            "answer every question, or judge a question file holding only the answered ones"
        )
    extra = len(texts) - len(questions)
    if extra:
        logger.warning("%s: %d answers match no question in the question file and are not judged", path, extra)
    return texts


def build_prompt(question: Question, role: str, instruction: str, reference: str, candidate: str) -> str:
    """The judge prompt, character for character as LLaVA's eval_gpt_review_bench.py builds it."""
    return (
        f"[Context]\n{question.context}\n\n"
        f"[Question]\n{question.text}\n\n"
        f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{candidate}\n\n[End of {role} 2]\n\n"
        f"[System]\n{instruction}\n\n"
    )


def build_tasks(questions, rules, answers: dict[str, dict[str, str]], judge: str) -> list[Task]:
    """Every (question, candidate) review; `answers` maps model name -> answers, the reference model first."""
    reference_model, *candidates = answers
    tasks = []
    for candidate in candidates:
        for question in questions:
            rule, key = rules[question.rule], str(question.question_id)
            prompt = build_prompt(
                question, rule["role"], rule["prompt"], answers[reference_model][key], answers[candidate][key]
            )
            tasks.append(Task(question, reference_model, candidate, judge, rule["role"], prompt))
    return tasks
