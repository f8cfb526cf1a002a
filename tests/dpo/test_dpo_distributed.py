"""`framelm dpo` under DeepSpeed ZeRO-3 on 2 CPU processes, a text-only pair on one rank and a video pair on the other
at every step (the hard case for ZeRO-3: the text-only rank must still run the tower's collectives), started the way
users do it and compared with the same run under DDP."""

import json
import math
import sys
from pathlib import Path

import pytest
from support.processes import free_port, run_process

pytestmark = pytest.mark.slow

STEPS = 3
TIMEOUT = 600  # seconds for one run, a one-time DeepSpeed compile included
TEXT = {"id": "text", "prompt": "Say yes.", "chosen": "yes", "rejected": "no"}
VIDEO = {"id": "video", "prompt": "<video>Which way?", "chosen": "down", "rejected": "up", "videos": ["clip.mp4"]}


@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory) -> Path:
    from support.pattern_video import pattern_frames

    from framelm.training.data.media_writer import write_mp4

    folder = tmp_path_factory.mktemp("two_pairs")
    write_mp4(folder / "clip.mp4", pattern_frames(8, 48, 64), fps=8, codec="libx264", gop=12)
    path = folder / "two.jsonl"
    path.write_text(json.dumps(TEXT) + "\n" + json.dumps(VIDEO) + "\n")
    return path


def framelm_dpo(config: str, model_dir: Path, data: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "framelm.training.cli", "dpo", "--accelerate_config", config,
               "--num_processes", "2", "--main_process_port", str(free_port()),
               "--model_name_or_path", str(model_dir), "--dataset", str(data), "--output_dir", str(out),
               "--stage", "all", "--max_steps", str(STEPS), "--learning_rate", "1e-2", "--max_length", "256",
               "--per_device_train_batch_size", "1", "--logging_steps", "1", "--save_strategy", "no",
               "--dataloader_num_workers", "0", "--report_to", "none", "--activation_checkpointing", "false",
               "--seed", "0"]  # fmt: skip
    result = run_process(command, cwd=out.parent, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads((out / "framelm_run.json").read_text())


def test_zero3_with_a_text_only_rank_trains_like_ddp(tiny_model_dir, two_pairs, tmp_path_factory):
    zero3 = framelm_dpo("zero3", tiny_model_dir, two_pairs, tmp_path_factory.mktemp("zero3") / "out")
    ddp = framelm_dpo("ddp", tiny_model_dir, two_pairs, tmp_path_factory.mktemp("ddp") / "out")
    hyper = zero3["hyperparameters"]
    assert (hyper["distributed_type"], hyper["num_processes"], hyper["global_steps"]) == ("DEEPSPEED", 2, STEPS)
    assert ddp["hyperparameters"]["distributed_type"] == "MULTI_CPU" and zero3["method"] == "dpo"
    assert math.isfinite(zero3["final_train_loss"])
    assert zero3["final_train_loss"] == pytest.approx(ddp["final_train_loss"], rel=1e-3)
