"""FrameLMConfig: which vision tower, which causal LM, and the few numbers that tie them together.

Hub payload: imports only the public transformers API. The token counts the processor needs (tokens per image,
per video frame, per video) are derived here from the tower's own config, so they cannot drift from the weights.
"""

from __future__ import annotations

import copy
import math

from transformers import AutoConfig, PreTrainedConfig

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
# Activations between the two layers of `mlp2x_gelu`, named as transformers' `ACT2FN` names them (LLaVA configs'
# `projector_hidden_act`); each is the same function as transformers' (`gelu` is the exact erf GELU).
PROJECTOR_ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "relu", "silu")
VIDEO_POOLING_MODES = ("average", "max")  # LLaVA-NeXT-Video's `spatial_pool_mode` names
FEATURE_SELECT_STRATEGIES = ("default", "full")  # default: drop the CLS token when the tower has one (as LLaVA does)
SPLICE_CHOICES = (None, "first", "middle", "last")
# As transformers' LLaVA: `AutoModel` is the base model without the LM head (vLLM's Transformers backend loads it and
# adds its own head), the generating auto classes the model with it.
AUTO_MAP = {
    "AutoConfig": "configuration_framelm.FrameLMConfig",
    "AutoModel": "modeling_framelm.FrameLMModel",
    "AutoModelForImageTextToText": "modeling_framelm.FrameLMForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_framelm.FrameLMForConditionalGeneration",
}
# transformers' own video pipeline ("any-to-any") needs torchvision; ours needs only the FrameLM processor.
CUSTOM_PIPELINES = {
    "video-text-to-text": {
        "impl": "pipeline_framelm.FrameLMVideoTextToTextPipeline",
        "pt": ["AutoModelForImageTextToText"],
        "type": "multimodal",
    }
}
# Towers whose output sequence starts with one CLS token before the patch tokens.
TOWERS_WITH_CLS_TOKEN = ("clip_vision_model",)
# Towers that take pre-cut patches (NaFlex) instead of an image tensor; we feed them a fixed square grid.
PATCH_INPUT_TOWERS = ("siglip2_vision_model",)


def _as_config(value: dict | PreTrainedConfig | None, default_model_type: str, name: str) -> PreTrainedConfig:
    if isinstance(value, PreTrainedConfig):
        return value
    value = dict(value or {})
    model_type = value.pop("model_type", default_model_type)
    try:
        return AutoConfig.for_model(model_type, **value)
    except ValueError as err:
        raise ValueError(f"{name}: cannot build a config for model_type={model_type!r}: {err}") from err


class FrameLMConfig(PreTrainedConfig):
    """A LLaVA-style composite config whose video side is first-class (fixed frames per video, optional pooling).

    Args:
        vision_config: config of any HF vision tower (CLIP, SigLIP, SigLIP2), as a config or a dict with `model_type`.
        text_config: config of any HF causal LM (Llama, Qwen2/3, Mistral, Gemma, ...).
        projector_type: `linear` or `mlp2x_gelu` (LLaVA-1.5's two-layer MLP).
        projector_hidden_act: activation between the two layers of `mlp2x_gelu` (`gelu` as LLaVA-1.5).
        projector_bias: whether the projector's linear layers have biases (LLaVA's `multimodal_projector_bias`).
        vision_feature_layer: index into the tower's hidden states (-2 = penultimate layer, as LLaVA).
        vision_feature_select_strategy: `default` drops the CLS token of towers that have one, `full` keeps it.
        image_token_id, video_token_id: ids of the `<image>` and `<video>` placeholder tokens in the tokenizer.
        num_frames: frames sampled from every video (fixed, as NeMo Video-NeVA: short videos repeat frames).
        video_pooling_stride: pool each frame's patch grid by this stride (1 = no pooling), dividing the tokens
            per frame by stride**2; images are never pooled.
        video_pooling_mode: `average` or `max` pooling of that grid (LLaVA-NeXT-Video's `spatial_pool_mode`).
        base_model: the checkpoint this model's weights were imported from (`framelm init --from-llava`), so that
            model cards can name it; None for models built from a tower and an LM.
    """

    model_type = "framelm"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        vision_config: dict | PreTrainedConfig | None = None,
        text_config: dict | PreTrainedConfig | None = None,
        projector_type: str = "mlp2x_gelu",
        projector_hidden_act: str = "gelu",
        projector_bias: bool = True,
        vision_feature_layer: int = -2,
        vision_feature_select_strategy: str = "default",
        image_token_id: int | None = None,
        video_token_id: int | None = None,
        num_frames: int = 8,
        video_pooling_stride: int = 1,
        video_pooling_mode: str = "average",
        base_model: str | None = None,
        tie_word_embeddings: bool | None = None,
        **kwargs,
    ):
        self.vision_config = _as_config(vision_config, "siglip_vision_model", "vision_config")
        self.text_config = _as_config(text_config, "llama", "text_config")
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type={projector_type!r} is not supported; choose one of {PROJECTOR_TYPES}")
        if projector_hidden_act not in PROJECTOR_ACTIVATIONS:
            raise ValueError(
                f"projector_hidden_act={projector_hidden_act!r} is not supported; "
                f"choose one of {PROJECTOR_ACTIVATIONS}"
            )
        if video_pooling_mode not in VIDEO_POOLING_MODES:
            raise ValueError(
                f"video_pooling_mode={video_pooling_mode!r} is not supported; choose one of {VIDEO_POOLING_MODES}"
            )
        if vision_feature_select_strategy not in FEATURE_SELECT_STRATEGIES:
            raise ValueError(
                f"vision_feature_select_strategy={vision_feature_select_strategy!r} is not supported; "
                f"choose one of {FEATURE_SELECT_STRATEGIES}"
            )
        num_layers = self.vision_config.num_hidden_layers
        if not -(num_layers + 1) <= vision_feature_layer <= num_layers:
            raise ValueError(
                f"vision_feature_layer={vision_feature_layer} is outside the tower's hidden states "
                f"(embeddings + {num_layers} layers: use -{num_layers + 1}..{num_layers})"
            )
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be at least 1")
        if video_pooling_stride < 1:
            raise ValueError(f"video_pooling_stride={video_pooling_stride} must be at least 1 (1 = no pooling)")
        self.projector_type = projector_type
        self.projector_hidden_act = projector_hidden_act
        self.projector_bias = projector_bias
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.num_frames = num_frames
        self.video_pooling_stride = video_pooling_stride
        self.video_pooling_mode = video_pooling_mode
        self.base_model = base_model
        if video_pooling_stride > 1 and self.vision_cls_tokens_kept:
            raise ValueError(
                "video_pooling_stride > 1 pools the patch grid, which a kept CLS token breaks: "
                "use vision_feature_select_strategy='default' with pooling"
            )
        if self.vision_grid % video_pooling_stride:
            raise ValueError(
                f"video_pooling_stride={video_pooling_stride} does not divide the {self.vision_grid}x"
                f"{self.vision_grid} patch grid of the vision tower"
            )
        if tie_word_embeddings is None:  # the LM decides, as it was pretrained
            tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        kwargs.setdefault("custom_pipelines", dict(CUSTOM_PIPELINES))
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def tower_config(self) -> PreTrainedConfig:
        """The vision config trimmed to what the features need: the layers up to `vision_feature_layer` and no
        pooling head. The dropped layers would cost time and, when the tower trains, leave parameters without
        gradients (DDP errors on those)."""
        tower = copy.deepcopy(self.vision_config)
        tower.num_hidden_layers = self.vision_feature_layer % (self.vision_config.num_hidden_layers + 1)
        if hasattr(tower, "vision_use_head"):
            tower.vision_use_head = False
        return tower

    @property
    def vision_grid(self) -> int:
        """Patches per side of the square image the tower sees."""
        if self.vision_config.model_type in PATCH_INPUT_TOWERS:
            return math.isqrt(self.vision_config.num_patches)
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def vision_image_size(self) -> int:
        """Side in pixels of the square images and frames the processor must produce."""
        return self.vision_grid * self.vision_config.patch_size

    @property
    def vision_cls_tokens_kept(self) -> int:
        has_cls = self.vision_config.model_type in TOWERS_WITH_CLS_TOKEN
        return int(has_cls and self.vision_feature_select_strategy == "full")

    @property
    def tokens_per_image(self) -> int:
        """(image_size // patch_size) ** 2, e.g. 256 for 224 px and patch 14; +1 if a CLS token is kept."""
        return self.vision_grid**2 + self.vision_cls_tokens_kept

    @property
    def tokens_per_frame(self) -> int:
        """Tokens of one video frame after the optional spatial pooling."""
        if self.video_pooling_stride == 1:
            return self.tokens_per_image
        return (self.vision_grid // self.video_pooling_stride) ** 2

    @property
    def tokens_per_video(self) -> int:
        return self.num_frames * self.tokens_per_frame


# Saving copies this file beside config.json and writes `auto_map`, so the config loads without framelm installed.
FrameLMConfig.register_for_auto_class()
