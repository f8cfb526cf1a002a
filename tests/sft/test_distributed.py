"""DDP, DeepSpeed ZeRO-2/3 and FSDP2 on 2 CPU processes, one rank text-only and the other with a video at every step.

The text-only rank is the hard case: without the blank-image pass of `FrameLMModel`, DDP hangs, ZeRO-2/3 and FSDP2
fail a gloo collective, and ZeRO-3 hangs after its first evaluation when the pass runs in training only. Each run is
started the way users do, `framelm train --accelerate_config NAME --num_processes 2`, and killed (its whole process
tree) when it outlives its timeout. The first DeepSpeed run of a machine compiles DeepSpeed's shm op (30-100 s).
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.processes import free_port, run_process, run_without_framelm

pytestmark = pytest.mark.slow

STEPS = 4
TIMEOUT = 600  # seconds for one run, a one-time DeepSpeed compile included; a healthy run takes 15-40 s here
TEXT = {"id": "text", "conversations": [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]}
VIDEO = {"id": "video", "video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>What moves?"},
                                                               {"from": "gpt", "value": "a bar"}]}  # fmt: skip


@pytest.fixture(scope="module")
def two_records(tmp_path_factory) -> Path:
    """A text-only record and a video record: at batch size 1 on 2 ranks, every step gives one to each rank. A third
    line is broken: `--bad_records skip` leaves it out, and only the main process may report it. `eval.jsonl` beside
    it holds the two good records alone."""
    from support.pattern_video import pattern_frames

    from framelm.training.data.media_writer import write_mp4

    folder = tmp_path_factory.mktemp("two_records")
    write_mp4(folder / "clip.mp4", pattern_frames(8, 48, 64), fps=8, codec="libx264", gop=12)
    path = folder / "two.jsonl"
    (folder / "eval.jsonl").write_text(json.dumps(TEXT) + "\n" + json.dumps(VIDEO) + "\n")
    path.write_text(json.dumps(TEXT) + "\n" + json.dumps(VIDEO) + "\n{not json\n")
    return path


def framelm_train(config: str, model_dir: Path, data: Path, out: Path, *extra: str):
    """`framelm train` on 2 CPU processes, training and evaluating (eval ranks split the same way) at every step."""
    command = [sys.executable, "-m", "framelm.training.cli", "train", "--accelerate_config", config,
               "--num_processes", "2", "--main_process_port", str(free_port()),
               "--model_name_or_path", str(model_dir), "--dataset", str(data),
               "--eval_dataset", str(data.with_name("eval.jsonl")),
               "--output_dir", str(out), "--stage", "all", "--max_steps", str(STEPS), "--learning_rate", "1e-2",
               "--per_device_train_batch_size", "1", "--per_device_eval_batch_size", "1", "--eval_strategy", "steps",
               "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1",
               "--dataloader_num_workers", "0", "--report_to", "none", "--activation_checkpointing", "false",
               "--bad_records", "skip", "--max_bad_fraction", "0.5", "--seed", "0", *extra]  # fmt: skip
    result = run_process(command, cwd=out.parent, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, two_records):
    """runs(config) -> (output folder, output text) of one `framelm train` run per config, run once for the module."""
    done = {}

    def get(config: str) -> tuple[Path, str]:
        if config not in done:
            out = tmp_path_factory.mktemp(config)
            result = framelm_train(config, tiny_model_dir, two_records, out)
            done[config] = out, result.stdout + result.stderr
        return done[config]

    return get


def logged(out: Path, key: str) -> list[float]:
    """Values of `key` in the run's log history, from the trainer state of its last checkpoint."""
    state = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [entry[key] for entry in state["log_history"] if key in entry]


@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_deepspeed_trains_and_evaluates_like_ddp_with_a_text_only_rank(runs, tiny_model_dir, config):
    (out, log), (reference, _) = runs(config), runs("ddp")
    hyper = json.loads((out / "framelm_run.json").read_text())["hyperparameters"]
    assert (hyper["distributed_type"], hyper["num_processes"], hyper["global_steps"]) == ("DEEPSPEED", 2, STEPS)
    assert json.loads((reference / "framelm_run.json").read_text())["hyperparameters"]["distributed_type"] == (
        "MULTI_CPU"
    )
    for key in ("loss", "eval_loss"):  # one evaluation after every step, and training went on after each
        assert len(logged(out, key)) == STEPS
        assert logged(out, key) == pytest.approx(logged(reference, key), rel=1e-4), key
    # logs come from the main process alone: one report of the broken line, one parameter count, right under ZeRO-3
    assert log.count("two.jsonl:3") == 1, log[-6000:]
    total = sum(tensor.numel() for tensor in load_file(tiny_model_dir / "model.safetensors").values())
    assert log.count(f"stage all: {total:,} of {total:,} parameters trainable") == 1
    loaded = load_without_framelm(out, tiny_model_dir / "model.safetensors")
    assert loaded["module"].startswith("transformers_modules")  # the folder's own remote code, not framelm's
    assert loaded["unchanged"] == [] and loaded["missing"] == []  # stage all: every tensor trained, tower included


def test_a_packed_zero3_run_trains_like_the_unpacked_ddp_run(runs, tiny_model_dir, two_records, tmp_path_factory):
    """The two records twice, packed at max_length 128: each of the two rows holds the video (~86 tokens) and the
    text (~20), as two videos do not fit; one row per rank. A step then sees the video and the text twice, which
    leaves the loss (a mean over label tokens) and its gradient those of the DDP run's step: the losses must match.
    Evaluation stays unpacked (`--eval_packing false`) and matches too."""
    four = two_records.with_name("four.jsonl")
    lines = two_records.read_text().splitlines()
    four.write_text("\n".join(lines[:2] * 2) + "\n")
    out = tmp_path_factory.mktemp("zero3-packed")
    framelm_train("zero3", tiny_model_dir, four, out, "--packing", "true", "--max_length", "128",
                  "--eval_packing", "false")  # fmt: skip
    hyper = json.loads((out / "framelm_run.json").read_text())["hyperparameters"]
    assert (hyper["distributed_type"], hyper["packing"], hyper["global_steps"]) == ("DEEPSPEED", True, STEPS)
    reference, _ = runs("ddp")
    for key in ("loss", "eval_loss"):
        assert len(logged(out, key)) == STEPS
        assert logged(out, key) == pytest.approx(logged(reference, key), rel=1e-4), key


def load_without_framelm(folder: Path, initial: Path) -> dict:
    """Load `folder` with AutoModelForImageTextToText where framelm cannot be imported; say which of the `initial`
    tensors it lacks or holds unchanged."""
    return run_without_framelm(
        f"""
        import json, torch
        from safetensors.torch import load_file
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained({str(folder)!r}, trust_remote_code=True)
        after, before = model.state_dict(), load_file({str(initial)!r})
        print(json.dumps({{"module": type(model).__module__, "missing": sorted(set(before) - set(after)),
                          "unchanged": sorted(n for n in before if n in after and torch.equal(before[n], after[n]))}}))
        """,
        cwd=folder.parent,
    )


def test_resuming_a_zero3_checkpoint_ends_with_the_same_weights(runs, tiny_model_dir, two_records, tmp_path):
    straight, _ = runs("zero3")
    checkpoint = straight / "checkpoint-2"  # what a run killed after step 2 leaves behind
    resumed = tmp_path / "resumed"
    framelm_train("zero3", tiny_model_dir, two_records, resumed, "--resume_from_checkpoint", str(checkpoint))
    assert json.loads((resumed / "framelm_run.json").read_text())["hyperparameters"]["global_steps"] == STEPS
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], msg=name)


def test_fsdp2_gradients_equal_one_process_with_a_text_rank_and_a_video_rank(
    tiny_model_dir, tiny_processor, two_records, tmp_path
):
    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.training.data.arguments import DataArguments
    from framelm.training.sft.data_prep import prepare_datasets

    data = prepare_datasets(
        DataArguments(dataset=str(two_records), bad_records="skip", max_bad_fraction=0.5),
        tiny_processor,
        max_length=None,
    )
    batches = [data.collator([row]) for row in data.train]  # rank 0: the text record, rank 1: the video record
    assert "pixel_values_videos" not in batches[0] and "pixel_values_videos" in batches[1]
    torch.save(batches, tmp_path / "batches.pt")
    script = Path(__file__).parents[1] / "support" / "fsdp2_grads.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script), str(tiny_model_dir), str(tmp_path / "batches.pt"),
               str(tmp_path / "grads.pt")]  # fmt: skip
    result = run_process(command, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    sharded = torch.load(tmp_path / "grads.pt")
    assert {"SiglipEncoderLayer", "LlamaDecoderLayer"} <= set(sharded["units"])  # tower and LM layers sharded

    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir).train()
    for batch in batches:
        (model(**batch).loss / len(batches)).backward()  # FSDP2 averages over the 2 ranks
    reference = dict(model.named_parameters())
    assert set(sharded["grads"]) == set(reference)
    for name, grad in sharded["grads"].items():
        torch.testing.assert_close(grad, reference[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    tower = [name for name in reference if name.startswith("model.vision_tower.")]
    assert any(torch.count_nonzero(sharded["grads"][name]) for name in tower)  # the video rank's gradient arrived
