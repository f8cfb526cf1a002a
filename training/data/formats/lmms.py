"""lmms-finetune records: an optional `system_prompt`, `image` and `video` each a path or a list, and
`conversations` alternating user and assistant under configurable role names (`user_key`, `assistant_key`).

The number of `<image>` placeholders must equal the number of images, and likewise for videos; records without
media are valid text-only samples.
"""

from __future__ import annotations

from framelm.training.data.formats.common import ReadOptions, problem, sample_with_media, text_messages
from framelm.training.data.sample import RecordProblem, Sample


def read_lmms(record, where: str, options: ReadOptions) -> Sample | RecordProblem:
    if not isinstance(record, dict):
        return problem(record, where, "not_an_object", "the record is not a JSON object", "make each record an object")
    messages = text_messages(record, where, record.get("conversations"), "from", "value")
    if isinstance(messages, RecordProblem):
        return messages
    return sample_with_media(record, where, options, messages, ("image", "video"), "system_prompt")
