"""Preference pairs: every supported form reads to the same pair, bad pairs are reported (where, what, fix), the pair
length rule, `framelm data validate`, and the collator's chosen/rejected masks (exact trained text)."""

import pytest
import torch
from conftest import write_jsonl

from framelm.training.data.arguments import DataArguments
from framelm.training.data.formats.preference import is_pair, pair_samples
from framelm.training.data.loading import load_samples
from framelm.training.data.policy import BadRecordsError, DataError
from framelm.training.data.sample import Turn
from framelm.training.data.validate import validate
from framelm.training.dpo.collator import PreferenceCollator
from framelm.training.dpo.data_prep import load_pairs

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
SAME_PAIR_FORMS = {
    "trl_conversational": {"prompt": QUESTION, "chosen": [{"role": "assistant", "content": "red"}],
                           "rejected": [{"role": "assistant", "content": "blue"}], "images": ["red.png"]},
    "trl_content_list_answers": {"prompt": QUESTION,
                                 "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "red"}]}],
                                 "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "blue"}]}],
                                 "images": ["red.png"]},
    "trl_implicit_prompt": {"chosen": [*QUESTION, {"role": "assistant", "content": "red"}],
                            "rejected": [*QUESTION, {"role": "assistant", "content": "blue"}], "images": ["red.png"]},
    "trl_plain": {"prompt": "<image>What colour?", "chosen": "red", "rejected": "blue", "images": ["red.png"]},
    "trl_inline_path": {"prompt": [{"role": "user", "content": [{"type": "image", "path": "red.png"},
                                                                {"type": "text", "text": "What colour?"}]}],
                        "chosen": "red", "rejected": "blue"},
    "llamafactory": {"conversations": [{"from": "human", "value": "<image>What colour?"}],
                     "chosen": {"from": "gpt", "value": "red"}, "rejected": {"from": "gpt", "value": "blue"},
                     "images": ["red.png"]},
}  # fmt: skip


@pytest.mark.parametrize("form", sorted(SAME_PAIR_FORMS))
def test_each_form_reads_to_the_same_pair(tmp_path, pair_media, form):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"id": "p1"} | SAME_PAIR_FORMS[form]])
    loaded = load_samples(DataArguments(dataset=str(path)))
    assert loaded.formats == {"pairs.jsonl": "preference"} and not loaded.problems
    row = loaded.dataset[0]
    assert [(t["role"], t["text"]) for t in row["turns"]] == [
        ("user", "<image>What colour?"), ("assistant", "red"), ("assistant", "blue")
    ]  # fmt: skip
    assert [m["path"] for m in row["media"]] == [str(tmp_path / "red.png")] and row["id"] == "p1"


def test_video_pairs_and_frame_lists(tmp_path, pair_media, make_image):
    frames = [str(make_image(f"f{i}.png", color=(10 * i, 0, 0)).name) for i in range(4)]
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "<video>Which way?", "chosen": "left", "rejected": "right", "videos": ["clip.mp4"]},
        {"prompt": "<video>Which way?", "chosen": "up", "rejected": "down", "videos": [frames]},
    ])  # fmt: skip
    rows = load_samples(DataArguments(dataset=str(path))).dataset
    assert rows[0]["media"][0]["kind"] == "video" and rows[0]["media"][0]["path"] == str(tmp_path / "clip.mp4")
    assert rows[1]["media"][0]["kind"] == "frames" and len(rows[1]["media"][0]["frames"]) == 4


def test_pair_samples_split_chosen_and_rejected(tmp_path, pair_media):
    path = write_jsonl(tmp_path / "pairs.jsonl", [SAME_PAIR_FORMS["llamafactory"]])
    from framelm.training.data.sample import Sample

    sample = Sample.from_row(load_samples(DataArguments(dataset=str(path))).dataset[0])
    chosen, rejected = pair_samples(sample)
    assert is_pair(sample) and not is_pair(chosen)
    assert chosen.turns == (Turn("user", "<image>What colour?"), Turn("assistant", "red"))
    assert rejected.turns == (Turn("user", "<image>What colour?"), Turn("assistant", "blue"))
    assert chosen.media == rejected.media == sample.media


def test_bad_pairs_are_reported_with_where_what_and_fix(tmp_path, pair_media):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "same", "prompt": "Hi", "chosen": "yes", "rejected": "yes"},
        {"id": "number", "prompt": "Hi", "chosen": 3, "rejected": "no"},
        {"id": "user", "prompt": "Hi", "chosen": {"role": "user", "content": "x"}, "rejected": "no"},
        {"id": "media", "prompt": "Hi", "chosen": "<image>", "rejected": "no", "images": ["red.png"]},
        {"id": "count", "prompt": "<image>Hi", "chosen": "a", "rejected": "b"},
        {"id": "implicit", "chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "a"}],
         "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "b"}]},
        {"id": "empty", "prompt": "Hi", "chosen": " ", "rejected": "no"},
    ])  # fmt: skip
    problems = {p.id: (p.where, p.kind, p.problem) for p in load_samples(DataArguments(dataset=str(path))).problems}
    where = str(path)
    assert problems == {
        "same": (f"{where}:1", "same_answers", "the chosen and the rejected answers are the same text"),
        "number": (f"{where}:2", "bad_answer", "'chosen': the answer is 3, not text"),
        "user": (f"{where}:3", "bad_answer", "'chosen': the answer is a 'user' message, not an assistant one"),
        "media": (f"{where}:4", "media_in_assistant_turn", "the chosen answer contains a media placeholder"),
        "count": (f"{where}:5", "placeholder_count", "1 <image> placeholder but 0 image paths"),
        "implicit": (f"{where}:6", "bad_prompt",
                     "'chosen' and 'rejected' (implicit prompt) do not begin with the same turns"),
        "empty": (f"{where}:7", "empty_answer", "the chosen answer is empty"),
    }  # fmt: skip


def test_conversations_are_refused_by_dpo_with_the_fix(llava_data, tiny_processor):
    with pytest.raises(DataError, match=r"train.jsonl \(read as llava\): not preference data; .*framelm train"):
        load_pairs(DataArguments(dataset=str(llava_data)), tiny_processor, 256)


def long_pairs(tmp_path):
    """A pair that fits, one whose image and answer cannot fit, one whose last exchange alone would be cut."""
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "ok"}]
    return write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "fits", "prompt": "<image>What colour?", "chosen": "red", "rejected": "blue", "images": ["red.png"]},
        {"id": "media", "prompt": "<image>" * 4 + "Colours?", "chosen": "red", "rejected": "blue",
         "images": ["red.png"] * 4},
        {"id": "cut", "prompt": [*history, {"role": "user", "content": "And then?"}],
         "chosen": "happy " * 30, "rejected": "sad"},
    ])  # fmt: skip


def test_pairs_that_do_not_fit_whole_are_reported_never_cut(tmp_path, pair_media, tiny_processor):
    path = long_pairs(tmp_path)
    report = validate(DataArguments(dataset=str(path)), check_media=True, max_length=60, processor=tiny_processor)
    found = {p.id: (p.kind, p.problem) for p in report.problems}
    assert set(found) == {"media", "cut"} and report.good_records == 1
    assert found["media"][0] == "pair_too_long"
    assert found["media"][1].startswith("the prompt and its answer need ") and "max_length is 60" in found["media"][1]
    assert found["cut"][0] == "pair_truncated"
    assert "cut to fit, they would differ only in the part cut off" in found["cut"][1]
    with pytest.raises(BadRecordsError, match="pairs.jsonl:2") as raised:  # training: strict stops, naming both
        load_pairs(DataArguments(dataset=str(path)), tiny_processor, 60)
    assert "pairs.jsonl:3" in str(raised.value)
    kept, skipped = load_pairs(DataArguments(dataset=str(path), bad_records="skip", max_bad_fraction=0.7),
                               tiny_processor, 60)  # fmt: skip
    assert kept["id"] == ["fits"] and skipped == 2


def test_validate_accepts_every_form(tmp_path, pair_media, tiny_processor):
    path = write_jsonl(tmp_path / "pairs.jsonl", list(SAME_PAIR_FORMS.values()))
    report = validate(DataArguments(dataset=str(path)), check_media=True, max_length=256, processor=tiny_processor)
    assert report.ok and report.good_records == len(SAME_PAIR_FORMS) and not report.problems


def trained_text(tokenizer, batch, row) -> str:
    return tokenizer.decode(batch["input_ids"][row][batch["completion_mask"][row].bool()])


def test_collator_masks_exactly_the_answers(tmp_path, pair_media, tiny_processor):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        SAME_PAIR_FORMS["trl_plain"],
        {"prompt": [{"role": "user", "content": "<video>Which way?"}, {"role": "assistant", "content": "left"},
                    {"role": "user", "content": "Sure?"}],
         "chosen": "yes, left", "rejected": "no", "videos": ["clip.mp4"], "system": "Be brief."},
    ])  # fmt: skip
    rows = list(load_samples(DataArguments(dataset=str(path))).dataset)
    batch = PreferenceCollator(tiny_processor)(rows)
    tokenizer = tiny_processor.tokenizer
    # chosen rows first, then rejected rows in the same order; only the last answer and its end of turn are trained
    texts = [trained_text(tokenizer, batch, row) for row in range(4)]
    assert texts == ["red<|im_end|>", "yes, left<|im_end|>", "blue<|im_end|>", "no<|im_end|>"]
    media = torch.isin(batch["input_ids"], torch.tensor([tiny_processor.image_token_id,
                                                         tiny_processor.video_token_id]))  # fmt: skip
    assert media.sum() > 0 and not (media & batch["completion_mask"].bool()).any()
    assert batch["pixel_values"].shape[0] == 2 and batch["pixel_values_videos"].shape[0] == 2  # once per half
    assert torch.equal(batch["pixel_values"][0], batch["pixel_values"][1])
    # the prompt (system, earlier turns, media) is the same tokens in the chosen and the rejected row
    for chosen, rejected in ((0, 2), (1, 3)):
        start = int(batch["completion_mask"][chosen].nonzero()[0])
        assert start == int(batch["completion_mask"][rejected].nonzero()[0])
        assert torch.equal(batch["input_ids"][chosen, :start], batch["input_ids"][rejected, :start])


def test_collator_bad_record_policy(tmp_path, pair_media, tiny_processor):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        SAME_PAIR_FORMS["trl_plain"],
        {"id": "gone", "prompt": "<image>What?", "chosen": "a", "rejected": "b", "images": ["blue.png"]},
    ])  # fmt: skip
    rows = list(load_samples(DataArguments(dataset=str(path))).dataset)
    (tmp_path / "blue.png").unlink()
    from framelm.training.batches.record_guard import SKIPPED_KEY, RecordReadError

    with pytest.raises(RecordReadError, match=r"pairs.jsonl:2 \(id=gone\)"):
        PreferenceCollator(tiny_processor)(rows)
    batch = PreferenceCollator(tiny_processor, bad_records="skip")(rows)
    assert batch["input_ids"].shape[0] == 2 and batch[SKIPPED_KEY].tolist() == [1, 0]
    batch = PreferenceCollator(tiny_processor, bad_records="skip")(rows[1:])  # nothing left: nothing to learn
    assert batch["input_ids"].shape[0] == 2 and not batch["completion_mask"].any()


def png(colour) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 24), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("form", ["parquet", "save_to_disk", "mixture"])
def test_trl_vision_pairs_with_embedded_images_from_tables_folders_and_mixtures(tmp_path, tiny_processor, form):
    """TRL's own vision preference layout: `images` a list of `datasets.Image` (bytes inside the data), frame lists
    (one video = its frames) of embedded images too, from a parquet file, a `save_to_disk` folder or a mixture."""
    import datasets

    features = datasets.Features({
        "prompt": datasets.List({"role": datasets.Value("string"),
                                 "content": datasets.List({"type": datasets.Value("string"),
                                                           "text": datasets.Value("string")})}),
        "chosen": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "rejected": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "images": datasets.List(datasets.Image()),
    })  # fmt: skip
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    rows = [{"prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                     {"type": "text", "text": "What colour?"}]}],
             "chosen": [{"role": "assistant", "content": name}],
             "rejected": [{"role": "assistant", "content": "green"}], "images": [{"bytes": png(rgb), "path": None}]}
            for name, rgb in colours.items()]  # fmt: skip
    table = datasets.Dataset.from_list(rows, features=features)
    if form == "parquet":
        table.to_parquet(tmp_path / "pairs.parquet")
        source = tmp_path / "pairs.parquet"
    else:
        table.save_to_disk(tmp_path / "saved")
        source = tmp_path / "saved"
    if form == "mixture":
        (tmp_path / "mix.yaml").write_text(f"datasets:\n  - json_path: {source}\n    sampling_strategy: all\n")
        source = tmp_path / "mix.yaml"
    pairs, skipped = load_pairs(DataArguments(dataset=str(source)), tiny_processor, 256)
    assert skipped == 0 and len(pairs) == 2
    assert [m[0]["bytes"] for m in pairs["media"]] == [png(rgb) for rgb in colours.values()]
    batch = PreferenceCollator(tiny_processor)(list(pairs))
    texts = [trained_text(tiny_processor.tokenizer, batch, row) for row in range(4)]
    assert texts == ["red<|im_end|>", "blue<|im_end|>", "green<|im_end|>", "green<|im_end|>"]
    assert batch["pixel_values"].shape[0] == 4


def test_a_wrong_media_folder_stops_dpo_before_any_pair_is_measured(tmp_path, pair_media, tiny_processor):
    """The SFT pre-flight rule: every local media file is stat-ed first; past --max_bad_fraction nothing trains."""
    (tmp_path / "sub").mkdir()
    path = write_jsonl(
        tmp_path / "sub" / "pairs.jsonl", [dict(SAME_PAIR_FORMS["trl_plain"], id=str(n)) for n in range(4)]
    )
    with pytest.raises(BadRecordsError, match=r"4 of 4 records \(100%\) cannot be used \(missing media files, "
                       r"first .*pairs.jsonl:1: media file .*sub/red.png does not exist\), more than "
                       r"--max_bad_fraction 0.01; nothing was trained"):  # fmt: skip
        load_pairs(DataArguments(dataset=str(path), bad_records="skip"), tiny_processor, 256)
    pairs, skipped = load_pairs(DataArguments(dataset=str(path), image_folder=str(tmp_path)), tiny_processor, 256)
    assert (len(pairs), skipped) == (4, 0)
