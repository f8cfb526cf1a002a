"""One prepared check for a lent GPU (under 8 minutes on one H100): a 0.5B-class FrameLM against LLaVA-NeXT-Video.

    pip install --no-deps --no-build-isolation -e .   # framelm; its dependencies as wheels (transformers>=5.23, trl,
                                                      # peft, deepspeed, bitsandbytes; flash-attn optional)
    python bench/gpu_check.py                         # prints each number as measured; bench/results/gpu_check.json
    python bench/gpu_check.py --tiny                  # the same code paths, tiny sizes, on CPU: a crash check only

Models, random weights from published config values (no download): google/siglip-base-patch16-224's vision tower
and Qwen/Qwen2.5-0.5B's LM, LLaVA-1.5's mlp2x_gelu projector, 8-frame 224x224 videos pooled 2x2 (49 tokens a
frame), all in bf16. The peer is transformers' LlavaNextVideoForConditionalGeneration at the same sizes (the same
tower layer, pooling and projector; see peers.py for the equivalence at CPU sizes). Parts, each in its own process so
that its peak memory is its own and a failure stops only itself:
1. Train step (forward, backward, AdamW) of both models with SDPA, then with flash-attention 2 if `flash_attn`
   imports: step time, tokens/s, MFU. FLOPs are counted by torch's FlopCounterMode over one whole step (the vision
   tower's included) and divided by the GPU's dense bf16 peak (TRL's table, or --peak-tflops).
2. DeepSpeed ZeRO-3 on this one GPU (torch.distributed of one rank): a video batch, a text-only batch (the blank-image
   pass under ZeRO-3), a video batch; step times and peak memory.
3. QLoRA: FrameLM saved, reloaded with the LM in 4-bit NF4 (`quantization_config_for`, as `framelm train
   --load_in_4bit` does), LoRA from `peft_config_for`, the projector trained in full: step time and peak memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from common import machine_info, write_results  # noqa: E402

# google/siglip-base-patch16-224, vision_config
SIGLIP_BASE_PATCH16 = {"model_type": "siglip_vision_model", "hidden_size": 768, "intermediate_size": 3072,
                       "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224, "patch_size": 16,
                       "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"}  # fmt: skip
# Qwen/Qwen2.5-0.5B, config.json
QWEN25_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
              "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
              "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": True, "hidden_act": "silu", "bos_token_id": None, "eos_token_id": None,
              "pad_token_id": 0}  # fmt: skip
TINY_VISION = SIGLIP_BASE_PATCH16 | {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 4, "image_size": 32, "patch_size": 8}  # fmt: skip
TINY_TEXT = QWEN25_05B | {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "vocab_size": 512, "max_position_embeddings": 1024}  # fmt: skip
VIDEO_TOKEN_ID, FIRST_TEXT_ID, POOL_STRIDE = 3, 8, 2
PREFIX = 16  # text tokens before the video


def sizes(tiny: bool) -> dict:
    """Everything that differs between the real check and the CPU smoke run."""
    if tiny:
        return {"vision": TINY_VISION, "text": TINY_TEXT, "frames": 4, "batch": 2, "text_tokens": 24,
                "warmup": 1, "steps": 1, "device": "cpu"}  # fmt: skip
    return {"vision": SIGLIP_BASE_PATCH16, "text": QWEN25_05B, "frames": 8, "batch": 8, "text_tokens": 256,
            "warmup": 3, "steps": 10, "device": "cuda"}  # fmt: skip


def build(name: str, size: dict, attn: str) -> torch.nn.Module:
    from transformers import AutoModelForImageTextToText, LlavaNextVideoConfig

    from framelm.modeling import FrameLMConfig

    vision, text = dict(size["vision"]), dict(size["text"])
    if name == "framelm":
        config = FrameLMConfig(vision_config=vision, text_config=text, projector_type="mlp2x_gelu",
                               vision_feature_layer=-2, image_token_id=VIDEO_TOKEN_ID - 1,
                               video_token_id=VIDEO_TOKEN_ID, num_frames=size["frames"],
                               video_pooling_stride=POOL_STRIDE)  # fmt: skip
    else:
        config = LlavaNextVideoConfig(vision_config=vision, text_config=text, projector_hidden_act="gelu",
                                      vision_feature_layer=-2, vision_feature_select_strategy="full",
                                      image_token_index=VIDEO_TOKEN_ID - 1, video_token_index=VIDEO_TOKEN_ID,
                                      spatial_pool_mode="average", spatial_pool_stride=POOL_STRIDE)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(size["device"]):
        model = AutoModelForImageTextToText.from_config(config, attn_implementation=attn, dtype=torch.bfloat16)
    return model.train()


def make_batch(size: dict, video: bool = True) -> dict[str, torch.Tensor]:
    """Each sample: PREFIX text tokens, one video (if `video`), the rest of the text; labels on the text after it."""
    grid = size["vision"]["image_size"] // size["vision"]["patch_size"] // POOL_STRIDE
    media = size["frames"] * grid * grid if video else 0
    text = torch.randint(FIRST_TEXT_ID, size["text"]["vocab_size"], (size["batch"], size["text_tokens"]))
    input_ids = torch.cat([text[:, :PREFIX], torch.full((size["batch"], media), VIDEO_TOKEN_ID), text[:, PREFIX:]], 1)
    labels = input_ids.clone()
    labels[:, : PREFIX + media] = -100
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    if video:
        pixels = size["vision"]["image_size"]
        batch["pixel_values_videos"] = torch.randn(size["batch"], size["frames"], 3, pixels, pixels).bfloat16()
    return {key: value.to(size["device"]) for key, value in batch.items()}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def time_steps(step, size: dict, batches: list[dict]) -> list[float]:
    """Seconds per step over `batches` (cycled), after `warmup` untimed steps."""
    times = []
    for i in range(size["warmup"] + max(size["steps"], len(batches))):
        synchronize(size["device"])
        start = time.perf_counter()
        step(batches[i % len(batches)])
        synchronize(size["device"])
        if i >= size["warmup"]:
            times.append(time.perf_counter() - start)
    return times


def adamw_step(model: torch.nn.Module, device: str):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device == "cuda")

    def step(batch: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    return step


def step_flops(model: torch.nn.Module, batch: dict) -> int:
    """Multiply-add FLOPs x2 of one forward and backward, every matmul and attention of tower, projector and LM."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def train_step(job: dict) -> dict:
    size = sizes(job["tiny"])
    model = build(job["model"], size, job["attn"])
    batch = make_batch(size)
    flops = step_flops(model, batch) if job["attn"] == "sdpa" else None  # flash-attn kernels are not counted
    times = time_steps(adamw_step(model, size["device"]), size, [batch])
    return {"step_s": statistics.median(times), "tokens_per_step": batch["input_ids"].numel(), "flops": flops,
            "peak_memory_gib": peak_memory_gib(size["device"])}  # fmt: skip


def zero3_steps(job: dict) -> dict:
    import deepspeed

    size = sizes(job["tiny"])
    deepspeed.init_distributed(dist_backend="nccl" if size["device"] == "cuda" else "gloo")
    model = build("framelm", size, "sdpa")
    config = {
        "train_micro_batch_size_per_gpu": size["batch"],
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3},
        "bf16": {"enabled": True},
        "zero_allow_untested_optimizer": True,
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)  # what the Trainer hands DeepSpeed  # fmt: skip
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)

    def step(batch: dict) -> None:
        engine.backward(engine(**batch).loss)
        engine.step()

    batches = [make_batch(size), make_batch(size, video=False), make_batch(size)]
    times = time_steps(step, size | {"warmup": 0, "steps": len(batches)}, batches)
    partitioned = sum(hasattr(p, "ds_id") for p in engine.module.parameters())
    return {"step_s": times, "partitioned_parameters": partitioned, "peak_memory_gib": peak_memory_gib(size["device"])}


def qlora_step(job: dict) -> dict:
    from bitsandbytes.nn import Linear4bit
    from peft import get_peft_model
    from trl import ModelConfig

    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.training.model.loading import peft_config_for, quantization_config_for, set_stage

    size = sizes(job["tiny"])
    with tempfile.TemporaryDirectory() as folder:
        build("framelm", size, "sdpa").save_pretrained(folder)
        if size["device"] == "cuda":  # the bf16 model built to be saved is not QLoRA's memory
            torch.cuda.reset_peak_memory_stats()
        args = ModelConfig(load_in_4bit=True, dtype="bfloat16", use_peft=True, lora_r=16, lora_alpha=32)
        model = FrameLMForConditionalGeneration.from_pretrained(
            folder, dtype=torch.bfloat16, quantization_config=quantization_config_for(args), device_map=size["device"]
        )
    set_stage(model, "full", use_peft=True)
    model = get_peft_model(model, peft_config_for(args, "full")).train()
    quantized = sum(isinstance(m, Linear4bit) for m in model.modules())
    times = time_steps(adamw_step(model, size["device"]), size, [make_batch(size)])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"step_s": statistics.median(times), "linear4bit_layers": quantized, "trainable_parameters": trainable,
            "peak_memory_gib": peak_memory_gib(size["device"])}  # fmt: skip


PARTS = {"train_step": train_step, "zero3": zero3_steps, "qlora": qlora_step}


def worker(job: dict) -> dict:
    if job["tiny"]:
        torch.set_num_threads(1)
    return PARTS[job["part"]](job)


def peak_tflops(given: float | None) -> float | None:
    if given is not None or not torch.cuda.is_available():
        return given
    try:
        from trl.trainer.utils import get_peak_flops
    except ImportError:
        return None
    flops = get_peak_flops(torch.cuda.get_device_name(0), "bfloat16")
    return flops / 1e12 if flops else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on CPU: checks that every part runs")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: TRL's)")
    parser.add_argument(peers.WORKER_FLAG, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return peers.worker_main(args.worker, worker)
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no GPU here: run with --tiny for the CPU smoke run")
    start, script, info = time.perf_counter(), Path(__file__).resolve(), machine_info()
    peak = peak_tflops(args.peak_tflops)
    print(f"{info.get('accelerator', 'CPU')}; torch {info['versions']['torch']}, transformers "
          f"{info['versions']['transformers']}; dense bf16 peak {peak or 'unknown'} TFLOP/s")  # fmt: skip
    env = {"OMP_NUM_THREADS": "1"} if args.tiny else {}
    results: dict[str, dict] = {}
    attns = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    for attn in attns:
        for name in peers.MODELS:
            job = {"part": "train_step", "model": name, "attn": attn, "tiny": args.tiny}
            results[f"train_step/{name}/{attn}"] = result = peers.run_worker(script, job, timeout=240, env=env)
            flops = result.get("flops") or results.get(f"train_step/{name}/sdpa", {}).get("flops")
            if "error" not in result:
                result["tokens_per_s"] = result["tokens_per_step"] / result["step_s"]
                result["mfu"] = flops / result["step_s"] / (peak * 1e12) if flops and peak else None
            print(f"train step {name:8} {attn:18} {result}", flush=True)
    if "flash_attention_2" not in attns:
        print("flash-attention 2: not run (flash_attn does not import)")
    dist_env = env | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "RANK": "0", "WORLD_SIZE": "1",
                      "LOCAL_RANK": "0"} | ({"DS_ACCELERATOR": "cpu"} if args.tiny else {})  # fmt: skip
    results["zero3"] = peers.run_worker(script, {"part": "zero3", "tiny": args.tiny}, timeout=300, env=dist_env)
    print(f"ZeRO-3, one GPU (video, text-only, video): {results['zero3']}", flush=True)
    results["qlora"] = peers.run_worker(script, {"part": "qlora", "tiny": args.tiny}, timeout=300, env=env)
    print(f"QLoRA (4-bit LM, LoRA r=16, projector in full): {results['qlora']}", flush=True)
    for attn in attns:
        ours, peer = results[f"train_step/framelm/{attn}"], results[f"train_step/peer/{attn}"]
        if "step_s" in ours and "step_s" in peer:
            gib = ours["peak_memory_gib"], peer["peak_memory_gib"]
            memory = f"{gib[0] / gib[1]:.3f}x" if all(gib) else "n/a (no GPU)"
            print(f"{attn}: FrameLM step time {ours['step_s'] / peer['step_s']:.3f}x the peer's, "
                  f"peak GPU memory {memory}")  # fmt: skip
    if not args.tiny:
        path = write_results("gpu_check", [results], {"peak_tflops": peak}, quick=False)
        print(f"wrote {path}")
    print(f"total {time.perf_counter() - start:.0f} s")
    errors = [name for name, result in results.items() if "error" in result]
    return 1 if errors else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
