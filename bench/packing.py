"""Packing: framelm packed vs framelm padded vs `LlavaNextVideoForConditionalGeneration` padded, one pass over a mix.

    python bench/packing.py            # 48 samples, 2 rounds (each method once per round, order alternating)
    python bench/packing.py --quick    # 16 samples, 1 round
    python bench/packing.py --dense    # also framelm packed on transformers' SDPA block-diagonal mask (slow)

The mix is drawn like real multimodal SFT data (seeded): ~30% text-only (50-400 tokens), ~40% with 1-2 images, ~30%
with one 8-frame video, and a long tail (~6% of samples) of long text, to about 6,000 tokens. The models are
`peers.py`'s (CLIP 224/16 tower, mlp2x_gelu projector, 4-layer Llama, same reference weights), trained with AdamW:
- framelm padded: batches of `--batch-size` samples in a seeded random order, padded to the longest (the one padder).
- framelm packed: the same samples packed by `packing.best_fit_decreasing` into rows of `MAX_LENGTH` (the longest
  sample must fit), `--rows` rows a step, laid out by `packing.collate_packed`; attention `sdpa_varlen` (what `framelm
  train` uses when it packs on SDPA; `--dense` adds transformers' own block-diagonal SDPA mask for comparison).
- peer padded: LLaVA-NeXT-Video with the padded batches. Its images go through LLaVA-NeXT's anyres path (one 224 crop
  beside the base image, newline tokens): 406 tokens and two tower passes per image where framelm spends 196 and one.
  That is the peer's design, and it makes its samples longer: compare real tokens/s too, and framelm padded vs peer.

Each (method, round) runs in its own process; the time is the whole pass (every step: forward, backward, AdamW).
samples/s counts samples, real tokens/s counts non-padding tokens. Peak memory: `ru_maxrss` of the timing worker, and
"live": one more worker per method running only its largest step with `MALLOC_MMAP_THRESHOLD_=131072`, so freed
tensors go back to the OS and the peak is what was alive (see train_step.py). Before timing, framelm packed and padded
must give the same loss on the same samples, and framelm and the peer the same loss on text and video samples.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from common import machine_info, median, print_verdicts, write_results  # noqa: E402

MAX_LENGTH = 6144  # packed row length: the longest sample of the mix must fit (samples are never split)
TARGET_SPEEDUP = 1.4  # packing issue: packed >= 1.4x padded samples/s, and >= 1.4x the peer
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
METHODS = ("packed", "padded", "peer")
PEER_IMAGE_TOKENS = 406  # LLaVA-NeXT anyres at 224 px with one 224 crop: 196 base + 14 x (14 + 1 newline)
IMAGE_TOKENS = (peers.VISION["image_size"] // peers.VISION["patch_size"]) ** 2  # framelm: 196


def draw_mix(count: int, seed: int) -> list[dict]:
    """Sample descriptions: text tokens before and after the media, number of images, whether a video."""
    rng = np.random.default_rng(seed)
    mix = []
    for _ in range(count):
        kind = rng.choice(["text", "image", "video"], p=[0.3, 0.4, 0.3])
        text = int(rng.integers(50, 401)) if kind == "text" else int(rng.integers(30, 301))
        if rng.random() < 0.06:  # the long tail: a long document or transcript
            text = int(np.exp(rng.uniform(np.log(1500), np.log(5200))))
        images = int(rng.integers(1, 3)) if kind == "image" else 0
        mix.append({"text": text, "images": images, "video": kind == "video", "seed": int(rng.integers(2**31))})
    return mix


def example(sample: dict, peer: bool = False) -> dict[str, torch.Tensor]:
    """One unpadded example: a 16-token prompt, the media, the rest of the text; labels on its last third."""
    generator = torch.Generator().manual_seed(sample["seed"])
    text = torch.randint(peers.FIRST_TEXT_ID, peers.VOCAB_SIZE, (sample["text"],), generator=generator)
    image_tokens = PEER_IMAGE_TOKENS if peer else IMAGE_TOKENS
    media = [torch.full((image_tokens,), peers.IMAGE_TOKEN_ID)] * sample["images"]
    if sample["video"]:
        media.append(torch.full((peers.tokens_per_video(),), peers.VIDEO_TOKEN_ID))
    input_ids = torch.cat([text[:16], *media, text[16:]])
    labels = input_ids.clone()
    labels[: len(input_ids) - max(1, (sample["text"] - 16) // 3)] = -100
    size = peers.VISION["image_size"]
    out = {"input_ids": input_ids, "labels": labels}
    if sample["images"]:
        pixels = torch.randn(sample["images"], 3, size, size, generator=generator)
        out["pixel_values"] = pixels.unsqueeze(1).expand(-1, 2, -1, -1, -1) if peer else pixels  # base + one crop
    if sample["video"]:
        out["pixel_values_videos"] = torch.randn(1, peers.NUM_FRAMES, 3, size, size, generator=generator)
    return out


def batches(method: str, mix: list[dict], batch_size: int, rows: int, seed: int) -> list[dict]:
    """Every step of one pass over `mix`, as `method` lays it out."""
    from framelm.training.batches.packing import best_fit_decreasing, collate_packed
    from framelm.training.batches.padding import collate

    examples = [example(sample, peer=method == "peer") for sample in mix]
    if method.startswith("packed"):
        lengths = np.array([len(e["input_ids"]) for e in examples])
        packed = [[examples[i] for i in row] for row in best_fit_decreasing(lengths, MAX_LENGTH)]
        order = np.random.default_rng(seed).permutation(len(packed))
        steps = [[packed[i] for i in order[start : start + rows]] for start in range(0, len(packed), rows)]
        return [collate_packed([row for row in step], peers.PAD_TOKEN_ID) for step in steps]
    order = np.random.default_rng(seed).permutation(len(examples))
    steps = [[examples[i] for i in order[start : start + batch_size]] for start in range(0, len(examples), batch_size)]
    out = []
    for step in steps:
        batch = collate(step, peers.PAD_TOKEN_ID, "right")
        if method == "peer" and "pixel_values" in batch:
            batch["image_sizes"] = torch.tensor([[peers.VISION["image_size"]] * 2] * len(batch["pixel_values"]))
        out.append(batch)
    return out


def build(method: str, weights: Path) -> torch.nn.Module:
    model = peers.build_model("peer" if method == "peer" else "framelm", weights).train()
    if method == "peer":
        model.config.image_grid_pinpoints = [[peers.VISION["image_size"]] * 2]  # one crop: the image itself
    if method == "packed":
        from framelm.training.batches.varlen_attention import attend_sample_by_sample

        attend_sample_by_sample(model)
    return model


def real_tokens(batch: dict) -> int:
    from framelm.training.batches.packing import count_samples_and_tokens

    return int(count_samples_and_tokens(batch, peers.PAD_TOKEN_ID)[1])


def measure(job: dict) -> dict:
    """Worker: one pass over the mix with `method`, every step timed; or, with `largest`, only its largest step."""
    torch.set_num_threads(job["threads"])
    mix = draw_mix(job["samples"], job["seed"])
    steps = batches(job["method"], mix, job["batch_size"], job["rows"], job["round"])
    if job.get("largest"):
        steps = [max(steps, key=lambda b: b["input_ids"].numel())]
    model = build(job["method"], Path(job["weights"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times, losses = [], []
    start = time.perf_counter()
    for batch in steps:
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
        losses.append(loss.item())
    return {"seconds": time.perf_counter() - start, "step_s": times, "steps": len(steps), "samples": len(mix),
            "real_tokens": sum(real_tokens(b) for b in steps), "positions": sum(b["input_ids"].numel() for b in steps),
            "largest_step_positions": max(b["input_ids"].numel() for b in steps)}  # fmt: skip


def check(job: dict) -> dict:
    """Worker: packed and padded framelm give the same loss on the same samples (one batch of all of them); framelm
    and the peer give the same loss on text and video samples (images differ by design)."""
    torch.set_num_threads(job["threads"])
    from framelm.training.batches.packing import best_fit_decreasing, collate_packed
    from framelm.training.batches.padding import collate

    mix = draw_mix(job["samples"], job["seed"])[:8]
    short = [s for s in mix if s["text"] < 1000]
    examples = [example(s) for s in short]
    rows = best_fit_decreasing(np.array([len(e["input_ids"]) for e in examples]), MAX_LENGTH)
    losses = {}
    with torch.no_grad():
        for method in ("packed", "padded"):
            model = build(method, Path(job["weights"]))
            batch = (collate_packed([[examples[i] for i in row] for row in rows], peers.PAD_TOKEN_ID)
                     if method == "packed" else collate(examples, peers.PAD_TOKEN_ID, "right"))  # fmt: skip
            losses[method] = model(**batch, use_cache=False).loss.item()
        no_images = [s for s in short if not s["images"]]
        for method in ("padded", "peer"):
            batch = collate([example(s, peer=method == "peer") for s in no_images], peers.PAD_TOKEN_ID, "right")
            losses[f"{method} (text and video)"] = build(method, Path(job["weights"]))(**batch).loss.item()
    return {"losses": losses, "packed_vs_padded": abs(losses["packed"] - losses["padded"]),
            "framelm_vs_peer": abs(losses["padded (text and video)"] - losses["peer (text and video)"])}  # fmt: skip


MAX_LOSS_DIFF = 1e-4


def summarize(results: dict[str, list[dict]], live: dict[str, dict], checked: dict) -> tuple[list[dict], dict]:
    cases = []
    for method, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        row = {"method": method, "errors": [r["error"] for r in runs if "error" in r]}
        if ok:
            seconds = median([r["seconds"] for r in ok])
            first = ok[0]
            row |= {"seconds": seconds, "steps": first["steps"], "samples_per_s": first["samples"] / seconds,
                    "real_tokens_per_s": first["real_tokens"] / seconds,
                    "padding_share": 1 - first["real_tokens"] / first["positions"],
                    "peak_rss_mb": median([r["peak_rss_mb"] for r in ok]),
                    "live_peak_rss_mb": live[method].get("peak_rss_mb"), "rounds": len(ok)}  # fmt: skip
        cases.append(row)
    by = {c["method"]: c for c in cases}

    def speedup(a: str, b: str) -> float | None:
        x, y = by.get(a, {}).get("samples_per_s"), by.get(b, {}).get("samples_per_s")
        return x / y if x and y else None

    def at_least(measured: float | None, target: float) -> dict:
        met = measured is not None and measured >= target
        return {"target": f">= {target}x", "measured": measured and float(f"{measured:.4g}"), "met": met}

    def at_most(measured: float | None, target: float) -> dict:
        met = measured is not None and measured <= target
        return {"target": f"<= {target:g}", "measured": measured and float(f"{measured:.4g}"), "met": met}

    memory = [by.get(m, {}).get("live_peak_rss_mb") for m in ("packed", "padded")]
    summary = {
        "samples_per_s_packed_vs_padded": at_least(speedup("packed", "padded"), TARGET_SPEEDUP),
        "samples_per_s_packed_vs_peer": at_least(speedup("packed", "peer"), TARGET_SPEEDUP),
        "live_peak_memory_packed_vs_padded": at_most(memory[0] / memory[1] if all(memory) else None, 1.0),
        "samples_per_s_padded_vs_peer": {"target": "reported", "measured": speedup("padded", "peer"), "met": True},
        "same_loss_packed_and_padded": at_most(checked.get("packed_vs_padded"), MAX_LOSS_DIFF),
    }
    return cases, summary


def print_table(cases: list[dict]) -> None:
    print(f"{'method':<14}{'pass s':>9}{'steps':>7}{'samples/s':>11}{'tokens/s':>10}{'padding':>9}{'RSS MB':>9}"
          f"{'live MB':>9}")  # fmt: skip
    for c in cases:
        if "seconds" not in c:
            print(f"{c['method']:<14} failed: {c['errors']}")
            continue
        live = c["live_peak_rss_mb"]
        print(f"{c['method']:<14}{c['seconds']:>9.1f}{c['steps']:>7}{c['samples_per_s']:>11.3f}"
              f"{c['real_tokens_per_s']:>10.0f}{c['padding_share']:>9.1%}{c['peak_rss_mb']:>9.0f}"
              f"{live if live is None else round(live):>9}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 samples, 1 round")
    parser.add_argument("--dense", action="store_true", help="also packed rows on transformers' SDPA mask")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per padded step")
    parser.add_argument("--rows", type=int, default=1, help=f"packed rows of {MAX_LENGTH} tokens per step")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, every method")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mix")
    parser.add_argument(peers.WORKER_FLAG, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return peers.worker_main(args.worker, lambda job: check(job) if job.get("check") else measure(job))
    samples, rounds = (16, 1) if args.quick else (48, 2)
    methods = METHODS + (("packed-dense",) if args.dense else ())
    start = time.perf_counter()
    info = machine_info()
    print(f"{info['processor']}, {info['cores']} cores; torch threads {args.threads}; {samples} samples, "
          f"{rounds} round(s); load average {open('/proc/loadavg').read().split()[:3]}")  # fmt: skip
    script = Path(__file__).resolve()
    common = {"samples": samples, "seed": args.seed, "threads": args.threads, "batch_size": args.batch_size,
              "rows": args.rows}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(peers.save_reference_weights(Path(tmp) / "reference.safetensors"))
        checked = peers.run_worker(script, common | {"check": True, "weights": weights})
        print(f"equivalence: {checked}")
        if checked.get("packed_vs_padded", 1) > MAX_LOSS_DIFF or checked.get("framelm_vs_peer", 1) > MAX_LOSS_DIFF:
            raise SystemExit(f"FAILED: the methods disagree on the loss (limit {MAX_LOSS_DIFF:g}): {checked}")
        results = {method: [] for method in methods}
        for r in range(rounds):
            for method in methods if r % 2 == 0 else methods[::-1]:
                job = common | {"method": method, "round": r, "weights": weights}
                results[method].append(peers.run_worker(script, job, timeout=3600))
            print(f"round {r + 1}/{rounds} done at {time.perf_counter() - start:.0f} s")
        live = {method: peers.run_worker(script, common | {"method": method, "round": 0, "weights": weights,
                                                           "largest": True}, env=LIVE_MEMORY_ENV)
                for method in methods}  # fmt: skip
    cases, summary = summarize(results, live, checked)
    print_table(cases)
    print_verdicts(summary)
    info_load = open("/proc/loadavg").read().split()[:3]
    path = write_results("packing", cases + [{"method": "load average at the end", "load": info_load}], summary,
                         quick=args.quick)  # fmt: skip
    print(f"total {time.perf_counter() - start:.0f} s; load average {info_load}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
