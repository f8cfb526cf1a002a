"""`load_samples`: any data source -> normalized samples in a `datasets.Dataset` (the Arrow cache), plus every
problem. What the source is, and how it is read, is `datasource.py`'s; what happens to the bad records is the
caller's choice (`policy.py`).
"""

from __future__ import annotations

from framelm.training.data.arguments import DataArguments
from framelm.training.data.datasource import open_source
from framelm.training.data.raw import few_collections
from framelm.training.data.source_types import LoadedSamples

__all__ = ["LoadedSamples", "load_samples"]


def load_samples(data: DataArguments) -> LoadedSamples:
    """Read `data.dataset` (a data file, a mixture YAML, a table, a saved or Hub dataset, a `framelm data convert`
    folder, WebDataset shards) into normalized samples; problems of single records are returned, never raised."""
    with few_collections():
        return open_source(data).load(data)
