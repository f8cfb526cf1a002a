"""`framelm dpo` options: a YAML recipe holds any DPOConfig, ModelConfig, data or framelm field, flags override it; the
settings framelm refuses for pairs say why in one line."""

import re
import sys

import pytest

from framelm.training.dpo.train import parse_args


def test_recipe_and_flags(tmp_path):
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text("model_name_or_path: m\ndataset: pairs.jsonl\noutput_dir: out\nbeta: 0.3\n"
                      "loss_type: [sigmoid, sft]\nloss_weights: [1.0, 0.5]\nuse_peft: true\nlora_r: 4\n"
                      "stage: projector\nnum_frames: 6\n")  # fmt: skip
    script, data, training, model = parse_args(["--config", str(recipe), "--beta", "0.2"])
    assert (training.beta, training.loss_type, training.loss_weights) == (0.2, ["sigmoid", "sft"], [1.0, 0.5])
    assert (model.use_peft, model.lora_r, script.stage, script.num_frames) == (True, 4, "projector", 6)
    assert data.dataset == "pairs.jsonl" and training.max_length == 4096 and training.remove_unused_columns is False
    assert training.bf16 is False  # no bf16 hardware here: fp32, where TRL's default would refuse to start


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--truncation_mode", "keep_end"], "--truncation_mode keep_end: framelm never cuts a pair"),
        (["--padding_free", "true"], "--padding_free: TRL's DPOTrainer has it switched off"),
        (["--stage", "tower"], "argument --stage: invalid choice"),
    ],
)
def test_refused_settings_say_why(flags, message, capsys):
    from framelm.training.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(message)):
        parse_args(["--model_name_or_path", "m", "--dataset", "d", "--output_dir", "o", *flags])


def test_a_mistyped_model_folder_and_a_missing_reporter_are_one_line_each(tmp_path, monkeypatch):
    """As `framelm train`: a path-like name is never looked up on the Hub; a missing tracker is named."""
    from framelm.training.errors import InputError, SetupError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"--model_name_or_path ./my-framlem: no such folder"):
        parse_args(["--model_name_or_path", "./my-framlem", "--dataset", "d", "--output_dir", "o"])
    (tmp_path / "model").mkdir()
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(SetupError, match=r"--report_to wandb: the wandb library is not installed"):
        parse_args(["--model_name_or_path", "model", "--dataset", "d", "--output_dir", "o", "--report_to", "wandb"])
