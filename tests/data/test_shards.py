"""Self-contained WebDataset shards: written with their media, moved, validated, read by framelm, `webdataset`,
`datasets` and megatron-energon, streamed to training by rank and worker, and resumed mid-epoch exactly."""

from __future__ import annotations

import glob
import itertools
import json
import os
import shutil
import sys
from pathlib import Path

import datasets
import pytest
import torch
from support.processes import free_port, run_process
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from framelm.training.cli import data_main
from framelm.training.data.arguments import DataArguments
from framelm.training.data.policy import BadRecordsError
from framelm.training.data.sample import Sample
from framelm.training.data.shard_writer import SENDFILE_FROM
from framelm.training.data.shards import read_manifest, shard_source, stream_shards
from framelm.training.data.sources import SHARD_MANIFEST
from framelm.training.env import framelm_version as version

RECORDS = 20


@pytest.fixture
def llava_media(tmp_path, make_image, make_mp4, make_frame_folder):
    """RECORDS records using an image each (a distinct colour), and every third one a video file and a frame folder
    whose first frame is larger than SENDFILE_FROM (bytes after a JPEG's end are ignored by decoders)."""
    make_mp4("clip.mp4", num_frames=8)
    folder = make_frame_folder("frames", num_frames=5, fps="2.0")
    with open(sorted(Path(folder).iterdir())[0], "ab") as first:
        first.write(os.urandom(SENDFILE_FROM))
    records = []
    for i in range(RECORDS):
        make_image(f"img{i}.png", color=(10 * i, 0, 255 - 10 * i))
        record = {"id": f"r{i}", "image": f"img{i}.png",
                  "conversations": [{"from": "human", "value": f"<image>\nQuestion {i}?"},
                                    {"from": "gpt", "value": f"Answer {i}."}]}  # fmt: skip
        if i % 3 == 0:
            record["video"] = ["clip.mp4", "frames"]
            record["conversations"][0]["value"] += " <video> then <video>"
        records.append(record)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


def convert(data_file, out, *extra) -> int:
    return data_main(["convert", str(data_file), "--out", str(out), "--to", "webdataset", "--split", "8,2,0",
                      "--shard-size", "4", "--cache-dir", str(data_file.parent / "cache"), *extra])  # fmt: skip


def test_shards_carry_their_media_and_read_back_after_a_move(tmp_path, llava_media, capsys):
    assert convert(llava_media, tmp_path / "wds") == 0
    moved = tmp_path / "elsewhere" / "wds"
    shutil.move(tmp_path / "wds", moved)
    for name in ("img3.png", "clip.mp4", "frames"):  # nothing outside the shards is needed any more
        shutil.move(tmp_path / name, tmp_path / f"gone-{name}")
    manifest = json.loads((moved / SHARD_MANIFEST).read_text())
    assert manifest["framelm_version"] == version()
    assert {name: split["records"] for name, split in manifest["splits"].items()} == {"train": 16, "val": 4}
    assert manifest["splits"]["train"]["shards"] == [f"train-{i:06d}.tar" for i in range(4)]
    capsys.readouterr()
    assert data_main(["validate", str(moved), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "usable                              16" in capsys.readouterr().out
    assert data_main(["validate", str(moved / "val-*.tar"), "--cache-dir", str(tmp_path / "c")]) == 0

    samples = [
        Sample.from_row(row) for split in ("train", "val") for row in stream_shards(*shard_source(moved, split))
    ]
    assert sorted(s.id for s in samples) == sorted(f"r{i}" for i in range(RECORDS))
    keys = [s.where.split(":")[1].split(" ")[0] for s in samples]
    assert len(set(keys)) == RECORDS and {k.split("_")[0] for k in keys} == {"train", "val"}  # unique across splits
    third = next(s for s in samples if s.id == "r3")
    image, video, frames = third.media
    assert image.data == (tmp_path / "gone-img3.png").read_bytes() and image.path == "0.png"
    assert video.kind == "video" and video.data == (tmp_path / "gone-clip.mp4").read_bytes()
    originals = sorted((tmp_path / "gone-frames").iterdir())
    assert frames.kind == "frames" and frames.fps == 2.0
    assert [f.data for f in frames.frames] == [p.read_bytes() for p in originals]
    assert third.where.endswith(f"(from {llava_media}:1)")  # the record it came from


def test_webdataset_and_datasets_read_the_same_shards_and_find_the_media(tmp_path, llava_media):
    import webdataset

    assert convert(llava_media, tmp_path / "wds") == 0
    files = sorted(glob.glob(str(tmp_path / "wds" / "train-*.tar")))
    by_library = {sample["__key__"]: sample for sample in webdataset.WebDataset(files, shardshuffle=False)}
    assert len(by_library) == 16
    for key, sample in by_library.items():
        doc = json.loads(sample["json"])
        image = sample[doc["media"][0]["name"]]
        assert image == (tmp_path / f"img{doc['id'][1:]}.png").read_bytes(), key
        for item in doc["media"][1:]:  # a frame folder's frames are members too, in time order
            names = item["frames"] or [item["name"]]
            assert all(isinstance(sample[name], bytes) and sample[name] for name in names)

    by_datasets = datasets.load_dataset(str(tmp_path / "wds"), split="train", streaming=True)  # the dataset card
    rows = list(by_datasets)
    assert len(rows) == 16 and {r["json"]["id"] for r in rows} == {
        json.loads(s["json"])["id"] for s in by_library.values()
    }
    for row in rows:
        image = row[row["json"]["media"][0]["name"]]
        assert image["bytes"] == (tmp_path / f"img{row['json']['id'][1:]}.png").read_bytes()
    validation = datasets.load_dataset(str(tmp_path / "wds"), split="validation", streaming=True)
    assert len(list(validation)) == 4


def test_energon_prepare_accepts_the_shards_and_energon_reads_them(tmp_path, llava_media):
    from megatron.energon import Cooker, DefaultTaskEncoder, WorkerConfig, get_loader, get_train_dataset, stateless

    assert convert(llava_media, tmp_path / "wds") == 0
    prepare = [sys.executable, "-m", "megatron.energon.cli.main", "prepare", str(tmp_path / "wds"),
               "--non-interactive", "--split-parts", r"train:train-.*\.tar", "--split-parts", r"val:val-.*\.tar",
               "--num-workers", "1", "--no-progress"]  # fmt: skip
    result = run_process(prepare, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "duplicate" not in (result.stdout + result.stderr).lower()
    assert (tmp_path / "wds" / ".nv-meta" / "dataset.yaml").read_text().endswith("__class__: CrudeWebdataset\n")

    @stateless
    def cook(sample):
        doc = sample["json"]
        return {"id": doc["id"], "image": sample[doc["media"][0]["name"]]}

    class Encoder(DefaultTaskEncoder):
        cookers = [Cooker(cook)]

        def encode_sample(self, sample):
            return sample

        def batch(self, samples):
            return samples

    workers = WorkerConfig(rank=0, world_size=1, num_workers=0)
    dataset = get_train_dataset(str(tmp_path / "wds"), batch_size=None, shuffle_buffer_size=None,
                                max_samples_per_sequence=None, worker_config=workers, task_encoder=Encoder(),
                                repeat=False)  # fmt: skip
    seen = list(get_loader(dataset))
    assert len(seen) == 16
    for sample in seen:  # energon decoded the image member to a tensor: its pixels are the record's colour
        i = int(sample["id"][1:])
        assert torch.equal(sample["image"][:, 0, 0], torch.tensor([10 * i, 0, 255 - 10 * i]) / 255)


def test_convert_refuses_a_foreign_folder_and_replaces_its_own_output_whole(tmp_path, llava_media, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert convert(llava_media, foreign) == 1
    assert "holds what `framelm data convert` did not write (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    out = tmp_path / "wds"
    assert convert(llava_media, out) == 0
    assert len(glob.glob(str(out / "*.tar"))) == 5
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps(json.loads(llava_media.read_text())[:5]))
    assert convert(fewer, out) == 0  # an earlier output is replaced as a whole: no stale shard for a glob to read
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar", "val-000000.tar"]
    streamed = list(stream_shards(*shard_source(str(out / "*.tar"))))
    assert len(streamed) == 5 and not list(tmp_path.glob(".wds.*"))


def test_an_interrupted_convert_leaves_the_previous_output_intact(tmp_path, llava_media, monkeypatch):
    out = tmp_path / "wds"
    assert convert(llava_media, out) == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    import framelm.training.data.shard_writer as writer

    calls = []
    write_shard = writer._write_shard

    def crash_on_third(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return write_shard(job)

    monkeypatch.setattr(writer, "_write_shard", crash_on_third)
    assert convert(llava_media, out, "--sampling-seed", "7") == 130  # `framelm: interrupted`, the shell's code
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before
    # the half-written folder stays hidden beside it, its two complete shards kept for the next run of this convert
    (partial,) = tmp_path.glob(".wds.partial-*")
    assert sorted(p.name for p in partial.glob("*.tar")) == ["train-000000.tar", "train-000001.tar"]
    assert not (partial / SHARD_MANIFEST).exists()

    monkeypatch.setattr(writer, "_write_shard", write_shard)
    assert convert(llava_media, out) == 0  # another seed: the partial folder is not this convert's, it starts over
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before
    assert [p.name for p in tmp_path.glob(".wds.*")] == []


def test_unreadable_media_are_bad_records_of_the_convert(tmp_path, llava_media, capsys):
    (tmp_path / "img4.png").unlink()
    assert convert(llava_media, tmp_path / "wds") == 1
    error = capsys.readouterr().err
    assert "1 of 20 records cannot be used" in error and "(id=r4): cannot read its media" in error
    assert not (tmp_path / "wds").exists()
    assert convert(llava_media, tmp_path / "wds", "--bad-records", "skip") == 0
    assert json.loads((tmp_path / "wds" / SHARD_MANIFEST).read_text())["splits"]["train"]["records"] == 15


def test_each_rank_and_worker_reads_its_own_shards(tmp_path, llava_media, tiny_processor):
    """The training stream split the way accelerate splits it (`dispatch_batches=False`: `IterableDataset.shard` per
    rank), then across 2 DataLoader workers per rank: every record exactly once."""
    from accelerate.data_loader import prepare_data_loader

    from framelm.training.sft.data_prep import stream_for_training

    assert convert(llava_media, tmp_path / "wds") == 0
    stream = stream_for_training(DataArguments(dataset=str(tmp_path / "wds")), tiny_processor, None, seed=3)
    assert stream.n_shards == 4
    seen = []
    for rank in range(2):
        loader = DataLoader(stream, batch_size=2, num_workers=2, collate_fn=lambda rows: [r["id"] for r in rows])
        prepared = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False,
                                       dispatch_batches=False)  # fmt: skip
        ids = [i for batch in prepared for i in batch]
        assert len(ids) == 8, (rank, ids)
        seen.append(set(ids))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 16


def test_shards_without_a_usable_record_say_so(tmp_path, llava_media, tiny_processor):
    from framelm.training.sft.data_prep import prepare_datasets

    assert convert(llava_media, tmp_path / "wds") == 0
    data = DataArguments(dataset=str(tmp_path / "wds"), bad_records="skip")
    with pytest.raises(BadRecordsError, match=r"wds: no usable record in the stream .*`framelm data validate .*wds`"):
        prepare_datasets(data, tiny_processor, max_length=8)  # no record's first exchange fits 8 tokens


def test_shards_are_never_packed_but_may_train_padding_free(tmp_path, llava_media, tiny_processor):
    from framelm.training.batches.layout import BatchLayout
    from framelm.training.sft.data_prep import prepare_datasets

    assert convert(llava_media, tmp_path / "wds") == 0
    data = DataArguments(dataset=str(tmp_path / "wds"))
    with pytest.raises(ValueError, match=r"--packing sorts all the records .*pass --padding_free true instead"):
        prepare_datasets(data, tiny_processor, 512, layout=BatchLayout(packing=True))
    prepared = prepare_datasets(data, tiny_processor, 512, layout=BatchLayout(padding_free=True))
    batch = prepared.collator(list(itertools.islice(prepared.train, 3)))
    assert batch["input_ids"].shape[0] == 1 and int((batch["position_ids"] == 0).sum()) >= 3  # three samples, one row


def test_configure_for_stream_counts_steps_from_the_manifest(tmp_path, llava_media):
    from framelm.training.sft.arguments import FrameLMSFTConfig
    from framelm.training.sft.data_prep import configure_for_stream

    args = FrameLMSFTConfig(output_dir=str(tmp_path / "o"), per_device_train_batch_size=3, num_train_epochs=2,
                            report_to="none")  # fmt: skip
    configure_for_stream(args, records=16)
    assert args.max_steps == 2 * 6 and args.accelerator_config.dispatch_batches is False
    with pytest.raises(ValueError, match="a stream has no length: pass --max_steps"):
        configure_for_stream(FrameLMSFTConfig(output_dir=str(tmp_path / "o"), report_to="none"), records=None)
    with pytest.raises(ValueError, match=f"no {SHARD_MANIFEST} beside the shards"):
        read_manifest(str(tmp_path))


# --- training from shards (slow) ---------------------------------------------------------------------------------


def train_argv(model_dir, data, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--dataset", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--report_to", "none",
            "--logging_steps", "1", "--activation_checkpointing", "false", "--seed", "0", *extra]  # fmt: skip


@pytest.mark.slow
def test_train_two_steps_from_moved_shards_with_two_workers(tiny_model_dir, tmp_path, llava_media):
    from framelm.training.sft.train import parse_args, run

    assert convert(llava_media, tmp_path / "wds") == 0
    shutil.move(tmp_path / "wds", tmp_path / "moved")
    out = tmp_path / "out"
    argv = train_argv(tiny_model_dir, tmp_path / "moved", out, "--max_steps", "2", "--dataloader_num_workers", "2",
                      "--save_strategy", "no")  # fmt: skip
    trainer = run(*parse_args(argv))
    assert isinstance(trainer.train_dataset, datasets.IterableDataset)
    assert trainer.state.global_step == 2 and trainer.state.log_history[0]["media_tokens_per_second"] > 0
    assert (out / "model.safetensors").exists()


@pytest.mark.slow
def test_resume_mid_epoch_on_shards_trains_exactly_the_batches_an_uninterrupted_run_would(
    tiny_model_dir, tmp_path, llava_media, monkeypatch
):
    from framelm.training.sft.train import parse_args, run
    from framelm.training.sft.trainer import FrameLMTrainer

    assert convert(llava_media, tmp_path / "wds") == 0
    trained = []  # input_ids of every batch that reached a training step, in order
    training_step = FrameLMTrainer.training_step

    def recording_step(self, model, inputs, *args, **kwargs):
        trained.append(inputs["input_ids"].clone())
        return training_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(FrameLMTrainer, "training_step", recording_step)
    common = ("--max_steps", "6", "--dataloader_num_workers", "2", "--save_strategy", "steps", "--save_steps", "3",
              "--shuffle_buffer", "4")  # fmt: skip
    run(*parse_args(train_argv(tiny_model_dir, tmp_path / "wds", tmp_path / "straight", *common)))
    straight, trained[:] = list(trained), []

    class StopAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 3

    interrupted = tmp_path / "interrupted"
    run(*parse_args(train_argv(tiny_model_dir, tmp_path / "wds", interrupted, *common)), callbacks=[StopAt3()])
    first_part, trained[:] = list(trained), []
    resume = ("--resume_from_checkpoint", str(interrupted / "checkpoint-3"))
    run(*parse_args(train_argv(tiny_model_dir, tmp_path / "wds", interrupted, *common, *resume)))
    assert len(straight) == 6 and len(first_part) == 3 and len(trained) == 3
    assert len({tuple(ids.flatten().tolist()) for ids in straight}) == 6  # six different batches
    for step, (expected, got) in enumerate(zip(straight, first_part + trained, strict=True), start=1):
        assert torch.equal(expected, got), f"step {step} trained another batch"


@pytest.mark.slow
def test_ddp_on_two_processes_streams_the_shards(tiny_model_dir, tmp_path, llava_media):
    """`framelm train --accelerate_config ddp --num_processes 2` on shards: each rank reads its own shards (no batch
    is sent from rank 0), and both finish the steps together."""
    assert convert(llava_media, tmp_path / "wds") == 0
    command = [sys.executable, "-m", "framelm.training.cli", "train", "--accelerate_config", "ddp",
               "--num_processes", "2", "--main_process_port", str(free_port()),
               *train_argv(tiny_model_dir, tmp_path / "wds", tmp_path / "out", "--max_steps", "2",
                           "--dataloader_num_workers", "1", "--save_strategy", "no")]  # fmt: skip
    result = run_process(command, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    assert (tmp_path / "out" / "model.safetensors").exists()
    hyperparameters = json.loads((tmp_path / "out" / "framelm_run.json").read_text())["hyperparameters"]
    assert hyperparameters["num_processes"] == 2 and hyperparameters["global_steps"] == 2


@pytest.mark.parametrize(("shard_size", "pattern"), [("100", "train-000000.tar"), ("4", "train-{000000..000003}.tar")])
def test_the_cards_webdataset_example_opens_exactly_the_shards_written(tmp_path, llava_media, shard_size, pattern):
    import re

    import webdataset

    assert convert(llava_media, tmp_path / "wds", "--shard-size", shard_size) == 0
    card = (tmp_path / "wds" / "README.md").read_text()
    (shown,) = re.findall(r'webdataset\.WebDataset\("THIS_FOLDER/([^"]+)"\)', card)
    assert shown == pattern
    samples = list(webdataset.WebDataset(str(tmp_path / "wds" / shown), shardshuffle=False))
    assert len(samples) == 16  # every train sample, from shards that all exist


@pytest.mark.parametrize("num_proc", [1, 2])
def test_shards_hold_the_seeded_order_of_a_filtered_dataset(tmp_path, llava_media, num_proc, monkeypatch):
    """The writer gathers rows by position: through a dataset's indices mapping (a filter, a shuffle) too, in the
    seeded permutation, whether one process writes or several, and whether the rows are copied into one table or
    gathered from the memory map (a dataset over `CONTIGUOUS_ROWS_BYTES`): the same bytes either way."""
    import tarfile

    import numpy as np

    from framelm.training.data import shard_writer
    from framelm.training.data.loading import load_samples

    dataset = load_samples(DataArguments(dataset=str(llava_media), cache_dir=str(tmp_path / "cache"))).dataset
    dataset = dataset.shuffle(seed=7).filter(lambda row: row["id"] != "r5")  # both leave an indices mapping
    out = tmp_path / "wds"
    counts = shard_writer.write_webdataset(
        dataset, str(out), split=(1, 0, 0), shard_size=3, seed=11, num_proc=num_proc
    )
    written = []
    for path in sorted(out.glob("train-*.tar")):
        with tarfile.open(path) as tar:
            written += [json.load(tar.extractfile(m))["id"] for m in tar if m.name.endswith(".json")]
    expected = [dataset[int(i)]["id"] for i in np.random.default_rng(11).permutation(len(dataset))]
    assert counts == {"train": RECORDS - 1}
    assert written == expected and "r5" not in written
    monkeypatch.setattr(shard_writer, "CONTIGUOUS_ROWS_BYTES", 0)  # every dataset is gathered from the memory map
    shard_writer.write_webdataset(dataset, str(tmp_path / "mapped"), split=(1, 0, 0), shard_size=3, seed=11,
                                  num_proc=num_proc)  # fmt: skip
    assert sorted(out.glob("*.tar")) and all(
        path.read_bytes() == (tmp_path / "mapped" / path.name).read_bytes() for path in out.glob("*.tar")
    )
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(p.name for p in (tmp_path / "mapped").glob("*.tar"))
