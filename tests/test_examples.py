"""Every example under examples/data is a complete, valid record of its input format: `framelm data validate`
passes on each (media generated here, beside a copy: nothing binary is committed), and `framelm generate`'s example
prompts read without a problem. README: "Your own data in three commands"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from framelm.training.cli import main as cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
DATA_FILES = ["llava.json", "lmms.jsonl", "sharegpt.jsonl", "messages.jsonl", "mixture.yaml"]


@pytest.fixture
def examples(tmp_path, make_image, make_mp4, make_frame_folder) -> Path:
    """examples/data copied with the media its records name: two images, a video, a frame folder with its fps."""
    shutil.copytree(EXAMPLES, tmp_path / "data")
    for folder in ("images", "videos", "frames"):
        (tmp_path / "data" / folder).mkdir()
    make_image("data/images/red_square.png", color=(255, 0, 0))
    make_image("data/images/blue_circle.png", color=(0, 0, 255))
    make_mp4("data/videos/ball.mp4", num_frames=16)
    make_frame_folder("data/frames/ball", num_frames=8)
    return tmp_path / "data"


def test_the_example_files_are_the_ones_the_readme_shows():
    assert sorted(p.name for p in EXAMPLES.iterdir()) == sorted([*DATA_FILES, "prompts.jsonl"])
    readme = (EXAMPLES.parents[1] / "README.md").read_text()
    for name in DATA_FILES:
        assert f"examples/data/{name}" in readme, name


RECORDS = {"llava.json": 3, "lmms.jsonl": 2, "sharegpt.jsonl": 2, "messages.jsonl": 2, "mixture.yaml": 5}


@pytest.mark.parametrize("name", DATA_FILES)
def test_each_example_validates_with_its_media(examples, name, tiny_model_dir, capsys, tmp_path):
    argv = [
        "data",
        "validate",
        str(examples / name),
        "--model",
        str(tiny_model_dir),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert cli(argv) == 0, capsys.readouterr()
    counts = dict(line.rsplit(None, 1) for line in capsys.readouterr().out.splitlines()[1:] if line.strip())
    counts = {key.strip(): value for key, value in counts.items()}
    n = str(RECORDS[name])
    assert (counts["records read"], counts["usable"], counts["with errors"], counts["with warnings"]) == (
        n,
        n,
        "0",
        "0",
    )


def test_each_example_fails_without_its_media(tmp_path, capsys):
    shutil.copytree(EXAMPLES, tmp_path / "data")
    for name in ("llava.json", "messages.jsonl"):
        assert cli(["data", "validate", str(tmp_path / "data" / name), "--cache-dir", str(tmp_path / "c")]) == 1


def test_the_example_prompts_read_cleanly(examples):
    from framelm.training.eval.prompts import read_prompts

    prompts = read_prompts(str(examples / "prompts.jsonl"))
    assert [p.key for p in prompts.prompts] == ["0", "1"] and prompts.problems == []
