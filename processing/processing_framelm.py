"""FrameLMProcessor: tokenizer + image/frame processor + video loader, with exact placeholder expansion.

Hub payload: imports the public transformers API and sibling files only. What the processor must know about the
model (token strings, tokens per image and per frame, default frames per video) is saved in its own
`processor_config.json` when it is built, because `processing/` may not import `modeling/`.

Train and serve share this one code path: the collator and `pipeline()` both call `apply_chat_template`, which renders
the template and calls `__call__`, which loads media, counts placeholders against media and expands each `<image>`
to `tokens_per_image` tokens and each `<video>` to `frames * tokens_per_frame` tokens.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .chat_template_framelm import DEFAULT_CHAT_TEMPLATE
from .image_processing_framelm import FrameLMImageProcessor
from .media_framelm import load_image, load_video, sample_frame_indices

INSERT_MEDIA_CHOICES = ("left", "right")


def _is_image(item) -> bool:
    if isinstance(item, (str, os.PathLike)):
        return True
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return item.ndim in (2, 3)
    return hasattr(item, "getpixel")  # a PIL image, without importing PIL here


def _is_video(item) -> bool:
    if isinstance(item, (str, os.PathLike)) or hasattr(item, "frames"):
        return True
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return item.ndim == 4
    return (
        isinstance(item, (list, tuple))
        and len(item) > 0
        and all(_is_image(f) and not isinstance(f, str) for f in item)
    )


def _flatten(media, is_leaf) -> list:
    """One image/video, a list of them, or one list per sample -> a flat list in order of appearance."""
    if media is None:
        return []
    if is_leaf(media):
        return [media]
    if isinstance(media, (list, tuple)):
        return [leaf for item in media for leaf in _flatten(item, is_leaf)]
    raise TypeError(f"cannot read {type(media).__name__} as media: pass paths, PIL images, arrays or tensors")


def _per_sample_counts(media, num_samples: int, is_leaf) -> list[int] | None:
    """Media counts per sample when `media` is given as one list per sample, else None."""
    if isinstance(media, (list, tuple)) and len(media) == num_samples and not is_leaf(media):
        if all(item is None or (isinstance(item, (list, tuple)) and not is_leaf(item)) for item in media):
            return [len(_flatten(item, is_leaf)) for item in media]
    return None


class FrameLMProcessor(ProcessorMixin):
    """Tokenizer + `FrameLMImageProcessor` + the video loader of `media_framelm`, saved with the numbers that tie the
    text to the vision tower (`tokens_per_image`, `tokens_per_frame`, `num_frames`)."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        video_token: str = "<video>",
        tokens_per_image: int = 256,
        tokens_per_frame: int = 256,
        num_frames: int = 8,
        video_backend: str = "auto",
        **kwargs,
    ):
        self.image_token = image_token
        self.video_token = video_token
        self.tokens_per_image = tokens_per_image
        self.tokens_per_frame = tokens_per_frame
        self.num_frames = num_frames
        self.video_backend = video_backend
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE)

    @property
    def tokens_per_video(self) -> int:
        return self.num_frames * self.tokens_per_frame

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    @property
    def video_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.video_token)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "pixel_values_videos"]

    def build_messages(
        self,
        text: str,
        images: list | None = None,
        videos: list | None = None,
        insert_media_token: str = "left",
        system_prompt: str | None = None,
    ) -> list[dict]:
        """Content-list messages for one prompt (NeVA's prompt files carry text and media separately).

        Placeholders already in `text` are kept in place; a prompt with none gets all its media on the `left`
        (before the text, LLaVA style) or the `right` (after it, as NeVA's `insert_media_token=right`).
        """
        from .messages_framelm import build_messages

        return build_messages(
            [("user", text)],
            images or (),
            videos or (),
            image_token=self.image_token,
            video_token=self.video_token,
            system_prompt=system_prompt,
            insert_media_token=insert_media_token,
        )

    def load_video_frames(self, video, num_frames: int, splice_single_frame: str | None = None) -> torch.Tensor:
        """A path (file or frame folder), a decoded clip, an array/tensor (F, H, W, C) or a list of frames ->
        uint8 (num_frames, H, W, 3); pre-decoded frames are resampled to `num_frames` with the same sampler."""
        if isinstance(video, (str, os.PathLike)):
            return load_video(video, num_frames, splice_single_frame, backend=self.video_backend).frames
        frames = getattr(video, "frames", video)
        if isinstance(frames, (list, tuple)):
            frames = torch.stack([torch.as_tensor(np.asarray(load_image(f))) for f in frames])
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"video frames must be (frames, height, width, channels); got shape {tuple(frames.shape)}"
            )
        count = 1 if splice_single_frame else num_frames
        if frames.shape[0] != count:
            frames = frames[sample_frame_indices(frames.shape[0], count)]
        return frames[..., :3] if frames.shape[-1] != 1 else frames.expand(*frames.shape[:3], 3)

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        videos=None,
        audio=None,
        num_frames: int | None = None,
        splice_single_frame: str | None = None,
        return_tensors: str | None = None,
        return_text_replacement_offsets: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """Tokenize `text` with every `<image>`/`<video>` placeholder expanded, and preprocess the media.

        `images`/`videos` may be one item, a flat list in order of appearance, or one list per sample (then the
        counts are checked sample by sample). Returns `input_ids`, `attention_mask`, `pixel_values`
        (N_img, 3, H, W) and `pixel_values_videos` (N_vid, F, 3, H, W).
        """
        if audio is not None or kwargs.pop("audios", None) is not None:
            raise ValueError("FrameLM reads images, videos and text; it has no audio input")
        for unused in ("images_kwargs", "videos_kwargs", "audio_kwargs", "common_kwargs", "do_sample_frames"):
            kwargs.pop(unused, None)  # the generic chat-template path may pass these; our settings are explicit
        text_kwargs = kwargs.pop("text_kwargs", {}) | kwargs
        num_frames = 1 if splice_single_frame else (num_frames or self.num_frames)
        texts = [] if text is None else [text] if isinstance(text, str) else list(text)
        image_list, video_list = _flatten(images, _is_image), _flatten(videos, _is_video)
        self._check_counts(texts, images, videos, image_list, video_list)

        data = {}
        if image_list:
            data["pixel_values"] = self.image_processor([load_image(i) for i in image_list])["pixel_values"]
        if video_list:
            clips = [self.load_video_frames(v, num_frames, splice_single_frame) for v in video_list]
            data["pixel_values_videos"] = torch.stack([self.image_processor.preprocess_frames(c) for c in clips])
        if texts:
            expanded, offsets = self._expand_placeholders(texts, num_frames * self.tokens_per_frame)
            data.update(self.tokenizer(expanded, **text_kwargs))
            if return_text_replacement_offsets:
                data["text_replacement_offsets"] = offsets
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["text_replacement_offsets"])

    def _check_counts(self, texts: list[str], images, videos, image_list: list, video_list: list) -> None:
        for token, media, flat, is_leaf, kind in (
            (self.image_token, images, image_list, _is_image, "images"),
            (self.video_token, videos, video_list, _is_video, "videos"),
        ):
            found = [t.count(token) for t in texts]
            given = _per_sample_counts(media, len(texts), is_leaf) or [len(flat)]
            if (len(given) > 1 and found != given) or sum(found) != sum(given):
                raise ValueError(
                    f"{token} placeholders per sample {found} do not match the {kind} given {given}: put one "
                    f"{token} in the text (or one {{'type': '{kind[:-1]}'}} content item) for each of the {kind}"
                )

    def _expand_placeholders(self, texts: list[str], tokens_per_video: int) -> tuple[list[str], list[list[dict]]]:
        """Replace each placeholder by its exact run of tokens; also return where each replacement landed
        (the `text_replacement_offsets` that transformers' assistant-mask code uses to realign spans)."""
        replacement = {
            self.image_token: ("image", self.image_token * self.tokens_per_image),
            self.video_token: ("video", self.video_token * tokens_per_video),
        }
        pattern = re.compile(f"{re.escape(self.image_token)}|{re.escape(self.video_token)}")
        expanded, all_offsets = [], []
        for text in texts:
            pieces, offsets, shift, last = [], [], 0, 0
            for match in pattern.finditer(text):
                kind, run = replacement[match.group()]
                start, end = match.span()
                pieces += [text[last:start], run]
                offsets.append(
                    {"type": kind, "span": (start, end), "new_span": (start + shift, start + shift + len(run))}
                    | {"text": match.group(), "replacement": run}
                )
                shift += len(run) - (end - start)
                last = end
            expanded.append("".join(pieces) + text[last:])
            all_offsets.append(offsets)
        return expanded, all_offsets

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """Decode generated ids (B, L) to strings, as the image-text-to-text pipeline expects."""
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


# Saving copies this folder's code beside processor_config.json and writes `auto_map` for both classes.
FrameLMProcessor.register_for_auto_class()
FrameLMImageProcessor.register_for_auto_class("AutoImageProcessor")
