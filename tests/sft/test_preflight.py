"""Before step 1 every local media file is checked to exist, and `--max_bad_fraction` stops a run that would train
on too little: before training (a wrong --image_folder) and while training (media that fail to decode)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from framelm.training.cli import main as cli

pytestmark = pytest.mark.slow

QUICK = ["--per_device_train_batch_size", "2", "--max_steps", "1", "--dataloader_num_workers", "0", "--report_to",
         "none", "--activation_checkpointing", "false"]  # fmt: skip


def image_records(n: int) -> list[dict]:
    turns = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]
    return [{"id": f"r{i}", "image": f"img{i}.png", "conversations": turns} for i in range(n)]


def test_forgetting_the_image_folder_trains_nothing(tmp_path, make_image, tiny_model_dir):
    (tmp_path / "data").mkdir()
    records = image_records(12) + [{"id": "t", "conversations": [{"from": "human", "value": "Say yes."},
                                                                  {"from": "gpt", "value": "yes"}]}]  # fmt: skip
    data = tmp_path / "data" / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "images").mkdir()
    for i in range(12):  # the images are in images/, not beside the data file
        make_image(f"img{i}.png").rename(tmp_path / "images" / f"img{i}.png")
    out = tmp_path / "run"
    argv = ["train", "--model_name_or_path", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(out),
            "--bad_records", "skip", *QUICK]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "framelm.training.cli", *argv], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    line = (
        f"framelm train: error: {data}: 12 of 13 records (92%) cannot be used (missing media files, first "
        f"{data}:1: media file {tmp_path / 'data' / 'img0.png'} does not exist), more than --max_bad_fraction "
        f"0.01; nothing was trained (`framelm data validate {data}` names each one; a wrong "
        "--image_folder/--video_folder is the usual cause)"
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == line, result.stderr[-3000:]
    assert result.returncode == 1
    assert not (out / "model.safetensors").exists()
    # with the folder named, the same command trains, and leaves framelm's model card (also in each checkpoint)
    assert (
        cli(
            [
                *argv,
                "--image_folder",
                str(tmp_path / "images"),
                "--save_strategy",
                "steps",
                "--save_steps",
                "1",
                "--plot_loss",
                "--logging_steps",
                "1",
            ]
        )
        == 0
    )
    assert (out / "model.safetensors").exists() and (out / "training_loss.png").exists()  # --plot_loss
    for card in (out / "README.md", out / "checkpoint-1" / "README.md"):
        text = card.read_text()
        assert "is a [framelm](https://pypi.org/project/framelm/) multimodal chat model" in text, card
        assert "fine-tuned version of [None]" not in text and "trust_remote_code=True" in text
        assert "`train.jsonl` (local data)" in text and str(tmp_path) not in text  # a local path by its name only


def test_media_that_fail_to_decode_while_training_stop_the_run(tmp_path, make_image, tiny_model_dir, capsys):
    for i in range(6):
        path = make_image(f"img{i}.png")
        if i % 2:
            path.write_bytes(b"not a png")  # exists (the check before training passes), fails in the collator
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in image_records(6)))
    out = tmp_path / "run"
    argv = ["train", "--model_name_or_path", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(out),
            "--bad_records", "skip", "--seed", "0", *QUICK, "--max_steps", "3", "--save_strategy", "no"]  # fmt: skip
    assert cli(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # on a line of its own: the progress bar was closed
    assert err.startswith(
        f"framelm train: error: {data}: 1 of 6 records (17%) cannot be used (media that failed "
        "to decode while training), more than --max_bad_fraction 0.01; training stopped at step "
    )
    assert not (out / "model.safetensors").exists()
    assert cli([*argv, "--max_bad_fraction", "0.6"]) == 0  # a budget that allows them: trained, skips counted


def test_generate_stops_before_the_model_loads_when_the_media_folder_is_wrong(tmp_path, tiny_model_dir, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"question_id": i, "image": f"img{i}.png", "text": "What?"}) + "\n"
                               for i in range(3)))  # fmt: skip
    argv = ["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--output-file", str(tmp_path / "a.jsonl")]
    assert cli(argv) == 1
    assert capsys.readouterr().err == (
        f"framelm generate: error: {prompts}: 3 of 3 records (100%) cannot be used (missing media files, first "
        f"{prompts}:1: {tmp_path / 'img0.png'} does not exist), more than --max_bad_fraction 0.01; nothing was "
        f"generated (`framelm data validate {prompts}` names each one; a wrong --image_folder/--video_folder is the "
        "usual cause)\n"
    )
    assert not (tmp_path / "a.jsonl").exists()
