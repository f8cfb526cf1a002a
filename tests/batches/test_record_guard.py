"""Bad records met inside DataLoader workers: `skip` leaves them out of their batch and the count reaches the trainer,
`strict` stops with the record's file, line and id; a batch of only bad records still runs a forward pass."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from framelm.training.batches.collator import FrameLMCollator
from framelm.training.batches.padding import IGNORE_INDEX
from framelm.training.batches.record_guard import SKIPPED_KEY, RecordReadError, encode_rows, is_nothing_to_learn


def row(record_id: str, media: list[dict] | None = None) -> dict:
    placeholders = "".join("<video>" if m["kind"] != "image" else "<image>" for m in media or [])
    return {"id": record_id, "source": "d", "where": f"d.jsonl:{record_id}", "system": "",
            "turns": [{"role": "user", "text": placeholders + "What?"}, {"role": "assistant", "text": "red"}],
            "media": media or []}  # fmt: skip


@pytest.fixture
def rows(tmp_path, make_image) -> list[dict]:
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 10)
    image = {"kind": "image", "path": str(make_image("red.png"))}
    bad = {"kind": "video", "path": str(tmp_path / "bad.mp4")}
    return [row("1", [image]), row("2", [bad]), row("3"), row("4", [bad]), row("5", [bad]), row("6")]


def test_skip_leaves_bad_rows_out_and_counts_them_on_the_batch(tiny_processor, rows, caplog):
    collator = FrameLMCollator(tiny_processor, bad_records="skip")
    batch = collator(rows[:3])
    expected = FrameLMCollator(tiny_processor)([rows[0], rows[2]])  # the same batch without the bad row
    assert torch.equal(batch["input_ids"], expected["input_ids"]) and torch.equal(batch["labels"], expected["labels"])
    assert batch[SKIPPED_KEY].tolist() == [1, 0]  # one count per row, the batch's on the first
    assert "skipping d.jsonl:2 (id=2) while training: cannot decode video" in caplog.text
    assert SKIPPED_KEY not in FrameLMCollator(tiny_processor)([rows[0]])  # strict batches are as they were


def test_a_batch_of_only_bad_rows_has_nothing_to_learn(tiny_processor, rows):
    batch = FrameLMCollator(tiny_processor, bad_records="skip")([rows[1], rows[3]])
    assert batch["labels"].tolist() == [[IGNORE_INDEX]] and batch[SKIPPED_KEY].tolist() == [2]
    assert is_nothing_to_learn(batch) and not is_nothing_to_learn({"labels": torch.tensor([[IGNORE_INDEX, 5]])})


def test_strict_names_file_line_and_id_even_from_a_worker_process(tiny_processor, rows):
    with pytest.raises(
        RecordReadError, match=r"^d.jsonl:2 \(id=2\): cannot decode video .*bad.mp4.*\n.*--bad_records"
    ):
        encode_rows(FrameLMCollator(tiny_processor).encode, rows[:2], "strict")
    loader = DataLoader(rows[:2], batch_size=2, collate_fn=FrameLMCollator(tiny_processor), num_workers=1)
    with pytest.raises(RecordReadError) as raised:
        next(iter(loader))
    message = str(raised.value)  # rebuilt in the main process from the worker's traceback: the message only
    assert message.startswith("d.jsonl:2 (id=2): cannot decode video") and "Traceback" not in message


def test_a_missing_fsspec_backend_names_the_record_and_the_extra(tiny_processor, missing_fsspec_backends):
    remote = row("7", [{"kind": "image", "path": "s3://bucket/red.png"}])
    with pytest.raises(RecordReadError, match=r"^d.jsonl:7 \(id=7\): cannot read s3://bucket/red.png: .*"
                       r"pip install 'framelm\[s3\]'"):  # fmt: skip
        FrameLMCollator(tiny_processor)([remote])


def test_two_workers_bring_every_count_to_the_main_process(tiny_processor, rows):
    loader = DataLoader(rows, batch_size=2, collate_fn=FrameLMCollator(tiny_processor, bad_records="skip"),
                        num_workers=2)  # fmt: skip
    batches = list(loader)
    assert sum(int(b[SKIPPED_KEY].sum()) for b in batches) == 3
    kept = sum(int((b["labels"] != IGNORE_INDEX).any(dim=1).sum()) for b in batches)
    assert kept == 3  # rows 1, 3 and 6 trained; rows 4 and 5 made one batch with nothing to learn


@pytest.mark.slow
def test_skip_trains_past_a_corrupt_video_with_two_workers_and_strict_stops_naming_it(
    tiny_model_dir, llava_data, tmp_path, capsys
):
    from framelm.training.cli import main as cli
    from framelm.training.sft.train import parse_args, run

    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing a decoder can use")
    with llava_data.open("a") as f:  # validate's structure check passes: the file exists, the counts match
        f.write(json.dumps({"id": "broken", "video": "broken.mp4", "conversations": [
            {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "?"}]}) + "\n")  # fmt: skip
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(llava_data), "--num_train_epochs", "1",
            "--per_device_train_batch_size", "1", "--dataloader_num_workers", "2", "--report_to", "none",
            "--save_strategy", "no", "--logging_steps", "1", "--activation_checkpointing", "false"]  # fmt: skip
    trainer = run(*parse_args([*argv, "--output_dir", str(tmp_path / "skip"), "--bad_records", "skip",
                               "--max_bad_fraction", "0.5"]))  # fmt: skip
    assert trainer.state.global_step == 7  # every record had its step: the bad one's trained nothing
    assert trainer.skipped_in_training == 1 and trainer.state.log_history[-2]["skipped_records"] == 1
    assert json.loads((tmp_path / "skip" / "framelm_run.json").read_text())["skipped_records"] == 1
    assert cli(["train", *argv, "--output_dir", str(tmp_path / "strict")]) == 1
    err = capsys.readouterr().err
    assert f"framelm train: error: {llava_data}:7 (id=broken): cannot decode video {tmp_path / 'broken.mp4'}" in err


def test_skip_inside_packed_rows_drops_only_the_bad_samples(tiny_processor, rows):
    from framelm.training.batches.packing import PACKED_COLUMN

    collator = FrameLMCollator(tiny_processor, bad_records="skip")
    batch = collator([{PACKED_COLUMN: [rows[0], rows[1], rows[2]]}, {PACKED_COLUMN: [rows[3], rows[4]]}])
    expected = FrameLMCollator(tiny_processor)([{PACKED_COLUMN: [rows[0], rows[2]]}])
    width = expected["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][0, :width], expected["input_ids"][0])  # row 1: the good samples, packed
    assert batch["labels"][1].eq(IGNORE_INDEX).all()  # row 2 lost both samples: nothing to learn in it
    assert batch[SKIPPED_KEY].tolist() == [3, 0]
    flat = FrameLMCollator(tiny_processor, padding_free=True, bad_records="skip")(rows[:3])
    assert torch.equal(flat["input_ids"], expected["input_ids"]) and flat[SKIPPED_KEY].tolist() == [1]
