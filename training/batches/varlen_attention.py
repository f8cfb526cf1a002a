"""`sdpa_varlen`: SDPA over packed rows one sample at a time, the counterpart of flash-attention's varlen kernel for
CPUs and for GPUs without flash-attn.

On a packed row (`packing.py`), transformers' SDPA path builds a block-diagonal causal mask, which is correct, but the
kernel then computes every masked block: a 4096-token row of ten samples costs about ten times the attention of its
samples run one by one (`bench/packing.py` measures what this saves). This implementation finds the samples where
transformers' packed mask does (where `position_ids` restart) and runs
transformers' own `sdpa_attention_forward` on each sample's span with `is_causal`; every other call (a padding
mask, a KV cache, a non-causal tower) goes to that function unchanged. The model config does not save it: a trained
model loads with the implementation its user picks.
"""

from __future__ import annotations

import logging

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

logger = logging.getLogger(__name__)

SDPA_VARLEN = "sdpa_varlen"


def sdpa_varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """`query` (B, H, L, D), `key`/`value` (B, H_kv, L, D) -> ((B, L, H, D), None), as `sdpa_attention_forward`."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is not None or not causal or query.shape[2] != key.shape[2] or query.shape[2] == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    batch, _, length, _ = query.shape
    rows = []
    for row, bounds in enumerate(_sample_bounds(batch, length, kwargs.get("position_ids"))):
        spans = [
            sdpa_attention_forward(module, *(x[row : row + 1, :, start:end] for x in (query, key, value)), None,
                                   dropout, scaling, is_causal=True)[0]
            for start, end in zip(bounds[:-1], bounds[1:], strict=True)
        ]  # fmt: skip
        rows.append(torch.cat(spans, dim=1))  # (1, L, H, D)
    return torch.cat(rows), None


def _sample_bounds(batch: int, length: int, position_ids: torch.Tensor | None) -> list[list[int]]:
    """Where each sample starts in each row, and the row's end: where `position_ids` do not go up by one, the rule of
    transformers' packed mask (one sample per row without them). Position ids, not `cu_seq_lens`: they stay right
    when accelerate splits a batch between processes along its rows."""
    if position_ids is None:
        return [[0, length]] * batch
    steps = position_ids.expand(batch, length).diff(dim=-1) != 1  # (B, L - 1)
    return [[0, *(torch.nonzero(row).flatten() + 1).tolist(), length] for row in steps]


def _sdpa_varlen_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor | None:
    """No mask where the attention finds the samples itself (no padding mask given), else SDPA's own mask: a packed
    row's (L, L) block-diagonal mask would only be built to be ignored."""
    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(SDPA_VARLEN, sdpa_varlen_attention_forward)
AttentionMaskInterface.register(SDPA_VARLEN, _sdpa_varlen_mask)
assert SDPA_VARLEN in ALL_MASK_ATTENTION_FUNCTIONS, "the mask function must be known to every model's mask builder"


def attend_sample_by_sample(model) -> None:
    """Switch the language model from SDPA to `sdpa_varlen` for training on packed or padding-free batches; other
    implementations stay (flash-attention has its own varlen kernel; eager is kept for what it is used for)."""
    text_config = model.config.get_text_config()
    if text_config._attn_implementation != "sdpa":
        return
    model.set_attn_implementation({"text_config": SDPA_VARLEN})
    logger.info("packed batches: the language model attends one sample at a time (%s)", SDPA_VARLEN)
