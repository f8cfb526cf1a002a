"""`framelm data validate`: every kind of bad record found with its line, id and fix, errors told apart from
warnings; the counts add up."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal

import pytest
from PIL import Image
from support.broken_media import png_claiming, zero_middle_packets

from framelm.training.cli import data_main
from framelm.training.data.arguments import DataArguments
from framelm.training.data.media_check import MediaCheck, check_media_file
from framelm.training.data.validate import validate
from framelm.training.errors import InputError


def conversation(question: str, answer: str = "ok") -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def media_root(tmp_path, make_image, make_mp4, make_frame_folder):
    """A folder with good media and one broken file of every kind validate must notice."""
    root = tmp_path / "media"
    root.mkdir()
    shutil.copy(make_image("good.png"), root / "good.png")
    shutil.copy(make_mp4("good.mp4", num_frames=8), root / "good.mp4")
    folder = make_frame_folder("clip", num_frames=4)
    shutil.copytree(folder, root / "clip")
    shutil.copy(str(folder).rstrip("/") + ".json", root / "clip.json")
    shutil.copytree(folder, root / "no_fps")  # a frame folder without its <folder>.json
    Image.new("L", (16, 16), 128).save(root / "gray.png")
    Image.new("RGBA", (16, 16), (1, 2, 3, 4)).save(root / "rgba.png")
    Image.new("CMYK", (16, 16)).save(root / "cmyk.jpg")
    Image.new("RGB", (1, 1)).save(root / "pixel.png")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(root / "whole.jpg", quality=95)
    data = (root / "whole.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])  # a truncated JPEG
    video = (root / "good.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(video[: len(video) // 3])  # a truncated video
    (root / "text.png").write_text("not an image")
    return root


GOOD = [
    {"id": "img", "image": "good.png", "conversations": conversation("<image>\nWhat?")},
    {"id": "vid", "video": "good.mp4", "conversations": conversation("<video>\nWhat?")},
    {"id": "frames", "video": "clip", "conversations": conversation("<video>\nWhat?")},
    {"id": "text", "conversations": conversation("Hello")},
]
WARNED = {"gray", "rgba", "cmyk", "pixel", "two"}  # they train (converted to RGB, or kept as they are): warnings
BAD = [  # (record, problem kinds expected)
    ({"id": "missing", "image": "nowhere.png", "conversations": conversation("<image>")}, ["missing_file"]),
    ({"id": "gray", "image": "gray.png", "conversations": conversation("<image>")}, ["unusual_mode"]),
    ({"id": "rgba", "image": "rgba.png", "conversations": conversation("<image>")}, ["unusual_mode"]),
    ({"id": "cmyk", "image": "cmyk.jpg", "conversations": conversation("<image>")}, ["unusual_mode"]),
    ({"id": "pixel", "image": "pixel.png", "conversations": conversation("<image>")}, ["tiny_image"]),
    ({"id": "cut_jpg", "image": "cut.jpg", "conversations": conversation("<image>")}, ["undecodable"]),
    ({"id": "not_img", "image": "text.png", "conversations": conversation("<image>")}, ["undecodable"]),
    ({"id": "cut_mp4", "video": "cut.mp4", "conversations": conversation("<video>")}, ["undecodable"]),
    ({"id": "no_fps", "video": "no_fps", "conversations": conversation("<video>")}, ["missing_fps"]),
    ({"id": "escape", "image": "../outside.png", "conversations": conversation("<image>")}, ["outside_root"]),
    ({"id": "count", "image": ["good.png"], "conversations": conversation("<image><image>")}, ["placeholder_count"]),
    ({"id": "two", "image": ["gray.png", "pixel.png"], "conversations": conversation("<image><image>")},
     ["unusual_mode", "tiny_image"]),
]  # fmt: skip


def data_args(path, tmp_path, media_root, **kwargs) -> DataArguments:
    return DataArguments(dataset=str(path), image_folder=str(media_root), video_folder=str(media_root),
                         cache_dir=str(tmp_path / "c"), **kwargs)  # fmt: skip


def test_every_media_problem_is_reported_and_counts_add_up(tmp_path, media_root):
    path = write_jsonl(tmp_path / "train.jsonl", GOOD + [record for record, _ in BAD])
    report = validate(data_args(path, tmp_path, media_root))
    assert report.total == len(GOOD) + len(BAD)
    assert (report.good_records, report.bad_records) == (len(GOOD) + len(WARNED), len(BAD) - len(WARNED))
    assert report.warned_records == len(WARNED)
    assert {p.id for p in report.warnings} == WARNED and not WARNED & {p.id for p in report.errors}
    found = {}
    for problem in report.problems:
        found.setdefault(problem.id, []).append(problem.kind)
    assert found == {record["id"]: kinds for record, kinds in BAD}
    by_id = {p.id: p for p in report.problems}
    assert by_id["missing"].where == f"{path}:{len(GOOD) + 1}"
    assert by_id["gray"].problem == f"image {media_root / 'gray.png'} is grayscale (mode L)"
    assert by_id["pixel"].problem.endswith("is 1x1 pixels")
    assert by_id["no_fps"].problem.startswith(f"frame folder {media_root / 'no_fps'} has no frame rate file")
    assert all(p.fix for p in report.problems)
    table = report.table()
    assert "records read" in table and "unusual_mode                         4" in table
    headers = (table.index("\n  error "), table.index("\n  warning "))
    assert headers[0] < table.index("missing_file") < headers[1] < table.index("unusual_mode")  # errors first


@pytest.mark.timeout(120)  # forks check processes: a lost one must fail the test, not hang it
def test_media_checked_in_processes_find_what_one_process_finds(tmp_path, media_root, monkeypatch):
    """Local files and embedded media go to forked check processes past `PROCESS_MIN_FILES`: the same problems,
    word for word and in the same order, as checking them in this process."""
    from framelm.training.data import validate as validate_module

    cut = base64.b64encode((media_root / "cut.jpg").read_bytes()).decode()
    embedded = {"id": "cut_inline", "image": f"data:image/jpeg;base64,{cut}", "conversations": conversation("<image>")}
    path = write_jsonl(tmp_path / "train.jsonl", GOOD + [record for record, _ in BAD] + [embedded])
    checked_by = tmp_path / "pids"
    real_check = validate_module.check_media_file

    def check_and_note_pid(*args):
        with open(checked_by, "a") as pids:
            pids.write(f"{os.getpid()}\n")
        return real_check(*args)

    monkeypatch.setattr(validate_module, "check_media_file", check_and_note_pid)
    one = validate(data_args(path, tmp_path, media_root, num_proc=1))
    assert set(checked_by.read_text().split()) == {str(os.getpid())}
    checked_by.unlink()
    monkeypatch.setattr(validate_module, "PROCESS_MIN_FILES", 1)
    two = validate(data_args(path, tmp_path, media_root, num_proc=2))
    pids = set(checked_by.read_text().split())
    assert len(pids) == 2 and str(os.getpid()) not in pids  # two forked processes did the checks
    assert [p.to_report() for p in two.problems] == [p.to_report() for p in one.problems]
    assert (two.bad_records, two.warned_records) == (one.bad_records, one.warned_records)
    inline = [p for p in two.problems if p.id == "cut_inline"]
    assert [p.kind for p in inline] == ["undecodable"] and "image data URL (embedded)" in inline[0].problem


@pytest.mark.timeout(120)  # forks check processes: a lost one must fail the test, not hang it
def test_a_check_process_that_dies_is_an_error_naming_the_file_it_held(tmp_path, media_root, monkeypatch):
    """A decoder that crashes its process (a signal, not an exception) must not hang validate: the error names the
    file that was being checked."""
    from framelm.training.data import validate as validate_module

    shutil.copy(media_root / "good.png", media_root / "a_crash.png")
    records = [{"id": "crash", "image": "a_crash.png", "conversations": conversation("<image>")}, *GOOD]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    real_check, parent = validate_module.check_media_file, os.getpid()

    def crash_on_one_file(kind, file, check):
        if file.endswith("a_crash.png") and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real_check(kind, file, check)

    monkeypatch.setattr(validate_module, "check_media_file", crash_on_one_file)
    monkeypatch.setattr(validate_module, "PROCESS_MIN_FILES", 1)
    with pytest.raises(InputError, match="a media check process died while checking ") as caught:
        validate(data_args(path, tmp_path, media_root, num_proc=2))
    named = caught.value.message.split(" while checking ", 1)[1].split(": the file may crash")[0].split(" or ")
    # the file the crashed process held, and at most the one the other process was checking when the pool broke
    assert str(media_root / "a_crash.png") in named and len(named) <= 2, named
    assert caught.value.fix


def test_a_check_process_killed_between_files_is_an_error_that_blames_no_file(tmp_path, media_root, monkeypatch):
    """Killed while it held no file (the OOM killer between two checks), the error says so instead of naming none."""
    from framelm.training.data import validate as validate_module

    path = write_jsonl(tmp_path / "train.jsonl", GOOD)
    real_check, parent = validate_module.check_media_file, os.getpid()

    def killed_after_a_file(kind, file, check):
        found = real_check(kind, file, check)
        if os.getpid() != parent:
            marks = validate_module._CHECKS.marks
            marks[:] = bytes([validate_module.DONE]) * len(marks)  # as if this file were finished
            os.kill(os.getpid(), signal.SIGKILL)
        return found

    monkeypatch.setattr(validate_module, "check_media_file", killed_after_a_file)
    monkeypatch.setattr(validate_module, "PROCESS_MIN_FILES", 1)
    with pytest.raises(InputError, match="killed by a signal between two files") as caught:
        validate(data_args(path, tmp_path, media_root, num_proc=2))
    assert "while checking" not in caught.value.message and "--num-proc 1" in caught.value.fix


def test_ignoring_a_kind_and_skipping_media(tmp_path, media_root):
    records = [GOOD[0], BAD[1][0], BAD[0][0]]  # good, grayscale, missing file
    path = write_jsonl(tmp_path / "train.jsonl", records)
    ignored = validate(data_args(path, tmp_path, media_root), ignore=["unusual_mode"])
    assert [p.id for p in ignored.problems] == ["missing"] and ignored.good_records == 2
    structural = validate(data_args(path, tmp_path, media_root), check_media=False)
    assert structural.ok and structural.good_records == 3


def test_cli_prints_the_table_writes_the_report_and_exits_non_zero(tmp_path, media_root, capsys):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD[0], BAD[0][0], BAD[9][0]])
    report_path = tmp_path / "bad.jsonl"
    argv = ["validate", path, "--image-folder", str(media_root), "--report", str(report_path)]
    assert data_main([*argv, "--cache-dir", str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    assert "with errors                          2" in out and "outside_root" in out
    lines = [json.loads(line) for line in report_path.read_text().splitlines()]
    assert [(r["where"], r["id"], r["kind"]) for r in lines] == [
        (f"{path}:2", "missing", "missing_file"),
        (f"{path}:3", "escape", "outside_root"),
    ]
    assert {"where", "id", "problem", "fix"} <= set(lines[0])
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD[0]])
    assert data_main(["validate", good, "--image-folder", str(media_root), "--cache-dir", str(tmp_path / "c")]) == 0


def test_duplicated_bad_records_of_a_mixture_count_once_per_copy(tmp_path, media_root):
    write_jsonl(tmp_path / "a.jsonl", [GOOD[0], BAD[0][0]])
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"- json_path: a.jsonl\n  sampling_strategy: dup:3\n  image_folder: {media_root}\n")
    report = validate(DataArguments(dataset=str(mix), cache_dir=str(tmp_path / "c")))
    assert (report.total, report.good_records, report.bad_records, len(report.problems)) == (6, 3, 3, 3)


def test_check_media_file_accepts_good_media(media_root):
    assert check_media_file("image", str(media_root / "good.png")) == []
    assert check_media_file("video", str(media_root / "good.mp4")) == []
    assert check_media_file("frames", str(media_root / "clip")) == []
    assert check_media_file("video", str(media_root)) == [
        ("missing_file", f"video {media_root} is a folder, not a file", "fix the path or --video-folder")
    ]


def test_max_length_reports_records_whose_first_exchange_cannot_fit(tmp_path, media_root, tiny_processor):
    # the tiny processor: 16 tokens per image, 4 frames x 16 tokens per video
    records = [
        {"id": "short", "conversations": conversation("Hi")},
        {"id": "video", "video": "good.mp4", "conversations": conversation("<video>What?")},
        {"id": "long", "image": "good.png", "conversations": conversation("<image>a", "b") + conversation("c " * 60)},
    ]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    report = validate(data_args(path, tmp_path, media_root), max_length=60, processor=tiny_processor)
    assert [(p.id, p.kind) for p in report.problems] == [("video", "too_long")]
    assert report.problems[0].problem.startswith("the first exchange needs 8")  # 64 video tokens and the template
    assert "max_length is 60" in report.problems[0].problem
    assert report.truncated == 1  # "long" keeps its first exchange
    with pytest.raises(ValueError, match="needs the model's processor"):  # nothing to count tokens with
        validate(data_args(path, tmp_path, media_root), max_length=60)


def test_cli_max_length_needs_a_model_and_uses_its_processor(tmp_path, tiny_model_dir, capsys):
    records = [{"id": "v", "video": "v.mp4", "conversations": conversation("<video>What?")}]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    base = ["validate", path, "--no-media-check", "--max-length", "40", "--cache-dir", str(tmp_path / "c")]
    assert data_main(base) == 2
    assert "--max-length needs --model" in capsys.readouterr().err
    assert data_main([*base, "--model", str(tiny_model_dir)]) == 1  # 4 frames x 16 tokens > 40
    assert "too_long" in capsys.readouterr().out
    assert data_main([*base, "--model", str(tiny_model_dir), "--num-frames", "1"]) == 0  # 16 tokens fit


def test_warnings_are_reported_but_only_errors_fail_the_command(tmp_path, media_root, capsys):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD[0], BAD[1][0], BAD[4][0]])  # good, grayscale, one pixel
    report_path = tmp_path / "report.jsonl"
    argv = ["validate", path, "--image-folder", str(media_root), "--cache-dir", str(tmp_path / "c")]
    assert data_main([*argv, "--report", str(report_path)]) == 0  # both records train: a zero exit code
    out = capsys.readouterr().out
    assert "with errors                          0" in out and "with warnings                        2" in out
    assert "unusual_mode" in out and "tiny_image" in out
    lines = [json.loads(line) for line in report_path.read_text().splitlines()]
    assert [(r["id"], r["severity"]) for r in lines] == [("gray", "warning"), ("pixel", "warning")]


def test_data_options_are_one_dataclass_with_dashed_flags_and_literal_choices(tmp_path, capsys):
    from framelm.training.data.commands import parse

    argv = ["d.jsonl", "--image-folder", "/i", "--video_folder", "/v", "--format", "sharegpt", "--no-media-check",
            "--ignore", "a", "--ignore", "b"]  # fmt: skip
    data, _, options = parse("validate", argv)
    assert (data.dataset, data.image_folder, data.video_folder, data.data_format) == (
        "d.jsonl",
        "/i",
        "/v",
        "sharegpt",
    )
    assert options.media_check is False and options.ignore == ["a", "b"]
    assert data_main(["validate", "d.jsonl", "--format", "csv"]) == 2  # a bad choice: argparse's error, no traceback
    err = capsys.readouterr().err
    assert "invalid choice: 'csv'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert data_main(["validate", "d.jsonl", "--bad-records", "maybe"]) == 2
    assert data_main(["convert", "d.jsonl"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err


# --- validate predicts training: what training would meet mid-epoch is found here ------------------------------


@pytest.fixture
def traps(tmp_path, make_mp4, make_frame_folder):
    """Media that pass a one-frame or header-only look and stop training: every frame folder has 10 frames."""
    root = tmp_path / "traps"
    root.mkdir()
    (root / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    shutil.copy(make_mp4("whole.mp4", num_frames=48), root / "whole.mp4")
    zero_middle_packets(root / "whole.mp4", root / "zeroed.mp4")
    for name in ("corrupt_frame", "mixed_sizes", "folder_frame", "good_frames"):
        folder = make_frame_folder(name, num_frames=10)
        shutil.copytree(folder, root / name)
        shutil.copy(str(folder) + ".json", root / f"{name}.json")
    (root / "corrupt_frame" / "00006.jpg").write_bytes(b"\xff\xd8 not the rest of a JPEG")
    Image.new("RGB", (32, 32)).save(root / "mixed_sizes" / "00004.jpg")
    (root / "folder_frame" / "00011.jpg").mkdir()  # a folder named like a frame, sorted last
    return root


def test_validate_finds_what_would_stop_training_mid_epoch(tmp_path, traps):
    records = [
        {"id": "bomb", "image": "bomb.png", "conversations": conversation("<image>")},
        {"id": "zeroed", "video": "zeroed.mp4", "conversations": conversation("<video>")},
        {"id": "whole", "video": "whole.mp4", "conversations": conversation("<video>")},
        {"id": "corrupt_frame", "video": "corrupt_frame", "conversations": conversation("<video>")},
        {"id": "mixed_sizes", "video": "mixed_sizes", "conversations": conversation("<video>")},
        {"id": "folder_frame", "video": "folder_frame", "conversations": conversation("<video>")},
        {"id": "good_frames", "video": "good_frames", "conversations": conversation("<video>")},
        {"id": "system", "image": "bomb.png", "conversations": [{"from": "system", "value": "See <image>"},
                                                                *conversation("<image>")]},
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "train.jsonl", records)
    report = validate(data_args(path, tmp_path, traps))
    found = {p.id: (p.kind, p.problem) for p in report.problems}
    assert set(found) == {"bomb", "zeroed", "corrupt_frame", "mixed_sizes", "folder_frame", "system"}
    assert found["bomb"][0] == "undecodable" and "too large to decode safely" in found["bomb"][1]
    assert found["zeroed"] == ("undecodable", found["zeroed"][1])
    assert found["zeroed"][1].startswith(f"cannot decode the 8 frames training reads from {traps / 'zeroed.mp4'}")
    assert found["corrupt_frame"] == ("undecodable", found["corrupt_frame"][1])
    assert f"frame {traps / 'corrupt_frame' / '00006.jpg'} cannot be opened" in found["corrupt_frame"][1]
    assert found["mixed_sizes"] == (
        "mixed_frame_sizes", f"frames of {traps / 'mixed_sizes'} differ in size: 9 are 64x48, 00004.jpg is 32x32"
    )  # fmt: skip
    assert found["folder_frame"] == ("undecodable", f"frame {traps / 'folder_frame' / '00011.jpg'} is not a file")
    assert found["system"][0] == "media_in_system_prompt"
    assert report.good_records == 2 and all(p.fix for p in report.problems)


def test_validate_decodes_the_frames_the_model_samples(tmp_path, traps, tiny_model_dir):
    """The tiny model samples 4 frames; `--num-frames 1` samples the middle one, which the zeroed video lacks too."""
    records = [{"id": "zeroed", "video": "zeroed.mp4", "conversations": conversation("<video>")}]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    base = ["validate", path, "--video-folder", str(traps), "--cache-dir", str(tmp_path / "c")]
    assert data_main([*base, "--model", str(tiny_model_dir)]) == 1
    assert data_main([*base, "--num-frames", "1"]) == 1
    frames = check_media_file("video", str(traps / "zeroed.mp4"), MediaCheck(num_frames=1))
    assert frames[0][1].startswith("cannot decode the 1 frames training reads")
    assert check_media_file("video", str(traps / "whole.mp4"), MediaCheck(num_frames=48)) == []  # every frame
