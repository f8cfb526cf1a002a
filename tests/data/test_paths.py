"""The one media path rule (`data/paths.py`) for training records and `framelm generate` prompts alike."""

from __future__ import annotations

import json
import os

import pytest

from framelm.training.data.paths import OutsideRootError, resolve_media_path


def test_relative_paths_resolve_against_the_root_and_neva_markers_mean_the_root(tmp_path):
    root = str(tmp_path)
    assert resolve_media_path("a/b.mp4", root) == f"{root}/a/b.mp4"
    assert resolve_media_path("{video_folder}/a/b.mp4", root) == f"{root}/a/b.mp4"  # NeVA's documented form
    assert resolve_media_path("{image_folder}/x.png", root) == f"{root}/x.png"
    assert resolve_media_path("./a//b/../c.png", root) == f"{root}/a/c.png"  # normalized
    assert resolve_media_path(f"{root}/sub/x.png", root) == f"{root}/sub/x.png"  # absolute, but inside the root


@pytest.mark.parametrize("path", ["../x.png", "a/../../x.png", "/etc/passwd", "{video_folder}/../../v.mp4"])
def test_paths_leading_outside_the_root_are_refused_unless_allowed(tmp_path, path):
    root = str(tmp_path / "data")
    with pytest.raises(OutsideRootError, match=f"outside its root folder '{root}'"):
        resolve_media_path(path, root)
    assert resolve_media_path(path, root, allow_outside_root=True).startswith("/")


def test_a_symlink_pointing_out_of_the_root_is_refused_and_one_pointing_in_is_fine(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "secret"
    root.mkdir(), outside.mkdir()
    (outside / "x.png").write_bytes(b"")
    (root / "inner.png").write_bytes(b"")
    os.symlink(outside / "x.png", root / "leak.png")
    os.symlink(outside, root / "leak_dir")
    os.symlink(root / "inner.png", root / "alias.png")
    with pytest.raises(OutsideRootError, match="secret/x.png"):
        resolve_media_path("leak.png", str(root))
    with pytest.raises(OutsideRootError):
        resolve_media_path("leak_dir/x.png", str(root))
    assert resolve_media_path("alias.png", str(root)) == f"{root}/alias.png"  # the path as written is kept
    assert resolve_media_path("leak.png", str(root), allow_outside_root=True) == f"{root}/leak.png"


def test_urls_pass_through_and_remote_roots_join_as_text():
    assert resolve_media_path("https://example.com/a.png", "/data") == "https://example.com/a.png"
    assert resolve_media_path("a/b.png", "s3://bucket/data/") == "s3://bucket/data/a/b.png"
    with pytest.raises(OutsideRootError):
        resolve_media_path("../b.png", "s3://bucket/data")


def test_generate_resolves_prompt_media_by_the_same_rule(tiny_model_dir, tmp_path, make_image, capsys):
    from framelm.training.cli import main as cli

    make_image("red.png")
    (tmp_path / "prompts").mkdir()
    prompts = tmp_path / "prompts" / "p.jsonl"
    prompts.write_text(
        json.dumps({"image": "../red.png", "text": "What colour?", "question_id": 0}) + "\n"
        + json.dumps({"image": "{image_folder}/red.png", "text": "What colour?", "question_id": 1}) + "\n"
    )  # fmt: skip
    out = tmp_path / "a.jsonl"
    argv = ["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--output-file", str(out), "--greedy",
            "--max-new-tokens", "2", "--max-bad-fraction", "1"]  # fmt: skip
    # default root: the prompt file's folder, which "../" leaves and which holds no red.png
    assert cli(argv) == 1
    assert "2 failed (0, 1)" in capsys.readouterr().out
    assert cli([*argv, "--allow-outside-root"]) == 1  # "../red.png" is accepted now; id 1 still has no file
    assert [json.loads(line)["question_id"] for line in out.read_text().splitlines()] == [0]
    assert cli([*argv, "--media-base-path", str(tmp_path)]) == 0  # the NeVA marker now names the right folder
    assert [json.loads(line)["question_id"] for line in out.read_text().splitlines()] == [0, 1]
