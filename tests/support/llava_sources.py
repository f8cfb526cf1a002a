"""Tiny random llava-hf checkpoints saved as the Hub has them, to import without any download.

A source folder holds what a llava-hf repo holds: the model (`save_pretrained` of the transformers class), the
tokenizer (trained offline by `framelm.training.model.tiny`), the processor settings with the image (and video)
processor and a llava-hf chat template. Llava sources save a real `LlavaProcessor` (with the PIL image processor: the
torchvision one cannot run here); LLaVA-NeXT-Video's video processor needs torchvision, so its settings are written
as the json that `save_pretrained` would write.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from framelm.training.model.tiny import train_tiny_tokenizer

# llava-hf chat templates as their repos ship them: LLaVA-1.5 / LLaVA-NeXT-Video (Vicuna) and LLaVA-Interleave.
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
VICUNA_VIDEO_TEMPLATE = VICUNA_TEMPLATE.replace(
    "{# Render all text next #}",
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}{# Render all text next #}",
)
INTERLEAVE_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{{'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CLIP_STATS = {"image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD)}
TOWERS = {
    "clip": ("clip_vision_model", CLIP_STATS),
    "siglip": ("siglip_vision_model", {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}),
}


def tiny_sub_configs(tower: str, vocab_size: int, image_size: int = 32, patch_size: int = 8, layers: int = 3):
    """(vision, text) sub-config dicts: a 3-layer tower of width 32 (so layer -2 leaves one layer unused), 16
    patches per image, and a 2-layer Llama of width 64."""
    vision = {
        "model_type": TOWERS[tower][0],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "patch_size": patch_size,
        "image_size": image_size,
    }
    text = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size,
        "max_position_embeddings": 1024,
    }
    return vision, text


def image_processor_settings(tower: str, size: int, **overrides) -> dict:
    """CLIP-style preprocessing (shortest edge, centre crop), as llava-hf processors store it."""
    return {
        "do_resize": True,
        "size": {"shortest_edge": size},
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        **TOWERS[tower][1],
        **overrides,
    }


def save_llava(
    out: Path,
    tower: str = "clip",
    strategy: str = "default",
    feature_layer: int | list[int] = -2,
    chat_template: str = VICUNA_TEMPLATE,
    tokenizer=None,
    spare_vocab_rows: int = 0,
    seed: int = 0,
    sizes: dict[str, dict] | None = None,
    dtype: torch.dtype = torch.float32,
    **config_overrides,
) -> Path:
    """A saved tiny `LlavaForConditionalGeneration` with its `LlavaProcessor`; returns `out`.

    `sizes` ({"vision": {...}, "text": {...}}) overrides sub-config fields, for a bigger source (the memory bench);
    `dtype` is the dtype the checkpoint is saved in."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    tokenizer = tokenizer or train_tiny_tokenizer()
    vision, text = tiny_sub_configs(tower, len(tokenizer) + spare_vocab_rows)
    vision, text = vision | (sizes or {}).get("vision", {}), text | (sizes or {}).get("text", {})
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy=strategy,
        vision_feature_layer=feature_layer,
        image_seq_length=(vision["image_size"] // vision["patch_size"]) ** 2,
        **config_overrides,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).to(dtype).save_pretrained(out)
    processor = LlavaProcessor(
        image_processor=LlavaImageProcessorPil(**image_processor_settings(tower, vision["image_size"])),
        tokenizer=tokenizer,
        patch_size=vision["patch_size"],
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1 if tower == "clip" else 0,
        chat_template=chat_template,
    )
    processor.save_pretrained(out)
    return out


def save_llava_next_video(out: Path, pool_mode: str = "average", seed: int = 0, **config_overrides) -> Path:
    """A saved tiny `LlavaNextVideoForConditionalGeneration` (CLIP tower, stride-2 pooling), its tokenizer, and the
    processor settings and chat template of LLaVA-NeXT-Video-7B-hf."""
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    tokenizer = train_tiny_tokenizer()
    vision, text = tiny_sub_configs("clip", len(tokenizer))
    config = LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        spatial_pool_mode=pool_mode,
        spatial_pool_stride=2,
        image_grid_pinpoints=[[32, 64], [64, 32]],
        **config_overrides,
    )
    torch.manual_seed(seed)
    LlavaNextVideoForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    settings = image_processor_settings("clip", vision["image_size"])
    processor_config = {
        "processor_class": "LlavaNextVideoProcessor",
        "patch_size": vision["patch_size"],
        "vision_feature_select_strategy": "default",
        "image_token": "<image>",
        "video_token": "<video>",
        "image_processor": settings | {"image_processor_type": "LlavaNextImageProcessor", "do_pad": True},
        "video_processor": settings | {"video_processor_type": "LlavaNextVideoVideoProcessor"},
    }
    (out / "processor_config.json").write_text(json.dumps(processor_config, indent=2))
    (out / "chat_template.jinja").write_text(VICUNA_VIDEO_TEMPLATE)
    return out
