"""Streaming: data larger than the disk cache, as a `datasets.IterableDataset` read while training goes.

    framelm train --config recipe.yaml --dataset data/wds                  # WebDataset shards always stream
    framelm train --config recipe.yaml --dataset mix.yaml --streaming --max_steps 10000

The source is read by the same stages as `load_samples` (`datasource.py`), chunk by chunk, so a row streamed is the
row `load_samples` would have produced. Bad records stop the stream (`strict`) or are left out with a warning each
(`skip`), by `PolicyGate`.
"""

from __future__ import annotations

import datasets

from framelm.training.data.arguments import DataArguments
from framelm.training.data.datasource import PolicyGate, open_source

__all__ = ["PolicyGate", "stream_samples"]


def stream_samples(data: DataArguments) -> datasets.IterableDataset:
    """`data.dataset` (any source) as a stream of `SAMPLE_FEATURES` rows."""
    return open_source(data).stream(data)
