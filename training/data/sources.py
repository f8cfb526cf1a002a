"""What a data path names, and the `datasets` call that reads its rows.

Every command that takes data (`framelm train`, `framelm data validate|stats|convert`, mixture entries) accepts:

- a json / jsonl file (read record by record with line numbers, `jsonio.py`);
- a csv / parquet / arrow file, one record per row;
- a folder written by `Dataset.save_to_disk` (a `DatasetDict` gives its `--dataset_split`);
- a folder of data files or a Hub dataset id, read by `datasets.load_dataset(path, name=--dataset_config,
  split=--dataset_split)`, as on the Hub;
- WebDataset shards written by `framelm data convert --to webdataset`: their folder, a `.tar`, or a glob (`shards.py`);
- a mixture YAML (`mixture.py`).

Media features (`datasets.Image`, `datasets.Video`) are never decoded here: rows are read in Arrow format, so an
image arrives as `{"bytes", "path"}` and its bytes are carried as they are (`formats/media_refs.py`).
"""

from __future__ import annotations

import glob
import os
import posixpath

import datasets
import fsspec
import numpy as np

from framelm.training.data.arguments import DataArguments
from framelm.training.data.paths import is_hub_id, looks_like_url
from framelm.training.data.source_types import TABLE_BUILDERS, MixtureEntry

SHARD_MANIFEST = "framelm_shards.json"  # written by `framelm data convert --to webdataset` beside its shards


def is_shards(path: str) -> bool:
    """A `.tar` shard, a glob of them, or a folder holding the shard manifest."""
    path = str(path)
    return path.endswith(".tar") or os.path.isfile(os.path.join(path, SHARD_MANIFEST))


def is_saved_dataset(path: str) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return any(os.path.isfile(os.path.join(path, name)) for name in ("state.json", "dataset_dict.json"))


def is_dataset_reference(path: str) -> bool:
    """A path read by `datasets` as a whole dataset rather than as one data file: a folder or a Hub id."""
    path = str(path)
    return os.path.isdir(path) or (not os.path.exists(path) and not looks_like_url(path) and is_hub_id(path))


def folder_of(path: str) -> str:
    """The folder of a local path or fsspec URL, local (and absolute) for `file://` URLs."""
    if path.lower().startswith("file://"):
        path = fsspec.core.strip_protocol(path)
    return posixpath.dirname(path) if looks_like_url(path) else os.path.dirname(os.path.abspath(path))


def media_root(path: str) -> str:
    """What relative media paths of a data source resolve against by default: a dataset folder itself, else the
    data file's folder."""
    return os.path.abspath(path) if os.path.isdir(path) else folder_of(path)


def resolve_entry_path(json_path: str, root: str) -> str:
    """A mixture entry's path: relative paths resolve against the YAML's folder, except a Hub id that names no local
    file or folder there."""
    if looks_like_url(json_path) or os.path.isabs(json_path):
        return json_path
    remote_root = looks_like_url(root)
    local = f"{root.rstrip('/')}/{json_path}" if remote_root else os.path.join(root, json_path)
    if not remote_root and not os.path.exists(local) and is_hub_id(json_path):
        return json_path  # "org/name": a Hub dataset id
    return local


def table_rows(entry: MixtureEntry, data: DataArguments) -> datasets.Dataset:
    """The rows of a table source (a csv/parquet/arrow file, a saved dataset, a data folder or a Hub id) in Arrow
    format (media features not decoded), with their 0-based row number in `__row__`."""
    rows = _load_table(entry.json_path, *_config_and_split(entry, data), data.cache_dir)
    return rows.add_column("__row__", np.arange(len(rows))).with_format("arrow")


def stream_table_rows(entry: MixtureEntry, data: DataArguments) -> datasets.IterableDataset:
    """`table_rows` as a stream: nothing is copied into the cache, media features are not decoded."""
    path, (config, split) = entry.json_path, _config_and_split(entry, data)
    builder = TABLE_BUILDERS.get(os.path.splitext(path)[1].lower())
    if is_saved_dataset(path):
        rows = _load_table(path, config, split, None).to_iterable_dataset()
    elif builder:
        rows = datasets.load_dataset(builder, data_files=path, split="train", streaming=True)
    else:
        rows = _hub_dataset(path, config, split, streaming=True)
    return rows.decode(False) if rows.features else rows


def _config_and_split(entry: MixtureEntry, data: DataArguments) -> tuple[str | None, str]:
    """A Hub or saved dataset's config and split: the mixture entry's own, else the run's."""
    return entry.dataset_config or data.dataset_config, entry.dataset_split or data.dataset_split


def _load_table(path: str, config: str | None, split: str, cache_dir: str | None) -> datasets.Dataset:
    builder = TABLE_BUILDERS.get(os.path.splitext(path)[1].lower())
    if builder:
        return datasets.load_dataset(builder, data_files=path, split="train", cache_dir=cache_dir)
    if is_saved_dataset(path):
        saved = datasets.load_from_disk(path)
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise ValueError(f"{path} holds the splits {sorted(saved)}, not {split!r}: pass --dataset_split")
            return saved[split]
        return saved
    return _hub_dataset(path, config, split, cache_dir=cache_dir)


def _hub_dataset(path: str, config: str | None, split: str, **kwargs):
    """`datasets.load_dataset` of a Hub id or a folder of data files, with errors that say what was tried."""
    try:
        return datasets.load_dataset(path, name=config, split=split, **kwargs)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{path}: not a data file, folder or Hub dataset ({err}). Pass a json/jsonl/csv/parquet/arrow file, a "
            "mixture YAML, WebDataset shards, a `save_to_disk` folder, or a Hub dataset id"
        ) from None
    except ValueError as err:  # an unknown split or config: datasets lists the available ones
        raise ValueError(f"{path}: {err} (choose with --dataset_split / --dataset_config)") from None


def shard_files(path: str) -> list[str]:
    """The `.tar` files a shard path names (a glob or one file), sorted; the manifest's folder is found from them."""
    files = sorted(glob.glob(path)) if glob.has_magic(path) else [path] if os.path.isfile(path) else []
    if not files:
        raise FileNotFoundError(f"{path}: no WebDataset shards found")
    return files
