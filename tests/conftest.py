"""Shared fixtures. Every media file and model is generated under pytest's tmp_path: nothing binary is committed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.pattern_video import pattern_frames

from framelm.training.data.media_writer import write_frame_folder, write_mp4

# --- media fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def make_image(tmp_path):
    """make_image(name, size=(width, height), color, mode) -> path of a one-colour image.

    `color` is an RGB triple converted to `mode`, or a value already in `mode` (e.g. an int for "L")."""
    from PIL import Image

    def make(name: str = "img.png", size: tuple[int, int] = (64, 48), color=(255, 0, 0), mode: str = "RGB") -> Path:
        rgb_triple = isinstance(color, tuple) and len(color) == 3
        image = Image.new("RGB", size, color).convert(mode) if rgb_triple else Image.new(mode, size, color)
        path = tmp_path / name
        image.save(path)
        return path

    return make


@pytest.fixture
def make_mp4(tmp_path):
    """make_mp4(name, num_frames, size=(width, height), fps, codec, gop) -> path of a video of pattern frames whose
    index `support.pattern_video.read_pattern_index` reads back from any decoded frame."""

    def make(
        name: str = "clip.mp4",
        num_frames: int = 24,
        size: tuple[int, int] = (64, 48),
        fps: float = 8,
        codec: str = "libx264",
        gop: int = 12,
    ) -> Path:
        width, height = size
        return write_mp4(tmp_path / name, pattern_frames(num_frames, height, width), fps=fps, codec=codec, gop=gop)

    return make


@pytest.fixture
def make_frame_folder(tmp_path):
    """make_frame_folder(name, num_frames, size=(width, height), fps) -> a folder 00001.jpg ... of pattern frames
    with its frame rate in the sibling `<name>.json` (none when fps is None)."""

    def make(name: str = "clip", num_frames: int = 10, size: tuple[int, int] = (64, 48), fps="2.0") -> Path:
        width, height = size
        return write_frame_folder(tmp_path / name, pattern_frames(num_frames, height, width), fps=fps)

    return make


@pytest.fixture
def llava_data(tmp_path, make_image, make_mp4) -> Path:
    """Six LLaVA records: images, a video, both, and text-only ones, with their media beside the file."""
    make_image("red.png", color=(255, 0, 0)), make_image("blue.png", color=(0, 0, 255))
    make_mp4("clip.mp4", num_frames=8)
    records = [
        {"id": "a", "image": "red.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"},
                                                          {"from": "gpt", "value": "red"}]},
        {"id": "b", "video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>\nWhat moves?"},
                                                           {"from": "gpt", "value": "a bar"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]},
        {"id": "d", "image": "blue.png", "video": "clip.mp4",
         "conversations": [{"from": "human", "value": "<image><video>Same colour?"}, {"from": "gpt", "value": "no"}]},
        {"id": "e", "conversations": [{"from": "human", "value": "Say no."}, {"from": "gpt", "value": "no"}]},
        {"id": "f", "image": "blue.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"},
                                                           {"from": "gpt", "value": "blue"}]},
    ]  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def missing_fsspec_backends(monkeypatch):
    """s3://, gs:// and http:// as fsspec sees them where s3fs, gcsfs or aiohttp is not installed (whatever this
    machine has)."""
    import importlib

    registry = importlib.import_module("fsspec.registry")  # the module: `fsspec.registry` is also a mapping
    for scheme, err in (("s3", "Install s3fs to access S3"), ("gs", "Please install gcsfs to access Google Storage"),
                        ("http", 'HTTPFileSystem requires "requests" and "aiohttp" to be installed')):  # fmt: skip
        monkeypatch.setitem(registry.known_implementations, scheme,
                            {"class": "framelm_not_installed.FileSystem", "err": err})  # fmt: skip
        monkeypatch.delitem(registry._registry, scheme, raising=False)


# --- model fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny FrameLM: two-layer towers of width 32/64, 32-px images in 8-px patches (16 tokens per image),
    4 frames per video, an offline-trained tokenizer. Same code path as `framelm init --tiny`."""
    from framelm.training.model.tiny import build_tiny_framelm

    return build_tiny_framelm(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration

    return FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="session")
def tiny_processor(tiny_model_dir):
    from framelm.processing import FrameLMProcessor

    return FrameLMProcessor.from_pretrained(tiny_model_dir)
