"""`framelm data convert` (Arrow and WebDataset shards) and `framelm data extract-frames`."""

from __future__ import annotations

import glob
import json
import os

import datasets
import pytest
from support.pattern_video import read_pattern_index

from framelm.processing.media_framelm import load_video, probe_video
from framelm.training.cli import data_main
from framelm.training.data.arguments import DataArguments
from framelm.training.data.extract_frames import extract_frames
from framelm.training.data.loading import load_samples
from framelm.training.data.sample import Sample
from framelm.training.data.shard_writer import split_counts, write_webdataset
from framelm.training.data.shards import shard_source, stream_shards


def record(i: int) -> dict:
    return {
        "id": f"r{i}",
        "image": f"img/{i}.jpg",
        "conversations": [{"from": "human", "value": f"<image>\nQuestion {i}?"}, {"from": "gpt", "value": f"A{i}"}],
    }


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(record(i)) + "\n" for i in range(50)))
    return path


def test_convert_to_arrow_round_trips_through_load_samples(tmp_path, data_file, capsys):
    out = tmp_path / "arrow"
    assert data_main(["convert", str(data_file), "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "50 samples saved to" in capsys.readouterr().out
    saved = datasets.load_from_disk(str(out))
    original = load_samples(DataArguments(dataset=str(data_file), cache_dir=str(tmp_path / "c")))
    assert saved.to_list() == original.dataset.to_list()
    again = load_samples(DataArguments(dataset=str(out)))  # a converted folder is a valid training source
    assert again.total == 50 and again.dataset[7]["id"] == "r7" and not again.problems


def test_strict_conversion_lists_bad_records_and_skip_leaves_them_out(tmp_path, data_file, capsys):
    with data_file.open("a") as f:
        f.write('{"id": "bad", "conversations": [{"from": "gpt", "value": "hi"}]}\n')
    out, cache = tmp_path / "arrow", str(tmp_path / "c")
    assert data_main(["convert", str(data_file), "--out", str(out), "--cache-dir", cache]) == 1
    error = capsys.readouterr().err
    assert f"1 of 51 records cannot be used:\n  {data_file}:51 (id=bad): turn 1 is from the assistant" in error
    assert "--bad-records skip" in error and not out.exists()
    assert (
        data_main(["convert", str(data_file), "--out", str(out), "--bad-records", "skip", "--cache-dir", cache]) == 0
    )
    assert len(datasets.load_from_disk(str(out))) == 50


@pytest.mark.parametrize(
    ("n", "weights", "expected"),
    [(50, (9, 1, 0), [45, 5, 0]), (7, (9, 1, 0), [6, 1, 0]), (10, (1, 1, 1), [4, 3, 3]), (3, (0, 1, 0), [0, 3, 0])],
)
def test_split_counts(n, weights, expected):
    assert split_counts(n, weights) == expected and sum(expected) == n


def test_split_counts_refuse_bad_weights():
    with pytest.raises(ValueError, match="three non-negative weights"):
        split_counts(10, (1, 1))


def test_webdataset_shards_split_and_stream_back(tmp_path, data_file, make_image):
    (tmp_path / "img").mkdir()
    for i in range(50):
        os.rename(make_image(f"{i}.jpg", color=(i, 0, 0)), tmp_path / "img" / f"{i}.jpg")
    loaded = load_samples(DataArguments(dataset=str(data_file), cache_dir=str(tmp_path / "c")))
    out = tmp_path / "wds"
    assert write_webdataset(loaded.dataset, str(out), split=(8, 2, 0), shard_size=15, seed=3) == {
        "train": 40,
        "val": 10,
    }
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "*.tar"))) == [
        "train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar",
    ]  # fmt: skip
    read_back = {split: [Sample.from_row(row) for row in stream_shards(*shard_source(str(out), split))]
                 for split in ("train", "val")}  # fmt: skip
    assert [len(read_back["train"]), len(read_back["val"])] == [40, 10]
    originals = {row["id"]: Sample.from_row(row) for row in loaded.dataset}
    every = read_back["train"] + read_back["val"]
    assert sorted(s.id for s in every) == sorted(originals)
    for sample in every:  # the same conversation, and each image's own bytes inside the shard
        original = originals[sample.id]
        assert sample.turns == original.turns and sample.where.endswith(f"(from {original.where})")
        assert sample.media[0].data == open(original.media[0].path, "rb").read()
    assert [s.id for s in read_back["train"][:10]] != [f"r{i}" for i in range(10)]  # shuffled (seeded)


def test_extract_frames_at_an_interval_is_resumable(tmp_path, make_mp4):
    videos = tmp_path / "videos" / "sub"
    videos.mkdir(parents=True)
    os.rename(make_mp4("a.mp4", num_frames=24, fps=8), videos / "a.mp4")  # 3 s at 8 fps
    os.rename(make_mp4("b.mp4", num_frames=8, fps=2), videos / "b.mp4")  # 4 s at 2 fps
    (videos / "broken.mp4").write_bytes(b"not a video")
    report = extract_frames([str(tmp_path / "videos")], interval=0.5, num_proc=2)
    assert sorted(os.path.basename(v) for v in report.done) == ["a.mp4", "b.mp4"]
    assert (
        list(report.failed) == [str(videos / "broken.mp4")]
        and "cannot decode" in report.failed[str(videos / "broken.mp4")]
    )
    a = sorted(os.listdir(videos / "a"))
    assert a == [".framelm-written.json", *(f"{i:05d}.jpg" for i in range(1, 7))]  # 0, 0.5, ..., 2.5 s; the record
    assert json.loads((videos / "a.json").read_text()) == {"fps": "2.0"}
    assert json.loads((videos / "b.json").read_text()) == {"fps": "2.0"}
    clip = load_video(str(videos / "a"), num_frames=6)  # framelm reads the folder back, frames in time order
    assert [read_pattern_index(frame.numpy()) for frame in clip.frames] == [0, 4, 8, 12, 16, 20]
    assert probe_video(str(videos / "a"))["fps"] == 2.0

    again = extract_frames([str(tmp_path / "videos")], interval=0.5, num_proc=1)
    assert sorted(os.path.basename(v) for v in again.skipped) == ["a.mp4", "b.mp4"] and not again.done

    one_fps = extract_frames([str(videos / "a.mp4")], interval=1.0, overwrite=True, num_proc=1)
    assert len(one_fps.done) == 1 and sorted(os.listdir(videos / "a"))[1:] == [f"{i:05d}.jpg" for i in range(1, 4)]
    assert json.loads((videos / "a.json").read_text()) == {"fps": "1.0"}


def test_extract_frames_cli_into_another_root(tmp_path, make_mp4, capsys):
    video = make_mp4("clip.mp4", num_frames=8, fps=4)
    out = tmp_path / "frames"
    assert data_main(["extract-frames", str(video), "--interval", "0.25", "--out", str(out), "--num-proc", "1"]) == 0
    assert "1 videos extracted, 0 already done, 0 failed" in capsys.readouterr().out
    assert len(os.listdir(out / "clip")) == 8 + 1 and json.loads((out / "clip.json").read_text()) == {"fps": "4.0"}
