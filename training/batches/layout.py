"""How a run lays out its batches (TRL's packing fields): which rows are packed and the collator that pads them.

It sits above both the collator and the packer, which know nothing of each other's choice of layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from framelm.training.batches.collator import FrameLMCollator
from framelm.training.batches.packing import pack_rows


@dataclass(frozen=True)
class BatchLayout:
    """How training batches are laid out, from TRL's `SFTConfig` fields of the same names (`from_args`)."""

    packing: bool = False  # training rows are whole samples packed up to max_length (`pack_rows`)
    eval_packing: bool | None = None  # the same for the evaluation data; None: as `packing`
    padding_free: bool = False  # each batch is one row: its samples (or packed rows) one after the other
    pad_to_multiple_of: int | None = None  # rows padded to a multiple of this many tokens
    seed: int = 0  # which samples share a row

    @classmethod
    def from_args(cls, args) -> BatchLayout:
        return cls(args.packing, args.eval_packing, args.padding_free, args.pad_to_multiple_of, args.seed)

    @property
    def packs(self) -> bool:
        """Whether any batch (training or evaluation) holds several samples per row."""
        return self.packing or self.padding_free or bool(self.eval_packing)

    def collator(self, processor, bad_records: str = "strict") -> FrameLMCollator:
        """The collator that lays batches out this way."""
        return FrameLMCollator(processor, self.pad_to_multiple_of, self.padding_free, bad_records)

    def rows(self, dataset: datasets.Dataset | None, max_length: int | None, evaluation: bool = False):
        """`dataset` packed when this layout packs it (training, or evaluation under `eval_packing`), else as is."""
        packs = self.packing if not evaluation or self.eval_packing is None else self.eval_packing
        return pack_rows(dataset, max_length, self.seed) if packs and dataset is not None else dataset
