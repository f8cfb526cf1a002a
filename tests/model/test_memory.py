"""`framelm estimate-memory`: exact parameter counts per method, and an estimate close to a measured training step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from framelm.training.cli import main as cli

MEASURE = Path(__file__).resolve().parents[1] / "support" / "measure_memory.py"


def test_counts_equal_the_real_models_trainable_parameters(tiny_model_dir, capsys):
    from peft import get_peft_model

    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.training.model.loading import peft_config_for, set_stage
    from framelm.training.model.memory import count_parameters

    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir)
    counts = count_parameters(model.config, lora_r=16)
    assert counts.total == sum(p.numel() for p in model.parameters())
    set_stage(model, "full")
    full = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora_args = type("ModelArgs", (), {"use_peft": True, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
                                       "lora_target_modules": None, "lora_modules_to_save": None,
                                       "lora_task_type": "CAUSAL_LM", "use_rslora": False, "use_dora": False,
                                       "lora_target_parameters": None})()  # fmt: skip
    set_stage(model, "full", use_peft=True)
    peft = get_peft_model(model, peft_config_for_dataclass(lora_args, peft_config_for))
    lora = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert cli(["estimate-memory", "--model", str(tiny_model_dir), "--max_length", "512"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"parameters: {counts.total:,} (tower ")
    assert f"  {'full (full)':<12}{full:>16,}" in out and f"  {'LoRA':<12}{lora:>16,}" in out


def peft_config_for_dataclass(args, peft_config_for):
    """TRL's ModelConfig stand-in: `peft_config_for` runs `dataclasses.replace`, so give it a real dataclass."""
    from trl import ModelConfig

    return peft_config_for(ModelConfig(use_peft=True, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                                       lora_dropout=args.lora_dropout), "full")  # fmt: skip


def measured(hidden: int, layers: int, tokens: int) -> dict:
    result = subprocess.run([sys.executable, str(MEASURE), str(hidden), str(layers), str(tokens)], capture_output=True,
                            text=True, timeout=900, cwd=MEASURE.parents[1])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_estimate_is_near_a_measured_step_of_the_tiny_model():
    row = measured(64, 2, 512)
    assert row["estimated_mib"] == pytest.approx(row["measured_peak_mib"], rel=0.4), row  # allocator noise at 12 MiB


@pytest.mark.slow
def test_the_estimate_is_near_a_measured_step_of_a_100m_model():
    row = measured(1024, 10, 512)  # ~97M parameters, fp32, AdamW, no activation checkpointing
    assert row["parameters"] > 90_000_000
    assert row["estimated_mib"] == pytest.approx(row["measured_peak_mib"], rel=0.15), row
