"""`framelm data extract-frames` killed at any point, then run again, never yields a usable-but-wrong result.

"Usable" is what the next run and `framelm data validate` trust: a `<folder>.json` marker. The invariant checked
after every kill: a marker exists only beside the complete folder it describes, and the folder itself is always a
complete extraction (the old one or the new one), never a cut one. The kill points are every file-system step of one
extraction (`support.kill_points`: the child kills itself just before step k, for every k), then SIGKILLs at random
times from outside.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.kill_points import run_killed_at

from framelm.training.data.extract_frames import extract_frames, extract_video, interval_seconds, marker_path

OLD, NEW = 1.0, 0.5  # seconds between frames of the extraction being replaced, and of the one replacing it


def snapshot(folder: Path) -> tuple[dict | None, dict[str, str] | None]:
    """(marker contents or None, {file name: sha256} of the folder or None): what a reader of the folder sees."""
    marker = Path(marker_path(str(folder)))
    files = None
    if folder.is_dir():
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
    return (json.loads(marker.read_text()) if marker.exists() else None), files


def run_child(args: list[str], kill_after: float | None = None) -> subprocess.CompletedProcess | None:
    """Run a child in its own process group; SIGKILL the whole group after `kill_after` seconds if it still runs."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=kill_after if kill_after is not None else 120)
        return subprocess.CompletedProcess(args, process.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        if kill_after is None:
            pytest.fail(f"{args} did not finish in 120 s")
        return None


def extraction_references(video: Path, folder: Path, old: float, new: float) -> dict:
    """The complete results of extracting `video` every `old` and every `new` seconds (JPEG encoding is
    deterministic, so a result is its file hashes)."""
    results = {"video": video}
    for name, interval in (("old", old), ("new", new)):
        extract_video(str(video), str(folder / name / "clip"), interval)
        results[name] = snapshot(folder / name / "clip")
    return results


@pytest.fixture
def references(tmp_path, make_mp4) -> dict:
    video = make_mp4("clip.mp4", num_frames=24, fps=8, size=(96, 64))  # 3 s: 3 frames at OLD, 6 at NEW
    results = extraction_references(video, tmp_path / "reference", OLD, NEW)
    frames = [{name for name in result[1] if name.endswith(".jpg")} for result in (results["old"], results["new"])]
    assert results["old"][0] == {"fps": "1.0"} and len(frames[0]) == 3 and len(frames[1]) == 6
    return results


def check_after_kill(folder: Path, references: dict, had_old: bool) -> None:
    """Marker -> the complete folder it describes; a folder on its own -> complete as well."""
    marker, files = snapshot(folder)
    complete = [references["new"], *([references["old"]] if had_old else [])]
    if marker is not None:
        assert (marker, files) in complete, f"marker {marker} beside frames {sorted(files or {})}"
    if files is not None:
        assert files in [reference[1] for reference in complete], f"a cut frame folder: {sorted(files)}"


def rerun_and_check(video: Path, folder: Path, references: dict, interval: float = NEW) -> None:
    """A rerun without --overwrite skips only a marked, complete result and leaves it as it is; otherwise it
    extracts again and ends with the new result."""
    before = snapshot(folder)
    report = extract_frames([str(video)], interval=interval, out_root=str(folder.parent), num_proc=1)
    assert not report.failed
    if report.skipped:  # "already done": it had better be
        assert before[0] is not None and snapshot(folder) == before
        assert before in (references["new"], references["old"])
    else:
        assert snapshot(folder) == references["new"]


@pytest.mark.slow
@pytest.mark.parametrize("had_old", [False, True], ids=["first-extraction", "overwrite"])
def test_killed_before_any_step_of_an_extraction_the_rerun_is_right(tmp_path, references, had_old):
    video = references["video"]
    pristine = tmp_path / "pristine"
    extract_video(str(video), str(pristine / "clip"), OLD)
    steps = None
    kill_at = 0
    while steps is None or kill_at <= steps:
        work = tmp_path / f"kill-{kill_at}"
        if had_old:
            shutil.copytree(pristine, work)
        folder = work / "clip"
        code = "from framelm.training.data.extract_frames import extract_video\n"
        code += f"extract_video({str(video)!r}, {str(folder)!r}, {NEW})"
        run = run_killed_at(code, kill_at)
        steps = run.steps if not run.killed else steps  # not killed: kill_at went past the last step
        check_after_kill(folder, references, had_old)
        rerun_and_check(video, folder, references)
        kill_at += 1
    assert steps >= 9  # 6 frames + the folder, the swap and the marker: every one of them was a kill point


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_sigkill_at_a_random_time_during_overwrite_then_rerun(tmp_path, make_mp4, seed):
    video = make_mp4("long.mp4", num_frames=120, fps=24, size=(320, 240))  # 5 s; every frame kept at 1/24 s
    old, new = 0.5, 1 / 24
    references = extraction_references(video, tmp_path / "reference", old, new)
    folder = tmp_path / "frames" / "long"
    command = [sys.executable, "-m", "framelm.training.cli", "data", "extract-frames", str(video), "--interval",
               str(new), "--out", str(folder.parent), "--overwrite", "--num-proc", "1"]  # fmt: skip
    start = time.monotonic()
    assert run_child(command).returncode == 0  # a full run: how long one takes on this machine, now
    duration = time.monotonic() - start
    shutil.rmtree(folder.parent)
    extract_video(str(video), str(folder), old)
    run_child(command, kill_after=random.Random(seed).uniform(0.3, 1.0) * duration)
    check_after_kill(folder, references, had_old=True)
    rerun_and_check(video, folder, references, interval=new)


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "0", "1e-300", "1e9", "abc"])
def test_interval_must_be_a_finite_positive_number_of_seconds_in_range(text, capsys):
    from framelm.training.cli import data_main

    assert data_main(["extract-frames", "clip.mp4", "--interval", text]) == 2  # a usage error, no traceback
    err = capsys.readouterr().err
    assert "argument --interval:" in err
    assert ("is not a number of seconds" if text == "abc" else "number of seconds from 0.001 to 86400") in err
    with pytest.raises(ValueError, match="interval must be a number of seconds"):
        extract_frames(["clip.mp4"], interval=float(text) if text != "abc" else float("nan"))
    assert interval_seconds("0.25") == 0.25
