"""The one length rule (`data/budget.py`): `num_tokens` is exactly the collated length, `kept_turns` keeps whole
exchanges, and records whose first exchange cannot fit are reported bad records under either policy."""

from __future__ import annotations

import copy
import json

import datasets
import pytest

from framelm.training.batches.collator import FrameLMCollator
from framelm.training.data.arguments import DataArguments
from framelm.training.data.budget import measure_lengths, too_long_problems, truncation_counts
from framelm.training.data.policy import BadRecordsError
from framelm.training.data.sample import SAMPLE_FEATURES, Media, Sample, Turn
from framelm.training.sft.data_prep import load_for_training


@pytest.fixture
def samples(make_image, make_mp4, make_frame_folder) -> dict[str, Sample]:
    """One sample of every shape the rule must count: text only, image, video, frame folder, multi-turn, system."""
    image, video, frames = str(make_image("a.png")), str(make_mp4("v.mp4", num_frames=8)), str(make_frame_folder())
    return {
        "text": Sample(turns=(Turn("user", "Say yes."), Turn("assistant", "yes"))),
        "image": Sample(turns=(Turn("user", "<image>What colour?"), Turn("assistant", "red")),
                        media=(Media("image", image),)),
        "video": Sample(turns=(Turn("user", "Which way?\n<video>"), Turn("assistant", "left")),
                        media=(Media("video", video),)),
        "frames": Sample(turns=(Turn("user", "<video>What moves?"), Turn("assistant", "a bar")),
                         media=(Media("frames", frames),)),
        "multi_turn": Sample(
            turns=(Turn("user", "<video>Which way?"), Turn("assistant", "left"),
                   Turn("user", "<image><image>Same colour as these?"), Turn("assistant", "no"),
                   Turn("user", "Say yes."), Turn("assistant", "yes")),
            media=(Media("video", video), Media("image", image), Media("image", image)),
        ),
        "system": Sample(turns=(Turn("user", "<image>Colour?"), Turn("assistant", "red")),
                         media=(Media("image", image),), system="Answer with one word."),
    }  # fmt: skip


def as_dataset(samples) -> datasets.Dataset:
    return datasets.Dataset.from_list([s.to_row() for s in samples], features=SAMPLE_FEATURES)


def collated_length(processor, row: dict) -> int:
    return FrameLMCollator(processor)([row])["input_ids"].shape[1]


@pytest.mark.parametrize("name", ["text", "image", "video", "frames", "multi_turn", "system"])
def test_num_tokens_is_the_length_the_collator_produces(tiny_processor, samples, name):
    (row,) = measure_lengths(as_dataset([samples[name]]), tiny_processor, max_length=None)
    collated = FrameLMCollator(tiny_processor)([row])
    assert row["num_tokens"] == row["total_tokens"] == collated["input_ids"].shape[1]
    media_ids = [tiny_processor.image_token_id, tiny_processor.video_token_id]
    assert row["media_tokens"] == sum(int((collated["input_ids"] == i).sum()) for i in media_ids)
    assert row["kept_turns"] == len(samples[name].turns)


def test_truncation_keeps_whole_exchanges_and_the_collator_only_slices(tiny_processor, samples):
    sample = samples["multi_turn"]  # 64 video tokens in exchange 1, 2 x 16 image tokens in exchange 2
    (full,) = measure_lengths(as_dataset([sample]), tiny_processor, max_length=None)
    lengths = [collated_length(tiny_processor, full | {"kept_turns": k}) for k in (2, 4, 6)]
    assert lengths[-1] == full["num_tokens"] and lengths[0] < lengths[1] < lengths[2]
    for max_length, kept, num_tokens in [
        (lengths[2], 6, lengths[2]),
        (lengths[2] - 1, 4, lengths[1]),  # one token short: the last exchange goes, whole
        (lengths[1] - 1, 2, lengths[0]),  # the image exchange goes with both its images
        (lengths[0], 2, lengths[0]),
        (lengths[0] - 1, 0, lengths[0]),  # the first exchange alone does not fit: num_tokens is what it needs
    ]:
        (row,) = measure_lengths(as_dataset([sample]), tiny_processor, max_length=max_length)
        assert (row["kept_turns"], row["num_tokens"], row["total_tokens"]) == (kept, num_tokens, lengths[2])
        if kept:
            batch = FrameLMCollator(tiny_processor)([row])
            assert batch["input_ids"].shape[1] == num_tokens <= max_length
            images = 0 if kept == 2 else 2
            assert len(batch.get("pixel_values", ())) == images  # the dropped exchange's media went with it


def test_frames_per_video_come_from_the_processor(tiny_processor, samples):
    two_frames = copy.deepcopy(tiny_processor)
    two_frames.num_frames = 2
    (row,) = measure_lengths(as_dataset([samples["video"]]), two_frames, max_length=None)
    assert row["media_tokens"] == 2 * 16 and row["num_tokens"] == collated_length(two_frames, row)
    (four,) = measure_lengths(as_dataset([samples["video"]]), tiny_processor, max_length=None)
    assert four["media_tokens"] == 4 * 16  # a new processor setting is not served from the first one's cache


@pytest.mark.parametrize("bos_in_template", [False, True])
def test_counts_stay_exact_with_a_tokenizer_that_adds_bos(tiny_processor, samples, bos_in_template):
    processor = copy.deepcopy(tiny_processor)
    processor.tokenizer.bos_token = "<|endoftext|>"
    processor.tokenizer.add_bos_token = True  # as Llama's tokenizers do
    if bos_in_template:  # the template writes BOS itself: transformers then adds no special tokens
        processor.chat_template = "{{ bos_token }}" + processor.chat_template
    rows = measure_lengths(as_dataset([samples["image"], samples["text"]]), processor, max_length=None)
    for row in rows:
        assert row["num_tokens"] == collated_length(processor, row)
        assert FrameLMCollator(processor)([row])["input_ids"][0, 0] == processor.tokenizer.bos_token_id


def test_measured_columns_are_cached_with_the_dataset(tmp_path, tiny_processor):
    path = tmp_path / "d.jsonl"
    record = {"conversations": [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]}
    path.write_text(json.dumps(record) + "\n")
    from framelm.training.data.loading import load_samples

    loaded = load_samples(DataArguments(dataset=str(path), cache_dir=str(tmp_path / "c")))
    first = measure_lengths(loaded.dataset, tiny_processor, max_length=100)
    again = measure_lengths(loaded.dataset, tiny_processor, max_length=100)
    assert first.cache_files and again.cache_files == first.cache_files  # read back, not counted again
    other = measure_lengths(loaded.dataset, tiny_processor, max_length=5)
    assert other.cache_files != first.cache_files and other[0]["kept_turns"] == 0


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def conversation(question: str, answer: str = "ok") -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def test_a_first_exchange_too_long_is_a_bad_record_under_strict_and_skip(tmp_path, tiny_processor, make_mp4):
    make_mp4("v.mp4", num_frames=8)
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"id": "short", "conversations": conversation("Hi")},
        {"id": "video", "video": "v.mp4", "conversations": conversation("<video>What?")},  # 64 video tokens alone
    ])  # fmt: skip
    data = DataArguments(dataset=path, cache_dir=str(tmp_path / "c"))
    with pytest.raises(BadRecordsError, match=r"1 of 2 records cannot be used:\n.*d.jsonl:2 \(id=video\): the first "
                       r"exchange needs \d+ tokens \(media included\) but max_length is 40"):  # fmt: skip
        load_for_training(data, tiny_processor, max_length=40)
    data.bad_records, data.max_bad_fraction = "skip", 0.5  # one record in two is within this budget
    dataset, skipped = load_for_training(data, tiny_processor, max_length=40)
    assert (dataset["id"], skipped) == (["short"], 1)
    measured = measure_lengths(dataset, tiny_processor, 40)
    assert truncation_counts(measured) == (0, 0) and too_long_problems(measured, 40) == []


def test_no_usable_record_is_a_clear_error_naming_validate(tmp_path, tiny_processor):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "long", "conversations": conversation("hello " * 50)}])
    data = DataArguments(dataset=path, cache_dir=str(tmp_path / "c"), bad_records="skip")
    with pytest.raises(BadRecordsError, match=r"no usable record \(1 read.*`framelm data validate .*d.jsonl`"):
        load_for_training(data, tiny_processor, max_length=20)
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": "bad", "conversations": []}])
    with pytest.raises(BadRecordsError, match="no usable record"):
        load_for_training(DataArguments(dataset=empty, cache_dir=str(tmp_path / "c"), bad_records="skip"),
                          tiny_processor, max_length=None)  # fmt: skip
