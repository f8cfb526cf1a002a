"""`framelm data extract-frames` among a user's own files: without --overwrite it replaces or deletes nothing it did
not write, two videos with one stem are both refused, a FIFO does not hang it, and one video's OSError is that
video's failure. Every refusal is counted and named; every user file is checked byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from framelm.training.data.extract_frames import extract_frames


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "framelm.training.cli", "data", "extract-frames", *args, "--num-proc", "1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)  # a hang fails here, not forever


def test_a_webvid_caption_json_and_a_user_folder_are_never_replaced_without_overwrite(tmp_path, make_mp4):
    videos = tmp_path / "videos"
    for name in ("webvid", "mine", "fresh"):
        make_mp4(f"videos/{name}.mp4", num_frames=8)
    caption = {"videoid": "1066", "caption": "A dog runs on the beach", "fps": "25"}
    (videos / "webvid.json").write_text(json.dumps(caption))  # a video2dataset / WebVid layout: captions live here
    (videos / "mine").mkdir()
    (videos / "mine" / "00001.jpg").write_bytes(b"the user's own frame")
    (videos / "mine" / "labels.txt").write_text("dog\n")
    before = digest(videos)

    result = run_cli(str(videos), "--interval", "0.5")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "1 videos extracted, 0 already done, 2 failed"
    assert f"{videos}/webvid.json exists and is not a marker `extract-frames` wrote (captions" in result.stderr
    assert (
        f"{videos}/mine exists and holds what `extract-frames` did not write (00001.jpg, labels.txt)" in result.stderr
    )
    after = digest(videos)
    assert {name: after[name] for name in before} == before  # every user file byte-identical
    assert not (videos / "webvid").exists()  # and nothing written beside the caption file either
    assert json.loads((videos / "fresh.json").read_text()) == {"fps": "2.0"}

    rerun = run_cli(str(videos), "--interval", "0.5")  # its own output is "done", the user's files still refused
    assert rerun.stdout.splitlines()[0] == "0 videos extracted, 1 already done, 2 failed"

    forced = run_cli(str(videos), "--interval", "0.5", "--overwrite")  # the user said so: replaced
    assert forced.returncode == 0 and forced.stdout.splitlines()[0] == "3 videos extracted, 0 already done, 0 failed"
    assert json.loads((videos / "webvid.json").read_text()) == {"fps": "2.0"}


def test_two_videos_with_one_stem_are_both_refused_and_nothing_is_mixed(tmp_path, make_mp4):
    make_mp4("videos/clip.mp4", num_frames=8)
    make_mp4("videos/clip.mkv", num_frames=16)
    report = extract_frames([str(tmp_path / "videos")], interval=0.5, num_proc=1)
    assert report.done == [] and report.skipped == []
    both = f"{tmp_path}/videos/clip.mkv and {tmp_path}/videos/clip.mp4"
    assert report.failed == {
        str(tmp_path / "videos" / name): f"{both} would all be extracted to {tmp_path}/videos/clip/: rename all but "
        "one (or extract them into different --out folders)"
        for name in ("clip.mkv", "clip.mp4")
    }
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["clip.mkv", "clip.mp4"]  # no folder, no marker


def test_a_fifo_named_like_a_video_is_refused_without_hanging(tmp_path, make_mp4):
    make_mp4("videos/real.mp4", num_frames=8)
    os.mkfifo(tmp_path / "videos" / "pipe.mp4")  # opening it for reading would block until someone writes
    result = run_cli(str(tmp_path / "videos"))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "1 videos extracted, 0 already done, 1 failed"
    assert f"{tmp_path}/videos/pipe.mp4: not a regular file (a FIFO, socket or device" in result.stderr
    given = run_cli(str(tmp_path / "videos" / "pipe.mp4"))  # given by name, not found in a folder
    assert given.returncode == 1 and "not a regular file" in given.stderr


def test_one_videos_os_error_is_its_own_failure_and_the_others_are_extracted(tmp_path, make_mp4):
    make_mp4("videos/ok.mp4", num_frames=8)
    make_mp4("videos/sub/broken.mp4", num_frames=8)
    out = tmp_path / "frames"
    out.mkdir()
    (out / "sub").write_text("a file where the folder `sub/` must go")  # mkdir under it: NotADirectoryError
    report = extract_frames([str(tmp_path / "videos")], interval=0.5, out_root=str(out), num_proc=2)
    assert report.done == [str(tmp_path / "videos" / "ok.mp4")]
    assert list(report.failed) == [str(tmp_path / "videos" / "sub" / "broken.mp4")]
    assert "sub" in report.failed[str(tmp_path / "videos" / "sub" / "broken.mp4")]
    assert json.loads((out / "ok.json").read_text()) == {"fps": "2.0"}
    assert (out / "sub").read_text() == "a file where the folder `sub/` must go"
