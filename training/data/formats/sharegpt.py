"""ShareGPT records (Pai-Megatron-Patch, LLaMA-Factory) and transformers' content-list messages.

    {"conversations": [{"from": "human", "value": "<image>...<image>"}, ...], "images": [...], "videos": [...]}
    {"messages": [{"role": "user", "content": "<video><video>..."}, ...], "videos": [...]}
    {"messages": [{"role": "user", "content": [{"type": "image", "path": "a.jpg"}, {"type": "text", "text": "?"}]}]}
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}}, ...]}]}

`images` and `videos` are matched in order to the placeholders of their kind, several per turn if need be. A video
may be a file or a folder of frames (`clip/00001.jpg ...` with `clip.json` holding `{"fps": "2.0"}`), told apart by
the path having an extension, or a list of frame images. TRL's format is this one: `messages` with `{"type": "image"}`
items and `images` holding `datasets.Image` features, whose bytes are embedded (`media_refs.py`). In content lists, a
media item may name its own media (`path`, `url`, `image` or `video`, or OpenAI's `image_url` with a URL or data URL);
items without one take the next of the record's list. A `system` key or a first `system` message is the system
prompt.
"""

from __future__ import annotations

from framelm.training.data.formats.common import ReadOptions, problem, sample_with_media, text_messages
from framelm.training.data.formats.media_refs import MediaRef, NotMedia, media_list
from framelm.training.data.sample import (
    IMAGE_PLACEHOLDER,
    PLACEHOLDER_PATTERN,
    VIDEO_PLACEHOLDER,
    RecordProblem,
    Sample,
)

MEDIA_PATH_KEYS = ("path", "url", "image", "video")
# content item type -> media kind; `image_url` / `video_url` are OpenAI's (and vLLM's) items: {"url": ...} or a string
MEDIA_ITEM_TYPES = {"image": "image", "video": "video", "image_url": "image", "video_url": "video"}


def read_sharegpt(record, where: str, options: ReadOptions) -> Sample | RecordProblem:
    if not isinstance(record, dict):
        return problem(record, where, "not_an_object", "the record is not a JSON object", "make each record an object")
    inline: dict[int, tuple[str, MediaRef]] = {}
    turns = record.get("messages", record.get("conversations"))
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" not in turns[0]:
        messages = _content_messages(record, where, turns, inline)
    else:
        messages = text_messages(record, where, turns, "from", "value")
    if isinstance(messages, RecordProblem):
        return messages
    return sample_with_media(record, where, options, messages, ("images", "videos"), "system", inline=inline)


def _content_messages(record, where: str, turns, inline: dict) -> list[tuple[str, str]] | RecordProblem:
    """`messages` with string or content-list `content` -> (role, text) pairs; inline media paths go to `inline`."""
    if not all(isinstance(t, dict) for t in turns):
        return text_messages(record, where, turns, "role", "content")  # names the first turn that is not a dict
    messages, placeholders = [], 0
    for index, turn in enumerate(turns, start=1):
        content = turn.get("content")
        if isinstance(content, str):
            placeholders += len(PLACEHOLDER_PATTERN.findall(content))
            messages.append((turn.get("role"), content))
            continue
        if not isinstance(content, list):
            return problem(
                record, where, "bad_turn", f"turn {index} has no 'content' string or list",
                "give every message a 'role' and a 'content' (a string or a list of {'type': ...} items)",
            )  # fmt: skip
        pieces = []
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text" and isinstance(item.get("text"), str):
                pieces.append(item["text"])
                placeholders += len(PLACEHOLDER_PATTERN.findall(item["text"]))
            elif kind in MEDIA_ITEM_TYPES:
                media_kind = MEDIA_ITEM_TYPES[kind]
                ref = _inline_media(item, kind)
                if isinstance(ref, NotMedia):
                    return problem(record, where, "bad_media_path", f"turn {index}: {ref}",
                                   "give the item a path, URL, data URL or image/video feature")  # fmt: skip
                if ref is not None:
                    inline[placeholders] = (media_kind, ref)
                pieces.append(IMAGE_PLACEHOLDER if media_kind == "image" else VIDEO_PLACEHOLDER)
                placeholders += 1
            else:
                return problem(
                    record, where, "bad_turn", f"turn {index} has a content item that is not text, image or video: "
                    f"{str(item)[:60]}", "use {'type': 'text', 'text': ...}, {'type': 'image'} or {'type': 'video'}",
                )  # fmt: skip
        messages.append((turn.get("role"), "".join(pieces)))
    return messages


def _inline_media(item: dict, kind: str) -> MediaRef | NotMedia | None:
    """The media a content item names itself (a path, URL, data URL, feature or frame list); None when it names
    none and takes the next of the record's `images`/`videos`."""
    video = MEDIA_ITEM_TYPES[kind] == "video"
    if kind.endswith("_url"):
        value = item.get(kind)
        value = value.get("url") if isinstance(value, dict) else value
        if not (isinstance(value, str) and value):
            return NotMedia(f"a {kind!r} item needs {{'{kind}': {{'url': ...}}}}")
    else:
        value = next((item[k] for k in MEDIA_PATH_KEYS if item.get(k) not in (None, "")), None)
        if value is None:
            return None
    found = media_list([value] if video and isinstance(value, list) else value, kind, video)
    if isinstance(found, str):
        return NotMedia(found)
    if len(found) != 1:
        return NotMedia(f"a {kind!r} item names {len(found)} media; give one per item")
    return found[0]
