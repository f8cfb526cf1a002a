"""`framelm train` end to end on a tiny model: stages, LoRA, resume, bad-record policy, DDP over 2 CPU processes,
and the short demo. Slow by nature (each run builds a Trainer), so marked slow; CI still runs them."""

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file
from support.processes import free_port, run_process
from support.stop_at import StopAt

from framelm.modeling import FrameLMForConditionalGeneration
from framelm.training.batches.collator import FrameLMCollator
from framelm.training.cli import main as cli
from framelm.training.sft.train import parse_args, run

pytestmark = pytest.mark.slow


def train_args(model_dir, data, out, *extra):
    argv = ["--model_name_or_path", str(model_dir), "--dataset", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--max_steps", "2", "--learning_rate", "1e-2",
            "--dataloader_num_workers", "0", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
            "--activation_checkpointing", "false", "--seed", "0", *extra]  # fmt: skip
    return parse_args(argv)


def changed_parameters(before_dir, after_dir) -> set[str]:
    before, after = load_file(before_dir / "model.safetensors"), load_file(after_dir / "model.safetensors")
    return {name for name in before if not torch.equal(before[name], after[name])}


@pytest.mark.parametrize(
    ("stage", "trained_prefixes"),
    [
        ("projector", ("model.multi_modal_projector.",)),
        ("full", ("model.multi_modal_projector.", "model.language_model.", "lm_head.")),
        ("all", ("model.multi_modal_projector.", "model.language_model.", "lm_head.", "model.vision_tower.")),
    ],
)
def test_each_stage_trains_exactly_its_parameters(tiny_model_dir, llava_data, tmp_path, stage, trained_prefixes):
    out = tmp_path / stage
    trainer = run(*train_args(tiny_model_dir, llava_data, out, "--stage", stage))
    changed = changed_parameters(tiny_model_dir, out)
    everything = set(load_file(tiny_model_dir / "model.safetensors"))
    expected = {name for name in everything if name.startswith(trained_prefixes)}
    # every parameter of the stage changed, nothing else did (the tiny LM ties no weights)
    assert changed == expected
    logged = trainer.state.log_history[0]
    for key in ("samples_per_second", "tokens_per_second", "media_tokens_per_second", "skipped_records"):
        assert key in logged, key
    assert logged["media_tokens_per_second"] > 0 and logged["skipped_records"] == 0
    record = json.loads((out / "framelm_run.json").read_text())
    assert record["stage"] == stage and record["hyperparameters"]["global_steps"] == 2
    assert (out / "modeling_framelm.py").exists() and (out / "processor_config.json").exists()  # Hub-ready


def test_lora_trains_adapters_and_the_projector_then_merges(tiny_model_dir, llava_data, tmp_path):
    from peft import PeftModel

    out = tmp_path / "lora"
    trainer = run(*train_args(tiny_model_dir, llava_data, out, "--use_peft", "--lora_r", "4", "--lora_alpha", "8"))
    model = trainer.model
    assert isinstance(model, PeftModel)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    assert any("language_model" in n and "lora_A" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    model.eval()
    with torch.no_grad():
        adapted = model(**batch).logits
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(**batch).logits, adapted, atol=1e-4, rtol=1e-4)
    base = load_file(tiny_model_dir / "model.safetensors")
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], base[name])  # the adapter was folded into the LM weight


@pytest.mark.parametrize("layout", [("--packing", "true"), ("--padding_free", "true")], ids=lambda a: a[0][2:])
def test_packed_and_padding_free_runs_train_on_the_padded_loss(tiny_model_dir, llava_data, tmp_path, layout):
    """All six records in one step: the first logged loss (TRL's fused head, before any update) and the evaluation
    after training are the padded batch's losses. TRL's constructor, which refuses any collator under its own
    padding-free mode, never sees the two options; the run record still does."""
    from framelm.training.batches.packing import PACKED_COLUMN

    out = tmp_path / layout[0][2:]
    trainer = run(*train_args(tiny_model_dir, llava_data, out, *layout, "--max_length", "160", "--max_steps", "1",
                              "--per_device_train_batch_size", "6", "--per_device_eval_batch_size", "6",
                              "--eval_dataset", str(llava_data), "--stage", "all"))  # fmt: skip
    packing = layout[0] == "--packing"
    assert (trainer.args.packing, trainer.args.padding_free) == (packing, not packing)
    assert trainer.model.config.get_text_config()._attn_implementation == "sdpa_varlen"
    hyper = json.loads((out / "framelm_run.json").read_text())["hyperparameters"]
    assert (hyper["packing"], hyper["padding_free"]) == (packing, not packing)
    if packing:  # 6 records of 20-100 tokens in rows of at most 160
        rows = trainer.train_dataset[PACKED_COLUMN]
        assert sorted(s["id"] for row in rows for s in row) == list("abcdef") and len(rows) < 6
        assert all(sum(s["num_tokens"] for s in row) <= 160 for row in rows)
    samples = [sample for row in trainer.train_dataset for sample in row.get(PACKED_COLUMN, [row])]
    padded = FrameLMCollator(trainer.processing_class)(samples)
    initial = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        first = initial(**padded).loss.item()
        trained = trainer.model.eval()(**padded).loss.item()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(first, abs=1e-4)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(trained, abs=1e-5)


def test_resume_from_a_checkpoint_ends_with_the_same_weights(tiny_model_dir, llava_data, tmp_path):
    common = ("--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--dataloader_num_workers", "1")
    straight = tmp_path / "straight"
    run(*train_args(tiny_model_dir, llava_data, straight, *common))
    interrupted = tmp_path / "interrupted"
    run(*train_args(tiny_model_dir, llava_data, interrupted, *common), callbacks=[StopAt(2)])
    assert (interrupted / "checkpoint-2" / "modeling_framelm.py").exists()  # checkpoints are Hub-ready too
    resumed = run(*train_args(tiny_model_dir, llava_data, interrupted, *common,
                              "--resume_from_checkpoint", str(interrupted / "checkpoint-2")))  # fmt: skip
    assert resumed.state.global_step == 4
    a, b = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_bad_records_stop_a_strict_run_and_are_counted_in_a_skip_run(tiny_model_dir, llava_data, tmp_path):
    with llava_data.open("a") as f:
        f.write(json.dumps({"id": "bad", "conversations": [{"from": "human", "value": "<image>x"},
                                                           {"from": "gpt", "value": "y"}]}) + "\n")  # fmt: skip
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"2 of 8 records cannot be used:\n.*train.jsonl:7 \(id=bad\)"):
        run(*train_args(tiny_model_dir, llava_data, tmp_path / "strict"))
    trainer = run(*train_args(tiny_model_dir, llava_data, tmp_path / "skip", "--bad_records", "skip",
                              "--max_bad_fraction", "0.25"))  # fmt: skip
    assert len(trainer.train_dataset) == 6
    assert trainer.state.log_history[0]["skipped_records"] == 2
    assert json.loads((tmp_path / "skip" / "framelm_run.json").read_text())["skipped_records"] == 2


def test_records_that_cannot_fit_max_length_are_policed_too(tiny_model_dir, llava_data, tmp_path):
    with pytest.raises(ValueError, match=r"first exchange needs \d+ tokens .* max_length is 40"):
        run(*train_args(tiny_model_dir, llava_data, tmp_path / "strict", "--max_length", "40"))
    trainer = run(*train_args(tiny_model_dir, llava_data, tmp_path / "skip", "--max_length", "40",
                              "--bad_records", "skip", "--max_bad_fraction", "0.5"))  # fmt: skip
    # a video alone is 4 x 16 = 64 tokens: the two video records go, the image and text-only ones fit
    assert {row["id"] for row in trainer.train_dataset} == {"a", "c", "e", "f"}


def test_ddp_on_two_cpu_processes_with_a_text_only_rank(tiny_model_dir, tmp_path, make_mp4):
    """One rank gets the text-only record and the other the video record at every step: without the zero-weight
    media pass, DDP would fail on tower/projector parameters that one rank never used. (FSDP cannot be tried the same
    way: with `ACCELERATE_USE_CPU`, accelerate 1.15 runs an FSDP config as plain MULTI_CPU data parallelism.)"""
    make_mp4("clip.mp4", num_frames=8)
    records = [
        {"id": "text", "conversations": [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]},
        {"id": "video", "video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>What moves?"},
                                                               {"from": "gpt", "value": "a bar"}]},
    ]  # fmt: skip
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "ddp"
    config = os.path.join(os.path.dirname(__file__), "..", "..", "training", "accelerate_configs", "ddp.yaml")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "2",
               "--main_process_port", str(free_port()), "--mixed_precision", "no", "-m", "framelm.training.sft.train",
               "--model_name_or_path", str(tiny_model_dir),
               "--dataset", str(data), "--output_dir", str(out), "--stage", "all", "--per_device_train_batch_size",
               "1", "--max_steps", "3", "--dataloader_num_workers", "0", "--report_to", "none", "--save_strategy",
               "no", "--logging_steps", "1", "--activation_checkpointing", "false",
               "--learning_rate", "1e-2"]  # fmt: skip
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    result = run_process(command, cwd=tmp_path, timeout=300, env=env)  # a hang = a failure, its ranks killed
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((out / "framelm_run.json").read_text())
    assert record["hyperparameters"]["num_processes"] == 2 and record["hyperparameters"]["global_steps"] == 3
    assert record["hyperparameters"]["distributed_type"] == "MULTI_CPU"  # DDP over gloo, as launched
    changed = changed_parameters(tiny_model_dir, out)
    assert any(n.startswith("model.vision_tower.") for n in changed)  # the video rank's gradients reached the tower
    assert changed == set(load_file(tiny_model_dir / "model.safetensors"))  # stage all: every parameter trained


def test_num_frames_given_to_train_is_saved_with_the_model_and_exported(tmp_path, llava_data):
    """The frame-count bug: `--num_frames 2` on a 4-frame model trained on 2 frames but saved 4 everywhere."""
    from framelm.training.model.tiny import build_tiny_framelm

    four = build_tiny_framelm(tmp_path / "four", num_frames=4)
    out, hub = tmp_path / "two", tmp_path / "hub"
    trainer = run(*train_args(four, llava_data, out, "--num_frames", "2", "--max_steps", "1"))
    assert trainer.processing_class.num_frames == 2
    batch = trainer.data_collator([row for row in trainer.train_dataset if row["id"] == "b"])
    assert batch["pixel_values_videos"].shape[1] == 2  # trained on 2 frames ...
    assert json.loads((out / "processor_config.json").read_text())["num_frames"] == 2  # ... and saved as such
    assert json.loads((out / "config.json").read_text())["num_frames"] == 2
    assert json.loads((out / "framelm_run.json").read_text())["num_frames"] == 2
    assert cli(["export", str(out), "--out", str(hub)]) == 0
    card = (hub / "README.md").read_text()
    assert "| Tokens per video | 2 frames x 16 tokens = 32 |" in card and "4 frames" not in card
    assert json.loads((hub / "processor_config.json").read_text())["num_frames"] == 2


def test_the_quick_demo_learns_and_a_second_run_gives_the_same_metrics(tmp_path):
    """Same seed, same machine: the same data bytes (libx264 without its lookahead, see demo/data.py), the same
    batches and the same arithmetic, so the same weights and metrics, to the last bit."""
    runs = {}
    for name in ("demo", "again"):
        assert cli(["demo", "--out", str(tmp_path / name), "--quick"]) == 0
        runs[name] = json.loads((tmp_path / name / "demo_metrics.json").read_text())
    metrics = runs["demo"]
    reproduced = ("before", "after", "first_loss", "last_loss", "steps")
    assert {key: runs["again"][key] for key in reproduced} == {key: metrics[key] for key in reproduced}
    weights = [load_file(tmp_path / name / "model.safetensors") for name in runs]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert set(metrics) >= {"before", "after", "seconds"}
    assert set(metrics["phases"]) == {"drawing", "evaluation", "training"}
    assert metrics["last_loss"] < 0.5 * metrics["first_loss"]  # loss falls clearly
    chance = {"colour": 0.25, "shape": 0.25, "motion": 0.25, "compare": 0.5}
    assert metrics["after"]["colour"] > 2 * chance["colour"]  # above chance on a question that needs the pixels
    assert sum(metrics["after"].values()) > sum(metrics["before"].values())
    assert (tmp_path / "demo" / "model.safetensors").exists() and (tmp_path / "demo" / "modeling_framelm.py").exists()


@pytest.mark.parametrize(("omp_env", "workers", "expected"), [(None, 1, 1), (None, 0, 2), ("2", 1, 2)])
def test_cpu_training_leaves_cores_to_the_dataloader_workers(monkeypatch, omp_env, workers, expected):
    from framelm.training.sft.train import share_cores_with_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    if omp_env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp_env)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        share_cores_with_workers(workers)
        assert torch.get_num_threads() == expected  # 2 cores - 1 worker; no workers or an explicit setting: unchanged
    finally:
        torch.set_num_threads(before)
