"""What the readers share: options, role names, media path resolution and the placeholder-to-media matching.

Each reader (`llava.py`, `lmms.py`, `sharegpt.py`) turns its own record shape into (role, text) pairs and media
lists, then calls `build_sample`, so that the checks (role order, placeholder counts, paths escaping their root) and
their wording are the same for every format.
"""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass

from framelm.training.data.formats.media_refs import MediaRef, media_list, resolve_embedded
from framelm.training.data.formats.shown import short_repr
from framelm.training.data.paths import OutsideRootError, RefusedReference, resolve_media_path
from framelm.training.data.sample import (
    IMAGE_PLACEHOLDER,
    PLACEHOLDER_PATTERN,
    VIDEO_PLACEHOLDER,
    Media,
    RecordProblem,
    Sample,
    Turn,
)

DEFAULT_USER_ROLES = ("human", "user")
DEFAULT_ASSISTANT_ROLES = ("gpt", "assistant")
SYSTEM_ROLE = "system"


@dataclass(frozen=True)
class ReadOptions:
    """How a reader resolves paths and role names; one per data file (a mixture gives each entry its own)."""

    image_folder: str | None = None  # root of image paths
    video_folder: str | None = None  # root of video paths and frame folders
    base_dir: str = ""  # the data file's folder: the root when no folder is given ("" = the working directory)
    user_key: str | None = None  # role name of user turns; None accepts "human" and "user"
    assistant_key: str | None = None  # role name of assistant turns; None accepts "gpt" and "assistant"
    allow_outside_root: bool = False  # accept paths whose real location is outside their root folder
    source: str = ""  # dataset name stored in every sample
    # a prompt to answer (`framelm generate`), not a training record: the conversation may end with a user turn
    ends_with_user: bool = False

    def role_names(self) -> dict[str, str]:
        """Role as written -> "user" | "assistant" | "system" (shared between calls: do not modify)."""
        return _role_names(self.user_key, self.assistant_key)


@functools.cache
def _role_names(user_key: str | None, assistant_key: str | None) -> dict[str, str]:
    users = (user_key,) if user_key else DEFAULT_USER_ROLES
    assistants = (assistant_key,) if assistant_key else DEFAULT_ASSISTANT_ROLES
    return {SYSTEM_ROLE: SYSTEM_ROLE} | dict.fromkeys(users, "user") | dict.fromkeys(assistants, "assistant")


def record_id(record) -> str:
    """The record's `id` as text; an id that is not a string or a number is shown shortened, for the report."""
    value = record.get("id") if isinstance(record, dict) else None
    if value is None:
        return ""
    return str(value) if isinstance(value, (str, int, float)) else short_repr(value)


def problem(record, where: str, kind: str, text: str, fix: str) -> RecordProblem:
    return RecordProblem(where=where, problem=text, fix=fix, id=record_id(record), kind=kind)


def as_path_list(value, key: str, video: bool = False) -> list[MediaRef] | str:
    """A media field (absent, one item or a list: paths, URLs, or embedded media, see `media_refs.py`) as a list; an
    error message when it holds something else."""
    return media_list(value, key, video)


def video_kind(path: str) -> str:
    """A video path without an extension (or ending in '/') is a folder of extracted frames."""
    if path.endswith("/"):
        return "frames"
    return "video" if posixpath.splitext(path)[1] else "frames"


def sample_with_media(
    record: dict,
    where: str,
    options: ReadOptions,
    messages: list[tuple[str, str]],
    media_keys: tuple[str, str],
    system_key: str,
    inline: dict[int, tuple[str, str]] | None = None,
) -> Sample | RecordProblem:
    """`build_sample` with the media lists under `media_keys` (images, videos) and the system prompt under
    `system_key`, each checked for its type first."""
    images, videos = (as_path_list(record.get(key), key, video=i == 1) for i, key in enumerate(media_keys))
    for paths in (images, videos):
        if isinstance(paths, str):
            return problem(record, where, "bad_media_path", paths, "give a path string or a list of path strings")
    system = record.get(system_key)
    if system is not None and not isinstance(system, str):
        return problem(record, where, "bad_turn", f"{system_key!r} is not a string", "make it a string or remove it")
    return build_sample(record, where, options, messages, images, videos, system=system or "", inline=inline)


def build_sample(
    record,
    where: str,
    options: ReadOptions,
    messages: list[tuple[str, str]],
    images: list[MediaRef],
    videos: list[MediaRef],
    system: str = "",
    inline: dict[int, tuple[str, MediaRef]] | None = None,
) -> Sample | RecordProblem:
    """Check roles, order and placeholder counts, match placeholders to media in order and build the Sample.

    One pass over the turns does the role and placeholder checks: this runs once per record of million-record files.

    Args:
        messages: (role as written in the record, text with placeholders), in order.
        images, videos: paths (or embedded media) from the record's media lists, matched in order to the
            placeholders of their kind.
        inline: placeholder index -> (kind, path) for media named inside a message (transformers content lists).
    """
    roles = options.role_names()
    turns: list[Turn] = []
    expected, n_image, n_video = "user", 0, 0
    for index, (raw_role, text) in enumerate(messages, start=1):
        role = roles.get(raw_role) if isinstance(raw_role, str) else None
        if role != expected:
            if role is None:
                known = ", ".join(sorted(roles))
                return problem(
                    record, where, "unknown_role",
                    f"turn {index} has role {short_repr(raw_role)}; known roles: {known}",
                    "rename the role, or pass --user-key/--assistant-key with the role names your data uses",
                )  # fmt: skip
            if role == SYSTEM_ROLE:
                if turns or system:
                    return problem(
                        record, where, "role_order", f"turn {index} is a system turn after the conversation started",
                        "put the system prompt first (or in the record's system prompt field), once",
                    )  # fmt: skip
                system = text
                continue
            return problem(
                record, where, "role_order",
                f"turn {index} is from the {role} but the {expected} should speak "
                + ("first" if not turns else f"after turn {index - 1}"),
                "make the conversation start with the user and alternate user/assistant",
            )  # fmt: skip
        if "<" in text:  # most texts hold no placeholder: skip counting them
            i, v = text.count(IMAGE_PLACEHOLDER), text.count(VIDEO_PLACEHOLDER)
            if (i or v) and role == "assistant":
                return problem(
                    record, where, "media_in_assistant_turn", f"turn {index} (assistant) contains a media placeholder",
                    "move the <image>/<video> placeholder into a user turn",
                )  # fmt: skip
            n_image, n_video = n_image + i, n_video + v
        turns.append(Turn(role, text))
        expected = "assistant" if role == "user" else "user"
    if not turns:
        return problem(record, where, "empty_conversation", "the conversation has no turns", "add the turns")
    if PLACEHOLDER_PATTERN.search(system):  # the template renders it as text, then the processor finds a placeholder
        return problem(
            record, where, "media_in_system_prompt", "the system prompt contains a media placeholder",
            "move the <image>/<video> placeholder into a user turn",
        )  # fmt: skip
    if expected == "assistant" and not options.ends_with_user:
        return problem(
            record, where, "role_order", "the conversation ends with a user turn that has no answer",
            "add the assistant's answer or remove the last user turn",
        )  # fmt: skip
    media = _match_media(record, where, options, turns, images, videos, inline or {}, n_image, n_video)
    if isinstance(media, RecordProblem):
        return media
    return Sample(
        turns=tuple(turns), media=media, system=system, id=record_id(record), source=options.source, where=where
    )


def _match_media(
    record, where, options, turns, images, videos, inline, n_image: int, n_video: int
) -> tuple[Media, ...] | RecordProblem:
    """The record's media in placeholder order, resolved; `n_image`/`n_video` are the placeholders counted."""
    if inline:
        inline_image = sum(1 for kind, _ in inline.values() if kind == "image")
        n_image, n_video = n_image - inline_image, n_video - (len(inline) - inline_image)
    for kind, found, paths in (("image", n_image, images), ("video", n_video, videos)):
        if found != len(paths):
            return problem(
                record, where, "placeholder_count",
                f"{found} <{kind}> placeholder{'s' * (found != 1)} but {len(paths)} {kind} path"
                f"{'s' * (len(paths) != 1)}",
                f"make the number of <{kind}> placeholders in the conversation equal the number of {kind} paths",
            )  # fmt: skip
    if not images and not videos and not inline:
        return ()
    if not inline and (not images or not videos):  # one kind only: the order of the list is the order of use
        ordered = [("image", p) for p in images] if images else [("video", p) for p in videos]
    else:
        queues = {"image": iter(images), "video": iter(videos)}
        marks = (m.group() for t in turns for m in PLACEHOLDER_PATTERN.finditer(t.text))
        ordered = []
        for index, mark in enumerate(marks):
            kind = "image" if mark == IMAGE_PLACEHOLDER else "video"
            ordered.append(inline[index] if index in inline else (kind, next(queues[kind])))
    media = []
    for kind, path in ordered:
        root = (options.image_folder if kind == "image" else options.video_folder) or options.base_dir
        try:
            if isinstance(path, Media):  # embedded (bytes or a frame list): nothing to resolve but frame paths
                media.append(resolve_embedded(path, root, options.allow_outside_root))
                continue
            resolved = resolve_media_path(path, root, options.allow_outside_root)
        except OutsideRootError as err:
            folder = "--image-folder" if kind == "image" else "--video-folder"
            return problem(
                record, where, "outside_root", f"{kind} {err}",
                f"move the file under the root ({folder}, default: the data file's folder), fix the path, or pass "
                "--allow-outside-root",
            )  # fmt: skip
        except RefusedReference as err:  # a scheme not allowed, a malformed URL, a device: the policy of paths.py
            return problem(record, where, err.kind, f"{kind} {err}", err.fix)
        media.append(Media("image" if kind == "image" else video_kind(path), resolved))
    return tuple(media)


def text_messages(record, where: str, turns, role_key: str, text_key: str) -> list[tuple[str, str]] | RecordProblem:
    """[(role, text)] from a list of {role_key: ..., text_key: "..."} dicts, or the problem with the first bad turn."""
    if not isinstance(turns, list):
        return problem(
            record, where, "missing_key", f"no list of turns (found {short_repr(turns)})",
            f"add a list of {{{role_key!r}: ..., {text_key!r}: ...}} turns",
        )  # fmt: skip
    messages = []
    for index, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or not isinstance(turn.get(text_key), str):
            return problem(
                record, where, "bad_turn",
                f"turn {index} is {short_repr(turn)}, not {{{role_key!r}, {text_key!r}: text}}",
                f"give every turn a {role_key!r} and a string {text_key!r}",
            )  # fmt: skip
        messages.append((turn.get(role_key), turn[text_key]))
    return messages
