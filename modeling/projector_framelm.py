"""The projector from vision features to LM embeddings, and the optional spatial pooling of video frames."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# The same functions as transformers' ACT2FN entries of these names; config validation lists the same names.
ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}
POOLS = {"average": F.avg_pool2d, "max": F.max_pool2d}


class FrameLMMultiModalProjector(nn.Module):
    """`linear` (LLaVA-1) or `mlp2x_gelu` (LLaVA-1.5). Layer names follow transformers' LLaVA (`linear_1`,
    `linear_2`) so that PEFT target patterns written for LLaVA carry over; activation and biases are settable so that
    any llava-hf projector (`projector_hidden_act`, `multimodal_projector_bias`) maps onto this one exactly."""

    def __init__(
        self,
        vision_hidden_size: int,
        text_hidden_size: int,
        projector_type: str,
        hidden_act: str = "gelu",
        bias: bool = True,
    ):
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden_size, text_hidden_size, bias=bias)
        if projector_type == "mlp2x_gelu":
            if hidden_act not in ACTIVATIONS:
                raise ValueError(f"hidden_act={hidden_act!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
            self.act = ACTIVATIONS[hidden_act]()
            self.linear_2 = nn.Linear(text_hidden_size, text_hidden_size, bias=bias)
        elif projector_type != "linear":
            raise ValueError(f"projector_type={projector_type!r} is not supported; choose 'linear' or 'mlp2x_gelu'")

    @classmethod
    def from_config(cls, config) -> FrameLMMultiModalProjector:
        """The projector a `FrameLMConfig` describes."""
        return cls(
            config.vision_config.hidden_size,
            config.text_config.hidden_size,
            config.projector_type,
            hidden_act=config.projector_hidden_act,
            bias=config.projector_bias,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.linear_1(features)
        if hasattr(self, "linear_2"):
            hidden = self.linear_2(self.act(hidden))
        return hidden


def pool_frame_features(features: torch.Tensor, grid: int, stride: int, mode: str = "average") -> torch.Tensor:
    """Average- or max-pool each frame's grid x grid patch tokens by `stride`: (N, g*g, D) -> (N, (g // stride)**2, D).

    Pooling before the projector (as LLaVA-NeXT-Video's resampler does) makes long videos affordable: stride 2 keeps
    a quarter of the tokens per frame.
    """
    if stride == 1:
        return features
    n, tokens, dim = features.shape
    if tokens != grid * grid:
        raise ValueError(f"cannot pool {tokens} tokens per frame as a {grid}x{grid} grid")
    grid_features = features.transpose(1, 2).reshape(n, dim, grid, grid)  # (N, D, g, g)
    pooled = POOLS[mode](grid_features, kernel_size=stride, stride=stride)  # (N, D, g/s, g/s)
    return pooled.flatten(2).transpose(1, 2)  # (N, (g/s)^2, D)
