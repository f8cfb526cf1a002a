"""Reading placeholder expansions back out of token ids."""

from __future__ import annotations

import torch


def runs(ids: torch.Tensor, token_id: int) -> list[int]:
    """Lengths of the consecutive runs of `token_id` in a 1-D id tensor: one run per expanded placeholder."""
    lengths, current = [], 0
    for value in ids.tolist() + [None]:
        if value == token_id:
            current += 1
        elif current:
            lengths.append(current)
            current = 0
    return lengths
