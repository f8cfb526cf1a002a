"""`framelm data convert`: any supported source (or a mixture) -> the normalized Arrow dataset or WebDataset shards.

    framelm data convert train.json --out data/arrow                        # datasets.load_from_disk("data/arrow")
    framelm data convert mix.yaml --out data/wds --to webdataset --split 9,1,0

WebDataset shards hold one `<key>.json` per sample (the normalized row; media stay as paths, as everywhere in
framelm) and read back for streaming with
`datasets.load_dataset("webdataset", data_files={"train": "data/wds/train-*.tar"}, streaming=True)`, each example's
`json` field being a row for `Sample.from_row`.
"""

from __future__ import annotations

import logging
import os

import datasets
import numpy as np
from tqdm.auto import tqdm

from framelm.training.data.loading import LoadedSamples

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def save_arrow(loaded: LoadedSamples, out_dir: str, num_proc: int | None = None) -> None:
    """`save_to_disk` of the samples; `load_samples(out_dir)` and `datasets.load_from_disk` read it back."""
    loaded.dataset.save_to_disk(out_dir, num_proc=num_proc if num_proc and num_proc > 1 else None)


def split_counts(n: int, weights: tuple[float, ...]) -> list[int]:
    """Records per split for weights like (9, 1, 0): largest remainders, and a zero weight always gets zero."""
    if len(weights) != len(SPLIT_NAMES) or any(w < 0 for w in weights) or not sum(weights):
        raise ValueError(f"split {weights} must be three non-negative weights (train, val, test), e.g. 9,1,0")
    exact = [n * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def write_webdataset(
    dataset: datasets.Dataset,
    out_dir: str,
    split: tuple[float, ...] = (9, 1, 0),
    shard_size: int = 10_000,
    seed: int = 0,
) -> dict[str, int]:
    """Shuffle (seeded), split and write `{split}-{shard:06d}.tar` shards; returns records per split."""
    import webdataset

    os.makedirs(out_dir, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(dataset))
    written, start = {}, 0
    for name, count in zip(SPLIT_NAMES, split_counts(len(dataset), split), strict=True):
        if not count:
            continue
        part = dataset.select(order[start : start + count])
        start += count
        pattern = os.path.join(out_dir, f"{name}-%06d.tar")
        with webdataset.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
            for index, row in enumerate(tqdm(part, desc=f"writing {name} shards", unit="record")):
                sink.write({"__key__": f"{index:09d}", "json": row})
        written[name] = count
    logger.info("%s: %s", out_dir, ", ".join(f"{n} {name}" for name, n in written.items()))
    return written
