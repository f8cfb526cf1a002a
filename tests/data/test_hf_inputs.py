"""Hugging Face datasets as input: TRL's conversational format with embedded image bytes (parquet, arrow,
`save_to_disk`, a folder read by `load_dataset` with its config and split), OpenAI-style items, frame lists, and the
options LLaMA-Factory and ms-swift users expect (`max_samples`, `val_size`, a mixture YAML on an fsspec URL)."""

from __future__ import annotations

import base64
import glob
import io
import json
import time
from dataclasses import replace

import datasets
import fsspec
import pytest
import torch
import yaml
from PIL import Image

from framelm.training.batches.collator import FrameLMCollator
from framelm.training.cli import data_main
from framelm.training.data.arguments import DataArguments
from framelm.training.data.loading import load_samples
from framelm.training.data.mixture import MixtureError, load_mixture
from framelm.training.data.policy import BadRecordsError
from framelm.training.data.sample import Media, Sample, Turn
from framelm.training.data.validate import validate
from framelm.training.sft.data_prep import prepare_datasets

BROKEN_DATA_URL = "data:image/png;base64,@@"
COLOURS = [(255, 0, 0), (0, 0, 255), (0, 160, 0), (250, 200, 0)]
TRL_FEATURES = datasets.Features(
    {
        "messages": datasets.List(
            {
                "role": datasets.Value("string"),
                "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")}),
            }
        ),
        "images": datasets.List(datasets.Image()),
    }
)


def png(colour, size=(40, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def trl_rows(n: int) -> dict:
    """TRL's vision format: a `{"type": "image"}` item per image, the images as a list of Image features."""
    messages = [
        [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": f"Colour {i}?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"colour {i % len(COLOURS)}"}]},
        ]
        for i in range(n)
    ]
    images = [[{"bytes": png(COLOURS[i % len(COLOURS)]), "path": f"c{i}.png"}] for i in range(n)]
    return {"messages": messages, "images": images}


@pytest.fixture
def trl_dataset(tmp_path) -> datasets.Dataset:
    return datasets.Dataset.from_dict(trl_rows(8), features=TRL_FEATURES)


def source(tmp_path, form: str, dataset: datasets.Dataset) -> str:
    """`dataset` written as one of the input forms; returns the path to give framelm."""
    if form == "parquet":
        dataset.to_parquet(tmp_path / "trl.parquet")
        return str(tmp_path / "trl.parquet")
    if form == "save_to_disk":
        dataset.save_to_disk(tmp_path / "saved")
        return str(tmp_path / "saved")
    if form == "arrow":
        dataset.save_to_disk(tmp_path / "saved_for_arrow")
        return glob.glob(str(tmp_path / "saved_for_arrow" / "*.arrow"))[0]
    assert form == "hub_folder"  # what `load_dataset("org/name")` reads: a folder of split files
    (tmp_path / "hub" / "data").mkdir(parents=True)
    dataset.to_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    return str(tmp_path / "hub")


@pytest.mark.parametrize("form", ["parquet", "save_to_disk", "arrow", "hub_folder"])
def test_trl_format_with_embedded_images_reads_their_bytes_and_validates_clean(tmp_path, trl_dataset, form):
    path = source(tmp_path, form, trl_dataset)
    data = DataArguments(dataset=path, cache_dir=str(tmp_path / "cache"))
    loaded = load_samples(data)
    assert (loaded.total, len(loaded.dataset), loaded.problems) == (8, 8, [])
    assert set(loaded.formats.values()) == {"sharegpt"}
    sample = Sample.from_row(loaded.dataset[5])
    assert sample.turns == (Turn("user", "<image>Colour 5?"), Turn("assistant", "colour 1"))
    assert sample.media == (Media("image", "c5.png", png(COLOURS[1])),)  # the very bytes, no file involved
    assert sample.where.endswith(":row 6")
    report = validate(data)
    assert report.ok and report.total == 8 and report.good_records == 8 and not report.problems


def test_embedded_image_bytes_reach_the_processor_without_a_file(tmp_path, trl_dataset, tiny_processor, monkeypatch):
    loaded = load_samples(DataArguments(dataset=source(tmp_path, "parquet", trl_dataset), cache_dir=str(tmp_path)))
    image_file = tmp_path / "red.png"
    image_file.write_bytes(png(COLOURS[0]))
    on_disk = Sample(
        (Turn("user", "<image>Colour 0?"), Turn("assistant", "colour 0")), (Media("image", str(image_file)),)
    )
    expected = FrameLMCollator(tiny_processor)([on_disk.to_row()])

    def no_temporary_files(*args, **kwargs):
        raise AssertionError("an embedded image was written to disk")

    monkeypatch.setattr("tempfile.TemporaryDirectory", no_temporary_files)
    monkeypatch.setattr("tempfile.mkdtemp", no_temporary_files)
    batch = FrameLMCollator(tiny_processor)([loaded.dataset[0]])
    torch.testing.assert_close(batch["pixel_values"], expected["pixel_values"], rtol=0, atol=0)
    assert torch.equal(batch["input_ids"], expected["input_ids"])


def test_hub_folder_config_and_split_are_chosen_and_wrong_ones_listed(tmp_path, trl_dataset):
    folder = tmp_path / "hub"
    for config, size in (("small", 3), ("large", 8)):
        (folder / config).mkdir(parents=True)
        trl_dataset.select(range(size)).to_parquet(folder / config / "train.parquet")
        trl_dataset.select(range(2)).to_parquet(folder / config / "test.parquet")
    card = {"configs": [{"config_name": name, "data_files": [{"split": split, "path": f"{name}/{split}.parquet"}
                                                              for split in ("train", "test")]}
                        for name in ("small", "large")]}  # fmt: skip
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(card)}---\n")
    cache = str(tmp_path / "cache")
    small = load_samples(DataArguments(dataset=str(folder), dataset_config="small", cache_dir=cache))
    large_test = DataArguments(dataset=str(folder), dataset_config="large", dataset_split="test", cache_dir=cache)
    assert (small.total, load_samples(large_test).total) == (3, 2)
    with pytest.raises(ValueError, match=r"Unknown split \"validation\".*--dataset_split"):
        load_samples(DataArguments(dataset=str(folder), dataset_config="small", dataset_split="validation"))


def test_a_saved_dataset_dict_gives_the_split_asked_for(tmp_path, trl_dataset):
    datasets.DatasetDict({"train": trl_dataset, "val": trl_dataset.select(range(3))}).save_to_disk(tmp_path / "dd")
    assert load_samples(DataArguments(dataset=str(tmp_path / "dd"), dataset_split="val")).total == 3
    with pytest.raises(ValueError, match=r"holds the splits \['train', 'val'\], not 'test': pass --dataset_split"):
        load_samples(DataArguments(dataset=str(tmp_path / "dd"), dataset_split="test"))


def test_openai_image_url_items_and_data_urls(tmp_path):
    data_url = "data:image/png;base64," + base64.b64encode(png(COLOURS[2])).decode()
    records = [
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                                   {"type": "text", "text": "Colour?"}]},
                      {"role": "assistant", "content": "green"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "https://x.org/a.jpg"},
                                                   {"type": "text", "text": "And?"}]},
                      {"role": "assistant", "content": "blue"}]},
        {"messages": [{"role": "user", "content": "<image>What?"}, {"role": "assistant", "content": "a"}],
         "images": [data_url]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": BROKEN_DATA_URL}}]},
                      {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}], "images": [7]},
    ]  # fmt: skip
    path = tmp_path / "openai.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = load_samples(DataArguments(dataset=str(path), cache_dir=str(tmp_path / "cache")))
    first, second, third = (Sample.from_row(row) for row in loaded.dataset)
    assert first.media == (Media("image", "data URL", png(COLOURS[2])),) and first.turns[0].text == "<image>Colour?"
    assert second.media == (Media("image", "https://x.org/a.jpg"),)  # URLs pass through, fetched when read
    assert third.media == first.media
    bad_data_url, bad_item = loaded.problems
    assert (bad_data_url.kind, bad_data_url.where) == ("bad_media_path", f"{path}:4")
    assert "data URL" in bad_data_url.problem and "does not decode" in bad_data_url.problem
    assert bad_item.kind == "bad_media_path" and "'images' must be a path" in bad_item.problem


def test_videos_as_frame_lists_and_bytes_decode_like_their_files(
    tmp_path, tiny_processor, make_frame_folder, make_mp4
):
    folder = make_frame_folder("clip", num_frames=6, fps="2.0")
    frames = [{"bytes": (folder / f"{n:05d}.jpg").read_bytes(), "path": f"{n:05d}.jpg"} for n in range(1, 7)]
    video = make_mp4("v.mp4", num_frames=12)
    conversation = [{"from": "human", "value": "<video>\nWhat moves?"}, {"from": "gpt", "value": "a bar"}]
    features = datasets.Features(
        {
            "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")}),
            "videos": datasets.List(datasets.List(datasets.Image())),  # one video = its frames (LLaMA-Factory)
            "clips": datasets.List({"bytes": datasets.Value("binary"), "path": datasets.Value("string")}),
        }
    )
    table = datasets.Dataset.from_dict(
        {
            "conversations": [conversation] * 2,
            "videos": [[frames]] * 2,
            "clips": [[{"bytes": video.read_bytes(), "path": "v.mp4"}]] * 2,
        },  # fmt: skip
        features=features,
    )
    table.remove_columns("clips").to_parquet(tmp_path / "frames.parquet")
    table.remove_columns("videos").rename_column("clips", "videos").to_parquet(tmp_path / "clips.parquet")
    collate = FrameLMCollator(tiny_processor)
    for name, on_disk in (("frames", Media("frames", str(folder))), ("clips", Media("video", str(video)))):
        loaded = load_samples(DataArguments(dataset=str(tmp_path / f"{name}.parquet"), cache_dir=str(tmp_path / "c")))
        assert not loaded.problems and validate(DataArguments(dataset=str(tmp_path / f"{name}.parquet"))).ok
        embedded = Sample.from_row(loaded.dataset[0])
        assert embedded.media[0].embedded and embedded.media[0].kind == on_disk.kind
        expected = collate([Sample(embedded.turns, (on_disk,)).to_row()])["pixel_values_videos"]
        before = set(glob.glob("/tmp/framelm-video-*"))
        torch.testing.assert_close(collate([loaded.dataset[0]])["pixel_values_videos"], expected, rtol=0, atol=0)
        assert set(glob.glob("/tmp/framelm-video-*")) == before  # the temporary copy is gone once encoded


@pytest.mark.parametrize("form", ["json", "parquet", "save_to_disk", "hub_folder"])
def test_no_usable_record_says_so_and_points_at_validate(tmp_path, tiny_processor, form):
    bad = datasets.Dataset.from_dict(trl_rows(3), features=TRL_FEATURES).map(lambda row: {"images": []})
    if form == "json":
        (tmp_path / "bad.jsonl").write_text(
            "".join(json.dumps({"messages": m}) + "\n" for m in trl_rows(3)["messages"])
        )
        path = str(tmp_path / "bad.jsonl")
    else:
        path = source(tmp_path, form, bad)
    data = DataArguments(dataset=path, bad_records="skip", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(BadRecordsError, match=r"(?s)no usable record \(3 read.*`framelm data validate .*` says what"):
        prepare_datasets(data, tiny_processor, max_length=None)
    with pytest.raises(
        BadRecordsError, match=r"(?s)3 of 3 records cannot be used.*placeholder.*framelm data validate"
    ):
        prepare_datasets(DataArguments(dataset=path, cache_dir=str(tmp_path / "cache")), tiny_processor, None)


def test_max_samples_reads_the_first_records_of_each_source(tmp_path, trl_dataset):
    rows = [{"id": f"r{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
            for i in range(2500)]  # fmt: skip
    (tmp_path / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = str(tmp_path / "cache")
    first = load_samples(DataArguments(dataset=str(tmp_path / "big.jsonl"), max_samples=1001, cache_dir=cache))
    assert first.total == 1001 and first.dataset["id"][-1] == "r1000"
    parquet = load_samples(DataArguments(dataset=source(tmp_path, "parquet", trl_dataset), max_samples=3))
    assert parquet.total == 3 and parquet.dataset["where"][-1].endswith("row 3")
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(yaml.safe_dump([{"json_path": "big.jsonl", "sampling_strategy": "end:100"},
                                       {"json_path": "trl.parquet"}]))  # fmt: skip
    mixed = load_samples(DataArguments(dataset=str(mixture), max_samples=5, cache_dir=cache))
    assert mixed.dataset["id"][:5] == [f"r{i}" for i in range(2400, 2405)] and mixed.total == 10  # 5 of each


def test_val_size_holds_out_seeded_records_and_data_commands_refuse_it(tmp_path, tiny_processor, trl_dataset, capsys):
    path = source(tmp_path, "parquet", trl_dataset)

    def held_out(val_size, seed):
        data = DataArguments(dataset=path, val_size=val_size, sampling_seed=seed, cache_dir=str(tmp_path / "c"))
        prepared = prepare_datasets(data, tiny_processor, max_length=None)
        return sorted(prepared.train["where"]), sorted(prepared.eval["where"])

    train, evaluation = held_out(0.25, seed=1)
    assert (len(train), len(evaluation)) == (6, 2) and not set(train) & set(evaluation)
    assert held_out(0.25, seed=1) == (train, evaluation) and held_out(3, seed=1)[1] != evaluation
    assert len(held_out(3, seed=1)[1]) == 3
    with pytest.raises(ValueError, match="--val_size and --eval_dataset both give the evaluation records"):
        prepare_datasets(DataArguments(dataset=path, val_size=2), tiny_processor, None, eval_dataset=path)
    with pytest.raises(ValueError, match=r"--val_size 1.5 must be a share in \[0, 1\) or a whole number"):
        DataArguments(dataset=path, val_size=1.5)
    assert data_main(["validate", path, "--val-size", "0.1"]) == 2
    assert "--val_size applies to `framelm train`, not to `framelm data validate`" in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_a_mixture_yaml_on_an_fsspec_url(tmp_path, trl_dataset, scheme):
    source(tmp_path, "save_to_disk", trl_dataset)
    source(tmp_path, "hub_folder", trl_dataset)
    entries = [{"name": "saved", "json_path": str(tmp_path / "saved"), "sampling_strategy": "first:2"},
               {"name": "hub", "json_path": "hub" if scheme == "file" else str(tmp_path / "hub"),
                "dataset_split": "train"}]  # fmt: skip
    url = "memory://mixtures/mix.yaml" if scheme == "memory" else f"file://{tmp_path}/mix.yaml"
    with fsspec.open(url, "w") as f:
        f.write(yaml.safe_dump(entries))
    if scheme == "memory":  # an fsspec protocol off the allow-list of data/paths.py: refused, saying why
        with pytest.raises(MixtureError, match=r"memory://mixtures/mix.yaml: .* the memory:// scheme is not allowed"):
            load_samples(DataArguments(dataset=url, cache_dir=str(tmp_path / "cache")))
        return
    loaded = load_samples(DataArguments(dataset=url, cache_dir=str(tmp_path / "cache")))
    assert loaded.total == 2 + 8 and sorted(set(loaded.dataset["source"])) == ["hub", "saved"]
    assert Sample.from_row(loaded.dataset[0]).media[0].data == png(COLOURS[0])


@pytest.mark.slow
@pytest.mark.parametrize("form", ["parquet", "save_to_disk"])
def test_train_two_steps_on_trl_format_data(tiny_model_dir, tmp_path, trl_dataset, form):
    from framelm.training.sft.train import parse_args, run

    path = source(tmp_path, form, trl_dataset)
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", path, "--output_dir", str(tmp_path / "out"),
            "--per_device_train_batch_size", "2", "--max_steps", "2", "--dataloader_num_workers", "0",
            "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--cache_dir", str(tmp_path / "c"),
            "--activation_checkpointing", "false", "--seed", "0"]  # fmt: skip
    trainer = run(*parse_args(argv))
    assert trainer.state.global_step == 2 and trainer.state.log_history[0]["media_tokens_per_second"] > 0
    assert len(trainer.train_dataset) == 8


# --- streaming the same sources (`--streaming`) -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["parquet", "save_to_disk", "hub_folder"])
def test_streaming_a_table_source_gives_the_rows_load_samples_gives(tmp_path, trl_dataset, form):
    from framelm.training.data.streaming import stream_samples

    data = DataArguments(dataset=source(tmp_path, form, trl_dataset), cache_dir=str(tmp_path / "cache"))
    assert list(stream_samples(data)) == load_samples(data).dataset.to_list()
    assert [row["where"] for row in stream_samples(replace(data, max_samples=3))] == load_samples(
        replace(data, max_samples=3)
    ).dataset["where"]


def test_streaming_checks_the_length_rule_record_by_record(tmp_path, tiny_processor):
    records = [{"id": f"r{i}", "conversations": [{"from": "human", "value": "word " * (3 if i != 2 else 300)},
                                                 {"from": "gpt", "value": "ok"}]} for i in range(5)]  # fmt: skip
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = DataArguments(dataset=str(path), streaming=True)
    with pytest.raises(BadRecordsError, match=rf"{path}:3 \(id=r2\): the first exchange needs \d+ tokens"):
        list(prepare_datasets(data, tiny_processor, max_length=64).train)  # strict: stops at the record
    skip = prepare_datasets(replace(data, bad_records="skip"), tiny_processor, max_length=64)
    rows = list(skip.train)
    assert skip.streamed and skip.records is None  # a json file does not know its length: --max_steps needed
    assert sorted(r["id"] for r in rows) == ["r0", "r1", "r3", "r4"] and all(r["num_tokens"] <= 64 for r in rows)
    with pytest.raises(ValueError, match="--val_size needs the records in the Arrow cache"):
        prepare_datasets(replace(data, val_size=2), tiny_processor, max_length=64)


def test_embedded_images_convert_into_shards_as_their_own_bytes(tmp_path, trl_dataset, tiny_model_dir, capsys):
    from framelm.training.data.shards import shard_source, stream_shards

    path = source(tmp_path, "parquet", trl_dataset)
    out = tmp_path / "shards"
    assert data_main(["convert", path, "--out", str(out), "--to", "webdataset", "--split", "1,0,0"]) == 0
    rows = list(stream_shards(*shard_source(str(out))))
    by_id = {Sample.from_row(r).where.split("(from ")[1].rstrip(")"): Sample.from_row(r) for r in rows}
    assert len(by_id) == 8 and by_id[f"{path}:row 3"].media == (Media("image", "0.png", png(COLOURS[2])),)
    capsys.readouterr()
    assert data_main(["stats", str(out), "--model", str(tiny_model_dir)]) == 0
    assert "8 records" in capsys.readouterr().out


def test_a_mixture_yaml_on_http_is_fetched_within_a_total_deadline(tmp_path, trl_dataset, monkeypatch):
    from support.media_server import serve_media

    from framelm.processing.sources_framelm import FetchLimits
    from framelm.training.data import mixture
    from framelm.training.data.mixture import MixtureError

    source(tmp_path, "save_to_disk", trl_dataset)
    entries = yaml.safe_dump([{"name": "saved", "json_path": str(tmp_path / "saved"), "sampling_strategy": "first:2"}])
    monkeypatch.setattr(mixture, "MIXTURE_FETCH", FetchLimits(timeout=2.0, max_bytes=1 << 20))
    with serve_media({"/mix.yaml": entries.encode()}) as server:
        loaded = load_samples(DataArguments(dataset=server.url("/mix.yaml"), cache_dir=str(tmp_path / "cache")))
        assert loaded.total == 2 and set(loaded.dataset["source"]) == {"saved"}
        started = time.monotonic()
        with pytest.raises(MixtureError, match=r"/silent: cannot fetch the mixture file: .*did not finish within 2 s"):
            load_mixture(server.url("/silent"))
        assert time.monotonic() - started < 6  # the deadline, not the server, ends the wait
        with pytest.raises(MixtureError, match=r"/missing.yaml: no such mixture file"):
            load_mixture(server.url("/missing.yaml"))
