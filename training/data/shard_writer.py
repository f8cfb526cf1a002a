"""Write normalized samples as self-contained WebDataset shards (`framelm data convert --to webdataset`).

Each sample's media go into its shard as their own bytes (an image file as it is, a video file as it is, a frame
folder as its frame images), so the folder can be moved, uploaded to the Hub or read by megatron-energon without the
original files; the layout is described in `shards.py`. Shards are written in parallel (`num_proc`), each worker
reading its media and writing its own tar: the work is reading and writing bytes. The whole folder is written beside
its target and renamed into place at the end, so an interrupted convert never leaves shards a glob would pick up.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field

import datasets
import numpy as np
import orjson
from tqdm.auto import tqdm

from framelm.processing.media_framelm import _folder_fps, _frame_names  # the processor's own frame folder reading
from framelm.processing.sources_framelm import FetchLimits, fetch_bytes, is_remote
from framelm.training.atomic_write import folder_written_beside
from framelm.training.data.embedded import extension_of
from framelm.training.data.policy import apply_bad_record_policy, require_records
from framelm.training.data.sample import Media, RecordProblem
from framelm.training.data.shards import (
    HUB_SPLIT_NAMES,
    SHARD_FORMAT,
    SHARD_FORMAT_VERSION,
    SPLIT_NAMES,
    shard_features,
)
from framelm.training.data.sources import SHARD_MANIFEST

logger = logging.getLogger(__name__)

ROWS_PER_READ = 64  # rows (with their embedded media bytes) read from the Arrow dataset at a time
ENERGON_DATASET_YAML = "__module__: megatron.energon\n__class__: CrudeWebdataset\n"


@dataclass
class ShardResult:
    """What one worker wrote into one shard."""

    name: str
    records: int = 0
    members: set[str] = field(default_factory=set)  # media member names used (the json excluded)
    media_bytes: int = 0
    problems: list[RecordProblem] = field(default_factory=list)


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
    num_proc: int | None = None,
    bad_records: str = "strict",
) -> dict[str, int]:
    """Shuffle (seeded), split and write `{split}-{shard:06d}.tar` shards with their media, the manifest, the dataset
    card and energon's dataset.yaml into `out_dir` (replaced as a whole); returns the samples written per split.

    A sample whose media cannot be read is a bad record: `strict` stops (nothing is written), `skip` leaves it out.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size {shard_size} must be at least 1")
    order = np.random.default_rng(seed).permutation(len(dataset))
    tasks, start = [], 0
    for name, count in zip(SPLIT_NAMES, split_counts(len(dataset), split), strict=True):
        for number, first in enumerate(range(0, count, shard_size)):
            tasks.append((name, number, first, order[start + first : start + min(first + shard_size, count)]))
        start += count
    with folder_written_beside(out_dir) as partial:
        results = _run(tasks, dataset, str(partial), num_proc)
        problems = [p for r in results for p in r.problems]
        apply_bad_record_policy(problems, len(dataset), out_dir, bad_records)
        written = Counter()
        for result in results:
            written[result.name.split("-", 1)[0]] += result.records
        require_records(sum(written.values()), len(dataset), out_dir)
        _write_metadata(str(partial), results, dict(written))
    counts = {name: written[name] for name in SPLIT_NAMES if written[name]}
    media_mb = sum(r.media_bytes for r in results) / 2**20
    logger.info("%s: %s (%.1f MB of media)", out_dir, ", ".join(f"{n} {name}" for name, n in counts.items()), media_mb)
    return counts


_DATASET: datasets.Dataset | None = None  # the rows, set once per worker process


def _init_worker(dataset: datasets.Dataset) -> None:
    global _DATASET
    _DATASET = dataset


def _run(tasks: list, dataset: datasets.Dataset, folder: str, num_proc: int | None) -> list[ShardResult]:
    workers = min(num_proc or 1, len(tasks))
    jobs = [(name, number, first, indices, folder) for name, number, first, indices in tasks]
    progress = tqdm(total=len(dataset), desc="writing shards", unit="record")
    results = []
    if workers <= 1:
        _init_worker(dataset)
        outputs = map(_write_shard, jobs)
    else:  # fork: the workers inherit the memory-mapped rows instead of receiving them
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(dataset,))
        outputs = pool.imap_unordered(_write_shard, jobs)
    try:
        for result in outputs:
            results.append(result)
            progress.update(result.records + len(result.problems))
    finally:
        progress.close()
        if workers > 1:
            pool.terminate()
    return sorted(results, key=lambda r: r.name)


def _write_shard(job: tuple) -> ShardResult:
    split, number, first, indices, folder = job
    result = ShardResult(name=f"{split}-{number:06d}.tar")
    # rows in Arrow batches, converted to plain Python rows in C++: `datasets`' per-row formatting costs more than
    # reading the media and writing the tar together
    table = _DATASET.select(indices).with_format("arrow")
    rows = (row for batch in table.iter(ROWS_PER_READ) for row in batch.to_pylist())
    with TarShard(os.path.join(folder, result.name)) as sink:
        for offset, row in enumerate(rows):
            try:
                members, media = _media_members([Media.from_row(m) for m in row["media"]])
            except (OSError, ValueError) as err:
                fix = "fix or replace the media file (framelm data validate checks them all)"
                result.problems.append(RecordProblem(row["where"], f"cannot read its media: {err}", fix, id=row["id"],
                                                     kind="missing_file"))  # fmt: skip
                continue
            key = f"{split}_{first + offset:09d}"
            sink.add(f"{key}.json", orjson.dumps(row | {"media": media}))
            for name, data in members.items():
                sink.add(f"{key}.{name}", data)
            result.records += 1
            result.members.update(members)
            result.media_bytes += sum(len(data) for data in members.values())
    return result


class TarShard:
    """A WebDataset shard written member by member: `tarfile`'s own USTAR headers (`TarInfo.tobuf`) straight into a
    buffered file. The same members as `tarfile.addfile` or `webdataset.TarWriter` write (the latter with a PAX
    header before each, from its float mtime), in half the time: with small images the per-member work, not the
    bytes, is what a convert spends its time on (`bench/data_scale.py`). Read by `tarfile`, GNU tar, webdataset,
    `datasets` and energon (tests/data/test_shards.py)."""

    def __init__(self, path: str):
        self.file = open(path, "wb", buffering=1 << 20)  # closed by __exit__
        self.mtime = int(time.time())

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self.mtime, 0o444
        self.file.write(info.tobuf(tarfile.USTAR_FORMAT))
        self.file.write(data)
        self.file.write(bytes(-len(data) % tarfile.BLOCKSIZE))  # members fill whole 512-byte blocks

    def __enter__(self) -> TarShard:
        return self

    def __exit__(self, *exc) -> None:
        self.file.write(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
        self.file.close()


def _media_members(media: list[Media]) -> tuple[dict[str, bytes], list[dict]]:
    """({member name: bytes}, the json's media entries) of one sample."""
    members, entries = {}, []
    for index, item in enumerate(media):
        if item.kind != "frames":
            data = item.data if item.data is not None else _read(item.path)
            name = f"{index}{extension_of(data, '' if item.data is not None else item.path)}"
            members[name] = data
            entries.append({"kind": item.kind, "name": name, "frames": [], "fps": None})
            continue
        if item.frames:
            frames = [(f.data if f.data is not None else _read(f.path), f.path) for f in item.frames]
            fps = item.fps
        else:  # a frame folder: its frames in the processor's order, and its <folder>.json frame rate
            names = _frame_names(item.path)
            frames = [(_read(os.path.join(item.path, n)), n) for n in names]
            fps = _folder_fps(item.path)
        names = []
        for number, (data, original) in enumerate(frames, start=1):
            names.append(f"{index}.{number:05d}{extension_of(data, original, '.jpg')}")
            members[names[-1]] = data
        entries.append({"kind": "frames", "name": str(index), "frames": names, "fps": fps})
    return members, entries


def _read(path: str) -> bytes:
    if "://" in path and is_remote(path):
        return fetch_bytes(path, FetchLimits())
    with open(path, "rb") as f:
        return f.read()


def _write_metadata(folder: str, results: list[ShardResult], written: dict[str, int]) -> None:
    """The manifest, the dataset card and energon's dataset.yaml."""
    from framelm.training.env import framelm_version as version

    members = sorted(set().union(*(r.members for r in results)), key=lambda n: (len(n), n))
    features = shard_features(members)
    splits = {name: {"records": written[name], "shards": [r.name for r in results if r.name.startswith(name + "-")]}
              for name in SPLIT_NAMES if written.get(name)}  # fmt: skip
    manifest = {
        "format": SHARD_FORMAT,
        "version": SHARD_FORMAT_VERSION,
        "framelm_version": version(),
        "splits": splits,
        "media_members": sum(len(r.members) for r in results),
        "media_bytes": sum(r.media_bytes for r in results),
        "features": features.to_dict(),
    }
    with open(os.path.join(folder, SHARD_MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(_dataset_card(features, splits))
    os.makedirs(os.path.join(folder, ".nv-meta"))
    with open(os.path.join(folder, ".nv-meta", "dataset.yaml"), "w", encoding="utf-8") as f:
        f.write(ENERGON_DATASET_YAML)


def _dataset_card(features: datasets.Features, splits: dict) -> str:
    """A Hub dataset card whose metadata lets `datasets.load_dataset(folder)` read the splits and media bytes."""
    from huggingface_hub import DatasetCardData

    card = DatasetCardData()
    datasets.info.DatasetInfosDict({"default": datasets.DatasetInfo(features=features)}).to_dataset_card_data(card)
    card["configs"] = [
        {
            "config_name": "default",
            "data_files": [{"split": HUB_SPLIT_NAMES[name], "path": f"{name}-*.tar"} for name in splits],
        }
    ]
    counts = ", ".join(f"{info['records']:,} {name}" for name, info in splits.items())
    first = next((name for name, info in splits.items() if info["shards"]), "train")  # a split that has shards
    last = max(len(splits.get(first, {}).get("shards", [])) - 1, 0)
    pattern = f"{first}-{{000000..{last:06d}}}.tar" if last else f"{first}-000000.tar"  # a glob of what exists
    return f"""---
{card.to_yaml()}
---
# framelm WebDataset shards

{counts} samples written by `framelm data convert --to webdataset`. Each sample is `<key>.json` (the conversation,
each media item naming its member) plus its media as their original bytes (`<key>.0.jpg`, `<key>.1.mp4`, frames as
`<key>.2.00001.jpg` ...). Read them with

- framelm: `framelm train --dataset THIS_FOLDER` (streams), `framelm data validate THIS_FOLDER`;
- datasets: `datasets.load_dataset("THIS_FOLDER", split="train", streaming=True)`;
- webdataset: `webdataset.WebDataset("THIS_FOLDER/{pattern}")`;
- megatron-energon: `energon prepare THIS_FOLDER --non-interactive --split-parts 'train:train-.*' --split-parts
  'val:val-.*'` indexes the shards; `.nv-meta/dataset.yaml` declares them a `CrudeWebdataset` (cook the json and
  media in your TaskEncoder).
"""
