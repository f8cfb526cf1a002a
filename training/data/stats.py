"""`framelm data stats`: the token budget of every record for one model's processor settings.

Text tokens, media tokens and their total per record, as percentiles and a histogram, and what a `max_length` would
do: how many records lose trailing exchanges, and how many could not be kept at all (their first exchange, media
included, does not fit). It reads the columns of the one length rule (`budget.measure_lengths`), which training
applies too; nothing is decoded, so this runs at tokenizer speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import datasets
import numpy as np

from framelm.training.data.budget import truncation_counts

PERCENTILES = (50, 90, 95, 99, 100)
BAR_WIDTH = 40  # characters of the longest histogram bar


@dataclass
class TokenStats:
    text: np.ndarray  # (N,) text tokens per record
    media: np.ndarray  # (N,) media tokens per record
    max_length: int | None = None
    shortened: int = 0  # records that keep only their leading exchanges at max_length
    dropped: int = 0  # records whose first exchange does not fit max_length
    modality: np.ndarray | None = None  # (N,) "text-only" | "image" | "video" | "image+video" per record
    steps_per_epoch: int | None = None  # optimizer steps of one pass, for the batch size given
    batch: str = ""  # how steps_per_epoch was counted

    @property
    def total(self) -> np.ndarray:
        return self.text + self.media

    def percentiles(self) -> dict[str, dict[int, int]]:
        """{"text"|"media"|"total": {percentile: tokens}}, rounded up to whole tokens."""
        columns = {"text": self.text, "media": self.media, "total": self.total}
        if not len(self.text):
            return {name: dict.fromkeys(PERCENTILES, 0) for name in columns}
        return {
            name: {q: int(np.ceil(np.percentile(values, q))) for q in PERCENTILES} for name, values in columns.items()
        }

    def histogram(self, bins: int = 10) -> list[tuple[int, int, int]]:
        """(low, high, records) of the total tokens, in equal-width bins."""
        if not len(self.text):
            return []
        counts, edges = np.histogram(self.total, bins=bins)
        return [(int(lo), int(hi), int(n)) for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)]

    def table(self, bins: int = 10) -> str:
        lines = [
            f"{len(self.text):,} records",
            "",
            f"  {'tokens':<8}" + "".join(f"{'p' + str(q):>10}" for q in PERCENTILES),
        ]
        for name, values in self.percentiles().items():
            lines.append(f"  {name:<8}" + "".join(f"{values[q]:>10,}" for q in PERCENTILES))
        if self.modality is not None and len(self.text):
            lines += ["", f"  {'modality':<12}{'records':>10}{'text tokens':>14}{'media tokens':>14}"]
            for kind in MODALITIES:
                chosen = self.modality == kind
                if chosen.any():
                    lines.append(f"  {kind:<12}{int(chosen.sum()):>10,}{int(self.text[chosen].sum()):>14,}"
                                 f"{int(self.media[chosen].sum()):>14,}")  # fmt: skip
        if self.steps_per_epoch is not None:
            lines += ["", f"  steps per epoch: {self.steps_per_epoch:,} ({self.batch})"]
        histogram = self.histogram(bins)
        if histogram:
            peak = max(n for _, _, n in histogram) or 1
            lines += ["", "  total tokens         records"]
            for lo, hi, n in histogram:
                lines.append(f"  {lo:>8,}-{hi:<8,}{n:>10,}  {'#' * round(BAR_WIDTH * n / peak)}")
        if self.max_length is not None:
            cut = int((self.total > self.max_length).sum())
            lines += [
                "",
                f"  max_length {self.max_length:,}: {cut:,} records are longer; {self.shortened:,} keep their leading "
                f"exchanges, {self.dropped:,} cannot be kept (first exchange too long)",
            ]
        return "\n".join(lines)


MODALITIES = ("text-only", "image", "video", "image+video")


def modality_of(media: list[dict]) -> str:
    kinds = {"video" if item["kind"] in ("video", "frames") else "image" for item in media or ()}
    return "+".join(k for k in ("image", "video") if k in kinds) or "text-only"


def steps_per_epoch(records: int, batch_size: int, accumulation: int = 1, processes: int = 1) -> int:
    """Optimizer steps of one pass over `records`, as the Trainer counts them (the last partial batch counts)."""
    return math.ceil(math.ceil(records / (batch_size * processes)) / accumulation) if records else 0


def token_stats(
    measured: datasets.Dataset, max_length: int | None = None, batch: tuple[int, int, int] | None = None
) -> TokenStats:
    """Token counts of every row of a dataset measured by `budget.measure_lengths` (with the same `max_length`);
    `batch`: (per-device batch size, gradient accumulation steps, processes) for the steps per epoch."""
    table = measured.select_columns(["total_tokens", "media_tokens"]).with_format("numpy")[:]
    total = np.asarray(table["total_tokens"], dtype=np.int64)
    media = np.asarray(table["media_tokens"], dtype=np.int64)
    shortened, dropped = truncation_counts(measured) if max_length is not None else (0, 0)
    modality = None
    if "media" in measured.column_names:
        modality = np.array([modality_of(m) for m in measured.select_columns(["media"])["media"]], dtype=object)
    steps, described = None, ""
    if batch is not None:
        size, accumulation, processes = batch
        steps = steps_per_epoch(len(total), size, accumulation, processes)
        described = (
            f"{len(total):,} records, {size} per device x {processes} process(es) x {accumulation} accumulation"
        )
    return TokenStats(text=total - media, media=media, max_length=max_length, shortened=shortened, dropped=dropped,
                      modality=modality, steps_per_epoch=steps, batch=described)  # fmt: skip
