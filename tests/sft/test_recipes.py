"""Every shipped recipe parses with `framelm train`'s real parser, comments each key with its type, restates no
default, and trains one step on the tiny model (with the machine's limits overriding batch size and workers)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from framelm.training.sft.train import build_parser, parse_args, run

RECIPES = sorted((Path(__file__).resolve().parents[2] / "training" / "recipes").glob("*.yaml"))
KEY_LINE = re.compile(r"^(\w+):\s*(\S.*?)\s+# (str|int|float|bool)\b.*\S")
# what a 2-core CPU machine can run in seconds (no warm-up: one step would warm up to itself, at learning rate 0);
# everything else comes from the recipe
MACHINE = ["--max_steps", "1", "--warmup_steps", "0", "--per_device_train_batch_size", "2",
           "--gradient_accumulation_steps", "1", "--dataloader_num_workers", "0", "--report_to", "none",
           "--save_strategy", "no", "--logging_steps", "1"]  # fmt: skip


def defaults() -> dict:
    """Option name -> default, as `framelm train` would use it without a recipe."""
    found = {}
    for dtype in build_parser().dataclass_types:
        for f in dataclasses.fields(dtype):
            if f.init and f.default is not dataclasses.MISSING:
                found[f.name] = f.default
    return found


def test_all_five_workflows_ship():
    assert {r.stem for r in RECIPES} >= {"llava_pretrain", "llava_finetune", "lora", "qlora", "video_finetune"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_key_is_an_option_commented_with_its_type_and_not_a_default(recipe, tmp_path):
    keys = [line for line in recipe.read_text().splitlines() if line and not line.startswith("#")]
    assert keys, recipe
    for line in keys:
        assert KEY_LINE.match(line), f"{recipe.name}: {line!r} needs a `# type: meaning` comment"
    values, known = yaml.safe_load(recipe.read_text()), defaults()
    for key, value in values.items():
        assert key in known, f"{recipe.name}: {key} is not an option of framelm train"
        assert value != known[key], f"{recipe.name}: {key}: {value!r} restates the default"
    # the real parser takes it (an unknown key or a bad value would exit with code 2)
    parse_args(
        ["--config", str(recipe), "--model_name_or_path", "m", "--dataset", "d.json", "--output_dir", str(tmp_path)]
    )


def bitsandbytes_runs_here() -> str:
    """'' when bitsandbytes imports and quantizes on this machine, else why not."""
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(8, 8, quant_type="nf4", compute_dtype=torch.float32).to("cpu")  # quantizes
        layer(torch.ones(1, 8))
    except Exception as err:  # any failure to import or run is the reason QLoRA cannot run here
        return f"{type(err).__name__}: {err}"
    return ""


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.stem != "demo"], ids=lambda p: p.stem)
def test_every_recipe_trains_one_step_on_the_tiny_model(recipe, tiny_model_dir, llava_data, tmp_path):
    if recipe.stem == "qlora":
        why = bitsandbytes_runs_here()
        assert not why, f"QLoRA needs a working bitsandbytes (pip install 'framelm[qlora]'): {why}"
    out = tmp_path / recipe.stem
    # QLoRA computes in bf16 (TRL casts the trainable parameters to it): bf16 autocast on the CPU, as on a GPU
    extra = ["--use_cpu", "true", "--bf16", "true"] if recipe.stem == "qlora" else []
    trainer = run(*parse_args(["--config", str(recipe), "--model_name_or_path", str(tiny_model_dir), "--dataset",
                               str(llava_data), "--output_dir", str(out), *MACHINE, *extra]))  # fmt: skip
    assert trainer.state.global_step == 1
    assert (out / "processor_config.json").exists() and (out / "framelm_run.json").exists()
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    if recipe.stem == "llava_pretrain":
        before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        assert changed and all(name.startswith("model.multi_modal_projector.") for name in changed)
    if recipe.stem in ("lora", "qlora"):
        assert any("lora_A" in name for name in trainable) and not any("vision_tower" in n for n in trainable)
    if recipe.stem == "qlora":
        import bitsandbytes as bnb

        quantized = {name for name, m in trainer.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
        assert quantized and all("language_model" in name for name in quantized)  # tower and projector stay full
    if recipe.stem == "video_finetune":
        assert json.loads((out / "processor_config.json").read_text())["num_frames"] == 16
