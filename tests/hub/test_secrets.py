"""A dataset URL's credentials (`user:token@`, a signed query, a fragment) never reach the run record, the exported
model card or folder, or a printed message: one function (`sources_framelm.redact`) strips them everywhere."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from framelm.processing.sources_framelm import redact
from framelm.training.hub.card import public_name
from framelm.training.run_record import RUN_RECORD, write_run_record

URL = "https://alice:tok3n@host.example/x.jsonl?sig=S3CRET#frag9"
SECRETS = ("alice", "tok3n", "S3CRET", "frag9")  # words no card, config or vocabulary holds by chance


def assert_no_secret(text: str) -> None:
    assert not [secret for secret in SECRETS if secret in text], text


@pytest.mark.parametrize(
    "text, shown",
    [
        (URL, "https://host.example/x.jsonl"),
        ("https://[::1", "https://[::1"),  # malformed: still no exception
        ("http://a:p@ss@h:99999/x?k=1", "http://h:99999/x"),  # a port no parser accepts, an '@' in the password
        ("simplecache::s3://key:secret@bucket/x.tar", "simplecache::s3://bucket/x.tar"),
        (
            "cannot read /tmp/https:/user:tok@h/x.jsonl?sig=SECRET. Pass a file",
            "cannot read /tmp/https:/h/x.jsonl Pass a file",
        ),
        ("data/local?odd.jsonl", "data/local?odd.jsonl"),  # a local path is no URL: unchanged
        ("liuhaotian/LLaVA-Instruct-150K", "liuhaotian/LLaVA-Instruct-150K"),
    ],
)
def test_redact_cuts_every_url_to_scheme_host_and_path(text, shown):
    assert redact(text) == shown


def test_the_run_record_keeps_no_credentials(tmp_path):
    trainer = SimpleNamespace(
        state=SimpleNamespace(log_history=[{"loss": 1.5}], global_step=3),
        processing_class=SimpleNamespace(num_frames=4),
        accelerator=SimpleNamespace(num_processes=1, distributed_type=SimpleNamespace(value="NO")),
    )
    path = write_run_record(
        str(tmp_path), SimpleNamespace(stage="full", eval_dataset="s3://k:S3CRET@bucket/eval.jsonl?X-Amz-Signature=tok3n"),
        SimpleNamespace(dataset=URL), SimpleNamespace(to_dict=lambda: {"seed": 0}),
        SimpleNamespace(use_peft=False), trainer, skipped=0,
    )  # fmt: skip
    text = path.read_text()
    assert_no_secret(text)
    assert json.loads(text)["datasets"] == ["https://host.example/x.jsonl", "s3://bucket/eval.jsonl"]


def test_the_exported_card_and_folder_keep_no_credentials(tiny_model_dir, tmp_path, capsys):
    from framelm.training.cli import main as cli

    model = tmp_path / "run"
    shutil.copytree(tiny_model_dir, model)
    record = {"stage": "full", "datasets": [URL], "hyperparameters": {}, "skipped_records": 0}
    (model / RUN_RECORD).write_text(json.dumps(record))  # also a record written before redaction existed
    assert cli(["export", str(model), "--out", str(tmp_path / "hub"), "--dataset", URL, "--dataset", "me/data"]) == 0
    printed = capsys.readouterr()
    assert_no_secret(printed.out + printed.err)
    for file in (tmp_path / "hub").iterdir():
        assert_no_secret(file.read_bytes().decode("utf-8", "replace"))
    assert "`x.jsonl` (local data)" in (tmp_path / "hub" / "README.md").read_text()
    assert public_name(URL) == "x.jsonl"


def test_a_failing_dataset_url_is_named_without_its_credentials(capsys):
    from framelm.training.cli import data_main

    assert data_main(["validate", "https://alice:tok3n@127.0.0.1:9/x.jsonl?sig=S3CRET#frag9"]) != 0
    printed = capsys.readouterr()
    assert "127.0.0.1:9/x.jsonl" in printed.err  # the data is still named
    assert_no_secret(printed.out + printed.err)
