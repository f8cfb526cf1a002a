"""`framelm init --from-llava SRC --out OUT`: a FrameLM with the weights, tokenizer and prompts of a llava-hf model.

    framelm init --from-llava llava-hf/llava-interleave-qwen-0.5b-hf --out my-framelm
    framelm init --from-llava llava-hf/LLaVA-NeXT-Video-7B-hf --out next-video --num-frames 16

Sources: `LlavaForConditionalGeneration` (LLaVA-1.5, BakLLaVA, LLaVA-Interleave) and
`LlavaNextVideoForConditionalGeneration` checkpoints, local folders or Hub ids. The tower, feature layer, CLS
handling, projector (activation, bias), placeholder tokens and LLaVA-NeXT-Video's frame pooling map onto FrameLM's
config, so the imported model gives the source's logits on the source's inputs. What FrameLM cannot reproduce is
either refused (nothing is written) or, where another path maps exactly, reported in one message: LLaVA-NeXT-Video
imports its video path, and its images (any-resolution tiling, image-newline tokens) will not match the source.

Memory: the source loads through its own transformers class (`from_pretrained` owns the checkpoint's key names),
FrameLM is built on the meta device and takes the source's parameter tensors as they are, so the weights exist
once (`bench/import_memory.py` measures the peak).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoConfig, AutoTokenizer, ImageProcessingMixin, PreTrainedModel, ProcessorMixin

from framelm.modeling.configuration_framelm import (
    PROJECTOR_ACTIVATIONS,
    TOWERS_WITH_CLS_TOKEN,
    VIDEO_POOLING_MODES,
    FrameLMConfig,
)
from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration
from framelm.processing import FrameLMImageProcessor
from framelm.training.model.build import processor_for, save_framelm, set_generation_defaults
from framelm.training.model.llava_chat_template import check_trainable, trainable_chat_template

logger = logging.getLogger(__name__)

SOURCE_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next_video": "LlavaNextVideoForConditionalGeneration",
}
# Llava classes FrameLM does not import, and why: refusing beats a model that silently answers differently.
REFUSED_CLASSES = {
    "llava_next": "LLaVA-NeXT reads images only through any-resolution tiling with image-newline tokens",
    "llava_onevision": "LLaVA-OneVision tiles images (any-resolution, image-newline tokens) and pools video frames "
    "bilinearly with a newline token",
    "vipllava": "VipLLaVA concatenates five tower layers with a layer norm in its projector",
}
# Towers whose llava-hf feature path FrameLM's `encode_pixels` reproduces (pixel input, CLS handling).
SUPPORTED_TOWERS = ("clip_vision_model", "siglip_vision_model")
# Image-processor settings an import must find in the source (its class defaults differ from FrameLM's).
REQUIRED_PREPROCESSING = ("size", "image_mean", "image_std", "resample")
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"  # llava-hf's defaults when the processor config names none


class UnsupportedSourceError(ValueError):
    """A checkpoint FrameLM cannot reproduce; nothing was written."""


@dataclass
class ImportReport:
    """What an import did: where it wrote, what will differ from the source, and what was adapted."""

    source: str
    out: Path
    source_class: str
    differences: list[str] = field(default_factory=list)  # inputs on which FrameLM will NOT match the source
    notes: list[str] = field(default_factory=list)  # what FrameLM adds or adapts without changing the source's outputs

    def __str__(self) -> str:
        lines = [f"imported {self.source} ({self.source_class}) into {self.out}"]
        if self.differences:
            lines.append("DIFFERS from the source:")
            lines += [f"  - {line}" for line in self.differences]
        else:
            lines.append("same outputs as the source on the source's own inputs")
        lines += [f"  note: {line}" for line in self.notes]
        return "\n".join(lines)


def _refuse(source: str, reasons: list[str]) -> UnsupportedSourceError:
    listed = "".join(f"\n  - {reason}" for reason in reasons)
    return UnsupportedSourceError(
        f"cannot import {source}: FrameLM would not give the source's outputs, because{listed}\nNothing was written."
    )


def check_source_config(source: str, config) -> None:
    """Raise `UnsupportedSourceError` listing every feature of the source FrameLM does not have."""
    if config.model_type not in SOURCE_CLASSES:
        reason = REFUSED_CLASSES.get(config.model_type, "FrameLM imports llava-hf Llava and LlavaNextVideo models")
        raise _refuse(source, [f"it is a {config.model_type!r} model: {reason}"])
    reasons = []
    tower, layer = config.vision_config.model_type, config.vision_feature_layer
    if tower not in SUPPORTED_TOWERS:
        reasons.append(f"its vision tower is {tower!r}; FrameLM imports {' and '.join(SUPPORTED_TOWERS)} towers")
    if not isinstance(layer, int):
        reasons.append(f"it concatenates several tower layers {list(layer)}; FrameLM reads one")
    if config.vision_feature_select_strategy == "default" and tower not in TOWERS_WITH_CLS_TOKEN:
        reasons.append(
            f"vision_feature_select_strategy='default' drops the first patch of a {tower!r} tower, which has no "
            "CLS token (FrameLM drops CLS tokens only)"
        )
    if config.projector_hidden_act not in PROJECTOR_ACTIVATIONS:
        reasons.append(
            f"its projector activation {config.projector_hidden_act!r} is not one of {PROJECTOR_ACTIVATIONS}"
        )
    if config.model_type == "llava_next_video":
        grid = config.vision_config.image_size // config.vision_config.patch_size
        mode, stride = config.spatial_pool_mode, config.spatial_pool_stride
        if mode not in VIDEO_POOLING_MODES:
            reasons.append(f"it pools video frames with spatial_pool_mode={mode!r}; FrameLM has {VIDEO_POOLING_MODES}")
        if grid % stride:
            reasons.append(f"its pooling stride {stride} does not divide the {grid}x{grid} patch grid")
        if config.vision_feature_select_strategy == "full" and tower in TOWERS_WITH_CLS_TOKEN:
            reasons.append("it keeps the CLS token ('full') yet pools the patch grid, which its own video path cannot")
    if reasons:
        raise _refuse(source, reasons)


def framelm_config(source_config, image_token_id: int, video_token_id: int, num_frames: int | None) -> FrameLMConfig:
    """The FrameLM config giving the source's features: same tower, layer, CLS handling, projector and pooling."""
    pooling = {}
    if source_config.model_type == "llava_next_video":
        pooling = {
            "video_pooling_stride": source_config.spatial_pool_stride,
            "video_pooling_mode": source_config.spatial_pool_mode,
        }
    return FrameLMConfig(
        vision_config=source_config.vision_config,
        text_config=source_config.text_config,
        projector_type="mlp2x_gelu",  # every llava-hf projector is linear -> activation -> linear
        projector_hidden_act=source_config.projector_hidden_act,
        projector_bias=source_config.multimodal_projector_bias,
        vision_feature_layer=source_config.vision_feature_layer,
        vision_feature_select_strategy=source_config.vision_feature_select_strategy,
        image_token_id=image_token_id,
        video_token_id=video_token_id,
        tie_word_embeddings=source_config.tie_word_embeddings,
        **({"num_frames": num_frames} if num_frames else {}),
        **pooling,
    )


def _dropped_source_weight(name: str, kept_layers: int) -> bool:
    """Source weights FrameLM has no use for: tower layers past the feature layer, the tower's final norm and
    pooling head (never on LLaVA's feature path), and LLaVA-NeXT's image-newline vector (image tiling only)."""
    layer = re.match(r"model\.vision_tower\.(.*\.)?encoder\.layers\.(\d+)\.", name)
    if layer:
        return int(layer.group(2)) >= kept_layers
    return bool(re.match(r"model\.vision_tower\.(.*\.)?(post_layernorm|head)\.|model\.image_newline$", name))


def take_weights(source: PreTrainedModel, config: FrameLMConfig) -> FrameLMForConditionalGeneration:
    """A FrameLM whose parameters ARE the source's tensors: built on the meta device, then given the source's
    parameters by name (`assign=True`), so no weight is copied. Both models use transformers' LLaVA module names."""
    with torch.device("meta"):
        model = FrameLMForConditionalGeneration(config)
    wanted = model.state_dict().keys()
    given = source.state_dict(keep_vars=True)  # the Parameters themselves: tied weights stay one tensor
    missing = [name for name in wanted if name not in given]
    kept_layers = config.tower_config().num_hidden_layers
    unused = [name for name in given if name not in wanted and not _dropped_source_weight(name, kept_layers)]
    assert not missing and not unused, f"source and FrameLM weights do not pair up: {missing=} {unused=}"
    model.load_state_dict({name: given[name] for name in wanted}, strict=True, assign=True)
    source_buffers = dict(source.named_buffers())
    for name, buffer in list(model.named_buffers()):  # non-persistent buffers (rotary frequencies, position ids)
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner).register_buffer(leaf, source_buffers[name], persistent=False)
    model.generation_config = source.generation_config
    return model.eval()


def _image_processor(source: str, source_config, size: int, differences: list[str]) -> FrameLMImageProcessor:
    """FrameLM preprocessing from the source's own settings (LLaVA-NeXT-Video: its video processor's, since its
    frames are the path that maps exactly)."""
    settings = {}
    if source_config.model_type == "llava_next_video":
        from transformers.video_processing_utils import BaseVideoProcessor  # reads the json; needs no torchvision

        settings = BaseVideoProcessor.get_video_processor_dict(source)[0]
    settings = settings or ImageProcessingMixin.get_image_processor_dict(source)[0]
    missing = [key for key in REQUIRED_PREPROCESSING if key not in settings]
    if missing:
        raise _refuse(source, [f"its preprocessor config lacks {missing}, so its preprocessing is unknown"])
    if settings.get("do_pad"):
        differences.append(
            "images: the source pads each image to a square (mean colour) before resizing; FrameLM's image "
            "processor does not, so non-square images are preprocessed differently"
        )
    processor = FrameLMImageProcessor.from_tower_processor(SimpleNamespace(**settings))
    output = processor.crop_size if processor.do_center_crop else processor.size
    if output != {"height": size, "width": size}:
        raise _refuse(source, [f"its image processor makes {output} images but the tower reads {size}x{size}"])
    return processor


def _placeholder_tokens(source: str, source_config, tokenizer, processor_settings: dict, notes: list[str]):
    """(image token, video token) strings; a Llava tokenizer without a video token gets one added."""
    image_token = processor_settings.get("image_token") or IMAGE_TOKEN
    if tokenizer.convert_tokens_to_ids(image_token) != source_config.image_token_id:
        raise _refuse(source, [f"its tokenizer's {image_token!r} is not the model's image token"])
    video_token = processor_settings.get("video_token") or VIDEO_TOKEN
    if source_config.model_type == "llava_next_video":
        if tokenizer.convert_tokens_to_ids(video_token) != source_config.video_token_id:
            raise _refuse(source, [f"its tokenizer's {video_token!r} is not the model's video token"])
    elif video_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([video_token], special_tokens=True)
        notes.append(f"the tokenizer had no video token: {video_token!r} was added (id {len(tokenizer) - 1})")
    return image_token, video_token


def import_llava(
    source: str,
    out: str | Path,
    dtype: str | torch.dtype = "auto",
    num_frames: int | None = None,
    chat_template_file: str | Path | None = None,
    frame_timestamps: bool = False,
) -> ImportReport:
    """Import a llava-hf checkpoint as a Hub-ready FrameLM folder; see the module docstring.

    Args:
        source: local folder or Hub id of a Llava / LlavaNextVideo checkpoint.
        out: folder to write the FrameLM, its processor (tokenizer, chat template) and a model card into.
        dtype: weights dtype (`auto` keeps the checkpoint's).
        num_frames: frames per video (default: FrameLM's 8).
        chat_template_file: a Jinja template to use instead of the source's (it must mark replies for training).
        frame_timestamps: write each video's duration and each frame's time before its tokens (`framelm init
            --frame-timestamps`); the source never saw them, so they are learnt in fine-tuning.

    Raises:
        UnsupportedSourceError: the source has a feature FrameLM does not reproduce (nothing is written).
        ChatTemplateError: the template's replies cannot be marked for training; `chat_template_file` fixes that.
    """
    import transformers

    source_config = AutoConfig.from_pretrained(source)
    check_source_config(source, source_config)
    report = ImportReport(source, Path(out), SOURCE_CLASSES[source_config.model_type])
    if source_config.model_type == "llava_next_video":
        report.differences.append(
            "images: LLaVA-NeXT's any-resolution tiling and image-newline tokens are not in FrameLM; an image is "
            "read as one view, so answers about images will NOT match the source"
            + ("" if frame_timestamps else " (videos match it exactly)")
        )
    if frame_timestamps:
        (report.differences if source_config.model_type == "llava_next_video" else report.notes).append(
            "videos: each frame comes after a time label ('[00:02.3]', --frame-timestamps) that the source never "
            "saw; the model learns to read them in fine-tuning"
        )
    else:
        report.notes.append(
            "videos: the source has no video input; FrameLM reads each frame as the source reads an image"
        )
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:  # the collator pads batches; attention masks hide the padding
        tokenizer.pad_token = tokenizer.eos_token
        report.notes.append(f"the tokenizer had no padding token: it pads with {tokenizer.eos_token!r}")
    processor_settings = ProcessorMixin.get_processor_dict(source)[0]
    image_token, video_token = _placeholder_tokens(source, source_config, tokenizer, processor_settings, report.notes)
    config = framelm_config(
        source_config,
        image_token_id=tokenizer.convert_tokens_to_ids(image_token),
        video_token_id=tokenizer.convert_tokens_to_ids(video_token),
        num_frames=num_frames,
    )
    config.base_model = source
    # the source's own placeholder strings and (below) chat template are kept
    image_processor = _image_processor(source, source_config, config.vision_image_size, report.differences)
    processor = processor_for(config, tokenizer, image_processor, frame_timestamps, image_token, video_token)
    processor.chat_template = _chat_template(source, processor, processor_settings, chat_template_file, report.notes)

    source_model = getattr(transformers, report.source_class).from_pretrained(source, dtype=dtype)
    model = take_weights(source_model, config)
    del source_model  # what FrameLM did not take (tower layers past the feature layer, ...) is freed here
    if len(tokenizer) > model.config.text_config.vocab_size:  # a token was added past the checkpoint's spare rows
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    set_generation_defaults(model, tokenizer, tokenizer.eos_token)
    save_framelm(model, processor, out)
    import_card(report).save(report.out / "README.md")
    logger.log(logging.WARNING if report.differences else logging.INFO, "%s", report)
    return report


def _chat_template(source: str, processor, settings: dict, chat_template_file, notes: list[str]) -> str:
    stop = processor.tokenizer.eos_token
    if chat_template_file is not None:
        template = Path(chat_template_file).read_text()
        check_trainable(processor, template, stop)
        notes.append(f"chat template from {chat_template_file}, not the source's")
        return template
    template = settings.get("chat_template") or processor.tokenizer.chat_template
    template = template.get("default") if isinstance(template, dict) else template
    if not template:
        raise _refuse(source, ["it ships no chat template (pass one with --chat-template FILE)"])
    trainable = trainable_chat_template(processor, template, stop)
    notes.extend(f"chat template: {note}" for note in trainable.notes)
    return trainable.template


def import_card(report: ImportReport) -> ModelCard:
    """A model card naming the source as `base_model`: what was imported, and what differs from the source.

    The relation is `finetune`: this folder is where fine-tuning starts (a local source folder is no Hub id, so the
    card then asks for one instead of naming a path).
    """
    local = Path(report.source).exists()
    data = ModelCardData(
        base_model=None if local else report.source,
        base_model_relation=None if local else "finetune",
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["framelm", "llava", "custom_code"],
    )
    source = (
        f"the local folder `{report.source}`"
        if local
        else f"[{report.source}](https://huggingface.co/{report.source})"
    )
    differences = "".join(f"\n- **differs:** {line}" for line in report.differences) or (
        "\n- Same outputs as the source on the source's own inputs."
    )
    notes = "".join(f"\n- {line}" for line in report.notes)
    fix = "\n\nAdd `base_model: <Hub id of the source>` to the front matter before pushing." if local else ""
    body = f"""# {report.out.name}

The weights, tokenizer and prompt format of {source} (`{report.source_class}`), imported by
`framelm init --from-llava` into a [framelm](https://pypi.org/project/framelm/) model: it loads with
`trust_remote_code=True` (framelm need not be installed) and fine-tunes with `framelm train` on images and videos.{fix}

## Compared with the source
{differences}{notes}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def run_import(args) -> int:
    """`framelm init --from-llava` (its options checked by `model/init.py`)."""
    handler = logging.StreamHandler()  # the report is this command's output: shown once, whatever its level
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    import_llava(args.from_llava, args.out, args.dtype, args.num_frames, args.chat_template, args.frame_timestamps)
    return 0
