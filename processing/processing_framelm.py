"""FrameLMProcessor: tokenizer + image/frame processor + video loader, with exact placeholder expansion.

Hub payload: imports the public transformers API and sibling files only. What the processor must know about the
model (token strings, tokens per image and per frame, default frames per video) is saved in its own
`processor_config.json` when it is built, because `processing/` may not import `modeling/`.

Train and serve share this one code path: the collator and `pipeline()` both call `apply_chat_template`, which renders
the template and calls `__call__`, which loads media, counts placeholders against media and expands each `<image>`
to `tokens_per_image` tokens and each `<video>` to `frames * tokens_per_frame` tokens. With `frame_timestamps=True`
(chosen at `framelm init`, saved in `processor_config.json`) a `<video>` also gets the clip's duration and each
frame's time as text between the frame runs (`time_labels_framelm.py`): the processor writes them, not the chat
template, because only the processor has the decoded frames and their times.

What a call may pass (`inputs_framelm.py`): media in every form users and harnesses send (paths, `file://`, http(s)
and fsspec URLs, data URLs, base64, bytes, PIL, arrays, frame lists); keywords in transformers 5's `ProcessingKwargs`
groups, each honoured or refused by name; `audio` / `audios` only when empty (lmms-eval passes `audios=[]`). Remote
files are fetched within `fetch_timeout` seconds (the whole file) and `fetch_max_bytes` bytes, both saved with the
processor and settable at load: `AutoProcessor.from_pretrained(folder, fetch_timeout=10)`; video frames larger than
`max_frame_pixels` (8K UHD by default, read from the stream header) are refused before decoding. Frames decoded
elsewhere (vLLM) come with `video_metadata` (fps, frames_indices), which gives their times.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .chat_template_framelm import DEFAULT_CHAT_TEMPLATE, IMAGE_TOKEN, VIDEO_TOKEN
from .image_processing_framelm import FrameLMImageProcessor
from .inputs_framelm import (
    FLAT_KEYWORDS,
    GROUPS,
    FrameLMProcessingKwargs,
    check_keywords,
    flatten_media,
    is_image,
    is_video,
    per_sample_counts,
)
from .media_framelm import DEFAULT_MAX_FRAME_PIXELS, VideoClip, load_image, load_video, select_frame_indices
from .sources_framelm import DEFAULT_FETCH_MAX_BYTES, DEFAULT_FETCH_TIMEOUT, FetchLimits
from .time_labels_framelm import timed_video_text
from .video_processing_framelm import FrameLMVideoProcessor

TEMPLATE_VARIABLES = ("image_token", "video_token")


@dataclass
class MultiModalTokenCounts:
    """What `_get_num_multimodal_tokens` returns: the fields and the dict-style reads (`"num_image_tokens" in counts`,
    `counts["num_image_tokens"]`) of transformers' `MultiModalData`, which is not exported at the top level of
    transformers, the only place the payload imports from."""

    num_image_tokens: list[int] | None = None
    num_video_tokens: list[int] | None = None
    num_audio_tokens: list[int] | None = None
    num_image_patches: list[int] | None = None

    def __contains__(self, key: str) -> bool:
        return getattr(self, key, None) is not None

    def __getitem__(self, key: str) -> list[int] | None:
        if key not in self.__dataclass_fields__:
            raise AttributeError(f"{type(self).__name__} has no attribute {key}")
        return getattr(self, key)


def _is_empty(audio) -> bool:
    """None, [] or nested empty lists: what harnesses pass for "no audio" (lmms-eval: `audios=[]`)."""
    return audio is None or (isinstance(audio, (list, tuple)) and all(_is_empty(item) for item in audio))


class FrameLMProcessor(ProcessorMixin):
    """Tokenizer + `FrameLMImageProcessor` + the video loader of `media_framelm`, saved with the numbers that tie the
    text to the vision tower (`tokens_per_image`, `tokens_per_frame`, `num_frames`) and with `frame_timestamps`:
    whether each video's duration and each frame's time are written before its tokens (off for models saved
    before the option existed)."""

    valid_processor_kwargs = FrameLMProcessingKwargs

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_token: str = IMAGE_TOKEN,
        video_token: str = VIDEO_TOKEN,
        tokens_per_image: int = 256,
        tokens_per_frame: int = 256,
        num_frames: int = 8,
        video_backend: str = "auto",
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        frame_timestamps: bool = False,
        max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
        **kwargs,
    ):
        if not isinstance(frame_timestamps, bool):
            raise TypeError(f"frame_timestamps must be True or False; got {frame_timestamps!r}")
        self.frame_timestamps = frame_timestamps
        self.image_token = image_token
        self.video_token = video_token
        self.tokens_per_image = tokens_per_image
        self.tokens_per_frame = tokens_per_frame
        self.num_frames = num_frames
        self.video_backend = video_backend
        self.fetch_timeout = fetch_timeout  # seconds for one whole remote file
        self.fetch_max_bytes = fetch_max_bytes  # largest remote file accepted
        self.max_frame_pixels = int(max_frame_pixels)  # largest video frame (width * height) decoded
        self.fetch_limits  # noqa: B018 - validates both now, not at the first URL
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE)
        # the video half of the pair, built from the settings above (saved with them, not on its own)
        self.video_processor = FrameLMVideoProcessor(image_processor, num_frames)

    @property
    def fetch_limits(self) -> FetchLimits:
        return FetchLimits(self.fetch_timeout, self.fetch_max_bytes)

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

    def apply_chat_template(self, conversation, chat_template: str | None = None, **kwargs):
        """transformers' `apply_chat_template`, passing this processor's `image_token` / `video_token` to a template
        that reads them (the default one does), so the placeholders rendered are the ones `__call__` expands."""
        template = self._template_text(chat_template)
        for name in TEMPLATE_VARIABLES:
            if name in template:
                kwargs.setdefault(name, getattr(self, name))
        return super().apply_chat_template(conversation, chat_template, **kwargs)

    def _template_text(self, chat_template: str | None) -> str:
        """The Jinja source `apply_chat_template` will render: a given template, a named one, or the default."""
        templates = self.chat_template if isinstance(self.chat_template, dict) else {"default": self.chat_template}
        if chat_template is None:
            return templates.get("default") or ""
        return templates.get(chat_template, chat_template)

    def load_video_clip(
        self, video, num_frames: int, splice_single_frame: str | None = None, metadata: dict | None = None
    ) -> VideoClip:
        """A path, folder, URL, data URL, base64 string or bytes, a decoded clip, an array/tensor (F, H, W, C) or a
        list of frames -> a `VideoClip` of uint8 (num_frames, H, W, 3) frames with their times; pre-decoded frames are
        resampled to `num_frames` with the same sampler, keeping the times of those picked (a clip's `timestamps`, or
        `metadata` as vLLM passes it: `fps` and the source `frames_indices` of the frames given; arrays and lists
        alone have none)."""
        if isinstance(video, (str, os.PathLike, bytes, bytearray, memoryview)):
            limits = self.fetch_limits
            return load_video(
                video, num_frames, splice_single_frame, self.video_backend, limits, self.max_frame_pixels
            )
        frames = getattr(video, "frames", video)
        if isinstance(frames, (list, tuple)):
            frames = torch.stack([torch.as_tensor(np.asarray(load_image(f))) for f in frames])
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"video frames must be (frames, height, width, channels); got shape {tuple(frames.shape)}"
            )
        total = frames.shape[0]
        wanted = select_frame_indices(total, num_frames, splice_single_frame)
        frames = frames[wanted]
        frames = frames[..., :3] if frames.shape[-1] != 1 else frames.expand(*frames.shape[:3], 3)
        times, duration, fps = _metadata_times(metadata, total) if metadata else (None, None, None)
        times = getattr(video, "timestamps", times)
        if times is not None and len(times) != total:
            raise ValueError(f"a clip of {total} frames came with {len(times)} timestamps; give one per frame")
        timestamps = None if times is None else [float(times[i]) for i in wanted]
        fps = getattr(video, "fps", fps)
        return VideoClip(frames, timestamps, getattr(video, "duration", duration), fps, total, "decoded")

    def __call__(self, images=None, text: str | list[str] | None = None, videos=None, audio=None, **kwargs):
        """Tokenize `text` with every `<image>`/`<video>` placeholder expanded, and preprocess the media.

        `images`/`videos` may be one item, a flat list in order of appearance, or one list per sample (then the
        counts are checked sample by sample). Keywords: tokenizer settings (`padding`, `max_length`, ... or
        `text_kwargs={...}`), image settings (`size`, `do_normalize`, ... or `images_kwargs={...}`; they apply to
        video frames too), `num_frames` and `splice_single_frame` (or in `videos_kwargs={...}`), `return_tensors`,
        `return_mm_token_type_ids`, `return_text_replacement_offsets`; any other keyword raises.
        Returns `input_ids`, `attention_mask`, `pixel_values` (N_img, 3, H, W) and `pixel_values_videos`
        (N_vid, F, 3, H, W).
        """
        if not (_is_empty(audio) and _is_empty(kwargs.pop("audios", None))):
            raise ValueError("FrameLM reads images, videos and text; it has no audio input: pass no audio")
        merged = self._merged_keywords(kwargs)  # {"text_kwargs": {...}, "images_kwargs": {...}, ...}
        images_kwargs, videos_kwargs = merged["images_kwargs"], merged["videos_kwargs"]
        metadata = videos_kwargs.pop("video_metadata", None)
        num_frames, splice_single_frame = self._video_sampling(videos_kwargs)

        texts = [] if text is None else [text] if isinstance(text, str) else list(text)
        image_list, video_list = flatten_media(images, is_image), flatten_media(videos, is_video)
        self._check_counts(texts, images, videos, image_list, video_list)

        data = {}
        if image_list:
            loaded = [load_image(image, self.fetch_limits) for image in image_list]
            data["pixel_values"] = self.image_processor(loaded, **images_kwargs)["pixel_values"]
        metadata = _per_video(metadata, len(video_list))
        pairs = zip(video_list, metadata, strict=True)
        clips = [self.load_video_clip(v, num_frames, splice_single_frame, m) for v, m in pairs]
        if clips:
            frames = [self.video_processor.preprocess_frames(clip.frames, **videos_kwargs) for clip in clips]
            data["pixel_values_videos"] = torch.stack(frames)
        if texts:
            video_inputs = {"clips": clips, "videos": video_list}
            expanded, offsets = self._replace_placeholders(texts, {}, video_inputs)
            encoded = self.tokenizer(expanded, **merged["text_kwargs"])
            data.update(encoded)
            if merged["return_text_replacement_offsets"]:
                data["text_replacement_offsets"] = offsets
            if merged["return_mm_token_type_ids"]:  # 1 on image tokens, 2 on video tokens (vLLM's backend reads it)
                data["mm_token_type_ids"] = self.create_mm_token_type_ids(encoded["input_ids"])
        return BatchFeature(
            data, tensor_type=merged["return_tensors"], skip_tensor_conversion=["text_replacement_offsets"]
        )

    def _merged_keywords(self, kwargs: dict) -> dict:
        """The call's keywords, checked and merged into transformers' groups, with what the processor answers itself
        lifted out of the groups: `return_tensors` (pixels are torch; the output type is chosen once) and the two
        return flags that transformers mirrors into text_kwargs."""
        check_keywords(kwargs)
        # The return flags are read here, not from the merge: transformers before 5.20 keeps them in no group.
        kwargs = dict(kwargs)
        text_group = dict(kwargs.get("text_kwargs") or {})
        flags = {flag: bool(kwargs.pop(flag, None) or text_group.pop(flag, None)) for flag in FLAT_KEYWORDS}
        if "text_kwargs" in kwargs:
            kwargs["text_kwargs"] = text_group
        init_kwargs = self.tokenizer.init_kwargs
        merged = self._merge_kwargs(FrameLMProcessingKwargs, tokenizer_init_kwargs=init_kwargs, **kwargs)
        merged = {group: merged.get(group, {}) for group in GROUPS}
        return_tensors = None
        for group in ("videos_kwargs", "images_kwargs", "text_kwargs"):  # the text group's choice wins
            return_tensors = merged[group].pop("return_tensors", None) or return_tensors
        for flag in FLAT_KEYWORDS:
            merged["text_kwargs"].pop(flag, None)
        return merged | flags | {"return_tensors": return_tensors}

    def _video_sampling(self, videos_kwargs: dict) -> tuple[int, str | None]:
        """(frames per video, splice_single_frame) from the video keywords, which it removes; `do_sample_frames`
        (True, all FrameLM does) was checked by `check_keywords`."""
        videos_kwargs.pop("do_sample_frames", None)
        splice_single_frame = videos_kwargs.pop("splice_single_frame", None)
        num_frames = videos_kwargs.pop("num_frames", None) or self.num_frames
        return (1 if splice_single_frame else num_frames), splice_single_frame

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, **kwargs) -> MultiModalTokenCounts:
        """The number of placeholder tokens each image and video expands to, for the transformers backends of vLLM
        and SGLang. Sizes are (height, width) per image and (frames, height, width) per video: an image always
        becomes `tokens_per_image` tokens (it is resized to the tower's input), a video `num_frames *
        tokens_per_frame` (its frames are resampled to `num_frames`, or one with `splice_single_frame`), so the
        sizes only give the count. `kwargs` are the processor keywords the call will use (e.g. `num_frames`).
        With `frame_timestamps` the time labels are text between a video's token runs, not counted here."""
        num_frames, _ = self._video_sampling(self._merged_keywords(kwargs)["videos_kwargs"])
        counts = MultiModalTokenCounts()
        if image_sizes is not None:
            counts.num_image_tokens = [self.tokens_per_image] * len(image_sizes)
            counts.num_image_patches = [1] * len(image_sizes)  # one row of pixel_values per image
        if video_sizes is not None:
            counts.num_video_tokens = [num_frames * self.tokens_per_frame] * len(video_sizes)
        return counts

    def _check_counts(self, texts: list[str], images, videos, image_list: list, video_list: list) -> None:
        for token, media, flat, is_leaf, kind in (
            (self.image_token, images, image_list, is_image, "images"),
            (self.video_token, videos, video_list, is_video, "videos"),
        ):
            found = [t.count(token) for t in texts]
            given = per_sample_counts(media, len(texts), is_leaf) or [len(flat)]
            if (len(given) > 1 and found != given) or sum(found) != sum(given):
                raise ValueError(
                    f"{token} placeholders per sample {found} do not match the {kind} given {given}: put one "
                    f"{token} in the text (or one {{'type': '{kind[:-1]}'}} content item) for each of the {kind}"
                )

    def video_text(
        self,
        num_frames: int,
        timestamps: list[float] | None = None,
        duration: float | None = None,
        tokens_per_frame: int | None = None,
    ) -> str:
        """The text one `<video>` placeholder expands to: `num_frames` runs of `tokens_per_frame` video tokens (the
        processor's by default) and, with `frame_timestamps`, the duration and each frame's time (required then).

        The length rule (`training/data/budget.py`) calls this with `tokens_per_frame=1` and zero times, so labels
        are counted as the processor writes them."""
        tokens_per_frame = self.tokens_per_frame if tokens_per_frame is None else tokens_per_frame
        if not self.frame_timestamps:
            return self.video_token * (num_frames * tokens_per_frame)
        if timestamps is None or duration is None or len(timestamps) != num_frames:
            raise ValueError(f"frame_timestamps needs {num_frames} frame times and a duration; got {timestamps}")
        return timed_video_text(self.video_token, tokens_per_frame, timestamps, duration)

    def _clip_text(self, clip: VideoClip, video) -> str:
        """`video_text` of one loaded clip; says how to give the times when the clip has none."""
        if self.frame_timestamps and (clip.timestamps is None or clip.duration is None):
            if isinstance(video, (str, os.PathLike)):  # only a frame folder without a frame rate file has no times
                raise ValueError(
                    f"frame folder {video} has no frame rate, and this processor writes each frame's time "
                    f'(frame_timestamps=True): write {{"fps": 2.0}} (the rate the frames were taken at) to '
                    f"{os.path.normpath(video)}.json"
                )
            raise ValueError(
                "a video given as decoded frames has no frame times, and this processor writes each frame's time "
                "(frame_timestamps=True): pass the video's path, video_metadata={'fps': ..., 'frames_indices': [...]} "
                "(as vLLM does), or a clip with `timestamps` (one per frame, in seconds) and `duration` such as "
                "`media_framelm.load_video` returns"
            )
        return self.video_text(len(clip.frames), clip.timestamps, clip.duration)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        """The text one `<image>` becomes: `tokens_per_image` image tokens (every image is resized to the tower's
        input, so all images get the same count)."""
        return self.image_token * self.tokens_per_image

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        """The text the `video_idx`-th `<video>` becomes (`video_text` of its loaded clip: its frames' token runs and,
        with `frame_timestamps`, their times). `video_inputs` holds the loaded `clips` and the `videos` given."""
        return self._clip_text(video_inputs["clips"][video_idx], video_inputs["videos"][video_idx])

    def _replace_placeholders(
        self, texts: list[str], image_inputs: dict, video_inputs: dict
    ) -> tuple[list[str], list[list[dict]]]:
        """Replace each `<image>` and `<video>`, in order of appearance, by what `replace_image_token` /
        `replace_video_token` return; also return where each replacement landed (`text_replacement_offsets`, which
        vLLM's Transformers backend and transformers' assistant-mask code read)."""
        counters = {"image": 0, "video": 0}
        hooks = {"image": self.replace_image_token, "video": self.replace_video_token}
        inputs = {"image": image_inputs, "video": video_inputs}
        kinds = {self.image_token: "image", self.video_token: "video"}
        pattern = re.compile(f"{re.escape(self.image_token)}|{re.escape(self.video_token)}")
        expanded, all_offsets = [], []
        for text in texts:
            pieces, offsets, shift, last = [], [], 0, 0
            for match in pattern.finditer(text):
                kind = kinds[match.group()]
                run = hooks[kind](inputs[kind], counters[kind])
                counters[kind] += 1
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


def _per_video(metadata, count: int) -> list[dict | None]:
    """`video_metadata` (one dict, one per video, or None) -> one entry per video."""
    if metadata is None:
        return [None] * count
    items = [metadata] if isinstance(metadata, dict) or hasattr(metadata, "fps") else list(metadata)
    if len(items) != count:
        raise ValueError(f"video_metadata has {len(items)} entries for {count} video(s); give one per video")
    return items


def _metadata_times(metadata, total: int) -> tuple[list[float] | None, float | None, float | None]:
    """(time of each given frame, duration, fps) from a video's metadata as vLLM and transformers write it: `fps` of
    the source, `frames_indices` (the source frame each given frame is; all frames when absent) and `duration`."""
    read = metadata.get if isinstance(metadata, dict) else lambda key, default=None: getattr(metadata, key, default)
    fps = read("fps")
    if fps is None or not float(fps) > 0:
        return None, None, None
    fps = float(fps)
    indices = read("frames_indices")
    indices = list(range(total)) if indices is None else [int(i) for i in indices]
    if len(indices) != total:
        raise ValueError(f"video_metadata lists {len(indices)} frames_indices for {total} frames; give one per frame")
    duration = read("duration")
    source_frames = read("total_num_frames")
    if duration is None:
        duration = (source_frames if source_frames else indices[-1] + 1) / fps
    return [i / fps for i in indices], float(duration), fps


# Saving copies this folder's code beside processor_config.json and writes `auto_map` for both classes.
FrameLMProcessor.register_for_auto_class()
FrameLMImageProcessor.register_for_auto_class("AutoImageProcessor")
