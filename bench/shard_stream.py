"""Child process of `bench/data_scale.py`: stream a shard folder the way `framelm train` does, without a model step.

    python bench/shard_stream.py SHARDS MODEL --collate     # rows -> length rule -> FrameLMCollator batches
    python bench/shard_stream.py SHARDS MODEL               # rows -> length rule (ids only: no media decoded)
    python bench/shard_stream.py SHARDS MODEL --reader webdataset   # peers on the same shards: json parsed, media
    python bench/shard_stream.py SHARDS MODEL --reader datasets     # bytes kept (webdataset / datasets' own reader)

The stream is `data_prep.stream_for_training` (shuffled, measured, checked) read by a DataLoader with 2 workers, as
the Trainer reads it (the peers' readers with the same DataLoader); the parent samples the resident memory of this
process and its workers. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import torch
from torch.utils.data import DataLoader
from transformers import AutoProcessor

from framelm.training.batches.collator import FrameLMCollator
from framelm.training.data.arguments import DataArguments
from framelm.training.sft.data_prep import stream_for_training


def ids_only(rows: list[dict]) -> list[str]:
    return [row["id"] for row in rows]


def keys_only(samples: list[dict]) -> list[str]:
    return [sample["json"]["id"] for sample in samples]


def peer_stream(folder: str, reader: str):
    """The train shards of `folder` read by a peer, each sample its parsed json and its media members' bytes."""
    files = sorted(glob.glob(os.path.join(folder, "train-*.tar")))
    if reader == "webdataset":
        import webdataset

        def parsed(sample: dict) -> dict:
            return sample | {"json": json.loads(sample["json"])}

        return webdataset.WebDataset(files, shardshuffle=False, empty_check=False).map(parsed)
    import datasets

    return datasets.load_dataset(folder, split="train", streaming=True)  # the dataset card's features


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shards")
    parser.add_argument("model")
    parser.add_argument("--collate", action="store_true", help="Collate batches (decode media, run the processor).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-samples", type=int, help="Stream only this many records (the first of the shards).")
    parser.add_argument("--reader", choices=("framelm", "webdataset", "datasets"), default="framelm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.reader == "framelm":
        processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
        data = DataArguments(dataset=args.shards, max_samples=args.max_samples)
        stream = stream_for_training(data, processor, max_length=512, seed=0)
        collate = FrameLMCollator(processor) if args.collate else ids_only
    else:
        stream, collate = peer_stream(args.shards, args.reader), keys_only
    loader = DataLoader(stream, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
    start, records, tokens = time.perf_counter(), 0, 0
    for batch in loader:
        if args.collate:
            records += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum())
        else:
            records += len(batch)
    seconds = time.perf_counter() - start
    print(json.dumps({"records": records, "tokens": tokens, "stream_seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
