"""`framelm dpo` end to end on a tiny model, against the real TRL: the reference equals the policy at step 0, image and
video pairs train, LoRA is its own reference (adapter disabled, no copy), the run record and card, and the saved
folder loads and generates where framelm is not installed. Each run builds a Trainer: marked slow."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from support.processes import run_without_framelm

from framelm.training.cli import main as cli
from framelm.training.dpo.train import parse_args, run
from framelm.training.dpo.trainer import sequence_log_probs
from framelm.training.launch import LaunchArguments, launch_command

pytestmark = pytest.mark.slow


def dpo_args(model_dir, data, out, *extra):
    argv = ["--model_name_or_path", str(model_dir), "--dataset", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--max_steps", "2", "--learning_rate", "1e-2",
            "--dataloader_num_workers", "0", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
            "--activation_checkpointing", "false", "--seed", "0", "--max_length", "256", *extra]  # fmt: skip
    return parse_args(argv)


def changed(before_dir, after_dir) -> set[str]:
    before, after = load_file(before_dir / "model.safetensors"), load_file(after_dir / "model.safetensors")
    return {name for name in before if not torch.equal(before[name], after[name])}


@pytest.mark.parametrize("pairs", ["image_pairs", "video_pairs"])
def test_two_steps_on_image_and_on_video_pairs(tiny_model_dir, tmp_path, pairs, request):
    data = request.getfixturevalue(pairs)
    out = tmp_path / "out"
    trainer = run(*dpo_args(tiny_model_dir, data, out))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    first = trainer.state.log_history[0]
    # step 0: the policy is the reference, so every reward is 0 and the loss is -log sigmoid(0) = log 2
    assert first["rewards/chosen"] == first["rewards/rejected"] == 0.0
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6) and first["skipped_records"] == 0
    moved = changed(tiny_model_dir, out)
    assert any(n.startswith("model.language_model.") for n in moved)
    assert any(n.startswith("model.multi_modal_projector.") for n in moved)  # the media reached the loss
    assert not any(n.startswith("model.vision_tower.") for n in moved)  # stage full: the tower is frozen
    record = json.loads((out / "framelm_run.json").read_text())
    assert record["method"] == "dpo" and record["dpo"] == {"beta": 0.1, "loss_type": ["sigmoid"],
                                                           "precompute_ref_log_probs": False,
                                                           "reference": "frozen copy"}  # fmt: skip
    assert record["hyperparameters"]["global_steps"] == 2 and record["datasets"] == [str(data)]


def test_reference_log_probs_equal_the_policys_at_step_zero(tiny_model_dir, image_pairs, video_pairs, tmp_path):
    from framelm.training.dpo.trainer import FrameLMDPOTrainer

    script, data, training, model_args = dpo_args(tiny_model_dir, image_pairs, tmp_path / "out", "--max_steps", "1")
    trainer = run(script, data, training, model_args)  # one step, then compare from a fresh trainer below
    from framelm.training.dpo.data_prep import prepare_pairs
    from framelm.training.model.loading import load_model_and_processor

    model, processor = load_model_and_processor(script, model_args)
    for pairs in (image_pairs, video_pairs):
        prepared = prepare_pairs(type(data)(dataset=str(pairs)), processor, 256)
        fresh = FrameLMDPOTrainer(model=model, ref_model=load_model_and_processor(script, model_args)[0],
                                  args=training, train_dataset=prepared.train, data_collator=prepared.collator,
                                  processing_class=processor)  # fmt: skip
        batch = prepared.collator(list(prepared.train))
        ref_chosen, ref_rejected = fresh.compute_ref_log_probs(fresh.ref_model, batch)
        policy = sequence_log_probs(fresh.model, batch)
        torch.testing.assert_close(torch.cat([ref_chosen, ref_rejected]), policy, rtol=1e-5, atol=1e-4)
        assert (policy < 0).all()
    assert trainer.state.global_step == 1


def test_lora_is_its_own_reference_without_a_second_copy(tiny_model_dir, image_pairs, video_pairs, tmp_path):
    from framelm.training.data.arguments import DataArguments
    from framelm.training.dpo.data_prep import prepare_pairs

    both = tmp_path / "both.jsonl"
    both.write_text(image_pairs.read_text() + video_pairs.read_text())
    out = tmp_path / "lora"
    trainer = run(*dpo_args(tiny_model_dir, both, out, "--use_peft", "--lora_r", "4", "--lora_alpha", "8"))
    assert trainer.ref_model is None  # no second model: the reference is the adapter disabled
    copies = [name for name, _ in trainer.model.named_parameters() if ".ref." in name]
    assert copies == []  # nor a frozen copy of the adapter
    assert trainer.state.log_history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    trained = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name or "multi_modal_projector" in name for name in trained)
    # the reference (adapter disabled) is exactly the starting model, after training too
    from framelm.modeling import FrameLMForConditionalGeneration

    start = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    prepared = prepare_pairs(DataArguments(dataset=str(both)), trainer.processing_class, 256)
    batch = prepared.collator(list(prepared.train)[:3])
    model = trainer.model.eval()
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(model, batch)
    torch.testing.assert_close(torch.cat([ref_chosen, ref_rejected]), sequence_log_probs(start, batch),
                               rtol=1e-5, atol=1e-4)  # fmt: skip
    assert not torch.allclose(sequence_log_probs(model, batch), sequence_log_probs(start, batch), atol=1e-4)
    assert (out / "adapter_config.json").exists()
    assert json.loads((out / "framelm_run.json").read_text())["dpo"]["reference"] == "adapter disabled"


def test_saved_folder_loads_and_generates_without_framelm(tiny_model_dir, image_pairs, tmp_path):
    out = tmp_path / "out"
    trainer = run(*dpo_args(tiny_model_dir, image_pairs, out))
    processor = trainer.processing_class
    messages = [{"role": "user", "content": [{"type": "image", "path": str(tmp_path / "red.png")},
                                             {"type": "text", "text": "What colour?"}]}]  # fmt: skip
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        expected = trainer.model.eval().generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    child = run_without_framelm(
        f"""
        import json, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        folder = {str(out)!r}
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
        inputs = processor.apply_chat_template({messages!r}, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        print(json.dumps({{"ids": ids[0].tolist(), "module": type(model).__module__}}))
        """,
        cwd=tmp_path,
    )
    assert child["ids"] == expected[0].tolist() and len(child["ids"]) == inputs["input_ids"].shape[1] + 5
    assert not child["module"].startswith("framelm")


def test_the_export_card_says_dpo(tiny_model_dir, image_pairs, tmp_path):
    out = tmp_path / "out"
    run(*dpo_args(tiny_model_dir, image_pairs, out, "--beta", "0.25"))
    assert cli(["export", str(out), "--out", str(tmp_path / "hub")]) == 0
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "Preference-tuned with `framelm dpo` (TRL `DPOTrainer`, loss `sigmoid`, beta 0.25) at stage `full`" in card


def test_cli_and_launcher(tiny_model_dir, image_pairs, tmp_path, capsys):
    assert cli(["dpo", "--help"]) == 0
    assert "--beta" in capsys.readouterr().out
    assert cli(["dpo", "--dataset", str(image_pairs)]) == 2
    assert "say which model to tune" in capsys.readouterr().err
    command, _ = launch_command(LaunchArguments(accelerate_config="zero3", num_processes=2), ["--beta", "0.2"], 0,
                                {}, module="framelm.training.dpo.train")  # fmt: skip
    module = command.index("framelm.training.dpo.train")
    assert command[module - 1] == "-m" and command[module + 1 :] == ["--beta", "0.2", "--ddp_backend", "gloo"]


def test_precomputed_reference_log_probs_are_the_starting_models(tiny_model_dir, video_pairs, tmp_path):
    from framelm.modeling import FrameLMForConditionalGeneration

    trainer = run(*dpo_args(tiny_model_dir, video_pairs, tmp_path / "out", "--precompute_ref_log_probs", "true"))
    assert trainer.state.log_history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    rows = list(trainer.train_dataset)
    assert all("ref_chosen_logps" in row and "ref_rejected_logps" in row for row in rows)
    start = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    batch = trainer.data_collator(rows)
    torch.testing.assert_close(torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]),
                               sequence_log_probs(start, batch).float(), rtol=1e-5, atol=1e-4)  # fmt: skip
