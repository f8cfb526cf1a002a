"""Child process of `bench/data_scale.py`: stream a shard folder the way `framelm train` does, without a model step.

    python bench/shard_stream.py SHARDS MODEL --collate     # rows -> length rule -> FrameLMCollator batches
    python bench/shard_stream.py SHARDS MODEL               # rows -> length rule (ids only: no media decoded)
    python bench/shard_stream.py SHARDS MODEL --reader webdataset   # peers on the same shards: json parsed, media
    python bench/shard_stream.py SHARDS MODEL --reader datasets     # bytes kept (webdataset / datasets' own reader)
    python bench/shard_stream.py SHARDS MODEL --reader energon      # (after `energon prepare` of SHARDS)

The stream is `data_prep.stream_for_training` (shuffled, measured, checked) read by a DataLoader with 2 workers, as
the Trainer reads it (webdataset's and `datasets`' readers with the same DataLoader; energon with its own loader and
2 workers, its decoder off so that media stay bytes as with the other readers); the parent samples the resident
memory of this process and its workers. Prints one JSON line.
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


def energon_loader(folder: str, workers: int, batch_size: int):
    """energon's own loader of the train split (prepared by `energon prepare`): sequential, no shuffle buffer, samples
    cooked from the json and the media bytes (the task encoder's decoder off), batches of their ids."""
    from megatron.energon import Cooker, DefaultTaskEncoder, WorkerConfig, get_loader, get_train_dataset, stateless

    @stateless
    def cook(sample: dict) -> dict:
        doc = json.loads(sample["json"])
        return {"id": doc["id"], "media": [sample[m["name"]] for m in doc["media"] if m["name"] in sample]}

    class Encoder(DefaultTaskEncoder):
        decoder = None
        cookers = [Cooker(cook)]

        def encode_sample(self, sample: dict) -> dict:
            return sample

        def batch(self, samples: list[dict]) -> list[str]:
            return [sample["id"] for sample in samples]

    config = WorkerConfig(rank=0, world_size=1, num_workers=workers)
    dataset = get_train_dataset(folder, batch_size=batch_size, shuffle_buffer_size=None, max_samples_per_sequence=None,
                                worker_config=config, task_encoder=Encoder(), repeat=False)  # fmt: skip
    return get_loader(dataset)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shards")
    parser.add_argument("model")
    parser.add_argument("--collate", action="store_true", help="Collate batches (decode media, run the processor).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-samples", type=int, help="Stream only this many records (the first of the shards).")
    parser.add_argument("--reader", choices=("framelm", "webdataset", "datasets", "energon"), default="framelm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.reader == "framelm":
        processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
        data = DataArguments(dataset=args.shards, max_samples=args.max_samples)
        stream = stream_for_training(data, processor, max_length=512, seed=0)
        collate = FrameLMCollator(processor) if args.collate else ids_only
        loader = DataLoader(stream, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
    elif args.reader == "energon":
        loader = energon_loader(args.shards, args.workers, args.batch_size)
    else:
        stream = peer_stream(args.shards, args.reader)
        loader = DataLoader(stream, batch_size=args.batch_size, num_workers=args.workers, collate_fn=keys_only)
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
