"""FrameLM: a vision tower, a projector and any HF causal LM, reading interleaved images and fixed-frame videos.

Hub payload: imports torch, the public transformers API (plus the documented `transformers.modeling_outputs`) and its
sibling files only, so a saved folder loads with `trust_remote_code=True` where framelm is not installed.

How it departs from transformers' LLaVA-NeXT-Video: every image and every video frame of a batch goes through the
tower in ONE batched pass (no per-modality passes), videos have a fixed frame count (NeMo Video-NeVA style, no
padding), and a text-only batch still runs the tower and projector when training in a multi-process job (or
evaluating with ZeRO-3/FSDP-sharded weights), so that DDP, ZeRO and FSDP find every rank in their collectives, but
never at inference (see `FrameLMModel._needs_blank_media_pass`). It runs on transformers 5.16 and later (`CACHE_KEY`).
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast

from .configuration_framelm import PATCH_INPUT_TOWERS, TOWERS_WITH_CLS_TOKEN, FrameLMConfig
from .pipeline_framelm import FrameLMVideoTextToTextPipeline  # noqa: F401  saved beside the model: custom_pipelines
from .projector_framelm import FrameLMMultiModalProjector, pool_frame_features

# The one compatibility rule for the KV cache keyword: transformers 5.24 renamed `past_key_values` to `cache` (in
# forward signatures and output fields). The saved folder runs on both sides of the rename (vLLM pins older
# transformers), so `forward` accepts either name and hands the LM the one its transformers reads.
CACHE_KEY = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
# what `from_pretrained` passes on to read a folder's config.json (local or on the Hub)
CONFIG_FILE_KEYS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")

logger = logging.getLogger(__name__)


def _cache_of(cache, kwargs: dict):
    """The KV cache of a forward call, under whichever name the caller used (and removed from `kwargs`)."""
    old = kwargs.pop("past_key_values", None)
    if cache is not None and old is not None:
        raise ValueError("pass the KV cache once: either `cache` or `past_key_values`")
    return cache if cache is not None else old


def _sharded_by_engine(module: nn.Module) -> bool:
    """Whether an engine that gathers `module`'s weights in every forward (ZeRO-3: parameters carry `ds_id`; FSDP2:
    parameters are DTensors) has sharded it."""
    param = next(module.parameters(), None)
    return param is not None and (hasattr(param, "ds_id") or type(param).__name__ == "DTensor")


def _drop_final_norm(tower: nn.Module) -> None:
    """LLaVA reads a hidden state before the tower's final LayerNorm; with the tower trimmed to the feature layer,
    that LayerNorm would be the only thing between the two, so it goes."""
    if isinstance(getattr(tower, "post_layernorm", None), nn.Module):
        tower.post_layernorm = nn.Identity()


class FrameLMPreTrainedModel(PreTrainedModel):
    config_class = FrameLMConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def post_init(self) -> None:
        super().post_init()
        # `post_init` gathers `_no_split_modules` from the tower's and the LM's class lists, which name modules of
        # their whole family (SigLIP's lists its text embeddings and pooling head). FSDP's auto-wrap refuses a name
        # the model does not contain, so only the classes really present stay.
        present = {type(module).__name__ for module in self.modules()}
        self._no_split_modules = {name for name in self._no_split_modules if name in present}

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`save_pretrained` as the registered FrameLM class, even when a wrapper has swapped the instance's class.

        FSDP2's `fully_shard` turns the instance into a subclass defined in torch
        (`FSDPFrameLMForConditionalGeneration`), and transformers writes the instance's class into `auto_map` and
        copies the file defining it: the folder would ship torch's `_fsdp_*.py` instead of ours and load nowhere.
        The nearest class that called `register_for_auto_class` is saved: a subclass meant to be saved as itself
        registers itself too.
        """
        wrapper = type(self)
        registered = next((cls for cls in wrapper.__mro__ if vars(cls).get("_auto_class")), wrapper)
        if registered is wrapper:
            return super().save_pretrained(save_directory, *args, **kwargs)
        self.__class__ = registered
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.__class__ = wrapper


class FrameLMModel(FrameLMPreTrainedModel):
    """Tower + projector + decoder, without the LM head. Module names follow transformers' LLaVA
    (`vision_tower`, `multi_modal_projector`, `language_model`) so that PEFT targets and habits carry over.

    `auto_map.AutoModel` names this class, as LLaVA's does: vLLM's Transformers backend builds it with
    `AutoModel.from_config` and puts its own LM head on it. `from_pretrained` on a folder saved from the generating
    model returns that model instead (see `from_pretrained`)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """The saved model: `FrameLMForConditionalGeneration` when `config.architectures` names it, else this base.

        Evaluation harnesses load `AutoModel.from_pretrained` for every VLM and call `generate` on it (lmms-eval's
        `huggingface` chat model does, whatever the model type), and a base model has no LM head to generate with.
        The folder's weights hold the head, so it is loaded with them; `.model` of the result is this base model.
        vLLM is unaffected: it builds the base with `AutoModel.from_config` and loads the weights itself.
        Subclasses load as themselves."""
        path, config = pretrained_model_name_or_path, kwargs.get("config")
        if cls is FrameLMModel and not isinstance(config, PreTrainedConfig):
            hub = {key: kwargs[key] for key in CONFIG_FILE_KEYS if key in kwargs}
            config = kwargs["config"] = cls.config_class.from_pretrained(config or path, **hub)
        if cls is FrameLMModel and "FrameLMForConditionalGeneration" in (config.architectures or ()):
            logger.info(
                "%s holds FrameLMForConditionalGeneration: loading it (with its LM head, so that `generate` works); "
                "its `.model` is the FrameLMModel base",
                path,
            )
            return FrameLMForConditionalGeneration.from_pretrained(path, *model_args, **kwargs)
        return super().from_pretrained(path, *model_args, **kwargs)

    def __init__(self, config: FrameLMConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.tower_config())
        _drop_final_norm(self.vision_tower)
        self.multi_modal_projector = FrameLMMultiModalProjector.from_config(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images or frames -> (N, T, D_vision) patch features of the configured layer."""
        config = self.config
        tower_kwargs = {}
        if config.vision_config.model_type in PATCH_INPUT_TOWERS:  # NaFlex towers take pre-cut patches
            grid, patch = config.vision_grid, config.vision_config.patch_size
            n, channels = pixels.shape[:2]
            patches = pixels.reshape(n, channels, grid, patch, grid, patch).permute(0, 2, 4, 3, 5, 1)
            pixels = patches.reshape(n, grid * grid, patch * patch * channels)  # (N, g*g, p*p*C)
            tower_kwargs["spatial_shapes"] = torch.tensor([[grid, grid]] * n, device=pixels.device)
            tower_kwargs["pixel_attention_mask"] = torch.ones(n, grid * grid, dtype=torch.long, device=pixels.device)
        pixels = pixels.to(self.vision_tower.dtype)
        # the tower is trimmed to end at the feature layer (see `FrameLMConfig.tower_config`)
        features = self.vision_tower(pixels, return_dict=True, **tower_kwargs).last_hidden_state
        if config.vision_config.model_type in TOWERS_WITH_CLS_TOKEN and not config.vision_cls_tokens_kept:
            features = features[:, 1:]
        return features

    def get_media_features(
        self, pixel_values: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Project all images (N_img, C, H, W) and video frames (N_vid, F, C, H, W) of a batch in one tower pass.

        Returns image embeddings (N_img, tokens_per_image, D) and video embeddings (N_vid, tokens_per_video, D).
        """
        config = self.config
        pixels = [p for p in (pixel_values, pixel_values_videos) if p is not None]
        pixels = [p if p.dim() == 4 else p.flatten(0, 1) for p in pixels]  # videos: (N_vid * F, C, H, W)
        features = self.encode_pixels(torch.cat(pixels) if len(pixels) > 1 else pixels[0])
        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        image_features, frame_features = features[:num_images], features[num_images:]
        frame_features = pool_frame_features(
            frame_features, config.vision_grid, config.video_pooling_stride, config.video_pooling_mode
        )
        # one projector call for every token of the batch
        tokens = torch.cat([image_features.flatten(0, 1), frame_features.flatten(0, 1)])
        projected = self.multi_modal_projector(tokens)
        image_tokens = image_features.shape[0] * image_features.shape[1]
        image_embeds = projected[:image_tokens].reshape(num_images, image_features.shape[1], projected.shape[-1])
        video_embeds = None
        if pixel_values_videos is not None:
            video_embeds = projected[image_tokens:].reshape(pixel_values_videos.shape[0], -1, projected.shape[-1])
        return (image_embeds if pixel_values is not None else None), video_embeds

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """(N_img, C, H, W) images -> `pooler_output` (N_img, tokens_per_image, D): the embeddings that replace the
        `<image>` tokens (the contract of transformers' VLMs, which vLLM's Transformers backend calls);
        `last_hidden_state` holds the tower's features before the projector."""
        return self._media_output(pixel_values, None)

    def get_video_features(self, pixel_values_videos: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """(N_vid, F, C, H, W) videos -> `pooler_output` (N_vid, F * tokens_per_frame, D), as `get_image_features`."""
        return self._media_output(None, pixel_values_videos)

    def _media_output(self, pixel_values, pixel_values_videos) -> BaseModelOutputWithPooling:
        image_embeds, video_embeds = self.get_media_features(pixel_values, pixel_values_videos)
        return BaseModelOutputWithPooling(pooler_output=image_embeds if video_embeds is None else video_embeds)

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor,
        image_features: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (B, L, D) of the `<image>` and `<video>` positions in `inputs_embeds`, each checked against the
        number of feature rows given for its kind (tokens per item come from the features, so a prompt may use another
        frame count than training did).

        The check reads the count on the host only where that costs nothing (a CPU tensor, outside torch.compile);
        on an accelerator or under compilation it is a device-side assert, so no forward waits for the device."""
        masks = []
        for kind, token_id, features in (
            ("image", self.config.image_token_id, image_features),
            ("video", self.config.video_token_id, video_features),
        ):
            mask = input_ids == token_id  # (B, L)
            expected = 0 if features is None else features.shape[0] * features.shape[1]
            _check_placeholder_count(mask, expected, kind, features)
            masks.append(mask.unsqueeze(-1).expand_as(inputs_embeds))
        return masks[0], masks[1]

    def _zero_media_contribution(self, like: torch.Tensor) -> torch.Tensor:
        """0 times the projected features of one blank image: the tower and projector run (and, in training, get a
        zero gradient) without changing the result. See `_needs_blank_media_pass` for when."""
        size = self.config.vision_image_size
        blank = torch.zeros(1, self.config.vision_config.num_channels, size, size, device=like.device)
        image_embeds, _ = self.get_media_features(pixel_values=blank)
        return image_embeds.sum().to(like.dtype) * 0.0

    def _needs_blank_media_pass(self, cache=None) -> bool:
        """Whether a forward pass without media must still run the tower and projector (on one blank image).

        Never at inference proper: not with a filled KV cache (media go in at prefill only), and not in a model that
        is neither training nor sharded by an engine (generation, pipelines, vLLM under tensor or pipeline
        parallelism, where a blank image per forward would slow every decoding step). Otherwise:
        - Training in a multi-process job: DDP and ZeRO-1/2 reduce a gradient for every trainable parameter after
          each backward pass; a rank whose batch had no media has none for the tower and projector, so DDP hangs and
          ZeRO fails the gloo/NCCL collective (the shapes differ between ranks).
        - ZeRO-3 and FSDP gather the sharded weights of the tower and projector in every forward, evaluation
          included and frozen or not; a rank that skips them leaves the others waiting in that gather. The weights
          say whether such an engine holds them (`_sharded_by_engine`), so evaluation keeps the pass there only.
        - Training in one process a tower or projector: a text-only batch then gives them a zero gradient rather
          than none, so AdamW steps them (momentum, weight decay) exactly as in a multi-process run.
        The cost is one image through the tower per text-only batch.
        """
        if cache is not None and cache.get_seq_length() > 0:
            return False
        in_group = torch.distributed.is_available() and torch.distributed.is_initialized()
        if in_group and torch.distributed.get_world_size() > 1:
            return self.training or _sharded_by_engine(self.multi_modal_projector)
        modules = (self.vision_tower, self.multi_modal_projector)
        return self.training and any(p.requires_grad for m in modules for p in m.parameters())

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """`cache` is the KV cache (`past_key_values` on transformers before 5.24: either name is accepted)."""
        cache = _cache_of(cache, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        has_media = pixel_values is not None or pixel_values_videos is not None
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            # Without pixels (a decoding step, a text-only prompt) a media token id is embedded as an ordinary token,
            # so a sampled `<image>` cannot crash generation; with pixels, both kinds' counts must fit exactly.
            if has_media:
                image_embeds, video_embeds = self.get_media_features(pixel_values, pixel_values_videos)
                masks = self.get_placeholder_mask(input_ids, inputs_embeds, image_embeds, video_embeds)
                for mask, embeds in zip(masks, (image_embeds, video_embeds), strict=True):
                    if embeds is not None:  # fills positions in order of appearance
                        inputs_embeds = inputs_embeds.masked_scatter(mask, embeds.to(inputs_embeds.dtype))
        elif has_media:
            raise ValueError("pixel inputs need input_ids to find the <image>/<video> positions; got inputs_embeds")
        if not has_media and self._needs_blank_media_pass(cache):
            inputs_embeds = inputs_embeds + self._zero_media_contribution(inputs_embeds)
        if use_cache is None and attention_mask is None and position_ids is not None and cache is None:
            # Position ids without a mask may pack several samples per row (restarting at each). transformers keeps
            # them apart (a block-diagonal mask) only without a KV cache, and the LM creates one whenever use_cache
            # is on, its config default: unasked, such a batch builds no cache.
            use_cache = False
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{CACHE_KEY: cache},
            **kwargs,
        )


def _check_placeholder_count(mask: torch.Tensor, expected: int, kind: str, features: torch.Tensor | None) -> None:
    """The `<kind>` positions in `mask` (B, L) must number `expected` (feature rows * tokens per row)."""
    found = mask.sum()
    if mask.device.type != "cpu" or torch.compiler.is_compiling():
        torch._assert_async(found == expected, f"<{kind}> token count does not match the {kind} features given")
        return
    if int(found) != expected:
        given = 0 if features is None else features.shape[0]
        per_item = "" if features is None else f" of {features.shape[1]} tokens each"
        raise ValueError(
            f"<{kind}> tokens per sample {mask.sum(dim=1).tolist()} do not fit {given} {kind}(s){per_item} "
            f"(expected {expected} in total); build inputs with FrameLMProcessor, which expands each "
            f"<{kind}> placeholder to its exact token count, not with the tokenizer alone"
        )


def _media_free_labels(model: FrameLMForConditionalGeneration, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: `<image>`/`<video>` targets in `labels` (and `shift_labels`) become -100.

    TRL's default VLM collator (like LLaMA-Factory's or a hand-written one) copies input_ids into labels,
    placeholders included; trained to predict them, a model learns to emit `<image>`. A hook rather than code in
    `forward`, because trainers replace `forward` on the instance (TRL's fused LM head computes the loss itself from
    `labels`) and every call still goes through `__call__`, PEFT's and DDP's included. A batch with labels and
    placeholders but no pixels is a collator that lost its media: that fails loudly instead of training on text.
    """
    if kwargs.get("labels") is None and kwargs.get("shift_labels") is None:
        return args, kwargs
    named = dict(zip(("input_ids", "pixel_values", "pixel_values_videos"), args, strict=False)) | kwargs
    media_ids = [i for i in (model.config.image_token_id, model.config.video_token_id) if i is not None]

    def is_media(ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(ids, torch.tensor(media_ids, device=ids.device))

    input_ids = named.get("input_ids")
    pixels_given = named.get("pixel_values") is not None or named.get("pixel_values_videos") is not None
    if not pixels_given and input_ids is not None and is_media(input_ids).any():
        raise ValueError(
            "this batch has labels and <image>/<video> tokens but neither pixel_values nor pixel_values_videos: "
            "the collator dropped the media; build batches with FrameLMProcessor(text=..., images=..., videos=...)"
        )
    for key in ("labels", "shift_labels"):
        if kwargs.get(key) is not None:
            kwargs[key] = kwargs[key].masked_fill(is_media(kwargs[key]), -100)
    return args, kwargs


class FrameLMForConditionalGeneration(FrameLMPreTrainedModel, GenerationMixin):
    """FrameLMModel plus the LM head; `generate` consumes pixels at prefill only and reuses the KV cache after."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: FrameLMConfig):
        super().__init__(config)
        self.model = FrameLMModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
        self.register_forward_pre_hook(_media_free_labels, with_kwargs=True)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, **kwargs)

    def get_video_features(self, pixel_values_videos: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_video_features(pixel_values_videos, **kwargs)

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features=None, video_features=None):
        return self.model.get_placeholder_mask(input_ids, inputs_embeds, image_features, video_features)

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def prepare_inputs_for_generation(self, *args, **kwargs) -> dict:
        """`generate`'s inputs for one step, marked so that `forward` masks the media placeholders (below)."""
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        inputs["suppress_media_tokens"] = True
        return inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        suppress_media_tokens: bool = False,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`pixel_values` (N_img, C, H, W) and `pixel_values_videos` (N_vid, F, C, H, W) hold every image and video
        of the batch in order of appearance; `labels` use -100 for positions without loss (`<image>`/`<video>`
        targets are set to -100 before this runs, see `_media_free_labels`).

        In `generate` (`suppress_media_tokens`, set by `prepare_inputs_for_generation`) the logits of `<image>` and
        `<video>` are -inf: a model never emits a placeholder, whatever the sampler or the generation config it is
        driven with. Any other forward returns the true logits, so that log-probs scored outside `generate` (TRL's
        DPO reference, an evaluation harness) are the model's own, the same in train and eval mode."""
        cache = _cache_of(cache, kwargs)
        kwargs.pop("return_dict", None)  # always a ModelOutput: GenerationMixin and Trainer read fields by name
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        if suppress_media_tokens:
            media_ids = [i for i in (self.config.image_token_id, self.config.video_token_id) if i is not None]
            logits[..., media_ids] = float("-inf")
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_KEY: getattr(outputs, CACHE_KEY)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @classmethod
    def from_components(
        cls,
        vision: str,
        language: str,
        dtype: torch.dtype | str = "auto",
        *,
        image_token: str,
        video_token: str,
        **config_kwargs,
    ) -> tuple[FrameLMForConditionalGeneration, object]:
        """A new FrameLM from a pretrained vision tower and a pretrained causal LM (local folders or Hub ids).

        The tower may be a vision-only checkpoint or a full CLIP/SigLIP model (its vision half is taken).
        `image_token` and `video_token` (the processor's placeholder strings, defined on the processing side) are
        added to the LM's tokenizer as special tokens and the embeddings are resized (new rows start at the mean of
        the old ones); the projector starts random. Returns `(model, tokenizer)`; build the processor with the
        tokenizer, the same token strings and the tower's image settings (`framelm init` does all of it).
        """
        vision_config = AutoConfig.from_pretrained(vision)
        vision_config = getattr(vision_config, "vision_config", vision_config)
        language_model = AutoModelForCausalLM.from_pretrained(language, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(language)
        tokenizer.add_special_tokens({"additional_special_tokens": [image_token, video_token]})
        config = FrameLMConfig(
            vision_config=vision_config,
            text_config=language_model.config,
            image_token_id=tokenizer.convert_tokens_to_ids(image_token),
            video_token_id=tokenizer.convert_tokens_to_ids(video_token),
            **config_kwargs,
        )
        # only the layers up to the feature layer are loaded; the rest of the checkpoint is reported as unused
        tower = AutoModel.from_pretrained(vision, config=config.tower_config(), dtype=dtype)
        _drop_final_norm(tower)
        with torch.device("meta"):  # the pretrained halves are swapped in below; don't initialise them twice
            model = cls(config)
        model.model.vision_tower = tower
        model.model.language_model = language_model.get_decoder()
        model.lm_head = language_model.get_output_embeddings()
        model.model.multi_modal_projector = FrameLMMultiModalProjector.from_config(config).to(language_model.dtype)
        if language_model.generation_config is not None:
            model.generation_config = language_model.generation_config
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        model.tie_weights()
        return model, tokenizer


# Saving copies this folder's code beside the weights and writes `auto_map`, so the folder loads without framelm.
FrameLMForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
