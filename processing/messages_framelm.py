"""Text turns with `<image>`/`<video>` placeholders plus ordered media -> transformers content-list messages.

The one message builder of FrameLM: training (`Sample.to_messages`), `framelm generate`, the demo, the processor's
`build_messages` and the pipelines all call `build_messages`, so a record and a prompt become model inputs the same
way. Pure standard library (Hub payload).

Media are matched to the placeholders of their kind in order of appearance: the n-th `<video>` takes the n-th video.
A prompt without any placeholder (NeVA prompt files carry text and media separately) gets all its media in its first
user turn: before the text (`left`, LLaVA style) or after it (`right`, NeVA's `insert_media_token=right`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

INSERT_MEDIA_CHOICES = ("left", "right")


def build_messages(
    turns: Sequence[tuple[str, str]],
    images: Sequence = (),
    videos: Sequence = (),
    *,
    image_token: str,
    video_token: str,
    system_prompt: str | None = None,
    insert_media_token: str = "left",
) -> list[dict]:
    """`turns`: (role, text) in order. `images`/`videos`: paths, URLs or decoded media, in order of use.

    Returns `[{"role": ..., "content": [{"type": "text", "text": ...}, {"type": "image", "image": ...}, ...]}]`, a
    system message first when `system_prompt` is set; raises `ValueError` when placeholders and media disagree.
    """
    if insert_media_token not in INSERT_MEDIA_CHOICES:
        raise ValueError(f"insert_media_token={insert_media_token!r}: choose one of {INSERT_MEDIA_CHOICES}")
    queues = {"image": iter(images), "video": iter(videos)}
    kinds = {image_token: "image", video_token: "video"}
    pattern = re.compile(f"({re.escape(image_token)}|{re.escape(video_token)})")
    messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}] if system_prompt else []
    placeholders = 0
    for role, text in turns:
        content = []
        for piece in pattern.split(text):
            kind = kinds.get(piece)
            if kind is None:
                content += [{"type": "text", "text": piece}] if piece else []
                continue
            placeholders += 1
            item = next(queues[kind], None)
            if item is None:
                raise ValueError(f"the prompt has more {piece} placeholders than {kind}s given: {text!r}")
            content.append({"type": kind, kind: item})
        messages.append({"role": role, "content": content})
    leftover = [{"type": kind, kind: item} for kind, queue in queues.items() for item in queue]
    if leftover and placeholders:
        raise ValueError(f"the prompt has fewer placeholders than media ({len(leftover)} left over): {turns!r}")
    if leftover:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise ValueError("media were given but the conversation has no user turn to put them in")
        content = first_user["content"]
        first_user["content"] = leftover + content if insert_media_token == "left" else content + leftover
    return messages
