"""Which reader fits a file, decided from its first records when the user does not say (`--format auto`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from framelm.training.data.formats.common import DEFAULT_ASSISTANT_ROLES, DEFAULT_USER_ROLES, SYSTEM_ROLE, ReadOptions
from framelm.training.data.formats.llava import read_llava
from framelm.training.data.formats.lmms import read_lmms
from framelm.training.data.formats.preference import is_preference_record, read_preference
from framelm.training.data.formats.sharegpt import read_sharegpt
from framelm.training.data.sample import RecordProblem, Sample

Reader = Callable[[object, str, ReadOptions], "Sample | RecordProblem"]
READERS: dict[str, Reader] = {
    "llava": read_llava, "lmms": read_lmms, "sharegpt": read_sharegpt, "preference": read_preference
}  # fmt: skip
FORMATS = ("auto", *READERS)
_LLAVA_ROLES = {*DEFAULT_USER_ROLES, *DEFAULT_ASSISTANT_ROLES, SYSTEM_ROLE}


def detect_format(records: Iterable) -> str:
    """`preference` if a record has `chosen` and `rejected` (`framelm dpo` data); `sharegpt` if one has `messages`,
    `images` or `videos`; `lmms` if one has a `system_prompt`, a list of
    media paths or role names other than LLaVA's; `llava` otherwise (also when no record could be parsed)."""
    found = "llava"
    for record in records:
        if not isinstance(record, dict):
            continue
        if is_preference_record(record):
            return "preference"
        if "messages" in record or "images" in record or "videos" in record:
            return "sharegpt"
        turns = record.get("conversations")
        turns = turns if isinstance(turns, list) else []
        roles = {t["from"] for t in turns if isinstance(t, dict) and isinstance(t.get("from"), str)}
        if (
            "system_prompt" in record
            or isinstance(record.get("image"), list)
            or isinstance(record.get("video"), list)
            or not roles <= _LLAVA_ROLES
        ):
            found = "lmms"
    return found


def get_reader(name: str) -> Reader:
    if name not in READERS:
        raise ValueError(f"format {name!r} is not supported; choose one of {list(FORMATS)}")
    return READERS[name]
