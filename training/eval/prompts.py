"""The prompt and answer files of `framelm generate`, read line by line: one bad line is one reported prompt.

A prompt line is `{"question_id": 0, "text": "...", "image" | "video": path or list of paths, ...}` (NeVA's format;
other keys are kept as answer metadata). Lines are split and parsed by the training data's JSON reader
(`data/jsonio.py`: byte order marks, CR-only line ends, syntax errors with line and column, deep nesting). A prompt
whose question_id is missing, not a string or an integer, or already used ("1" and 1 are one id, as the judge
matches them) is reported and not answered, so an answer can always be matched to its question.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from framelm.training.data.formats.shown import short_repr
from framelm.training.data.jsonio import JSONRecordError, find_id, iter_raw_records, parse_record
from framelm.training.data.sample import RecordProblem

logger = logging.getLogger(__name__)

MEDIA_KEYS = ("image", "video")
FIX_ID = "give every prompt its own question_id, a string or an integer"


@dataclass(frozen=True)
class Prompt:
    """One usable prompt line."""

    record: dict  # the line as written
    key: str  # the question_id as text: how answers and the judge match it
    where: str  # "prompts.jsonl:3"


@dataclass
class PromptFile:
    prompts: list[Prompt]
    problems: list[RecordProblem]  # one per line that cannot be answered
    total: int  # lines read: len(prompts) + len(problems)


def question_key(value) -> str | None:
    """The question_id as text, or None when it is no id (a list, a bool, a float, null)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    return None


def read_prompts(path: str) -> PromptFile:
    """Every line of a prompt file as a `Prompt` or a `RecordProblem`; never raises on what a line holds."""
    prompts, problems, first_seen = [], [], {}
    for raw in iter_raw_records(path):
        where = f"{path}:{raw.line}"
        if raw.error:
            problems.append(RecordProblem(where, raw.error, "fix the JSON structure there", kind="json_syntax"))
            continue
        try:
            record = parse_record(raw.text, raw.line, raw.column)
        except JSONRecordError as err:
            problems.append(RecordProblem(where, err.problem, err.fix, id=find_id(raw.text), kind="json_syntax"))
            continue
        checked = check_prompt(record, where)
        if isinstance(checked, Prompt) and checked.key in first_seen:
            checked = RecordProblem(
                where, f"question_id {record['question_id']!r} is already used at {first_seen[checked.key]}", FIX_ID,
                id=checked.key, kind="duplicate_id",
            )  # fmt: skip
        if isinstance(checked, Prompt):
            first_seen[checked.key] = where
            prompts.append(checked)
        else:
            problems.append(checked)
    return PromptFile(prompts, problems, len(prompts) + len(problems))


def check_prompt(record, where: str) -> Prompt | RecordProblem:
    """A parsed prompt line -> a `Prompt`, or the problem naming the key that is wrong."""
    if not isinstance(record, dict):
        fix = 'make each line an object: {"question_id": 0, "text": "..."}'
        return RecordProblem(where, f"the line is a JSON {type(record).__name__}, not an object", fix,
                             kind="not_an_object")  # fmt: skip
    key = question_key(record.get("question_id"))
    shown_id = key or ""
    if key is None:
        what = "no question_id" if "question_id" not in record else f"question_id {short_repr(record['question_id'])}"
        return RecordProblem(where, f"{what}: an answer could not be matched to its question", FIX_ID,
                             kind="bad_question_id")  # fmt: skip
    if not isinstance(record.get("text"), str):
        what = "no 'text'" if "text" not in record else f"'text' is {short_repr(record['text'])}, not a string"
        return RecordProblem(where, what, "give the prompt its question as a string 'text'", id=shown_id,
                             kind="bad_text")  # fmt: skip
    for name in MEDIA_KEYS:
        value = record.get(name)
        paths = [value] if isinstance(value, str) else value
        if value is not None and not (isinstance(paths, list) and all(isinstance(p, str) and p for p in paths)):
            return RecordProblem(where, f"{name!r} is {short_repr(value)}, not a path or a list of paths",
                                 f"give {name!r} as a path string or a list of path strings", id=shown_id,
                                 kind="bad_media_path")  # fmt: skip
    return Prompt(record, key, where)


def media_lists(record: dict) -> dict[str, list[str]]:
    """{"images": [...], "videos": [...]} of a checked prompt record, paths as written."""
    lists = {}
    for name in MEDIA_KEYS:
        value = record.get(name)
        lists[f"{name}s"] = [] if value is None else [value] if isinstance(value, str) else list(value)
    return lists


def _is_answer_line(line: bytes) -> bool:
    try:
        answer = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(answer, dict) and question_key(answer.get("question_id")) is not None


def answered_keys(path: Path) -> set[str]:
    """Question ids (as text) already answered in an answer file. A torn last line (a run killed mid-write) is cut off
    so it is answered again; any other line that is not an answer is logged and left in place (its question, when it
    names one, counts as not answered)."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data if data.endswith(b"\n") or not data else data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data) and _is_answer_line(data[len(keep) :]):
        # a whole answer that only lacks its newline (an editor, `head -c`, another tool): kept, and ended so that
        # the next answer starts a line of its own
        with path.open("ab") as f:
            f.write(b"\n")
        keep = data + b"\n"
    elif len(keep) != len(data):
        logger.warning("%s ended in a torn line (interrupted run); it will be generated again", path)
        with path.open("r+b") as f:
            f.truncate(len(keep))
    keys = set()
    for number, line in enumerate(keep.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            answer = json.loads(line)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            answer = None
        key = question_key(answer.get("question_id")) if isinstance(answer, dict) else None
        if key is None:
            logger.warning("%s:%d is not an answer line with a question_id; left in place, not counted as an answer "
                           "(delete it once the rerun has answered its question)", path, number)  # fmt: skip
            continue
        keys.add(key)
    return keys
