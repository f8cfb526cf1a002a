"""The model card of `framelm export`: the card `framelm train` writes (model/card.py), with the judge's results.

Only Hub ids are published as such: a local path (a dataset file, a tower loaded from a folder) is shown by its base
name and kept out of the card's `datasets:` and `base_model:` metadata, which the Hub links to repositories.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from framelm.training.model.card import LLAVA_BENCH, card_data, public_name, write_card

__all__ = ["LLAVA_BENCH", "card_data", "evaluation_from_judge", "public_name", "write_card"]


def evaluation_from_judge(path: Path, candidate: str | None) -> dict:
    """The summary rows of one candidate in a `framelm judge` output json; an error when none of them is scored."""
    try:
        judged = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = judged.get("summary", [])
        candidates = sorted({row["candidate_model"] for row in rows})
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as err:
        raise ValueError(f"{path}: not the output json of `framelm judge` ({err})") from None
    if not candidates:
        raise ValueError(f"{path}: no summary rows; is this the output json of `framelm judge`?")
    if candidate is None and len(candidates) > 1:
        raise ValueError(f"{path} compares several models {candidates}: say which one this is with --candidate")
    candidate = candidate or candidates[0]
    if candidate not in candidates:
        raise ValueError(f"{path}: no results for --candidate {candidate!r}; it has {candidates}")
    mine = [row for row in rows if row["candidate_model"] == candidate]
    if not any(isinstance(row.get("relative"), (int, float)) and math.isfinite(row["relative"]) for row in mine):
        unparseable = max((row.get("unparseable", 0) for row in mine), default=0)
        raise ValueError(
            f"{path}: no scored review for {candidate!r} ({unparseable} unparseable): nothing to put in the card; "
            "rerun `framelm judge --retry-unparseable`, or export without --eval-results"
        )
    judges = sorted({review.get("judge", "") for review in judged.get("reviews", [])} - {""})
    return {"reference_model": mine[0]["reference_model"], "judge": ", ".join(judges) or "unknown", "rows": mine}
