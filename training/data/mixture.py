"""Dataset mixtures (LaViDa-O / LLaVA-NeXT style YAML): which files, how much of each, and how rows become records.

    datasets:                              # or a bare list at the top level
      - name: captions
        json_path: s3://bucket/laion.parquet   # json, jsonl, csv, parquet, arrow (local or fsspec URL), or a
                                           # save_to_disk folder or Hub dataset id (with dataset_config/_split)
        sampling_strategy: random:10%      # all | full | dup:N | random:N | random:P% | first:N | end:N
        preprocess_fn: image_caption       # a registered function (or "package.module:function")
        columns: [url, caption, aesthetic, height, width]
        aes_cutoff: 5.5                    # any other key is passed to preprocess_fn
        min_size: 256
      - name: llava
        json_path: llava_v1_5_mix665k.json  # no preprocess_fn: rows are records in a supported format
        sampling_strategy: dup:2

The YAML itself may live at an fsspec URL; relative `json_path`s resolve against its folder. Sampling is seeded by the
run's seed and the entry's name, so a mixture picks the same rows on every machine and adding an entry does not change
what the others pick.
"""

from __future__ import annotations

import importlib
import math
import posixpath
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import fsspec
import numpy as np
import yaml

from framelm.training.data.sources import (
    JSON_SUFFIXES,
    TABLE_BUILDERS,
    folder_of,
    is_dataset_reference,
    resolve_entry_path,
)

PREPROCESS_FNS: dict[str, Callable] = {}
STRATEGY_PATTERN = re.compile(r"^(all|full)$|^(dup|random|first|end):(\d+(?:\.\d+)?)(%?)$")
DATA_SUFFIXES = (*JSON_SUFFIXES, *TABLE_BUILDERS)


def register_preprocess(name: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator: make `fn(row: dict, **entry_keys) -> record | Sample | None` usable as a mixture's `preprocess_fn`.

    `row` holds the entry's `columns` (all columns when not given), in that order. Return a record in any supported
    format (LLaVA conversations are the usual choice), a `Sample`, or None to leave the row out on purpose (e.g. below
    an aesthetic cutoff); left-out rows are counted and logged.
    """

    def register(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in PREPROCESS_FNS and PREPROCESS_FNS[key] is not fn:
            raise ValueError(f"preprocess_fn {key!r} is already registered (by {PREPROCESS_FNS[key].__module__})")
        PREPROCESS_FNS[key] = fn
        return fn

    return register


def get_preprocess(name: str) -> Callable:
    """A registered function by name, or `package.module:function` (importing the module registers its functions)."""
    if ":" in name:
        module, _, attribute = name.partition(":")
        fn = getattr(importlib.import_module(module), attribute, None)
        if fn is None:
            raise ValueError(f"preprocess_fn {name!r}: module {module!r} has no {attribute!r}")
        return fn
    if name not in PREPROCESS_FNS:
        raise ValueError(
            f"preprocess_fn {name!r} is not registered; registered: {sorted(PREPROCESS_FNS)}. Register yours with "
            "@framelm.training.mixture.register_preprocess, or name it as 'package.module:function'"
        )
    return PREPROCESS_FNS[name]


@dataclass(frozen=True)
class SamplingStrategy:
    """How many rows of a dataset a mixture uses, and which."""

    kind: str  # all | dup | random | first | end
    amount: float = 1  # a count, a percentage or a number of copies
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> SamplingStrategy:
        match = STRATEGY_PATTERN.match(str(text).strip())
        if not match or (match.group(2) == "dup" and match.group(4)):
            raise ValueError(
                f"sampling_strategy {text!r} is not one of: all, full, dup:N, random:N, random:P%, first:N, end:N "
                "(first, end and random also take P%)"
            )
        if match.group(1):
            return cls("all")
        kind, amount, percent = match.group(2), float(match.group(3)), bool(match.group(4))
        if kind == "dup" and (amount != int(amount) or amount < 1):
            raise ValueError(f"sampling_strategy {text!r}: dup takes a whole number of copies (dup:2)")
        return cls(kind, amount, percent)

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return f"{self.kind}:{self.amount:g}{'%' * self.percent}"

    def count(self, n: int) -> int:
        """Rows selected from `n` (ceil for percentages, as LLaVA-NeXT does; never more than `n` except for dup)."""
        if self.kind == "all":
            return n
        if self.kind == "dup":
            return n * int(self.amount)
        wanted = math.ceil(self.amount * n / 100) if self.percent else int(self.amount)
        return min(wanted, n)

    def indices(self, n: int, seed: int, name: str) -> np.ndarray:
        """Row numbers to use, in file order (the trainer shuffles), seeded by (seed, name) for `random`."""
        k = self.count(n)
        if self.kind == "all":
            return np.arange(n)
        if self.kind == "dup":
            return np.tile(np.arange(n), int(self.amount))
        if self.kind == "first":
            return np.arange(k)
        if self.kind == "end":
            return np.arange(n - k, n)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        return np.sort(rng.choice(n, size=k, replace=False))


@dataclass(frozen=True)
class MixtureEntry:
    """One dataset of a mixture; `kwargs` are the extra YAML keys, passed to `preprocess_fn`."""

    name: str
    json_path: str
    sampling_strategy: SamplingStrategy = SamplingStrategy("all")
    preprocess_fn: str | None = None
    columns: tuple[str, ...] | None = None
    format: str = "auto"
    image_folder: str | None = None
    video_folder: str | None = None
    user_key: str | None = None
    assistant_key: str | None = None
    dataset_config: str | None = None  # of a Hub dataset (`json_path: org/name`)
    dataset_split: str | None = None  # of a Hub dataset or saved DatasetDict (default: the run's --dataset_split)
    kwargs: dict = field(default_factory=dict)

    @property
    def is_table(self) -> bool:
        """Rows, not JSON records: csv/parquet/arrow files, saved datasets and Hub datasets (`sources.py`)."""
        return not self.json_path.lower().endswith(JSON_SUFFIXES)


def is_mixture(path: str) -> bool:
    return str(path).lower().endswith((".yaml", ".yml"))


def load_mixture(path: str) -> list[MixtureEntry]:
    """Parse and check a mixture YAML; every error names the file, the entry and the key."""
    with fsspec.open(path, "rt", encoding="utf-8") as f:  # a local file or any fsspec URL
        document = yaml.safe_load(f)
    entries = document.get("datasets") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: a mixture is a list of datasets (at the top level or under 'datasets:')")
    known = {f.name for f in fields(MixtureEntry)} - {"kwargs"}
    root = folder_of(path)
    result, names = [], set()
    for index, raw in enumerate(entries, start=1):
        label = f"{path}: dataset {index}"
        if not isinstance(raw, dict) or not raw.get("json_path"):
            raise ValueError(f"{label} needs at least a 'json_path' (and usually 'name' and 'sampling_strategy')")
        json_path = resolve_entry_path(str(raw["json_path"]), root)
        name = str(raw.get("name") or posixpath.splitext(posixpath.basename(json_path))[0])
        if name in names:
            raise ValueError(f"{label}: the name {name!r} is used twice; names seed the sampling and must differ")
        names.add(name)
        if not json_path.lower().endswith(DATA_SUFFIXES) and not is_dataset_reference(json_path):
            raise ValueError(
                f"{label} ({name}): json_path {json_path!r} must end in one of {DATA_SUFFIXES}, or be a dataset "
                "folder or Hub dataset id"
            )
        try:
            strategy = SamplingStrategy.parse(raw.get("sampling_strategy", "all"))
        except ValueError as err:
            raise ValueError(f"{label} ({name}): {err}") from None
        extra = {k: v for k, v in raw.items() if k not in known}
        if extra and not raw.get("preprocess_fn"):
            raise ValueError(
                f"{label} ({name}): keys {sorted(extra)} are only passed to a preprocess_fn, and none is given; "
                f"known keys: {sorted(known)}"
            )
        if raw.get("preprocess_fn"):
            get_preprocess(str(raw["preprocess_fn"]))  # fail now, not after reading the data
        columns = raw.get("columns")
        result.append(
            MixtureEntry(
                name=name,
                json_path=json_path,
                sampling_strategy=strategy,
                preprocess_fn=raw.get("preprocess_fn"),
                columns=tuple(columns) if columns else None,
                format=raw.get("format", "auto"),
                image_folder=raw.get("image_folder"),
                video_folder=raw.get("video_folder"),
                user_key=raw.get("user_key"),
                assistant_key=raw.get("assistant_key"),
                dataset_config=raw.get("dataset_config"),
                dataset_split=raw.get("dataset_split"),
                kwargs=extra,
            )
        )
    return result


def _caption_record(row: dict, kind: str, prompt: str, aes_cutoff, min_size) -> dict | None:
    values = list(row.values())
    if len(values) < 2:
        raise ValueError(f"needs at least two columns (media path, caption), got {list(row)}")
    path, caption = values[0], values[1]
    if aes_cutoff is not None and len(values) > 2 and (values[2] is None or float(values[2]) < aes_cutoff):
        return None
    if min_size is not None and len(values) > 4 and min(int(values[3] or 0), int(values[4] or 0)) < min_size:
        return None
    return {
        kind: path,
        "conversations": [
            {"from": "human", "value": f"<{kind}>\n{prompt}"},
            {"from": "gpt", "value": str(caption)},
        ],
    }


@register_preprocess("image_caption")
def image_caption(row: dict, prompt: str = "Describe the image briefly.", aes_cutoff=None, min_size=None):
    """Columns (image path, caption[, score, height, width]) -> a captioning exchange.

    Rows whose score is below `aes_cutoff`, or whose smaller side is below `min_size`, are left out.
    """
    return _caption_record(row, "image", prompt, aes_cutoff, min_size)


@register_preprocess("video_caption")
def video_caption(row: dict, prompt: str = "Describe the video briefly.", aes_cutoff=None, min_size=None):
    """Columns (video path or frame folder, caption[, score, height, width]) -> a captioning exchange."""
    return _caption_record(row, "video", prompt, aes_cutoff, min_size)
