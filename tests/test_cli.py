"""The `framelm` command line: version, environment report, help that names the command, one-line usage errors."""

from __future__ import annotations

import pytest

from framelm.training.cli import main as cli


def test_version_and_env(capsys):
    from importlib.metadata import version

    assert cli(["--version"]) == 0
    assert capsys.readouterr().out == f"framelm {version('framelm')}\n"
    assert cli(["env"]) == 0
    lines = dict(line[2:].split(":", 1) for line in capsys.readouterr().out.splitlines())
    for name in ("framelm", "torch", "transformers", "trl", "accelerate", "datasets", "peft", "deepspeed", "av",
                 "decord", "devices"):  # fmt: skip
        assert lines[name].strip(), name
    assert "cpu (" in lines["devices"]
    assert cli(["env", "--bogus"]) == 2


@pytest.mark.parametrize(("command", "usage"), [(["train"], "usage: framelm train"),
                                                (["data", "validate"], "usage: framelm data validate"),
                                                (["data"], "framelm data validate train.json")])  # fmt: skip
def test_help_names_the_command(capsys, command, usage):
    assert cli([*command, "--help"]) == 0
    assert usage in capsys.readouterr().out


def test_resume_from_checkpoint_true_is_the_newest_checkpoint_and_false_is_none(tmp_path):
    from framelm.training.sft.arguments import checkpoint_to_resume

    for step in (5, 40, 200):
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in ("trainer_state.json", "model.safetensors"):  # complete: a torn one is passed over
            (tmp_path / f"checkpoint-{step}" / name).write_text("{}")
    assert checkpoint_to_resume("true", str(tmp_path)) == str(tmp_path / "checkpoint-200")
    assert checkpoint_to_resume(True, str(tmp_path)) == str(tmp_path / "checkpoint-200")  # `true` in a YAML recipe
    assert checkpoint_to_resume("false", str(tmp_path)) is None
    assert checkpoint_to_resume(str(tmp_path / "checkpoint-5"), None) == str(tmp_path / "checkpoint-5")


def test_user_errors_are_one_line_and_exit_code_2(tmp_path, llava_data, tiny_model_dir, capsys):
    base = ["train", "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "o")]
    for argv, message in [
        (base, "say what to train on: --dataset"),
        ([*base, "--dataset", str(llava_data), "--stage", "lm"], "invalid choice: 'lm'"),
        ([*base, "--dataset", str(llava_data), "--bad_records", "maybe"], "invalid choice: 'maybe'"),
        ([*base, "--dataset", str(llava_data), "--num_frames", "0"], "--num_frames 0 must be at least 1"),
        (
            [*base, "--dataset", str(llava_data), "--resume_from_checkpoint", "true"],
            f"--resume_from_checkpoint true: --output_dir {tmp_path / 'o'} holds no checkpoint-N folder",
        ),
        (
            [*base, "--dataset", str(llava_data), "--resume_from_checkpoint", "nowhere"],
            "--resume_from_checkpoint 'nowhere' is not a folder",
        ),
        (["data", "validate", str(llava_data), "--num-frames", "-2"], "--num_frames -2 must be at least 1"),
        (["train", "--dataset", str(llava_data)], "say which model to train"),
    ]:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("stage: lm\n")  # a YAML value is not checked by argparse: the dataclass refuses it
    assert cli([*base, "--dataset", str(llava_data), "--config", str(recipe)]) == 2
    assert "--stage 'lm' is not one of ('projector', 'full', 'all')" in capsys.readouterr().err
    assert cli(["train", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: framelm train")
