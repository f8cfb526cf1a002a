"""Training step: FrameLM vs transformers' LlavaNextVideoForConditionalGeneration, forward + backward + AdamW.

    python bench/train_step.py            # 4 cases, 5 rounds x (1 warm-up + 2 timed steps) per model (~8 minutes)
    python bench/train_step.py --quick    # same cases, 1 round x (1 warm-up + 1 timed step) (~3 minutes)

A batch of 2 samples, each one 8-frame 224x224 video (392 tokens after pooling) inside 256 text tokens (648 tokens a
sample), on the tiny equivalent models of `peers.py` (same tower, projector and LM sizes, same reference weights).
Cases: the vision tower trainable or frozen (`requires_grad_(False)`, as a stage-2 LLaVA recipe does), in fp32 and
under `torch.autocast("cpu", dtype=torch.bfloat16)`. Every (model, case) runs in its own process, so its peak RSS
(`ru_maxrss`) is that case's alone; rounds alternate the order of the two models (framelm, peer, then peer, framelm)
so that load from other jobs on the shared machine falls on both alike. The step-time ratio framelm/peer is the
median over rounds of the ratio of the two models' fastest steps in that round (`peers.paired_ratio`: the two ran back
to back, and load from other jobs only ever adds time); the step time shown is the median of every timed step of every
round; tokens/s counts all 648 x 2 positions; FLOP/s divides `peers.train_step_flops` (what each model runs: the
peer also runs the last tower layer) by the step time. The ratios are what to read, not the absolute times.

Peak memory is measured twice. "RSS": `ru_maxrss` of the timing workers, median over rounds; with glibc's default
dynamic mmap threshold, freed tensors partly stay in the heap and this moves by +-3% between identical runs. "live":
one more worker per (model, case), 2 steps with `MALLOC_MMAP_THRESHOLD_=131072`, so every tensor of 128 KiB or more
goes back to the OS when freed and the peak RSS is that of the memory actually alive (identical to the MiB from run
to run, but steps are slower, so this worker is not timed). The memory target is checked on "live".

torch runs with 1 intra-op thread by default (`--threads`, the same for both): on a 2-core machine shared with other
jobs, two OpenMP threads wait on each other at every barrier and steps become up to ~8x slower and erratic.
Before timing, both models get the same batch and must agree: fp32 logits within 1e-4 (else the run stops).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from common import machine_info, median, print_verdicts, write_results  # noqa: E402

TARGET_TIME_RATIO = 1.0  # Benchmarks issue, item 3: at most the peer's step time ...
TARGET_RSS_RATIO = 1.0  # ... and at most its peak memory, on every case
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # fixed threshold: freed tensors go back to the OS at once
BATCH_SIZE, TEXT_TOKENS = 2, 256
CASES = [(dtype, tower) for dtype in ("fp32", "bf16") for tower in ("trainable", "frozen")]


def train_step_fn(model: torch.nn.Module, batch: dict, bf16: bool, tower_trains: bool):
    """A closure running one optimizer step (zero_grad, forward under autocast if bf16, backward, AdamW)."""
    if not tower_trains:
        model.model.vision_tower.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def measure(job: dict) -> dict:
    """Worker: build one model, run `warmup` then `steps` timed training steps; times in seconds."""
    torch.set_num_threads(job["threads"])
    model = peers.build_model(job["model"], Path(job["weights"])).train()
    batch = peers.make_batch(BATCH_SIZE, TEXT_TOKENS)
    step = train_step_fn(model, batch, job["dtype"] == "bf16", job["tower"] == "trainable")
    rss_built = peers.peak_rss_mb()
    warmup, times = [], []
    for i in range(job["warmup"] + job["steps"]):
        start = time.perf_counter()
        loss = step()
        (warmup if i < job["warmup"] else times).append(time.perf_counter() - start)
    return {"times_s": times, "warmup_s": warmup, "rss_after_build_mb": rss_built, "last_loss": loss}


def check(job: dict) -> dict:
    """Worker: both models on one batch: logits (fp32, bf16 autocast), loss and gradients after one backward."""
    torch.set_num_threads(job["threads"])
    batch = peers.make_batch(BATCH_SIZE, TEXT_TOKENS)
    logits, losses, grads = {}, {}, {}
    for name in peers.MODELS:
        model = peers.build_model(name, Path(job["weights"])).train()
        for dtype in ("fp32", "bf16"):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                logits[name, dtype] = model(**batch).logits.float()
        loss = model(**batch).loss
        loss.backward()
        losses[name] = loss.item()
        grads[name] = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    shared = grads["framelm"].keys() & grads["peer"].keys()
    diff = {d: (logits["framelm", d] - logits["peer", d]).abs().max().item() for d in ("fp32", "bf16")}
    return {
        "fp32_logits_max_abs_diff": diff["fp32"],
        "bf16_logits_max_abs_diff": diff["bf16"],
        "fp32_loss_abs_diff": abs(losses["framelm"] - losses["peer"]),
        "fp32_grad_max_abs_diff": max((grads["framelm"][k] - grads["peer"][k]).abs().max().item() for k in shared),
        "parameters_with_grad_compared": len(shared),
        "sequence_length": batch["input_ids"].shape[1],
    }


def ratio(case: dict, key: str) -> float | None:
    ours, peer = case["framelm"].get(key), case["peer"].get(key)
    return ours / peer if ours is not None and peer is not None else None


def run_case(dtype: str, tower: str, results: dict[str, list[dict]], live: dict[str, dict], seq_len: int) -> dict:
    case = {"case": f"{dtype}/tower-{tower}", "dtype": dtype, "tower": tower, "batch_size": BATCH_SIZE,
            "sequence_length": seq_len, "tokens_per_step": BATCH_SIZE * seq_len, "errors": {}}  # fmt: skip
    for name in peers.MODELS:
        merged = peers.merge_rounds(results[name])
        if "error" in merged:
            case["errors"][name] = merged["error"]
            merged = {}
        elif merged.get("errors"):
            case["errors"][name] = merged["errors"]
        if merged:
            flops = peers.train_step_flops(name, BATCH_SIZE, seq_len, tower_trains=tower == "trainable")
            step_s = median(merged["times_s"])
            merged |= {"median_s": step_s, "best_s": min(merged["times_s"]), "step_flops": flops}
            merged |= {"tokens_per_s": BATCH_SIZE * seq_len / step_s, "gflops_per_s": flops / 1e9 / step_s}
        if "error" in live[name]:
            case["errors"][f"{name} (live memory)"] = live[name]["error"]
        elif merged:
            merged["live_peak_rss_mb"] = live[name]["peak_rss_mb"]
        case[name] = merged
    case["ratio_step_time"] = peers.paired_ratio(results["framelm"], results["peer"])
    case["ratio_step_time_paired_medians"] = peers.paired_ratio(results["framelm"], results["peer"], stat=median)
    case["ratio_step_time_pooled_medians"] = ratio(case, "median_s")
    case["ratio_step_time_best"] = ratio(case, "best_s")
    case["ratio_peak_rss"] = ratio(case, "peak_rss_mb")
    case["ratio_live_peak_rss"] = ratio(case, "live_peak_rss_mb")
    return case


def summarize(cases: list[dict], equivalence: dict) -> dict:
    def worst(key: str, target: float) -> dict:
        values = {c["case"]: c[key] for c in cases}
        missing = [name for name, value in values.items() if value is None]
        measured = max((v for v in values.values() if v is not None), default=None)
        met = not missing and measured is not None and measured <= target
        worst_case = max(values, key=lambda k: float("inf") if values[k] is None else values[k])
        return {"target": f"<= {target:g}x the peer on every case", "measured": measured and round(measured, 3),
                "met": met, "worst_case": worst_case, "missing": missing}  # fmt: skip

    diff = equivalence["fp32_logits_max_abs_diff"]
    ok = diff <= peers.MAX_LOGITS_DIFF
    return {
        "step_time_ratio": worst("ratio_step_time", TARGET_TIME_RATIO),
        "live_peak_memory_ratio": worst("ratio_live_peak_rss", TARGET_RSS_RATIO),
        "peak_rss_ratio_default_allocator": {
            **worst("ratio_peak_rss", TARGET_RSS_RATIO),
            "target": "reported",
            "met": True,
        },
        "fp32_logits_max_abs_diff": {"target": f"<= {peers.MAX_LOGITS_DIFF:g}", "measured": diff, "met": ok},
        "equivalence": {"target": "reported", "measured": equivalence, "met": True},
    }


def print_table(cases: list[dict]) -> None:
    def cell(value: float | None, fmt: str) -> str:
        return "failed" if value is None else format(value, fmt)

    print(f"{'case':<22}{'framelm s':>10}{'peer s':>9}{'ratio':>7}{'fw tok/s':>10}{'peer tok/s':>11}{'fw live MB':>11}"
          f"{'peer live MB':>13}{'ratio':>7}{'RSS ratio':>10}{'fw GFLOP/s':>11}{'peer GFLOP/s':>13}")  # fmt: skip
    for c in cases:
        fw, peer = c["framelm"], c["peer"]
        print(f"{c['case']:<22}{cell(fw.get('median_s'), '.3f'):>10}{cell(peer.get('median_s'), '.3f'):>9}"
              f"{cell(c['ratio_step_time'], '.3f'):>7}{cell(fw.get('tokens_per_s'), '.0f'):>10}"
              f"{cell(peer.get('tokens_per_s'), '.0f'):>11}{cell(fw.get('live_peak_rss_mb'), '.0f'):>11}"
              f"{cell(peer.get('live_peak_rss_mb'), '.0f'):>13}{cell(c['ratio_live_peak_rss'], '.3f'):>7}"
              f"{cell(c['ratio_peak_rss'], '.3f'):>10}"
              f"{cell(fw.get('gflops_per_s'), '.1f'):>11}{cell(peer.get('gflops_per_s'), '.1f'):>13}")  # fmt: skip
        for name, error in c["errors"].items():
            print(f"    {name} failed: {error}")
    print("ratios framelm/peer, lower is better; step time: median over rounds of each round's best-step ratio;")
    print("live MB: peak RSS with freed tensors returned to the OS at once; RSS ratio: default allocator, median")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round x (1 warm-up + 1 timed step): one A/B pair")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both models")
    parser.add_argument(peers.WORKER_FLAG, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return peers.worker_main(args.worker, lambda job: check(job) if job.get("check") else measure(job))
    rounds, warmup, steps = (1, 1, 1) if args.quick else (5, 1, 2)
    start = time.perf_counter()
    info = machine_info()
    print(f"{info['processor']}, {info['cores']} cores, accelerator: {info.get('accelerator', 'none')}; "
          f"torch threads {args.threads}; {rounds} rounds x ({warmup} warm-up + {steps} timed steps)")  # fmt: skip
    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(peers.save_reference_weights(Path(tmp) / "reference.safetensors"))
        equivalence = peers.checked_equivalence(script, weights, args.threads)
        seq_len = equivalence["sequence_length"]
        jobs = {(dtype, tower): {"dtype": dtype, "tower": tower, "weights": weights, "threads": args.threads,
                                 "warmup": warmup, "steps": steps}
                for dtype, tower in CASES}  # fmt: skip
        results = peers.interleaved_rounds(script, jobs, rounds, start)
        live = {case: {} for case in CASES}
        for dtype, tower in CASES:
            for name in peers.MODELS:
                job = {"model": name, "dtype": dtype, "tower": tower, "weights": weights, "threads": args.threads,
                       "warmup": 0, "steps": 2}  # fmt: skip
                live[dtype, tower][name] = peers.run_worker(script, job, env=LIVE_MEMORY_ENV)
        print(f"live-memory pass done at {time.perf_counter() - start:.0f} s")
    cases = [run_case(dtype, tower, results[dtype, tower], live[dtype, tower], seq_len) for dtype, tower in CASES]
    print_table(cases)
    summary = summarize(cases, equivalence)
    print_verdicts({name: row for name, row in summary.items() if name != "equivalence"})
    path = write_results("train_step", cases, summary, quick=args.quick)
    print(f"total {time.perf_counter() - start:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
