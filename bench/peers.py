"""Equivalent FrameLM and transformers `LlavaNextVideoForConditionalGeneration` models, for the model benches.

Both are built from the same sub-config dicts (a CLIP tower, LLaVA-1.5's mlp2x_gelu projector, a Llama), read the
penultimate tower layer, drop the CLS token and average-pool each frame's patch grid by 2 (LLaVA-NeXT-Video's
`spatial_pool_stride`), so both see exactly the same input tokens. The peer also gets FrameLM's weights
(`load_reference_weights`), which makes the equivalence checkable: same logits on the same batch.

The one structural difference is kept on purpose: FrameLM trims its tower to the feature layer, so it never runs the
last tower layer (nor the post-LayerNorm and CLS pooler), whose output LLaVA-NeXT-Video computes and throws away.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

MODELS = ("framelm", "peer")
NUM_FRAMES = 8
POOL_STRIDE = 2  # LLaVA-NeXT-Video's default `spatial_pool_stride`; FrameLM's `video_pooling_stride`
FEATURE_LAYER = -2  # LLaVA's penultimate layer, both models' default
VOCAB_SIZE = 2048
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, PAD_TOKEN_ID = 1, 2, 0
FIRST_TEXT_ID = 8  # text ids are drawn above the special ids
# Big enough that the tower and the LM each cost something measurable on a CPU, small enough for seconds per step.
VISION = {
    "model_type": "clip_vision_model",  # LLaVA-NeXT-Video's default tower type
    "image_size": 224,
    "patch_size": 16,  # 14 x 14 patches per frame, 7 x 7 = 49 tokens after pooling
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
}
TEXT = {
    "model_type": "llama",
    "hidden_size": 384,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 4096,
    "bos_token_id": None,
    "eos_token_id": None,  # generation runs the full number of new tokens
    "pad_token_id": PAD_TOKEN_ID,
}


def framelm_config():
    from framelm.modeling.configuration_framelm import FrameLMConfig

    return FrameLMConfig(
        vision_config=dict(VISION),
        text_config=dict(TEXT),
        projector_type="mlp2x_gelu",
        vision_feature_layer=FEATURE_LAYER,
        vision_feature_select_strategy="default",
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        num_frames=NUM_FRAMES,
        video_pooling_stride=POOL_STRIDE,
    )


def peer_config():
    from transformers import LlavaNextVideoConfig

    return LlavaNextVideoConfig(
        vision_config=dict(VISION),
        text_config=dict(TEXT),
        projector_hidden_act="gelu",
        vision_feature_layer=FEATURE_LAYER,
        vision_feature_select_strategy="default",
        image_token_index=IMAGE_TOKEN_ID,
        video_token_index=VIDEO_TOKEN_ID,
        spatial_pool_mode="average",
        spatial_pool_stride=POOL_STRIDE,
    )


def tokens_per_video() -> int:
    grid = VISION["image_size"] // VISION["patch_size"]
    return NUM_FRAMES * (grid // POOL_STRIDE) ** 2


def build_model(name: str, weights: Path | None = None) -> nn.Module:
    """`framelm` or `peer`, with the reference weights loaded if `weights` is given (see `save_reference_weights`)."""
    from transformers import LlavaNextVideoForConditionalGeneration

    from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration

    torch.manual_seed(0)
    if name == "framelm":
        model = FrameLMForConditionalGeneration(framelm_config())
    elif name == "peer":
        model = LlavaNextVideoForConditionalGeneration(peer_config())
    else:
        raise ValueError(f"model {name!r} is not one of {MODELS}")
    if weights is not None:
        load_reference_weights(model, weights)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_TOKEN_ID
    return model


def save_reference_weights(path: Path) -> Path:
    """FrameLM's initial weights, which both models load: the same numbers in every shared module."""
    from safetensors.torch import save_file

    save_file(build_model("framelm").state_dict(), str(path))
    return path


def load_reference_weights(model: nn.Module, path: Path) -> None:
    """Load the reference weights; the peer keeps its own values only where FrameLM has no such parameter."""
    from safetensors.torch import load_file

    result = model.load_state_dict(load_file(str(path)), strict=False)
    last = VISION["num_hidden_layers"] - 1
    peer_only = (f"encoder.layers.{last}.", "post_layernorm.", "image_newline")
    stray = [k for k in result.missing_keys if not any(part in k for part in peer_only)]
    if stray or result.unexpected_keys:
        raise RuntimeError(f"weights do not map onto {type(model).__name__}: {stray} {result.unexpected_keys}")


def make_batch(batch_size: int, text_tokens: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One video per sample between a short text prefix and the rest of the text; labels on the text after it."""
    generator = torch.Generator().manual_seed(seed)
    prefix = 16
    text = torch.randint(FIRST_TEXT_ID, VOCAB_SIZE, (batch_size, text_tokens), generator=generator)
    video = torch.full((batch_size, tokens_per_video()), VIDEO_TOKEN_ID)
    input_ids = torch.cat([text[:, :prefix], video, text[:, prefix:]], dim=1)
    labels = input_ids.clone()
    labels[:, : prefix + tokens_per_video()] = -100
    size = VISION["image_size"]
    pixels = torch.randn(batch_size, NUM_FRAMES, 3, size, size, generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "pixel_values_videos": pixels,
    }


def _linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def forward_flops(name: str, batch_size: int, sequence_length: int) -> dict[str, float]:
    """Forward FLOPs of one batch by part (2 per multiply-add of every matmul, attention scores included).

    Computed from the configs, not measured; a training step costs 3x the forward of what trains (weights and input
    gradients) plus 1x the forward of a frozen tower. A later GPU run divides by step time for MFU.
    """
    patches = (VISION["image_size"] // VISION["patch_size"]) ** 2
    frames = batch_size * NUM_FRAMES
    seq_v, width_v = patches + 1, VISION["hidden_size"]  # CLIP adds a CLS token
    layers_run = VISION["num_hidden_layers"] if name == "peer" else FEATURE_LAYER % (VISION["num_hidden_layers"] + 1)
    per_layer_v = 4 * width_v * width_v + 2 * width_v * VISION["intermediate_size"]
    tower = frames * (
        2 * 3 * VISION["patch_size"] ** 2 * width_v * patches  # patch embedding
        + layers_run * (2 * per_layer_v * seq_v + 4 * seq_v * seq_v * width_v)
    )
    width_t = TEXT["hidden_size"]
    projector = batch_size * tokens_per_video() * 2 * (width_v * width_t + width_t * width_t)
    head_dim = width_t // TEXT["num_attention_heads"]
    kv = 2 * width_t * TEXT["num_key_value_heads"] * head_dim
    per_layer_t = 2 * width_t * width_t + kv + 3 * width_t * TEXT["intermediate_size"]
    tokens = batch_size * sequence_length
    lm = TEXT["num_hidden_layers"] * (2 * per_layer_t * tokens + 4 * batch_size * sequence_length**2 * width_t)
    lm += 2 * width_t * VOCAB_SIZE * tokens  # LM head
    return {"tower": float(tower), "projector": float(projector), "lm": float(lm)}


def train_step_flops(name: str, batch_size: int, sequence_length: int, tower_trains: bool) -> float:
    parts = forward_flops(name, batch_size, sequence_length)
    return (3 if tower_trains else 1) * parts["tower"] + 3 * (parts["projector"] + parts["lm"])


@contextmanager
def count_tower_calls(model: nn.Module) -> Iterator[list[int]]:
    """Frames per vision-tower call, recorded by a forward hook while the context is open."""
    calls: list[int] = []
    handle = model.model.vision_tower.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        yield calls
    finally:
        handle.remove()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    inner = model.model
    return {
        "vision_tower": sum(p.numel() for p in inner.vision_tower.parameters()),
        "projector": sum(p.numel() for p in inner.multi_modal_projector.parameters()),
        "language_model": sum(p.numel() for p in inner.language_model.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
        "linear_weights": _linear_weights(model),
    }


# Subprocess workers: each (model, case) measurement runs in a fresh process, so its peak RSS is that case's alone.
WORKER_FLAG = "--worker"
_RESULT_PREFIX = "BENCH-RESULT "


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (`ru_maxrss` is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: Path, job: dict, timeout: float = 900.0, env: dict[str, str] | None = None) -> dict:
    """Run `python <script> --worker '<job>'` (with `env` added to the environment) and return the dict its
    `worker_main` printed; a crash, a kill (out of memory) or a timeout comes back as {"error": ...} instead of
    stopping the bench."""
    import json
    import os
    import subprocess
    import sys

    command = [sys.executable, str(script), WORKER_FLAG, json.dumps(job)]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX) :])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return {"error": f"worker exited with status {proc.returncode}: {tail}"}


def worker_main(job_json: str, fn) -> int:
    """The child's side of `run_worker`: `fn(job) -> dict`, its exception recorded as the result's error, plus the
    process's peak RSS, printed as one line."""
    import json

    job = json.loads(job_json)
    try:
        result = fn(job)
    except Exception as err:  # one model failing in one case is a result to record
        result = {"error": f"{type(err).__name__}: {err}"}
    result["peak_rss_mb"] = peak_rss_mb()
    print(_RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def merge_rounds(results: list[dict], pooled: tuple[str, ...] = ("times_s",)) -> dict:
    """One model's results from several rounds of one case: lists under `pooled` concatenated, the median of the
    rounds' peak RSS (it varies by a few % from run to run: allocator timing) with each round's peak and the largest,
    the other fields from the first round that ran; the errors of failed rounds kept under "errors"."""
    import statistics

    ran = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    if not ran:
        return {"error": errors[0] if errors else "no rounds", "errors": errors}
    merged = {**ran[0], **{key: [v for r in ran for v in r[key]] for key in pooled}, "rounds": len(ran)}
    peaks = [r["peak_rss_mb"] for r in ran]
    merged |= {"peak_rss_mb": statistics.median(peaks), "peak_rss_mb_max": max(peaks), "peak_rss_mb_rounds": peaks}
    if errors:
        merged["errors"] = errors
    return merged


def paired_ratio(ours: list[dict], peer: list[dict], key: str = "times_s", stat=min) -> float | None:
    """Median over rounds of stat(our times) / stat(the peer's times) in the same round (`stat`: min, the least noisy
    on a shared machine, or statistics.median): each round's two workers ran back to back, so a change of machine load
    between rounds cancels out of the ratio. None if no round has both."""
    from statistics import median

    pairs = [
        stat(a[key]) / stat(b[key]) for a, b in zip(ours, peer, strict=True) if "error" not in a and "error" not in b
    ]
    return median(pairs) if pairs else None


MAX_LOGITS_DIFF = 1e-4  # fp32 logits of the two models on the same input, same weights


def checked_equivalence(script: Path, weights: str, threads: int) -> dict:
    """Run the script's `check` job once; stop the bench if the two models disagree in fp32 (then no timing means
    anything)."""
    equivalence = run_worker(script, {"check": True, "weights": weights, "threads": threads})
    print(f"equivalence (same weights, same input): {equivalence}")
    if equivalence.get("fp32_logits_max_abs_diff", float("inf")) > MAX_LOGITS_DIFF:
        raise SystemExit(f"FAILED: the models disagree in fp32 (limit {MAX_LOGITS_DIFF:g}): {equivalence}")
    return equivalence


def interleaved_rounds(script: Path, jobs: dict[tuple, dict], rounds: int, start: float) -> dict[tuple, dict]:
    """`rounds` passes over every case, each model in its own subprocess, the order of the two models alternating
    from round to round so that machine-load drift hits both alike. Returns {case: {model: [result per round]}}."""
    results = {case: {name: [] for name in MODELS} for case in jobs}
    for r in range(rounds):
        for case, job in jobs.items():
            for name in MODELS if r % 2 == 0 else MODELS[::-1]:
                results[case][name].append(run_worker(script, job | {"model": name}))
        print(f"round {r + 1}/{rounds} done at {time.perf_counter() - start:.0f} s")
    return results
