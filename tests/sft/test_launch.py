"""`framelm train --accelerate_config NAME --num_processes N`: the `accelerate launch` command it builds, on CPU and on
GPU machines, without starting it (tests/sft/test_distributed.py starts it for real)."""

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from framelm.training.launch import LaunchArguments, launch_command, launch_if_asked, resolve_accelerate_config

TRAINING = ["--config", "recipe.yaml", "--learning_rate", "1e-5"]


@pytest.mark.parametrize(
    ("name", "distributed_type", "zero_stage"),
    [("ddp", "MULTI_GPU", None), ("fsdp", "FSDP", None), ("zero2", "DEEPSPEED", 2), ("zero3", "DEEPSPEED", 3)],
)
def test_packaged_configs_are_found_by_name_and_read_by_accelerate(name, distributed_type, zero_stage):
    config = load_config_from_file(str(resolve_accelerate_config(name)))
    assert config.distributed_type == distributed_type
    assert (config.deepspeed_config or {}).get("zero_stage") == zero_stage


def test_a_config_path_is_taken_as_given_and_a_wrong_name_lists_the_packaged_ones(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("distributed_type: MULTI_GPU\n")
    assert resolve_accelerate_config(str(mine)) == mine
    with pytest.raises(ValueError, match=r"'zero4' is neither a file nor a packaged config; pass one of ddp, fsdp, "):
        resolve_accelerate_config("zero4")


def test_deepspeed_on_cpu_gets_its_cpu_accelerator_gloo_and_no_accelerate_cpu_flag():
    options = LaunchArguments(accelerate_config="zero3", num_processes=2, main_process_port=29611)
    command, env = launch_command(options, TRAINING, accelerators=0, env={"ACCELERATE_USE_CPU": "true", "HOME": "/h"})
    launch, script = command[: command.index("-m", 3)], command[command.index("framelm.training.sft.train") + 1 :]
    assert launch[1:3] == ["-m", "accelerate.commands.launch"]
    assert launch[3:] == ["--config_file", str(resolve_accelerate_config("zero3")), "--num_processes", "2",
                          "--main_process_port", "29611", "--mixed_precision", "no"]  # fmt: skip
    assert script == TRAINING + ["--ddp_backend", "gloo"]  # every training option passed on, in order
    assert env == {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "HOME": "/h"}  # ACCELERATE_USE_CPU gone


def test_ddp_on_cpu_runs_accelerate_on_cpu_and_keeps_the_users_choices():
    options = LaunchArguments(num_processes=2)  # no config named: ddp
    command, env = launch_command(options, ["--ddp_backend", "gloo"], accelerators=0, env={"OMP_NUM_THREADS": "2"})
    assert str(resolve_accelerate_config("ddp")) in command
    assert command.count("--ddp_backend") == 1
    assert env == {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "2"}


def test_gpu_machines_keep_accelerates_defaults_and_count_every_gpu_of_every_machine():
    options = LaunchArguments(accelerate_config="zero3", num_machines=2, machine_rank=1, main_process_ip="10.0.0.1")
    command, env = launch_command(options, TRAINING, accelerators=4, env={"PATH": "/bin"})
    launch = command[3 : command.index("-m", 3)]
    assert launch == ["--config_file", str(resolve_accelerate_config("zero3")), "--num_processes", "8",
                      "--num_machines", "2", "--machine_rank", "1", "--main_process_ip", "10.0.0.1"]  # fmt: skip
    assert command[-len(TRAINING) :] == TRAINING and env == {"PATH": "/bin"}


def test_what_cannot_run_here_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"FSDP on GPUs only .* use --accelerate_config zero3"):
        launch_command(LaunchArguments(accelerate_config="fsdp", num_processes=2), [], accelerators=0, env={})
    with pytest.raises(ValueError, match=r"no GPU here: say how many CPU processes to start with --num_processes"):
        launch_command(LaunchArguments(accelerate_config="zero2"), [], accelerators=0, env={})


def test_without_launch_options_train_runs_here_and_inside_a_launched_process_they_are_refused(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert launch_if_asked(TRAINING) is None
    monkeypatch.setenv("LOCAL_RANK", "0")  # as torchrun sets in each rank
    with pytest.raises(ValueError, match="already started by a launcher"):
        launch_if_asked(TRAINING + ["--num_processes", "2"])


def test_train_help_shows_the_launch_options_and_the_training_options(capsys):
    from framelm.training.cli import main

    assert main(["train", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "usage: framelm train" in shown
    for option in ("--accelerate_config", "--num_processes", "--main_process_ip", "--learning_rate", "--stage",
                   "--dataset"):  # fmt: skip
        assert option in shown, option
