"""Peak CPU memory of one AdamW training step of a FrameLM, next to `framelm estimate-memory`'s estimate for the same
settings. Run as a script in a fresh process (the peak RSS is the process's):

    python tests/support/measure_memory.py HIDDEN LAYERS TOKENS     # prints one JSON line

fp32 weights, no activation checkpointing, every parameter trains (stage `all`), a text-only batch of one sequence.
"""

from __future__ import annotations

import gc
import json
import resource
import sys


def rss_peak_mib() -> float:
    """This process's peak RSS since `reset_peak` (VmHWM; not `ru_maxrss`, which keeps a forking parent's peak)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS to the current RSS (Linux 4.0+)
        f.write("5")


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1024**2


def main(hidden: int, layers: int, tokens: int) -> dict:
    import torch

    from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration
    from framelm.training.model.memory import MemoryArguments, MiB, count_parameters, estimate
    from framelm.training.model.tiny import tiny_config, train_tiny_tokenizer

    torch.set_num_threads(1)
    config = tiny_config(train_tiny_tokenizer(), text_hidden_size=hidden, num_layers=layers)
    args = MemoryArguments(dtype="float32", max_length=tokens, activation_checkpointing=False, stage="all")
    counts = count_parameters(config, args.lora_r)
    estimated = estimate(counts, args)["full"]
    # warm torch's kernels on a throwaway model so their one-time allocations are in the baseline
    warm = FrameLMForConditionalGeneration(tiny_config(train_tiny_tokenizer()))
    warm_ids = torch.randint(5, warm.config.text_config.vocab_size, (1, 8))  # short: its memory is no pool to reuse
    warm_optimizer = torch.optim.AdamW(warm.parameters(), lr=1e-4)
    for _ in range(2):
        warm(input_ids=warm_ids, labels=warm_ids).loss.backward()
        warm_optimizer.step()
    del warm, warm_optimizer
    gc.collect()
    reset_peak()
    before = current_rss_mib()
    model = FrameLMForConditionalGeneration(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(5, config.text_config.vocab_size, (1, tokens))  # no special or media token
    for _ in range(2):  # the second step holds AdamW's states while it computes activations: the steady peak
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    return {
        "parameters": counts.total,
        "tokens": tokens,
        "measured_peak_mib": round(rss_peak_mib() - before, 1),
        "estimated_mib": round(estimated["total"] / MiB, 1),
        "estimated_parts_mib": {
            k: round(estimated[k] / MiB, 1) for k in ("weights", "gradients", "optimizer", "activations")
        },  # fmt: skip
    }


if __name__ == "__main__":
    print(json.dumps(main(*(int(a) for a in sys.argv[1:4]))))
