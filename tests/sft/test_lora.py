"""LoRA: every `lora_*` option of TRL's `ModelConfig` reaches PEFT beside framelm's defaults, and `framelm export
--merge-lora` writes a plain model that loads without peft (or framelm) and gives the adapted model's outputs."""

import json

import pytest
import torch
from support.processes import run_without_framelm
from trl import ModelConfig

from framelm.training.model.loading import LM_LORA_TARGETS, peft_config_for

TEXT_RECORD = {"id": "t", "conversations": [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]}


def test_lora_options_reach_peft_beside_framelms_defaults():
    defaults = peft_config_for(ModelConfig(use_peft=True, lora_r=4), stage="full")
    assert (defaults.r, defaults.target_modules, defaults.task_type) == (4, LM_LORA_TARGETS, "CAUSAL_LM")
    assert defaults.modules_to_save == ["multi_modal_projector"]  # the projector always trains in full
    asked = ModelConfig(use_peft=True, lora_target_modules=["q_proj", "v_proj"], lora_modules_to_save=["lm_head"],
                        lora_target_parameters=["mlp.experts.gate_up_proj"], lora_task_type="SEQ_CLS")  # fmt: skip
    config = peft_config_for(asked, stage="all")
    assert config.target_modules == {"q_proj", "v_proj"}
    assert config.modules_to_save == ["multi_modal_projector", "vision_tower", "lm_head"]
    assert (config.target_parameters, config.task_type) == (["mlp.experts.gate_up_proj"], "SEQ_CLS")
    assert peft_config_for(ModelConfig(use_peft=False), stage="full") is None


def test_qlora_asks_for_bf16_where_the_trainer_would_fail_on_mixed_dtypes():
    from framelm.training.model.loading import quantization_config_for

    assert quantization_config_for(ModelConfig()) is None
    with pytest.raises(ValueError, match=r"QLoRA\) trains in bf16: pass --dtype bfloat16, not 'float32'"):
        quantization_config_for(ModelConfig(load_in_4bit=True))
    config = quantization_config_for(ModelConfig(load_in_4bit=True, dtype="bfloat16"))
    assert config.llm_int8_skip_modules == ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def test_qlora_of_a_model_built_on_the_fly_is_refused_not_dropped():
    from types import SimpleNamespace

    from framelm.training.model.loading import load_model_and_processor

    with pytest.raises(ValueError, match=r"quantize a saved model: build it first \(`framelm init`\)"):
        load_model_and_processor(SimpleNamespace(init_from=["tiny"]), ModelConfig(load_in_4bit=True))


@pytest.mark.slow
def test_merged_export_loads_without_peft_and_gives_the_adapted_outputs(tiny_model_dir, tmp_path, make_image, capsys):
    from safetensors.torch import load_file

    from framelm.training.cli import main as cli
    from framelm.training.sft.train import parse_args, run

    make_image("red.png", color=(255, 0, 0))
    records = [
        {"id": "a", "image": "red.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"},
                                                          {"from": "gpt", "value": "red"}]},
        TEXT_RECORD,
    ]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "lora"
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(tmp_path / "train.jsonl"),
            "--output_dir", str(out), "--use_peft", "--lora_r", "4", "--lora_alpha", "8",
            "--lora_modules_to_save", "lm_head", "--per_device_train_batch_size", "2", "--max_steps", "2",
            "--learning_rate", "1e-2", "--dataloader_num_workers", "0", "--report_to", "none",
            "--save_strategy", "no", "--activation_checkpointing", "false"]  # fmt: skip
    trainer = run(*parse_args(argv))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    with torch.no_grad():
        adapted = trainer.model.eval()(**batch).logits
    torch.save({"batch": dict(batch), "adapted": adapted}, tmp_path / "batch.pt")

    assert cli(["export", str(out), "--out", str(tmp_path / "unmerged")]) == 1
    assert "holds LoRA adapters, not a whole model: pass --merge-lora" in capsys.readouterr().err
    merged = tmp_path / "merged"
    assert cli(["export", str(out), "--out", str(merged), "--merge-lora"]) == 0
    base, weights = load_file(tiny_model_dir / "model.safetensors"), load_file(merged / "model.safetensors")
    assert set(weights) == set(base)  # plain names: no lora_A/B, no base_layer, no modules_to_save copies
    for name in ("model.language_model.layers.0.self_attn.q_proj.weight", "lm_head.weight"):
        assert not torch.equal(weights[name], base[name]), name  # adapter folded in; --lora_modules_to_save trained

    child = run_without_framelm(
        f"""
        import json, torch
        sys.modules["peft"] = None  # nor peft
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained({str(merged)!r}, trust_remote_code=True).eval()
        saved = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            logits = model(**saved["batch"]).logits
        print(json.dumps({{"max_diff": (logits - saved["adapted"]).abs().max().item()}}))
        """,
        cwd=tmp_path,
    )
    assert child["max_diff"] < 1e-4


@pytest.mark.slow
def test_qlora_quantizes_the_lm_only_and_trains_adapters_and_the_projector(tiny_model_dir, tmp_path):
    """bitsandbytes' CPU backend runs 4-bit layers here, so QLoRA is tested on CPU like everything else."""
    from bitsandbytes.nn import Linear4bit

    from framelm.training.sft.train import parse_args, run

    (tmp_path / "train.jsonl").write_text(json.dumps(TEXT_RECORD) + "\n")
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(tmp_path / "train.jsonl"),
            "--output_dir", str(tmp_path / "qlora"), "--load_in_4bit", "--use_peft", "--lora_r", "4",
            "--dtype", "bfloat16", "--per_device_train_batch_size", "1", "--max_steps", "2", "--learning_rate", "1e-2",
            "--dataloader_num_workers", "0", "--report_to", "none", "--save_strategy", "no"]  # fmt: skip
    trainer = run(*parse_args(argv))
    quantized = {name for name, module in trainer.model.named_modules() if isinstance(module, Linear4bit)}
    assert quantized and all(".language_model." in name for name in quantized)  # tower, projector, head stay full
    assert len(quantized) == 2 * 7  # every linear layer of the 2 decoder layers
    trained = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name or "multi_modal_projector" in name for name in trained)
    assert trainer.state.global_step == 2 and trainer.state.log_history[-1]["train_loss"] > 0
