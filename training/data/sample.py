"""The one normalized shape every reader produces, and the problem record for what cannot be read.

Every source format (LLaVA/NeVA, lmms-finetune, ShareGPT, mixture rows) is turned into a `Sample` so that the
collator, the validator and the statistics know one schema only. Media stays on disk as paths: decoding happens
lazily in DataLoader workers, which keeps converting a million records cheap. Media that came inside the data (a
`datasets.Image` feature's bytes, a data URL, a WebDataset shard member) travel as their bytes instead (`embedded.py`),
and nothing in the length rule looks at them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import datasets

from framelm.processing.chat_template_framelm import IMAGE_TOKEN as IMAGE_PLACEHOLDER
from framelm.processing.chat_template_framelm import VIDEO_TOKEN as VIDEO_PLACEHOLDER  # also marks frame folders
from framelm.processing.messages_framelm import build_messages
from framelm.training.data.embedded import MessagesWithFiles, temporary_video
from framelm.training.data.media import Media

PLACEHOLDER_PATTERN = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)})")
MEDIA_KINDS = ("image", "video", "frames")
ROLES = ("user", "assistant")

SAMPLE_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),  # the record's own id ("" when it has none)
        "source": datasets.Value("string"),  # dataset name (mixture entry) or file name
        "where": datasets.Value("string"),  # "train.jsonl:17": file and 1-based line (or array index) of the record
        "system": datasets.Value("string"),  # system prompt, "" when none
        # ordered turns; placeholders in `text` appear in the same order as `media`
        "turns": datasets.List({"role": datasets.Value("string"), "text": datasets.Value("string")}),
        # ordered media references: kind is image | video | frames, path is resolved against its root folder
        "media": datasets.List(
            {
                "kind": datasets.Value("string"),
                "path": datasets.Value("string"),  # for embedded media: the name it had, for messages only
                "bytes": datasets.Value("binary"),  # an embedded image or video file; null: read `path`
                # a video given as its frame images (paths or bytes) rather than a file or frame folder
                "frames": datasets.List({"path": datasets.Value("string"), "bytes": datasets.Value("binary")}),
                "fps": datasets.Value("float64"),  # frame rate of `frames` when known
            }
        ),
    }
)


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    text: str


@dataclass(frozen=True)
class Sample:
    turns: tuple[Turn, ...]
    media: tuple[Media, ...] = ()
    system: str = ""
    id: str = ""
    source: str = ""
    where: str = ""

    def to_row(self) -> dict:
        """The row stored in a `datasets.Dataset` with `SAMPLE_FEATURES` (built by hand: `asdict` is 10x slower)."""
        return {
            "id": self.id,
            "source": self.source,
            "where": self.where,
            "system": self.system,
            "turns": [{"role": t.role, "text": t.text} for t in self.turns],
            "media": [m.to_row() for m in self.media],
        }

    def to_messages(self, media: bool = True) -> list[dict]:
        """transformers content-list messages, by the one builder training and serving share
        (`processing/messages_framelm.py`): each placeholder becomes an `{"type": "image"|"video", ...}` item.

        Frame folders are videos to the model, so they become video items too; the processor's video loader reads
        a folder path as a folder of frames. Embedded media become what the processor reads: an image's bytes, and
        a video written to a temporary file or frame folder (`embedded.py`), deleted with the returned list.
        `media=False` (counting tokens) puts only the media's paths or names in the items: nothing is written.
        """
        folders = []  # temporary folders of embedded videos, deleted with the returned list
        messages = build_messages(
            [(turn.role, turn.text) for turn in self.turns],
            [m.data if media and m.data is not None else m.path for m in self.media if m.kind == "image"],
            [temporary_video(m, folders) if media and m.embedded else m.path for m in self.media if m.kind != "image"],
            image_token=IMAGE_PLACEHOLDER,
            video_token=VIDEO_PLACEHOLDER,
            system_prompt=self.system or None,
        )
        return MessagesWithFiles(messages, folders) if folders else messages

    def truncated(self, kept_turns: int) -> Sample:
        """The first `kept_turns` turns with exactly the media their placeholders use (see `budget.py`)."""
        if kept_turns >= len(self.turns):
            return self
        turns = self.turns[:kept_turns]
        used = sum(len(PLACEHOLDER_PATTERN.findall(turn.text)) for turn in turns)
        return replace(self, turns=turns, media=self.media[:used])

    @classmethod
    def from_row(cls, row: dict) -> Sample:
        return cls(
            turns=tuple(Turn(**t) for t in row["turns"]),
            media=tuple(Media.from_row(m) for m in row["media"]),
            system=row.get("system") or "",
            id=row.get("id") or "",
            source=row.get("source") or "",
            where=row.get("where") or "",
        )


@dataclass(frozen=True)
class RecordProblem:
    """A record that cannot be used (or, as a warning, one to look at): returned by readers and checks, never raised
    and never dropped silently."""

    where: str  # "train.jsonl:17"
    problem: str  # "2 <video> placeholders but 1 video path"
    fix: str  # "add the missing path to 'video' or remove a placeholder"
    id: str = ""  # the record's own id when it has one
    kind: str = field(default="other")  # short category for the summary table, e.g. "placeholder_count"
    # error: the record cannot train; warning: it trains, but look (e.g. a grayscale image converted to RGB)
    severity: str = "error"

    def to_report(self) -> dict:
        """One line of the `--report bad.jsonl` file."""
        return {"where": self.where, "id": self.id, "problem": self.problem, "fix": self.fix, "kind": self.kind,
                "severity": self.severity}  # fmt: skip
