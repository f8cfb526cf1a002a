"""The bad-record policy inside DataLoader workers: a record whose media cannot be read while training.

`framelm data validate` reads media as training will, but files change, URLs go away and disks fail mid-epoch. The
collator encodes each row through `encode_rows`: under `--bad_records strict` the first such record stops training
with its file, line and id; under `skip` it is left out of its batch, logged by the worker, and counted. Workers are
separate processes, so the count travels with the batch: under `skip` every batch holds `SKIPPED_KEY`, a (B,) tensor
whose sum is the number of records left out of it (one value per row, so that accelerate may split and concatenate
batches), which `FrameLMTrainer` takes out before the forward pass and adds up over steps and ranks.

A batch whose every record failed becomes one row with nothing to learn (`nothing_to_learn`): every rank still runs
its forward and backward pass (DDP and ZeRO wait for each rank's gradients), and the trainer gives it a zero loss.

Interface for a collator: `encoded, skipped = encode_rows(self.encode, rows, self.bad_records)`, collate
`encoded or [nothing_to_learn()]`, then `with_skip_count(batch, skipped, self.bad_records)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from framelm.training.batches.padding import IGNORE_INDEX
from framelm.training.data.policy import DataError

logger = logging.getLogger(__name__)

SKIPPED_KEY = "skipped_records"
# what reading a record's media raises: missing or vanished files, undecodable data, fetch failures and timeouts,
# a media library or fsspec backend not installed, placeholder counts the decoded media do not fit
MEDIA_ERRORS = (ValueError, OSError, ImportError, EOFError)


class RecordReadError(DataError):
    """A record whose media cannot be read in training, under `--bad_records strict`; names file, line and id."""

    def __init__(self, message: str):
        # a DataLoader worker's exception reaches the main process rebuilt from "Caught ... Original Traceback ...
        # RecordReadError: <message>": keep the message, so the command prints one clear error, not a traceback
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].rstrip()
        super().__init__(message)


def encode_rows(encode: Callable[[dict], dict], rows: list[dict], policy: str) -> tuple[list[dict], int]:
    """`encode(row)` for each row; under `skip`, the rows whose media fail are left out and counted."""
    encoded, skipped = [], 0
    for row in rows:
        try:
            encoded.append(encode(row))
        except MEDIA_ERRORS as err:
            where = f"{row.get('where') or '?'} (id={row.get('id') or ''})"
            if policy != "skip":
                raise RecordReadError(
                    f"{where}: {err}\nFix or remove the record (`framelm data validate` reads media as training "
                    "does), or pass --bad_records skip to leave such records out and count them."
                ) from err
            logger.warning("skipping %s while training: %s", where, err)
            skipped += 1
    return encoded, skipped


def nothing_to_learn() -> dict[str, torch.Tensor]:
    """One token with no label: what a batch becomes when each of its records was skipped."""
    return {"input_ids": torch.zeros(1, dtype=torch.long), "labels": torch.full((1,), IGNORE_INDEX)}


def with_skip_count(batch: dict[str, torch.Tensor], skipped: int, policy: str) -> dict[str, torch.Tensor]:
    """Under `skip`, add `SKIPPED_KEY`: (B,) with the batch's count on its first row."""
    if policy == "skip":
        counts = torch.zeros(batch["input_ids"].shape[0], dtype=torch.long)
        counts[0] = skipped
        batch[SKIPPED_KEY] = counts
    return batch


def is_nothing_to_learn(batch: dict[str, torch.Tensor]) -> bool:
    """Whether the batch has labels and none of them carries a loss (a `nothing_to_learn` batch)."""
    labels = batch.get("labels")
    return labels is not None and not bool((labels != IGNORE_INDEX).any())
