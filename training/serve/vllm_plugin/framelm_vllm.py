"""Loaded by vLLM, not by framelm: a logits processor that keeps a served FrameLM from emitting `<image>`/`<video>`.

Under transformers the model itself gives those tokens -inf logits at inference; vLLM computes logits with its own
head (never the model's `forward`) and reads no `suppress_tokens`, so the same rule is applied here, to every
request: the ids come from the served model's config (`image_token_id`, `video_token_id`). `framelm serve` puts this
folder on vLLM's PYTHONPATH and passes `--logits-processors framelm_vllm:MediaTokenSuppressor`; with plain
`vllm serve`, do the same (or send `logit_bias` with each request). This folder is not a package of framelm: it
imports vLLM, which framelm's environment need not have.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor


class MediaTokenSuppressor(LogitsProcessor):
    """-inf on the media placeholder ids in every row of the batch (greedy included: not argmax invariant)."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        config = vllm_config.model_config.hf_config
        ids = (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
        self.token_ids = [int(i) for i in ids if i is not None]

    def is_argmax_invariant(self) -> bool:
        return not self.token_ids

    def update_state(self, batch_update) -> None:
        pass  # the same ids for every request: no per-request state

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.token_ids:
            logits[:, self.token_ids] = float("-inf")
        return logits
