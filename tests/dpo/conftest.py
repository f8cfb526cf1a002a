"""Preference data fixtures: the same pairs in each supported form, with their media generated under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def pair_media(make_image, make_mp4):
    """red.png, blue.png and clip.mp4 (8 pattern frames) in tmp_path."""
    return (
        make_image("red.png", color=(255, 0, 0)),
        make_image("blue.png", color=(0, 0, 255)),
        make_mp4("clip.mp4", num_frames=8),
    )


@pytest.fixture
def image_pairs(tmp_path, pair_media) -> Path:
    """Four image pairs in TRL's conversational form (content lists, `images` column)."""
    records = []
    for i, (image, chosen, rejected) in enumerate([("red.png", "red", "blue"), ("blue.png", "blue", "red")] * 2):
        records.append({
            "id": f"img{i}", "images": [image],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        })  # fmt: skip
    return write_jsonl(tmp_path / "image_pairs.jsonl", records)


@pytest.fixture
def video_pairs(tmp_path, pair_media) -> Path:
    """Four video pairs in LLaMA-Factory's sharegpt ranking form."""
    records = [
        {"id": f"vid{i}", "videos": ["clip.mp4"],
         "conversations": [{"from": "human", "value": "<video>\nWhich way does it move?"}],
         "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected}}
        for i, (chosen, rejected) in enumerate([("down", "up"), ("down", "left"), ("down", "right"), ("down", "up")])
    ]  # fmt: skip
    return write_jsonl(tmp_path / "video_pairs.jsonl", records)
