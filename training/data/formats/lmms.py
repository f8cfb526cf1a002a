"""lmms-finetune records: an optional `system_prompt`, `image` and `video` each a path or a list, and
`conversations` alternating user and assistant under configurable role names (`user_key`, `assistant_key`).

The number of `<image>` placeholders must equal the number of images, and likewise for videos; records without
media are valid text-only samples.
"""

from __future__ import annotations

from framelm.training.data.formats.common import ReadOptions, as_path_list, build_sample, problem, text_messages
from framelm.training.data.sample import RecordProblem, Sample


def read_lmms(record, where: str, options: ReadOptions) -> Sample | RecordProblem:
    if not isinstance(record, dict):
        return problem(record, where, "not_an_object", "the record is not a JSON object", "make each record an object")
    messages = text_messages(record, where, record.get("conversations"), "from", "value")
    if isinstance(messages, RecordProblem):
        return messages
    images, videos = as_path_list(record.get("image"), "image"), as_path_list(record.get("video"), "video")
    for paths in (images, videos):
        if isinstance(paths, str):
            return problem(record, where, "bad_media_path", paths, "give a path string or a list of path strings")
    system = record.get("system_prompt")
    if system is not None and not isinstance(system, str):
        return problem(record, where, "bad_turn", "'system_prompt' is not a string", "make it a string or remove it")
    return build_sample(record, where, options, messages, images, videos, system=system or "")
