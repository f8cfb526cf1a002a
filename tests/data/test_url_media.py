"""URL media read the same way by `framelm data validate`, `framelm train` and `framelm generate`: through the
processor's fetcher (total deadline, size limit), against an HTTP server on 127.0.0.1 that the test starts."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from support.media_server import serve_media

from framelm.processing.sources_framelm import FetchLimits
from framelm.training.cli import main as cli
from framelm.training.data.arguments import DataArguments
from framelm.training.data.media_check import MediaCheck
from framelm.training.data.validate import validate


def conversation(question: str, answer: str = "ok") -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture
def media_files(make_mp4) -> dict[str, bytes]:
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(png, "PNG")
    return {"/red.png": png.getvalue(), "/clip.mp4": make_mp4("clip.mp4", num_frames=8).read_bytes()}


def write_records(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_validate_fetches_url_media_within_the_limits_and_names_each_failure(
    tmp_path, media_files, missing_fsspec_backends
):
    with serve_media(media_files) as server:
        records = [
            {"id": "image", "image": server.url("/red.png"), "conversations": conversation("<image>")},
            {"id": "video", "video": server.url("/clip.mp4"), "conversations": conversation("<video>")},
            {"id": "gone", "image": server.url("/gone.png?sig=secret"), "conversations": conversation("<image>")},
            {"id": "slow", "video": server.url("/trickle/100"), "conversations": conversation("<video>")},
            {"id": "s3", "image": "s3://bucket/a.png", "conversations": conversation("<image>")},
        ]
        path = write_records(tmp_path / "train.jsonl", records)
        limits = FetchLimits(timeout=2.0, max_bytes=1_000_000)
        report = validate(DataArguments(dataset=path, cache_dir=str(tmp_path / "c")), media=MediaCheck(limits=limits))
        fetched = list(server.requests)
    found = {p.id: (p.kind, p.problem) for p in report.problems}
    assert set(found) == {"gone", "slow", "s3"} and report.good_records == 2
    assert found["gone"] == ("missing_file", f"image: remote file not found: {server.url('/gone.png')} (HTTP 404)")
    assert found["slow"][0] == "fetch_failed" and "did not finish within 2 s" in found["slow"][1]
    assert found["s3"][0] == "fetch_failed" and "pip install 'framelm[s3]'" in found["s3"][1]
    assert "secret" not in json.dumps([p.to_report() for p in report.problems])
    assert fetched.count("/red.png") == 1 and fetched.count("/clip.mp4") == 1  # each URL fetched once


def test_urls_not_fetched_on_request_are_warnings_that_fail_under_strict(tmp_path, capsys):
    records = [{"id": "image", "image": "http://127.0.0.1:9/red.png", "conversations": conversation("<image>")}]
    path = write_records(tmp_path / "train.jsonl", records)
    argv = ["data", "validate", path, "--no-remote-media-check", "--cache-dir", str(tmp_path / "c")]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "remote_not_checked" in out and "was not fetched (--no-remote-media-check)" in out
    assert cli([*argv, "--strict"]) == 1
    assert "--strict: 1 warnings count as failures" in capsys.readouterr().out


def test_generate_reads_url_media(tiny_model_dir, tmp_path, media_files):
    with serve_media(media_files) as server:
        prompts = [{"question_id": 0, "image": server.url("/red.png"), "text": "What colour?"},
                   {"question_id": 1, "video": server.url("/clip.mp4"), "text": "What moves?"},
                   {"question_id": 2, "image": server.url("/gone.png"), "text": "What colour?"}]  # fmt: skip
        prompt_file = write_records(tmp_path / "prompts.jsonl", prompts)
        out = tmp_path / "answers.jsonl"
        argv = ["generate", str(tiny_model_dir), "--prompt-file", prompt_file, "--output-file", str(out), "--greedy",
                "--max-new-tokens", "3"]  # fmt: skip
        assert cli(argv) == 1  # the 404 prompt fails, the others are answered
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [0, 1]
    assert answers[1]["metadata"]["video"] == server.url("/clip.mp4")


@pytest.mark.slow
def test_train_reads_url_media(tiny_model_dir, tmp_path, media_files):
    from framelm.training.sft.train import parse_args, run

    with serve_media(media_files) as server:
        records = [
            {"id": "image", "image": server.url("/red.png"), "conversations": conversation("<image>\nColour?", "red")},
            {"id": "video", "video": server.url("/clip.mp4"), "conversations": conversation("<video>\nWhat?", "bar")},
        ]
        path = write_records(tmp_path / "train.jsonl", records)
        argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", path, "--output_dir", str(tmp_path / "out"),
                "--per_device_train_batch_size", "2", "--max_steps", "1", "--dataloader_num_workers", "0",
                "--report_to", "none", "--save_strategy", "no", "--activation_checkpointing", "false",
                "--cache_dir", str(tmp_path / "c")]  # fmt: skip
        trainer = run(*parse_args(argv))
        fetched = list(server.requests)
    assert trainer.state.global_step == 1 and trainer.state.log_history[-1]["train_loss"] > 0
    assert fetched == ["/red.png", "/clip.mp4"]  # both decoded by the collator, once each
