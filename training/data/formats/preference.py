"""Preference pairs (for `framelm dpo`): a prompt, a chosen answer and a rejected one, with the prompt's media.

    TRL, conversational:  {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}],
                           "chosen": [{"role": "assistant", "content": "red"}],
                           "rejected": [{"role": "assistant", "content": "blue"}], "images": ["a.png"]}
    TRL, plain:           {"prompt": "<video>\nWhich way?", "chosen": "left", "rejected": "right", "videos": ["v.mp4"]}
    TRL, implicit prompt: {"chosen": [user turn, assistant turn], "rejected": [the same user turn, another answer]}
    LLaMA-Factory:        {"conversations": [{"from": "human", "value": "<image>?"}],
                           "chosen": {"from": "gpt", "value": "red"}, "rejected": {"from": "gpt", "value": "blue"},
                           "images": ["a.png"]}

The prompt and its media are read by the ShareGPT reader (`sharegpt.py`: paths, URLs, bytes, `datasets.Image`
features, frame lists, content-list items, a system prompt), so every check and message is the one of SFT data. A plain
prompt becomes one user turn; answers are rendered through the chat template like any assistant turn.

A pair is stored as ONE normalized `Sample` whose turns are the prompt's, then the chosen answer, then the rejected
answer (two assistant turns in a row, which no other reader produces): `pair_samples` splits it back into the chosen
and the rejected conversations. The media are the prompt's, shared by both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from framelm.training.data.formats.common import ReadOptions, problem
from framelm.training.data.formats.sharegpt import read_sharegpt
from framelm.training.data.formats.shown import short_repr
from framelm.training.data.sample import PLACEHOLDER_PATTERN, RecordProblem, Sample, Turn

ANSWER_KEYS = ("chosen", "rejected")
_FIX_ANSWER = (
    "give 'chosen' and 'rejected' as a string, an assistant message ({'role': 'assistant', 'content': ...} or "
    "{'from': 'gpt', 'value': ...}) or a list holding one"
)


def is_preference_record(record) -> bool:
    """Whether a raw record is a preference pair (it has both `chosen` and `rejected`)."""
    return isinstance(record, dict) and "chosen" in record and "rejected" in record


def read_preference(record, where: str, options: ReadOptions) -> Sample | RecordProblem:
    if not isinstance(record, dict):
        return problem(record, where, "not_an_object", "the record is not a JSON object", "make each record an object")
    missing = [key for key in ANSWER_KEYS if key not in record]
    if missing:
        return problem(record, where, "missing_key", f"a preference record needs 'chosen' and 'rejected'; "
                       f"{' and '.join(map(repr, missing))} missing", _FIX_ANSWER)  # fmt: skip
    prompt = _prompt_turns(record)
    if isinstance(prompt, str):
        return problem(record, where, "bad_prompt", prompt,
                       "give the prompt as 'prompt' (a string or a list of messages), as 'conversations' or "
                       "'messages' (ShareGPT), or as the turns both 'chosen' and 'rejected' begin with")  # fmt: skip
    turns, answers = prompt
    for key, answer in zip(ANSWER_KEYS, answers, strict=True):
        if isinstance(answer, BadAnswer):
            return problem(record, where, "bad_answer", f"{key!r}: {answer.message}", _FIX_ANSWER)
        if PLACEHOLDER_PATTERN.search(answer):
            return problem(record, where, "media_in_assistant_turn", f"the {key} answer contains a media placeholder",
                           "move the <image>/<video> placeholder into the prompt")  # fmt: skip
    chosen, rejected = answers
    if chosen == rejected:
        return problem(record, where, "same_answers", "the chosen and the rejected answers are the same text",
                       "give the pair two different answers, or remove it")  # fmt: skip
    if not chosen.strip() or not rejected.strip():
        empty = "chosen" if not chosen.strip() else "rejected"
        return problem(record, where, "empty_answer", f"the {empty} answer is empty", "give it an answer, or remove "
                       "the pair")  # fmt: skip
    shared = {key: record[key] for key in ("id", "images", "videos", "system") if key in record}
    uses_from = bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]
    last = {"from": "gpt", "value": chosen} if uses_from else {"role": "assistant", "content": chosen}
    read = read_sharegpt(shared | {"conversations" if uses_from else "messages": [*turns, last]}, where, options)
    if isinstance(read, RecordProblem):
        return read
    return replace(read, turns=(*read.turns, Turn("assistant", rejected)))


def _prompt_turns(record: dict) -> tuple[list, tuple[str | BadAnswer, str | BadAnswer]] | str:
    """(prompt turns as written, (chosen text, rejected text)), or what is wrong with the prompt."""
    chosen, rejected = record["chosen"], record["rejected"]
    for key in ("conversations", "messages", "prompt"):
        if key in record:
            turns = record[key]
            if isinstance(turns, str):
                turns = [{"role": "user", "content": turns}]
            if not isinstance(turns, list) or not turns:
                return f"{key!r} is {short_repr(turns)}, not a string or a non-empty list of turns"
            return turns, (_answer_text(chosen), _answer_text(rejected))
    # TRL's implicit prompt: both conversations begin with the same turns and differ in their last one
    if not (isinstance(chosen, list) and isinstance(rejected, list) and len(chosen) > 1 and len(rejected) > 1):
        return "no 'prompt', 'conversations' or 'messages', and 'chosen'/'rejected' are not whole conversations"
    if chosen[:-1] != rejected[:-1]:
        return "'chosen' and 'rejected' (implicit prompt) do not begin with the same turns"
    return chosen[:-1], (_answer_text(chosen[-1:]), _answer_text(rejected[-1:]))


@dataclass(frozen=True)
class BadAnswer:
    message: str  # what is wrong with the answer as written


def _answer_text(value) -> str | BadAnswer:
    """An answer's text from a string, an assistant message (either spelling), a content list of text items, or a
    list holding one message; a `BadAnswer` saying what is wrong otherwise."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        role = value.get("role", value.get("from"))
        if role not in (None, "assistant", "gpt"):
            return BadAnswer(f"the answer is a {role!r} message, not an assistant one")
        value = value.get("content", value.get("value"))
    if isinstance(value, list) and all(isinstance(item, dict) and item.get("type") == "text" for item in value):
        value = "".join(str(item.get("text", "")) for item in value)
    if not isinstance(value, str):
        return BadAnswer(f"the answer is {short_repr(value)}, not text")
    return value


def is_pair(sample: Sample) -> bool:
    """Whether a normalized sample is a preference pair (its last two turns are both the assistant's)."""
    turns = sample.turns
    return len(turns) >= 3 and turns[-1].role == "assistant" and turns[-2].role == "assistant"


def pair_samples(sample: Sample) -> tuple[Sample, Sample]:
    """(chosen, rejected): the prompt with each answer, sharing the prompt's media."""
    if not is_pair(sample):
        raise ValueError(f"{sample.where}: not a preference pair (a prompt, then a chosen and a rejected answer)")
    prompt = sample.turns[:-2]
    return replace(sample, turns=(*prompt, sample.turns[-2])), replace(sample, turns=(*prompt, sample.turns[-1]))
