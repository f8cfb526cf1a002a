"""What `FrameLMProcessor.__call__` accepts: the layouts of media that users and harnesses send, and its keywords.

Hub payload: the standard library, numpy, torch and the public transformers API only.

Keywords come in transformers 5's `ProcessingKwargs` groups (`text_kwargs`, `images_kwargs`, `videos_kwargs`; a flat
keyword goes to every group that declares it, `common_kwargs` to all). Where transformers logs and drops a keyword
that no group declares, FrameLM raises, naming it: nothing a user or a harness asks for is silently ignored.

No `from __future__ import annotations` here: transformers' `_merge_kwargs` reads these TypedDicts' annotations as
classes, and huggingface_hub's validation checks values only against real types.
"""

import os
from typing import Any, TypedDict

import numpy as np
import torch
from transformers import GenerationConfig, ProcessingKwargs


class FrameLMTextKwargs(TypedDict, total=False):
    """Tokenizer settings, passed through to the tokenizer."""

    add_special_tokens: bool | None
    padding: bool | str | None
    truncation: bool | str | None
    max_length: int | None
    stride: int | None
    pad_to_multiple_of: int | None
    padding_side: str | None
    return_token_type_ids: bool | None
    return_attention_mask: bool | None
    return_overflowing_tokens: bool | None
    return_special_tokens_mask: bool | None
    return_offsets_mapping: bool | None
    return_length: bool | None
    verbose: bool | None
    return_tensors: str | None
    # transformers copies these two flat keywords into text_kwargs too; the processor itself answers them
    return_mm_token_type_ids: bool | None
    return_text_replacement_offsets: bool | None


class FrameLMImagesKwargs(TypedDict, total=False):
    """Per-call settings of `FrameLMImageProcessor` (its `valid_kwargs`); they apply to video frames as well."""

    do_resize: bool | None
    size: int | list[int] | tuple[int, ...] | dict[str, int] | None
    resample: Any  # PIL enum or int, a name, or torchvision's InterpolationMode
    do_center_crop: bool | None
    crop_size: int | list[int] | tuple[int, ...] | dict[str, int] | None
    do_rescale: bool | None
    rescale_factor: float | None
    do_normalize: bool | None
    image_mean: float | list[float] | tuple[float, ...] | None
    image_std: float | list[float] | tuple[float, ...] | None
    do_convert_rgb: bool | None
    return_tensors: str | None  # "pt" or None: pixels are always torch tensors


class FrameLMVideosKwargs(FrameLMImagesKwargs, total=False):
    num_frames: int | None  # frames sampled per video; the processor's `num_frames` when not given
    splice_single_frame: str | None  # keep one frame, "first" | "middle" | "last" (NeVA's splice_single_frame)
    do_sample_frames: bool | None  # False: the frames given are already sampled (vLLM); kept if num_frames of them
    video_metadata: Any  # one dict per video (fps, frames_indices, duration): the times of frames decoded elsewhere


class FrameLMAudioKwargs(TypedDict, total=False):
    """FrameLM has no audio input: no audio keyword is honoured."""


class FrameLMProcessingKwargs(ProcessingKwargs, total=False):
    _defaults = {}  # transformers before 5.20 reads it in `_merge_kwargs`; FrameLM sets no defaults there
    text_kwargs: FrameLMTextKwargs
    images_kwargs: FrameLMImagesKwargs
    videos_kwargs: FrameLMVideosKwargs
    audio_kwargs: FrameLMAudioKwargs


GROUPS = ("text_kwargs", "images_kwargs", "videos_kwargs", "audio_kwargs")
FLAT_KEYWORDS = ("return_mm_token_type_ids", "return_text_replacement_offsets")
# transformers keywords FrameLM does not honour, with the reason and what to do instead
REFUSED = {
    "fps": "FrameLM samples a fixed number of frames per video (the model was trained on that count); pass "
    "num_frames=N instead of fps",
    "return_metadata": "FrameLM returns no video metadata",
    "sanitize_control_tokens": "FrameLMProcessor cannot tell marked control tokens from placeholders; render the "
    "chat without sanitize_control_tokens",
}


def check_keywords(kwargs: dict) -> None:
    """Raise for any keyword the processor would not honour, naming it and saying what is accepted."""
    groups = {name: set(FrameLMProcessingKwargs.__annotations__[name].__annotations__) for name in GROUPS}
    flat = set().union(*groups.values(), FLAT_KEYWORDS)
    common = groups["text_kwargs"] & groups["images_kwargs"] & groups["videos_kwargs"]  # common_kwargs go to all
    for key, value in kwargs.items():
        if key in groups or key == "common_kwargs":
            if not isinstance(value, dict):
                raise TypeError(f"`{key}` must be a dict of settings; got {type(value).__name__}")
            for name in value:
                _check_one(f"{key}[{name!r}]", name, groups.get(key, common), value[name])
        else:
            _check_one(key, key, flat, value)


def _check_one(where: str, name: str, accepted: set[str], value) -> None:
    if name in REFUSED:
        raise ValueError(f"`{where}`: {REFUSED[name]}")
    if name not in accepted and name in GenerationConfig().to_dict():
        raise TypeError(
            f"FrameLMProcessor got `{where}`, a generation setting: pass it to model.generate(...), or to a pipeline "
            "as generate_kwargs={...} (the image-text-to-text pipeline hands other keywords to the processor)"
        )
    if name not in accepted:
        raise TypeError(f"FrameLMProcessor got an unexpected keyword `{where}`; it accepts {sorted(accepted)}")


# --- media layouts ----------------------------------------------------------------------------------------------


def is_image(item) -> bool:
    """One image: a path, URL, data URL or base64 string, bytes, a PIL image, or an (H, W[, C]) array/tensor."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        return True
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return item.ndim in (2, 3)
    return hasattr(item, "getpixel")  # a PIL image, without importing PIL here


def is_video(item) -> bool:
    """One video: a path, folder, URL, data URL or base64 string, bytes, a decoded clip, an (F, H, W, C)
    array/tensor, or a list of frames."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(item, "frames"):
        return True
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return item.ndim == 4
    return (
        isinstance(item, (list, tuple))
        and len(item) > 0
        and all(is_image(f) and not isinstance(f, (str, bytes)) for f in item)
    )


def flatten_media(media, is_leaf) -> list:
    """One image/video, a list of them, or one list per sample -> a flat list in order of appearance."""
    if media is None:
        return []
    if is_leaf(media):
        return [media]
    if isinstance(media, (list, tuple)):
        return [leaf for item in media for leaf in flatten_media(item, is_leaf)]
    raise TypeError(f"cannot read {type(media).__name__} as media: pass paths, URLs, PIL images, arrays or tensors")


def per_sample_counts(media, num_samples: int, is_leaf) -> list[int] | None:
    """Media counts per sample when `media` is given as one list per sample, else None."""
    if isinstance(media, (list, tuple)) and len(media) == num_samples and not is_leaf(media):
        if all(item is None or (isinstance(item, (list, tuple)) and not is_leaf(item)) for item in media):
            return [len(flatten_media(item, is_leaf)) for item in media]
    return None
