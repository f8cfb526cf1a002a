"""framelm's WebDataset shards: their layout, and reading them back as normalized samples.

    out/train-000000.tar ...   one sample = `<key>.json` + its media: `<key>.0.jpg`, `<key>.1.mp4`,
    out/val-000000.tar ...     `<key>.2.00001.jpg` (frame 1 of a frame folder) ...; keys are `train_000000042`
    out/framelm_shards.json    records and shards per split, the framelm version, the `datasets` features
    out/README.md              a dataset card: `datasets.load_dataset("out")` reads the splits and media bytes
    out/.nv-meta/dataset.yaml  megatron-energon's CrudeWebdataset (run `energon prepare out` to index it)

`<key>.json` is the normalized sample (`sample.py`) with each media item naming its member instead of a path:
`{"kind": "image", "name": "0.jpg"}`, `{"kind": "frames", "name": "2", "frames": ["2.00001.jpg", ...], "fps": 2.0}`.
A folder of shards is self-contained: move it anywhere and it still reads.

Reading goes through `datasets`' own WebDataset loader (`load_dataset("webdataset", ...)`, streaming) with the
manifest's features, so `framelm train` streams the shards (never copying them), each process and DataLoader
worker reading its own shards; `framelm data validate|stats` read them into the `datasets` cache (`load_shards`).
"""

from __future__ import annotations

import json
import logging
import os

import datasets
from datasets.packaged_modules.webdataset.webdataset import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

from framelm.training.data.arguments import DataArguments
from framelm.training.data.jsonio import file_stamp
from framelm.training.data.sample import SAMPLE_FEATURES
from framelm.training.data.source_types import LoadedSamples
from framelm.training.data.sources import SHARD_MANIFEST, shard_files

logger = logging.getLogger(__name__)

SHARD_FORMAT = "framelm-webdataset"
SHARD_FORMAT_VERSION = 1
SPLIT_NAMES = ("train", "val", "test")
HUB_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}  # in the dataset card
SHARD_JSON_FEATURES = {
    "id": datasets.Value("string"),
    "source": datasets.Value("string"),
    "where": datasets.Value("string"),  # the record it was converted from ("train.jsonl:17")
    "system": datasets.Value("string"),
    "turns": datasets.List({"role": datasets.Value("string"), "text": datasets.Value("string")}),
    "media": datasets.List(
        {
            "kind": datasets.Value("string"),  # image | video | frames
            "name": datasets.Value("string"),  # the member (`<key>.<name>`); for frames, the prefix of theirs
            "frames": datasets.List(datasets.Value("string")),  # frame members, in time order
            "fps": datasets.Value("float64"),  # frame rate of the frames, when known
        }
    ),
}


def member_feature(name: str):
    """The `datasets` feature of a media member, by extension, as the WebDataset loader would infer it (undecoded)."""
    extension = name.rsplit(".", 1)[-1].lower()
    if extension in IMAGE_EXTENSIONS:
        return datasets.Image(decode=False)
    if extension in VIDEO_EXTENSIONS:
        return datasets.Video(decode=False)
    return datasets.Value("binary")


def shard_features(members: list[str]) -> datasets.Features:
    """The features of every sample: its json and the union of media member names of the whole dataset."""
    return datasets.Features({"json": SHARD_JSON_FEATURES, **{name: member_feature(name) for name in members}})


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, SHARD_MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ValueError(
            f"{folder}: no {SHARD_MANIFEST} beside the shards: not written by `framelm data convert --to webdataset` "
            "(or moved without it); convert the data again, or read the shards with `webdataset`"
        ) from None
    if manifest.get("format") != SHARD_FORMAT or manifest.get("version", 0) > SHARD_FORMAT_VERSION:
        found = f"format {manifest.get('format')} version {manifest.get('version')}"
        raise ValueError(f"{path}: {found} is not one this framelm reads ({SHARD_FORMAT} up to version "
                         f"{SHARD_FORMAT_VERSION}); upgrade framelm")  # fmt: skip
    return manifest


def shard_source(path: str, split: str = "train") -> tuple[list[str], dict]:
    """(shard files, manifest) of a shard folder (its `split`), one `.tar` or a glob of them."""
    path = str(path)
    if os.path.isdir(path):
        manifest = read_manifest(path)
        splits = manifest["splits"]
        if split not in splits:
            raise ValueError(f"{path} holds the splits {sorted(splits)}, not {split!r}: pass --dataset_split")
        return [_shard_in(path, name) for name in splits[split]["shards"]], manifest
    files = shard_files(path)
    return files, read_manifest(os.path.dirname(os.path.abspath(files[0])))


def _shard_in(folder: str, name) -> str:
    """A shard the manifest names: a `.tar` file in the manifest's own folder, symlinks resolved; a manifest naming
    files elsewhere (`/etc/x.tar`, `../other.tar`, a link leading out) is refused."""
    path = os.path.join(folder, name) if isinstance(name, str) else ""
    real, real_folder = os.path.realpath(path), os.path.realpath(folder)
    if not (isinstance(name, str) and name.endswith(".tar") and "/" not in name and name not in (".", "..")) or (
        os.path.dirname(real) != real_folder
    ):
        raise ValueError(
            f"{os.path.join(folder, SHARD_MANIFEST)} names the shard {name!r}, which is not a .tar file in its own "
            "folder; a manifest may only name the shards beside it. Convert the data again "
            "(framelm data convert --to webdataset)"
        )
    return path


def split_records(path: str, split: str = "train") -> int | None:
    """Records in a shard folder's split (from its manifest); None for a glob or file (only part of a split)."""
    if not os.path.isdir(str(path)):
        return None
    return int(read_manifest(str(path))["splits"][split]["records"])


def stream_shards(files: list[str], manifest: dict) -> datasets.IterableDataset:
    """The samples of `files` as a stream of `SAMPLE_FEATURES` rows, media bytes included; one shard per file."""
    features = datasets.Features.from_dict(manifest["features"])
    features |= {"__key__": datasets.Value("string"), "__url__": datasets.Value("string")}
    examples = datasets.load_dataset(
        "webdataset", data_files={"train": files}, split="train", streaming=True, features=features
    )
    return examples.map(sample_row, remove_columns=list(features), features=SAMPLE_FEATURES)


def sample_row(example: dict) -> dict:
    """A shard sample (its json and members) -> a `SAMPLE_FEATURES` row with the members' bytes. A member the json
    names but the shard lacks is left unreadable (a path that does not exist), so that validate reports it."""
    doc, key = example["json"], example["__key__"]
    shard = os.path.basename(example["__url__"])

    def content(name: str) -> tuple[str, bytes | None]:
        value = example.get(name)
        data = value.get("bytes") if isinstance(value, dict) else value
        return (name, data) if data is not None else (f"{example['__url__']}: member {key}.{name} is missing", None)

    media = []
    for item in doc["media"]:
        if item["kind"] == "frames":
            frames = [dict(zip(("path", "bytes"), content(name), strict=True)) for name in item["frames"]]
            media.append({"kind": "frames", "path": item["name"], "bytes": None, "frames": frames, "fps": item["fps"]})
        else:
            name, data = content(item["name"])
            media.append({"kind": item["kind"], "path": name, "bytes": data, "frames": [], "fps": None})
    where = f"{shard}:{key}" + (f" (from {doc['where']})" if doc.get("where") else "")
    return {"id": doc["id"] or "", "source": doc["source"] or "", "where": where, "system": doc["system"] or "",
            "turns": doc["turns"], "media": media}  # fmt: skip


def load_shards(data: DataArguments):
    """Shards as a `LoadedSamples` in the `datasets` cache, for `framelm data validate|stats` (training streams)."""
    files, manifest = shard_source(data.dataset, data.dataset_split)
    dataset = datasets.Dataset.from_generator(
        _shard_rows,
        features=SAMPLE_FEATURES,
        gen_kwargs={"files": files, "manifest": manifest, "stamps": [file_stamp(f) for f in files]},
        cache_dir=data.cache_dir,
        split="train",
    )
    logger.info("%s: %d samples in %d shards", data.dataset, len(dataset), len(files))
    return LoadedSamples(dataset=dataset, problems=[], total=len(dataset), formats={str(data.dataset): "webdataset"})


def _shard_rows(files: list[str], manifest: dict, stamps: list):
    """`stamps` (path, size, mtime) are unused here but part of the cache key: changed shards are read again."""
    yield from stream_shards(files, manifest)
