"""`framelm data convert`: any supported source (or a mixture) -> the normalized Arrow dataset or WebDataset shards.

    framelm data convert train.json --out data/arrow                        # datasets.load_from_disk("data/arrow")
    framelm data convert mix.yaml --out data/wds --to webdataset --split 9,1,0

Arrow keeps media as they were (paths, embedded bytes); WebDataset shards carry every sample's media inside them
(`shard_writer.py`, layout in `shards.py`) and read back with `framelm train --dataset data/wds`, `datasets`,
`webdataset` and megatron-energon. Either output replaces an earlier convert output as a whole, atomically; a folder
holding anything convert did not write (`.git`, a LICENSE, annotations: judged by the record `atomic_write.py` keeps in
each output) is refused before any work, never mixed with (a glob over old and new shards would read both) or deleted.
"""

from __future__ import annotations

import os

from framelm.training.atomic_write import folder_written_beside, refuse_foreign
from framelm.training.data.loading import LoadedSamples
from framelm.training.data.policy import require_records
from framelm.training.data.shard_writer import split_counts

WRITTEN_BY = "framelm data convert"  # both outputs: either may replace the other


def save_arrow(loaded: LoadedSamples, out_dir: str, num_proc: int | None = None) -> None:
    """`save_to_disk` of the samples (replacing `out_dir` as a whole); `load_samples(out_dir)` and
    `datasets.load_from_disk` read it back."""
    require_records(len(loaded.dataset), loaded.total, out_dir)
    with folder_written_beside(out_dir, WRITTEN_BY) as partial:
        loaded.dataset.save_to_disk(str(partial), num_proc=num_proc if num_proc and num_proc > 1 else None)


def check_output_folder(out_dir: str) -> None:
    """Refuse an output folder that holds anything but an earlier convert output, before any work is done."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} is a file; give a folder")
    fix = "choose another folder or move those files away (convert replaces only its own outputs, as a whole)"
    refuse_foreign(out_dir, WRITTEN_BY, fix)


def parse_split(text: str) -> tuple[float, ...]:
    try:
        weights = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--split {text!r}: give three numbers, e.g. 9,1,0") from None
    split_counts(0, weights)  # checks them
    return weights
