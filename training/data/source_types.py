"""The types a data source is described and read with, shared by every module of the data flow (a leaf: it imports
no other data module but `sample.py`): a mixture entry and its sampling strategy (one per data file, table or Hub
dataset read through the readers), and `LoadedSamples`, what reading a source into the Arrow cache gives.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field

import datasets
import numpy as np

from framelm.training.data.sample import RecordProblem

JSON_SUFFIXES = (".json", ".jsonl")
TABLE_BUILDERS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
STRATEGY_PATTERN = re.compile(r"^(all|full)$|^(dup|random|first|end):(\d+(?:\.\d+)?)(%?)$")


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
        if not percent and amount != int(amount):  # random:0.5 would select int(0.5) = 0 rows
            raise ValueError(
                f"sampling_strategy {text!r}: {kind}:N takes a whole number of rows; for a fraction of the rows "
                f"write a percentage ({kind}:{amount * 100:g}%)"
            )
        if amount == 0:
            raise ValueError(f"sampling_strategy {text!r} selects no rows; remove the entry instead")
        if percent and amount > 100:
            raise ValueError(f"sampling_strategy {text!r} asks for more than all rows; repeat rows with dup:N")
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
    label: str = ""  # how errors name the entry: "mix.yaml: dataset 2 (captions)"; "" for a single data file
    trust_code: bool = False  # preprocess_fn may be any import path (--trust-preprocess-code, a local YAML)

    @property
    def is_table(self) -> bool:
        """Rows, not JSON records: csv/parquet/arrow files, saved datasets and Hub datasets (`sources.py`)."""
        return not self.json_path.lower().endswith(JSON_SUFFIXES)


@dataclass
class LoadedSamples:
    """What `load_samples` read: usable samples, the problems of the others, and the counts that add up."""

    dataset: datasets.Dataset  # SAMPLE_FEATURES
    problems: list[RecordProblem]
    total: int  # records read (after mixture sampling): len(dataset) + len(problems) + left_out
    left_out: int = 0  # rows a mixture's preprocess_fn left out on purpose (e.g. below `aes_cutoff`)
    formats: dict[str, str] = field(default_factory=dict)  # source -> format used
