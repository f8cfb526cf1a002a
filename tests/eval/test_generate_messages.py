"""`framelm generate` on the messages format training reads: the same model inputs and answers as NeVA prompts, the
whole conversation as context, a training record asked its last turn with the reference kept, training's problems."""

import json

import pytest
import torch

from framelm.training.cli import main as cli
from framelm.training.eval.generate import encode_any
from framelm.training.eval.prompts import read_prompts

SYSTEM = "You are a terse assistant."
CHAT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Name another one."},
]
IMAGE_TURNS = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the shape?"}]},
]
VIDEO_TURNS = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "<video>Can you describe the scene?"},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_answers(path):
    return {a["question_id"]: a for a in map(json.loads, path.read_text().splitlines())}


def generate(model_dir, prompts, out, *extra):
    argv = ["generate", str(model_dir), "--prompt-file", str(prompts), "--output-file", str(out), "--greedy",
            "--max-new-tokens", "6", "--batch-size", "1", *extra]  # fmt: skip
    return cli(argv)


def content_list(turns):
    """`turns` (string contents) as content-list messages, the form the processor's chat template reads."""
    return [{"role": t["role"], "content": [{"type": "text", "text": t["content"]}]} for t in turns]


def template_inputs(processor, messages):
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def encode(processor, prompt, root):
    return encode_any(processor, prompt, str(root), system_prompt=None, insert_media_token="left",
                      allow_outside_root=False)  # fmt: skip


@pytest.fixture
def media(make_image, make_mp4):
    make_image("red.png"), make_mp4("clip.mp4", num_frames=10)


def test_messages_give_the_inputs_and_answers_of_the_same_neva_prompts(tiny_model_dir, tiny_processor, media,
                                                                       tmp_path):  # fmt: skip
    messages = write_jsonl(tmp_path / "messages.jsonl", [
        {"id": "chat", "messages": CHAT},
        {"id": "img", "messages": IMAGE_TURNS, "images": ["red.png"], "category": "detail"},
        {"id": "vid", "messages": VIDEO_TURNS, "videos": ["clip.mp4"]},
    ])  # fmt: skip
    neva = write_jsonl(tmp_path / "neva.jsonl", [
        {"question_id": "img", "image": "red.png", "text": "What colour is the shape?"},
        {"question_id": "vid", "video": "clip.mp4", "text": "Can you describe the scene?"},
    ])  # fmt: skip
    # the model inputs: token for token and pixel for pixel
    read_messages, read_neva = read_prompts(str(messages)), read_prompts(str(neva))
    assert read_messages.problems == [] and [p.key for p in read_messages.prompts] == ["chat", "img", "vid"]
    for ours, theirs in zip(read_messages.prompts[1:], read_neva.prompts, strict=True):
        a = encode(tiny_processor, ours, tmp_path)
        b = encode_any(tiny_processor, theirs, str(tmp_path), system_prompt=SYSTEM, insert_media_token="left",
                       allow_outside_root=False)  # fmt: skip
        assert a.keys() == b.keys() and len(a) == 2  # input_ids and the pixels of the image or the video
        assert all(torch.equal(a[key], b[key]) for key in a)

    # the answers: byte for byte
    assert generate(tiny_model_dir, messages, tmp_path / "a_messages.jsonl") == 0
    assert generate(tiny_model_dir, neva, tmp_path / "a_neva.jsonl", "--system-prompt", SYSTEM) == 0
    ours, theirs = read_answers(tmp_path / "a_messages.jsonl"), read_answers(tmp_path / "a_neva.jsonl")
    assert list(ours) == ["chat", "img", "vid"]
    assert [ours[key]["text"].encode() for key in theirs] == [theirs[key]["text"].encode() for key in theirs]
    image = ours["img"]
    assert image["prompt"] == "<image>What colour is the shape?" and "reference" not in image
    assert image["metadata"]["category"] == "detail" and image["metadata"]["images"] == ["red.png"]
    assert "messages" not in image["metadata"] and "id" not in image["metadata"]


def test_the_whole_conversation_is_the_context(tiny_model_dir, tiny_model, tiny_processor, media, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [
        {"id": 0, "messages": CHAT},
        {"id": 1, "messages": IMAGE_TURNS, "images": ["red.png"]},
    ])  # fmt: skip
    chat, with_image = read_prompts(str(prompts)).prompts
    expected = template_inputs(tiny_processor, content_list(CHAT))
    encoded = encode(tiny_processor, chat, tmp_path)
    assert torch.equal(encoded["input_ids"], expected["input_ids"][0])
    shown = tiny_processor.decode(encoded["input_ids"])
    assert all(text in shown for text in (SYSTEM, "Name a colour.", "Red.", "Name another one."))

    image_messages = content_list(IMAGE_TURNS[:1]) + [{"role": "user", "content": [
        {"type": "image", "image": str(tmp_path / "red.png")}, {"type": "text", "text": "What colour is the shape?"},
    ]}]  # fmt: skip
    expected_image = template_inputs(tiny_processor, image_messages)
    encoded_image = encode(tiny_processor, with_image, tmp_path)
    assert torch.equal(encoded_image["input_ids"], expected_image["input_ids"][0])
    assert torch.equal(encoded_image["pixel_values"], expected_image["pixel_values"])

    # and the answer is the model's own greedy continuation of that conversation
    assert generate(tiny_model_dir, prompts, tmp_path / "a.jsonl") == 0
    generated = tiny_model.generate(**expected, max_new_tokens=6, do_sample=False)
    text = tiny_processor.batch_decode(generated[:, expected["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    assert read_answers(tmp_path / "a.jsonl")[0]["text"] == text.strip()


def test_a_training_record_is_asked_its_last_turn_and_keeps_the_reference(tiny_model_dir, tiny_processor, tmp_path):
    record = {"id": 7, "messages": [*CHAT, {"role": "assistant", "content": "Blue."}], "category": "conv"}
    prompts = write_jsonl(tmp_path / "train.jsonl", [record])
    (prompt,) = read_prompts(str(prompts)).prompts
    expected = template_inputs(tiny_processor, content_list(CHAT))  # without the answer, with the generation prompt
    assert torch.equal(encode(tiny_processor, prompt, tmp_path)["input_ids"], expected["input_ids"][0])
    assert generate(tiny_model_dir, prompts, tmp_path / "a.jsonl") == 0
    answer = read_answers(tmp_path / "a.jsonl")[7]
    assert answer["reference"] == "Blue." and answer["prompt"] == "Name another one."
    assert answer["metadata"]["category"] == "conv"


def test_a_placeholder_count_mismatch_is_named_and_the_other_records_answered(
    tiny_model_dir, media, tmp_path, capsys, caplog
):
    prompts = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "a", "messages": [{"role": "user", "content": "Say yes."}]},
        {"id": "b", "messages": [{"role": "user", "content": "<image><image>Same?"}], "images": ["red.png"]},
        {"question_id": "c", "messages": [{"role": "user", "content": "Same?"}], "videos": ["clip.mp4"]},
        {"id": "d", "messages": VIDEO_TURNS, "videos": ["clip.mp4"]},
        {"id": "e", "messages": VIDEO_TURNS, "videos": ["gone.mp4"]},
    ])  # fmt: skip
    out = tmp_path / "a.jsonl"
    # a missing file counts against the skip budget, checked before the model loads, as for NeVA prompts
    assert generate(tiny_model_dir, prompts, out) == 1 and not out.exists()
    assert f"missing media files, first {prompts}:5: {tmp_path / 'gone.mp4'} does not exist" in capsys.readouterr().err
    assert generate(tiny_model_dir, prompts, out, "--max-bad-fraction", "0.5") == 1
    assert list(read_answers(out)) == ["a", "d"]
    assert "5 prompts: 0 already answered, 2 answered now, 3 failed (b, c, e)" in capsys.readouterr().out
    assert f"{prompts}:2 (question_id=b) skipped: 2 <image> placeholders but 1 image path -> make the number" in (
        caplog.text
    )
    assert f"{prompts}:3 (question_id=c) skipped: 0 <video> placeholders but 1 video path" in caplog.text
    assert f"{prompts}:5 (question_id=e) skipped: no such file: {tmp_path / 'gone.mp4'}" in caplog.text


def test_a_rerun_answers_only_what_is_missing(tiny_model_dir, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [
        {"id": n, "messages": [{"role": "user", "content": f"Count to {n}."}]} for n in range(3)
    ])  # fmt: skip
    out = tmp_path / "a.jsonl"
    assert generate(tiny_model_dir, prompts, out) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[2][:10])  # the second answer lost, the third torn
    assert generate(tiny_model_dir, prompts, out) == 0
    assert "3 prompts: 1 already answered, 2 answered now, 0 failed" in capsys.readouterr().out
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [0, 1, 2]
    assert generate(tiny_model_dir, prompts, out) == 0 and len(out.read_text().splitlines()) == 3


def test_a_path_outside_the_root_is_refused_with_generates_own_fix(tmp_path):
    (tmp_path / "media").mkdir()
    prompts = write_jsonl(tmp_path / "p.jsonl", [
        {"id": 0, "messages": [{"role": "user", "content": "<image>What?"}], "images": ["../p.jsonl"]},
    ])  # fmt: skip
    (problem,) = read_prompts(str(prompts), media_root=str(tmp_path / "media")).problems
    assert (problem.where, problem.id, problem.kind) == (f"{prompts}:1", "0", "outside_root")
    assert "--media-base-path" in problem.fix and "--image-folder" not in problem.fix
    assert read_prompts(str(prompts), str(tmp_path / "media"), allow_outside_root=True).problems == []


@pytest.mark.parametrize(
    ("records", "words"),
    [
        ([{"id": 0, "messages": CHAT}, {"question_id": 1, "text": "hi"}], "mixes two formats: messages records (P:1)"),
        ([{"id": 0, "prompt": "hi"}], "no record has 'messages' (the training format) or 'text'"),
    ],
)
def test_a_file_of_mixed_or_unknown_format_is_refused(tiny_model_dir, tmp_path, capsys, records, words):
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    assert generate(tiny_model_dir, prompts, tmp_path / "a.jsonl") == 1
    assert words.replace("P", str(prompts)) in capsys.readouterr().err


def test_help_names_the_messages_format(capsys):
    assert cli(["generate", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "messages" in shown and "reference" in shown
