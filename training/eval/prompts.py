"""The prompt and answer files of `framelm generate`, read line by line: one bad line is one reported prompt.

A prompt file holds one of two formats, told apart by its records (a file mixing them, or holding neither, is an
`InputError` before any prompt is checked):

- NeVA's: `{"question_id": 0, "text": "...", "image" | "video": path or list of paths, ...}`; other keys are kept
  as answer metadata.
- Messages (TRL's conversational format, what `framelm train` reads): `{"id": 0, "messages": [{"role", "content"},
  ...], "images": [...], "videos": [...]}`, content a string with `<image>`/`<video>` placeholders or a list of
  typed parts. The record is read by the training reader itself (`data/formats/sharegpt.py`), so its placeholder,
  role and path checks and their messages are training's. The whole conversation is the context; the model answers
  its last user turn. A training record (last turn from the assistant) is asked the turn before it, and that last
  assistant turn becomes the answer's `reference`, for `framelm judge` or a reader to compare.

Lines are split and parsed by the training data's JSON reader (`data/jsonio.py`: byte order marks, CR-only line ends,
syntax errors with line and column, deep nesting). A prompt whose id (`question_id`, or a messages record's `id`) is
missing, not a string or an integer, or already used ("1" and 1 are one id, as the judge matches them) is reported
and not answered, so an answer can always be matched to its question.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from framelm.training.data.formats.common import ReadOptions
from framelm.training.data.formats.sharegpt import read_sharegpt
from framelm.training.data.formats.shown import short_repr
from framelm.training.data.jsonio import JSONRecordError, find_id, iter_raw_records, parse_record
from framelm.training.data.sample import RecordProblem, Sample
from framelm.training.errors import InputError

logger = logging.getLogger(__name__)

MEDIA_KEYS = ("image", "video")
FIX_ID = "give every prompt its own question_id (or a messages record its own id), a string or an integer"
NEVA, MESSAGES = "neva", "messages"
OUTSIDE_ROOT_FIX = (
    "move the file under --media-base-path (default: the prompt file's folder), or pass --allow-outside-root"
)


@dataclass(frozen=True)
class Prompt:
    """One usable prompt line."""

    record: dict  # the line as written
    key: str  # the question_id as text: how answers and the judge match it
    where: str  # "prompts.jsonl:3"
    sample: Sample | None = None  # a messages record, read by the training reader: the conversation to answer
    reference: str | None = None  # a training record's last assistant turn, which the model is asked to give


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


def read_prompts(path: str, media_root: str | None = None, allow_outside_root: bool = False) -> PromptFile:
    """Every line of a prompt file as a `Prompt` or a `RecordProblem`; never raises on what a line holds, only on a
    file whose format is unclear (`prompt_format`). Messages records resolve their media here, against `media_root`
    (default: the file's folder), by the training data's path rule."""
    parsed = []  # (where, record) or (where, RecordProblem)
    for raw in iter_raw_records(path):
        where = f"{path}:{raw.line}"
        if raw.error:
            parsed.append((where, RecordProblem(where, raw.error, "fix the JSON structure there", kind="json_syntax")))
            continue
        try:
            parsed.append((where, parse_record(raw.text, raw.line, raw.column)))
        except JSONRecordError as err:
            kind = "json_syntax"
            parsed.append((where, RecordProblem(where, err.problem, err.fix, id=find_id(raw.text), kind=kind)))
    root = os.path.dirname(path) if media_root is None else media_root
    options = ReadOptions(base_dir=root, allow_outside_root=allow_outside_root, ends_with_user=True)
    is_messages = prompt_format(path, parsed) == MESSAGES
    check = functools.partial(check_messages_prompt, options=options) if is_messages else check_prompt
    prompts, problems, first_seen = [], [], {}
    for where, record in parsed:
        if isinstance(record, RecordProblem):
            problems.append(record)
            continue
        checked = check(record, where)
        if isinstance(checked, Prompt) and checked.key in first_seen:
            name = "question_id" if "question_id" in record else "id"
            checked = RecordProblem(
                where, f"{name} {record[name]!r} is already used at {first_seen[checked.key]}", FIX_ID,
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


def prompt_format(path: str, parsed: list[tuple[str, object]]) -> str:
    """`MESSAGES` when the file's records have `messages`, `NEVA` when they have `text`; an `InputError` naming a
    line of each when it mixes them, or when no record has either (a file of unparseable lines is NEVA: each line is
    then its own reported problem)."""
    first = {}
    for where, record in parsed:
        if isinstance(record, dict):
            kind = MESSAGES if "messages" in record else NEVA if "text" in record else None
            if kind:
                first.setdefault(kind, where)
    if len(first) == 2:
        raise InputError(
            f"--prompt-file {path} mixes two formats: messages records ({first[MESSAGES]}) and NeVA records with "
            f"'text' ({first[NEVA]})", "write each format to a file of its own",
        )  # fmt: skip
    if not first and any(isinstance(record, dict) for _, record in parsed):
        raise InputError(
            f"--prompt-file {path}: no record has 'messages' (the training format) or 'text' (NeVA's prompt format)",
            'write prompts as {"question_id": 0, "text": "..."} or {"id": 0, "messages": [{"role": "user", '
            '"content": "..."}]}',
        )  # fmt: skip
    return next(iter(first), NEVA)


def check_messages_prompt(record, where: str, options: ReadOptions) -> Prompt | RecordProblem:
    """A parsed messages record -> a `Prompt` holding the conversation to answer (read, checked and its media
    resolved by the training reader), or that reader's problem. A record ending with the assistant is asked the turn
    before, its last turn kept as the reference."""
    key = question_key(record.get("question_id", record.get("id"))) if isinstance(record, dict) else None
    read = read_sharegpt(record, where, options)
    if isinstance(read, RecordProblem):
        fix = OUTSIDE_ROOT_FIX if read.kind == "outside_root" else read.fix
        return replace(read, id=read.id or key or "", fix=fix)
    if key is None:
        name = "question_id" if "question_id" in record else "id"
        what = f"{name} {short_repr(record[name])}" if name in record else "no question_id or id"
        return RecordProblem(where, f"{what}: an answer could not be matched to its question", FIX_ID,
                             kind="bad_question_id")  # fmt: skip
    reference = None
    if read.turns[-1].role == "assistant":
        reference, read = read.turns[-1].text, read.truncated(len(read.turns) - 1)
    return Prompt(record, key, where, sample=read, reference=reference)


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
