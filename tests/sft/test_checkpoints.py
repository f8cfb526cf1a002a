"""A torn checkpoint (a run killed while saving, a full disk) never stops `--resume_from_checkpoint true`: the run
resumes from the newest COMPLETE checkpoint, and a warning names each torn one passed over."""

import json
import logging
import shutil

import pytest
from support.stop_at import StopAt

from framelm.training.sft.arguments import checkpoint_to_resume
from framelm.training.sft.checkpoints import last_complete_checkpoint, missing_parts


def checkpoint(root, step, *files, index=None):
    folder = root / f"checkpoint-{step}"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    if index is not None:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    return folder


def test_the_newest_complete_checkpoint_is_chosen_and_each_torn_one_named(tmp_path, caplog):
    checkpoint(tmp_path, 10, "trainer_state.json", "model.safetensors")
    checkpoint(tmp_path, 20, "trainer_state.json", index={"a": "model-1-of-2.safetensors",
                                                          "b": "model-2-of-2.safetensors"})  # fmt: skip
    checkpoint(tmp_path, 30, "model.safetensors")  # killed before the trainer state
    checkpoint(tmp_path, 100, "trainer_state.json", "config.json")  # killed before the weights
    (tmp_path / "checkpoint-200").write_text("a file, not a checkpoint")
    (tmp_path / "checkpoint-20" / "model-1-of-2.safetensors").write_text("")
    assert missing_parts(str(tmp_path / "checkpoint-20")) == ["model-2-of-2.safetensors"]
    with caplog.at_level(logging.WARNING, logger="framelm.training.sft.checkpoints"):
        assert checkpoint_to_resume("true", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}/checkpoint-100 is torn (no the model weights): resuming from an earlier complete checkpoint",
        f"{tmp_path}/checkpoint-30 is torn (no trainer_state.json): resuming from an earlier complete checkpoint",
        f"{tmp_path}/checkpoint-20 is torn (no model-2-of-2.safetensors): resuming from an earlier complete "
        "checkpoint",
    ]
    (tmp_path / "checkpoint-20" / "model-2-of-2.safetensors").write_text("")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")
    for folder in ("pytorch_model_fsdp_0", "global_step30"):  # FSDP and DeepSpeed keep their weights in a folder
        only = tmp_path / folder / "run"
        only.mkdir(parents=True)
        checkpoint(only, 30, "trainer_state.json")
        (only / "checkpoint-30" / folder).mkdir()
        assert last_complete_checkpoint(str(only)) == str(only / "checkpoint-30")


def test_only_torn_checkpoints_is_an_error_naming_the_folder(tmp_path):
    checkpoint(tmp_path, 5, "trainer_state.json")
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint true: --output_dir .* holds no checkpoint-N"):
        checkpoint_to_resume("true", str(tmp_path))


@pytest.mark.slow
def test_a_run_whose_last_checkpoint_is_torn_resumes_from_the_one_before(tiny_model_dir, llava_data, tmp_path):
    from framelm.training.sft.train import parse_args, run

    out = tmp_path / "run"
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(llava_data), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--max_steps", "4", "--learning_rate", "1e-2",
            "--dataloader_num_workers", "0", "--report_to", "none", "--save_strategy", "steps", "--save_steps", "2",
            "--logging_steps", "1", "--activation_checkpointing", "false", "--seed", "0"]  # fmt: skip
    run(*parse_args(argv), callbacks=[StopAt(2)])
    torn = out / "checkpoint-3"
    shutil.copytree(out / "checkpoint-2", torn)
    (torn / "model.safetensors").unlink()  # killed while saving step 3's weights
    resumed = run(*parse_args([*argv, "--resume_from_checkpoint", "true"]))
    assert resumed.state.global_step == 4
    assert (out / "checkpoint-4" / "model.safetensors").is_file()
