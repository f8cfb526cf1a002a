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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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
    warm(input_ids=torch.ones(1, 8, dtype=torch.long), labels=torch.ones(1, 8, dtype=torch.long)).loss.backward()
    del warm
    gc.collect()
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
