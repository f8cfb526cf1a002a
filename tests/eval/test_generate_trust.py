"""`framelm generate` keeps what the user has: a complete last answer without its newline is kept on resume, the
prompt file is never the output file, and a batch size below 1 is one line, not a run that writes nothing."""

import json

import pytest

from framelm.training.cli import main as cli
from framelm.training.eval.prompts import answered_keys


def test_a_valid_last_answer_without_a_newline_is_kept_and_the_next_one_starts_a_line(tmp_path):
    out = tmp_path / "answers.jsonl"
    lines = [json.dumps({"question_id": n, "text": f"answer {n}"}) for n in range(2)]
    out.write_text(lines[0] + "\n" + lines[1])  # written by another tool, or an editor that drops the last newline
    assert answered_keys(out) == {"0", "1"}
    assert out.read_text() == lines[0] + "\n" + lines[1] + "\n"  # nothing cut; ended so that an append is a new line
    with out.open("a") as f:
        f.write(json.dumps({"question_id": 2}) + "\n")
    assert answered_keys(out) == {"0", "1", "2"}
    out.write_text(lines[0] + "\n" + lines[1][:-5])  # a torn line (killed mid-write) is still cut off
    assert answered_keys(out) == {"0"} and out.read_text() == lines[0] + "\n"


@pytest.mark.parametrize("same", ["identical", "relative", "symlink"])
def test_the_prompt_file_is_never_the_output_file(tmp_path, monkeypatch, capsys, same):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"question_id": 0, "text": "Hi."}) + "\n")
    before = prompts.read_bytes()
    output = {"identical": str(prompts), "relative": "./prompts.jsonl", "symlink": str(tmp_path / "link.jsonl")}[same]
    (tmp_path / "link.jsonl").symlink_to(prompts)
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "no-model-needed", "--prompt-file", str(prompts), "--output-file", output]
    assert cli(argv) == 2  # refused before the model is loaded (the model does not even exist)
    assert capsys.readouterr().err == (
        f"framelm generate: error: --output-file {output} is the prompt file: answers would be appended to the "
        "prompts (write them to another file)\n"
    )
    assert prompts.read_bytes() == before


@pytest.mark.parametrize("size", ["0", "-1"])
def test_a_batch_size_below_one_is_refused_in_one_line(tmp_path, capsys, size):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"question_id": 0, "text": "Hi."}) + "\n")
    argv = ["generate", "no-model-needed", "--prompt-file", str(prompts), "--output-file", str(tmp_path / "a.jsonl"),
            "--batch-size", size]  # fmt: skip
    assert cli(argv) == 2
    assert capsys.readouterr().err == (
        f"framelm generate: error: --batch_size {size} must be at least 1 (see `framelm generate --help`)\n"
    )
    assert not (tmp_path / "a.jsonl").exists()
