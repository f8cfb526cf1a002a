"""Generation: FrameLM vs transformers' LlavaNextVideoForConditionalGeneration, 32 new tokens after a video prompt.

    python bench/generation.py            # 4 cases, 5 rounds x (1 warm-up + 5 timed calls) per model (~8 minutes)
    python bench/generation.py --quick    # batch 1 only, 2 rounds x (1 warm-up + 4 timed calls) (~1.5 minutes)

The prompt is one 8-frame 224x224 video (392 tokens after pooling) inside 64 text tokens (456 tokens), on the tiny
equivalent models of `peers.py` with the same reference weights; `generate(max_new_tokens=32, min_new_tokens=32,
do_sample=False)` with the KV cache, in fp32 and under `torch.autocast("cpu", dtype=torch.bfloat16)`, for a batch of
1 prompt and of 2. tokens/s = new tokens (batch x 32) / wall time of the whole `generate` call, prefill included; the
prefill alone (`max_new_tokens=1`) is timed too, which gives the decoding rate of the 31 other tokens. Every (model,
case) runs in its own process (its peak RSS, median over rounds, is that case's alone); rounds alternate the models'
order (framelm, peer, then peer, framelm) so that load from other jobs falls on both alike. Ratios framelm/peer are
medians over rounds of the ratio of the two models' fastest calls in that round (`peers.paired_ratio`: the two ran
back to back, and load from other jobs only ever adds time); the tokens/s and times shown are medians of every
timed call of every round.

Checked and reported: the vision tower runs once per `generate` call, on all frames of the batch at once
(`peers.count_tower_calls`); both models generate identical token ids in every case (greedy); prompt logits agree
in fp32 within 1e-4 (checked once before timing; else the run stops). torch runs with 1 intra-op thread by default
(`--threads`, the same for both), as in bench/train_step.py.
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

TARGET_TOKENS_RATIO = 1.0  # Benchmarks issue, item 4: at least the peer's tokens/s ...
TARGET_TOWER_CALLS = 1  # ... and one vision-tower pass per prompt
NEW_TOKENS, TEXT_TOKENS = 32, 64


def prompt(batch_size: int) -> dict[str, torch.Tensor]:
    batch = peers.make_batch(batch_size, TEXT_TOKENS)
    batch.pop("labels")
    return batch


def generate_fn(model: torch.nn.Module, inputs: dict, bf16: bool):
    def generate(new_tokens: int) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return out[:, inputs["input_ids"].shape[1] :]

    return generate


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure(job: dict) -> dict:
    """Worker: one model, `warmup` then `repeats` timed `generate` calls (and as many prefill-only calls)."""
    torch.set_num_threads(job["threads"])
    model = peers.build_model(job["model"], Path(job["weights"])).eval()
    generate = generate_fn(model, prompt(job["batch_size"]), job["dtype"] == "bf16")
    rss_built = peers.peak_rss_mb()
    with peers.count_tower_calls(model) as calls:
        new_ids = generate(NEW_TOKENS)
    for _ in range(job["warmup"] - 1):
        generate(NEW_TOKENS)
    times, prefill = [], []
    for _ in range(job["repeats"]):
        times.append(timed(generate, NEW_TOKENS))
        prefill.append(timed(generate, 1))
    return {"times_s": times, "prefill_s": prefill, "tower_calls_frames": calls, "new_ids": new_ids.tolist(),
            "rss_after_build_mb": rss_built}  # fmt: skip


def check(job: dict) -> dict:
    """Worker: both models on one fp32 prompt: largest logits difference and whether the new token ids match."""
    torch.set_num_threads(job["threads"])
    inputs = prompt(1)
    logits, ids = {}, {}
    for name in peers.MODELS:
        model = peers.build_model(name, Path(job["weights"])).eval()
        with torch.no_grad():
            logits[name] = model(**inputs).logits
        ids[name] = generate_fn(model, inputs, bf16=False)(NEW_TOKENS).tolist()
    return {
        "fp32_logits_max_abs_diff": (logits["framelm"] - logits["peer"]).abs().max().item(),
        "fp32_ids_identical": ids["framelm"] == ids["peer"],
        "prompt_length": inputs["input_ids"].shape[1],
    }


def run_case(dtype: str, batch_size: int, results: dict[str, list[dict]]) -> dict:
    case = {"case": f"{dtype}/batch-{batch_size}", "dtype": dtype, "batch_size": batch_size,
            "new_tokens": batch_size * NEW_TOKENS, "errors": {}}  # fmt: skip
    for name in peers.MODELS:
        merged = peers.merge_rounds(results[name], pooled=("times_s", "prefill_s"))
        if "error" in merged:
            case["errors"][name], merged = merged["error"], {}
        elif merged.get("errors"):
            case["errors"][name] = merged["errors"]
        if merged:
            total, first = median(merged["times_s"]), median(merged["prefill_s"])
            merged |= {"median_s": total, "best_s": min(merged["times_s"]), "prefill_median_s": first}
            merged["tokens_per_s"] = batch_size * NEW_TOKENS / total
            merged["decode_tokens_per_s"] = batch_size * (NEW_TOKENS - 1) / (total - first) if total > first else None
            merged["tower_calls"] = len(merged["tower_calls_frames"])
        case[name] = merged
    fw, peer = case["framelm"], case["peer"]
    both = bool(fw and peer)
    case["ratio_tokens_per_s"] = peers.paired_ratio(results["peer"], results["framelm"])  # peer time / ours
    case["ratio_tokens_per_s_paired_medians"] = peers.paired_ratio(results["peer"], results["framelm"], stat=median)
    case["ratio_tokens_per_s_pooled_medians"] = fw["tokens_per_s"] / peer["tokens_per_s"] if both else None
    case["ratio_tokens_per_s_best"] = peer["best_s"] / fw["best_s"] if both else None
    case["ratio_prefill_time"] = peers.paired_ratio(results["framelm"], results["peer"], key="prefill_s")
    case["ids_identical"] = fw["new_ids"] == peer["new_ids"] if both else None
    return case


def summarize(cases: list[dict], equivalence: dict) -> dict:
    ratios = {c["case"]: c["ratio_tokens_per_s"] for c in cases}
    worst = min(ratios, key=lambda k: -1.0 if ratios[k] is None else ratios[k])
    calls = [c["framelm"].get("tower_calls") for c in cases]
    frames = [c["framelm"].get("tower_calls_frames") == [c["batch_size"] * peers.NUM_FRAMES] for c in cases]
    same = [c["ids_identical"] for c in cases]
    diff = equivalence["fp32_logits_max_abs_diff"]
    ratio_met = None not in ratios.values() and ratios[worst] >= TARGET_TOKENS_RATIO
    calls_met = all(frames) and calls == [TARGET_TOWER_CALLS] * len(cases)
    return {
        "tokens_per_s_ratio": {
            "target": f">= {TARGET_TOKENS_RATIO:g}x the peer on every case",
            "measured": ratios[worst] and round(ratios[worst], 3),
            "met": ratio_met,
            "worst_case": worst,
        },
        "framelm_tower_calls_per_prompt": {
            "target": f"== {TARGET_TOWER_CALLS} per generate call, on all frames of the batch",
            "measured": max(calls, key=lambda n: -1 if n is None else n),
            "met": calls_met,
        },
        "peer_tower_calls_per_prompt": {
            "target": "reported",
            "measured": [c["peer"].get("tower_calls") for c in cases],
            "met": True,
        },
        "generated_ids_identical": {
            "target": "in every case",
            "measured": f"{sum(s is True for s in same)} of {len(same)}",
            "met": all(same),
        },
        "fp32_logits_max_abs_diff": {
            "target": f"<= {peers.MAX_LOGITS_DIFF:g}",
            "measured": diff,
            "met": diff <= peers.MAX_LOGITS_DIFF,
        },
        "equivalence": {"target": "reported", "measured": equivalence, "met": True},
    }


def print_table(cases: list[dict]) -> None:
    def cell(value: float | None, fmt: str) -> str:
        return "failed" if value is None else format(value, fmt)

    print(f"{'case':<14}{'fw tok/s':>9}{'peer tok/s':>11}{'ratio':>7}{'fw prefill s':>13}{'peer prefill s':>15}"
          f"{'ratio':>7}{'fw decode tok/s':>16}{'peer decode tok/s':>18}{'fw RSS MB':>10}{'peer RSS MB':>12}"
          f"{'tower calls fw/peer':>20}{'same ids':>9}")  # fmt: skip
    for c in cases:
        fw, peer = c["framelm"], c["peer"]
        calls = f"{fw.get('tower_calls', '-')}/{peer.get('tower_calls', '-')}"
        print(f"{c['case']:<14}{cell(fw.get('tokens_per_s'), '.1f'):>9}{cell(peer.get('tokens_per_s'), '.1f'):>11}"
              f"{cell(c['ratio_tokens_per_s'], '.3f'):>7}{cell(fw.get('prefill_median_s'), '.3f'):>13}"
              f"{cell(peer.get('prefill_median_s'), '.3f'):>15}{cell(c['ratio_prefill_time'], '.3f'):>7}"
              f"{cell(fw.get('decode_tokens_per_s'), '.1f'):>16}{cell(peer.get('decode_tokens_per_s'), '.1f'):>18}"
              f"{cell(fw.get('peak_rss_mb'), '.0f'):>10}{cell(peer.get('peak_rss_mb'), '.0f'):>12}"
              f"{calls:>20}{str(c['ids_identical']):>9}")  # fmt: skip
        for name, error in c["errors"].items():
            print(f"    {name} failed: {error}")
    print("ratios framelm/peer (median over rounds of each round's best): tokens/s higher is better, prefill lower")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 only, 2 rounds x (1 warm-up + 4 timed calls)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both models")
    parser.add_argument(peers.WORKER_FLAG, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return peers.worker_main(args.worker, lambda job: check(job) if job.get("check") else measure(job))
    rounds, warmup, repeats = (2, 1, 4) if args.quick else (5, 1, 5)
    case_keys = [(dtype, batch) for batch in ((1,) if args.quick else (1, 2)) for dtype in ("fp32", "bf16")]
    start = time.perf_counter()
    info = machine_info()
    print(f"{info['processor']}, {info['cores']} cores, accelerator: {info.get('accelerator', 'none')}; "
          f"torch threads {args.threads}; {rounds} rounds x ({warmup} warm-up + {repeats} timed calls)")  # fmt: skip
    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(peers.save_reference_weights(Path(tmp) / "reference.safetensors"))
        equivalence = peers.checked_equivalence(script, weights, args.threads)
        jobs = {(dtype, batch_size): {"dtype": dtype, "batch_size": batch_size, "weights": weights,
                                      "threads": args.threads, "warmup": warmup, "repeats": repeats}
                for dtype, batch_size in case_keys}  # fmt: skip
        results = peers.interleaved_rounds(script, jobs, rounds, start)
    cases = [run_case(dtype, batch_size, results[dtype, batch_size]) for dtype, batch_size in case_keys]
    print_table(cases)
    summary = summarize(cases, equivalence)
    print_verdicts({name: row for name, row in summary.items() if name != "equivalence"})
    path = write_results("generation", cases, summary, quick=args.quick)
    print(f"total {time.perf_counter() - start:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
