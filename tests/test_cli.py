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


# --- one way to fail: one line `framelm <command>: error: <what> (<fix>)`, one exit code per class -------------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

FRAMELM = [sys.executable, "-m", "framelm.training.cli"]


def framelm(*argv, cwd=None, env=None, prelude: str = "") -> subprocess.CompletedProcess:
    """`framelm ARGV` as a user runs it, in a fresh process; `prelude`: Python run first (to hide a library)."""
    command = FRAMELM + list(argv)
    if prelude:
        command = [sys.executable, "-c", f"{prelude}\nimport sys\nfrom framelm.training.cli import main\n"
                   f"sys.exit(main({list(argv)!r}))"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_one_line(result: subprocess.CompletedProcess, line: str, code: int) -> None:
    """Our message is the last line of stderr, exactly, with no traceback (libraries may log a warning before)."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == line, result.stderr[-3000:]
    assert result.stderr.count("error:") == 1, result.stderr[-3000:]
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])


def test_a_missing_or_malformed_recipe_is_one_line(tmp_path):
    from framelm.training.recipe import shipped_recipes

    shipped = ", ".join(shipped_recipes())
    result = framelm("train", "--config", "missing.yaml", cwd=tmp_path)
    line = (
        "framelm train: error: --config missing.yaml: no such file (pass a recipe YAML path or a shipped recipe "
        f"name: {shipped})"
    )
    assert_one_line(result, line, 1)
    (tmp_path / "bad.yaml").write_text("learning_rate: 1e-5\nstage: [full\n")
    result = framelm("train", "--config", "bad.yaml", cwd=tmp_path)
    line = ("framelm train: error: bad.yaml, line 3: malformed YAML: expected ',' or ']', but got '<stream end>' "
            "(fix the YAML syntax there)")  # fmt: skip
    assert_one_line(result, line, 1)
    # a shipped recipe's name is close: the message names it
    result = framelm("train", "--config", "video_finetun", cwd=tmp_path)
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("framelm train: error: --config video_finetun: no such file; did you mean video_finetune? (pass")
    )


def test_a_mistyped_local_model_path_is_never_looked_up_on_the_hub(tmp_path, llava_data):
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")  # any Hub call would fail loudly
    result = framelm("train", "--model_name_or_path", "./my-framlem", "--dataset", str(llava_data), "--output_dir",
                     str(tmp_path / "o"), cwd=tmp_path, env=env)  # fmt: skip
    line = (
        "framelm train: error: --model_name_or_path ./my-framlem: no such folder (check the path; a Hub id is "
        "written ORG/NAME)"
    )
    assert_one_line(result, line, 1)
    result = framelm("init", "--vision", "./towers/siglip", "--language", "Qwen/Qwen2.5-0.5B", "--out", "m",
                     cwd=tmp_path, env=env)  # fmt: skip
    assert_one_line(
        result, "framelm init: error: --vision ./towers/siglip: no such folder (check the path; a Hub id is written "
        "ORG/NAME)", 1)  # fmt: skip
    result = framelm("data", "validate", str(llava_data), "--model", "runs/a/b", cwd=tmp_path, env=env)
    assert_one_line(
        result, "framelm data validate: error: --model runs/a/b: no such folder (check the path; a Hub id is "
        "written ORG/NAME)", 1)  # fmt: skip


def test_data_validate_refuses_a_model_that_is_not_a_framelm(tmp_path, llava_data, capsys):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(
        json.dumps({"model_type": "bert", "auto_map": {"AutoProcessor": "x.Y"}})
    )
    assert cli(["data", "validate", str(llava_data), "--model", str(tmp_path / "bert"), "--no-media-check"]) == 1
    assert capsys.readouterr().err == (
        f"framelm data validate: error: --model {tmp_path / 'bert'} is a 'bert' model, not a FrameLM (pass a folder "
        "from `framelm init` or `framelm train`; a llava-hf model imports with framelm init --from-llava)\n"
    )


def test_a_missing_prompt_file_stops_before_torch_or_the_model_loads(tmp_path):
    code = (
        "import sys\nfrom framelm.training.cli import main\n"
        f"rc = main(['generate', {str(tmp_path)!r}, '--prompt-file', 'nope.jsonl', '--output-file', 'a.jsonl'])\n"
        "print('torch' in sys.modules)\nsys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert_one_line(result, "framelm generate: error: --prompt-file nope.jsonl: no such file (check the path)", 1)
    assert result.stdout == "False\n"  # neither torch nor the model was loaded
    result = subprocess.run([sys.executable, "-c", "import sys\nfrom framelm.training.cli import main\n"
                             "main(['generate', '--help'])\nprint('torch' in sys.modules)"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.stdout.startswith("usage: framelm generate") and "(default: 0.2)" in result.stdout
    assert result.stdout.endswith("False\n")


def test_data_commands_without_media_decoding_never_load_torch(tmp_path, llava_data):
    """validate --no-media-check and convert read and write records only: torch and transformers' model and
    processor modules (seconds of start-up for every command, most of a small convert) are never imported."""
    heavy = ("torch", "transformers.processing_utils", "transformers.modeling_utils")
    for args in (["validate", str(llava_data), "--no-media-check"],
                 ["convert", str(llava_data), "--out", str(tmp_path / "shards"), "--to", "webdataset"]):  # fmt: skip
        code = (
            "import sys\nfrom framelm.training.cli import main\n"
            f"rc = main(['data', *{args!r}])\nprint([m for m in {heavy!r} if m in sys.modules])\nsys.exit(rc)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.splitlines()[-1] == "[]", (args, result.stdout[-500:])
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.tar"))  # the convert did write its shards


def test_an_unreachable_hub_dataset_is_a_setup_error(tmp_path):
    result = framelm("data", "validate", "someorg/somedata", cwd=tmp_path, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    line = ("framelm data validate: error: Couldn't reach 'someorg/somedata' on the Hub (OfflineModeIsEnabled) "
            "(check the network or HF_HUB_OFFLINE; a local path must exist)")  # fmt: skip
    assert_one_line(result, line, 3)


def test_a_reporter_that_is_not_installed_is_named_before_training(tmp_path, llava_data, tiny_model_dir):
    result = framelm("train", "--model_name_or_path", str(tiny_model_dir), "--dataset", str(llava_data),
                     "--output_dir", str(tmp_path / "o"), "--report_to", "wandb", cwd=tmp_path,
                     prelude="import sys; sys.modules['wandb'] = None  # not installed")  # fmt: skip
    line = (
        "framelm train: error: --report_to wandb: the wandb library is not installed (pip install wandb, or pass "
        "--report_to none)"
    )
    assert_one_line(result, line, 3)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [["-h"], ["train", "--help"], ["data", "validate", "--help"]])
def test_help_into_a_closed_pipe_ends_quietly(argv):
    """`framelm -h | head -1`: the reader is gone before we write; no BrokenPipeError traceback, exit code 0."""
    process = subprocess.Popen(FRAMELM + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err[-2000:]


def test_options_are_never_prefix_matched_and_unknown_words_get_a_did_you_mean(
    tmp_path, llava_data, tiny_model_dir, capsys
):
    base = [
        "train",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--dataset",
        str(llava_data),
        "--output_dir",
        str(tmp_path),
    ]
    assert cli([*base, "--learning_rat", "1e-5"]) == 2
    assert capsys.readouterr().err == (
        "framelm train: error: unrecognized arguments: --learning_rat 1e-5; did you mean --learning_rate? "
        "(see `framelm train --help`)\n"
    )
    assert cli(["trian"]) == 2
    assert capsys.readouterr().err == (
        "framelm: error: unknown command 'trian'; did you mean train? (see `framelm --help` for the list)\n"
    )
    assert cli(["data", "valdate", "x.json"]) == 2
    assert capsys.readouterr().err == (
        "framelm: error: unknown command 'valdate'; did you mean validate? (see `framelm data --help` for the list)\n"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rat: 1e-5\nnum_frame: 4\n")
    assert cli([*base, "--config", str(recipe)]) == 2
    assert capsys.readouterr().err == (
        f"framelm train: error: {recipe}: unknown keys 'learning_rat' (did you mean learning_rate?), 'num_frame' "
        "(did you mean num_frames?) (see `framelm train --help` for the option names)\n"
    )
    assert cli(["init", "--tiny", "--ou", str(tmp_path / "t")]) == 2  # --ou is not --out
    assert capsys.readouterr().err == (
        "framelm init: error: the following arguments are required: --out (see `framelm init --help`)\n"
    )


def test_dashes_and_underscores_are_one_spelling_everywhere(tmp_path):
    from framelm.training.data.commands import extract_frames_parser
    from framelm.training.model.init import parse

    for spelling in ("--projector-type", "--projector_type"):
        assert parse(["--tiny", "--out", "x", spelling, "linear"]).projector_type == "linear"
    for spelling in ("--num-proc", "--num_proc"):
        assert extract_frames_parser().parse_args(["v.mp4", spelling, "3"]).num_proc == 3


def test_init_choices_come_from_the_config_and_a_non_empty_out_is_refused(tmp_path, capsys):
    import typing

    from framelm.modeling.configuration_framelm import FEATURE_SELECT_STRATEGIES, PROJECTOR_TYPES
    from framelm.training.model.init import InitArguments

    hints = typing.get_type_hints(InitArguments)
    assert typing.get_args(hints["projector_type"]) == PROJECTOR_TYPES
    assert typing.get_args(hints["vision_feature_select_strategy"]) == FEATURE_SELECT_STRATEGIES
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "model.safetensors").write_text("weights")
    assert cli(["init", "--tiny", "--out", str(trained)]) == 2
    assert capsys.readouterr().err == (
        f"framelm init: error: --out {trained} is not empty; init would replace what is there (name a new folder, "
        "or pass --overwrite)\n"
    )
    assert (trained / "model.safetensors").read_text() == "weights"


def test_a_shipped_recipe_runs_by_name(tmp_path):
    from framelm.training.sft.train import parse_args

    script, data, training, _ = parse_args(["--config", "video_finetune", "--model_name_or_path", str(tmp_path),
                                            "--dataset", "d.json", "--output_dir", str(tmp_path)])  # fmt: skip
    assert script.num_frames == 16 and training.max_length == 8192 and data.bad_records == "skip"


def test_a_lora_runs_base_model_is_found_from_any_directory(tmp_path, tiny_model_dir, monkeypatch):
    """`export --merge-lora` from another directory: a run names its local base by its absolute path, and an older
    adapter config's relative path resolves against the adapter folder first."""
    import shutil
    from types import SimpleNamespace

    from framelm.training.errors import InputError
    from framelm.training.hub.merge_lora import base_model_folder
    from framelm.training.model.loading import load_model_and_processor

    shutil.copytree(tiny_model_dir, tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    model_args = SimpleNamespace(model_name_or_path="base", model_revision=None, dtype=None, attn_implementation=None,
                                 load_in_4bit=False, load_in_8bit=False)  # fmt: skip
    model, _ = load_model_and_processor(SimpleNamespace(init_from=None, num_frames=None), model_args)
    assert model.name_or_path == str(tmp_path / "base")  # what PEFT writes as base_model_name_or_path
    (tmp_path / "runs" / "lora").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "runs")  # elsewhere
    assert base_model_folder(tmp_path / "runs" / "lora", str(tmp_path / "base")) == str(tmp_path / "base")
    assert base_model_folder(tmp_path / "runs" / "lora", "../../base") == str(
        tmp_path / "runs" / "lora" / "../../base"
    )
    with pytest.raises(InputError, match=r"names base model './base', which is not a folder here"):
        base_model_folder(tmp_path / "runs" / "lora", "./base")
