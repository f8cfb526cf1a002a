"""Assemble a FrameLM and its processor from parts, and save them as one Hub-ready folder.

The model side (`modeling/`) and the input side (`processing/`) may not import each other, so this is the one place
that reads the model config and writes what the processor must know (token strings and counts, frames per video).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoImageProcessor, PreTrainedModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from framelm.modeling.configuration_framelm import FrameLMConfig
from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration
from framelm.processing import FrameLMImageProcessor, FrameLMProcessor
from framelm.processing.chat_template_framelm import IM_END, IM_START, IMAGE_TOKEN, VIDEO_TOKEN

logger = logging.getLogger(__name__)

# Preprocessing of towers that ship no preprocessor_config.json, by tower type (their papers' published settings).
DEFAULT_TOWER_PREPROCESSING = {
    "clip_vision_model": {"image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD)},
    "siglip_vision_model": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    "siglip2_vision_model": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
}


def processor_for(
    config: FrameLMConfig,
    tokenizer,
    image_processor: FrameLMImageProcessor,
    frame_timestamps: bool = False,
    image_token: str = IMAGE_TOKEN,
    video_token: str = VIDEO_TOKEN,
) -> FrameLMProcessor:
    """The processor of a model: its tokenizer, its tower's preprocessing, its placeholder strings (an imported
    llava-hf model keeps its own), and the token counts from its config. The one place a processor is assembled."""
    processor = FrameLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_token=image_token,
        video_token=video_token,
        tokens_per_image=config.tokens_per_image,
        tokens_per_frame=config.tokens_per_frame,
        num_frames=config.num_frames,
        frame_timestamps=frame_timestamps,
    )
    check_frame_timestamps(processor)
    return processor


def check_frame_timestamps(processor: FrameLMProcessor) -> None:
    """Refuse, when the model is built, time labels that the length rule could not count exactly (it would refuse
    them at the first `framelm train` or `framelm data validate`)."""
    if processor.frame_timestamps:
        from framelm.training.data.budget import time_label_problem

        if problem := time_label_problem(processor):
            raise ValueError(f"--frame-timestamps: {problem}")


def tower_image_processor(vision: str, config: FrameLMConfig) -> FrameLMImageProcessor:
    """Copy the tower checkpoint's own preprocessing (size, resample, mean/std, crop); fall back to the published
    defaults of its type when the checkpoint has no preprocessor config."""
    size = config.vision_image_size
    try:
        tower_processor = AutoImageProcessor.from_pretrained(vision)
    except (OSError, ValueError) as err:
        logger.warning(
            "no image processor config in %s (%s); using the defaults of %s",
            vision,
            err,
            config.vision_config.model_type,
        )
        defaults = DEFAULT_TOWER_PREPROCESSING.get(config.vision_config.model_type, {})
        return FrameLMImageProcessor(size={"height": size, "width": size}, **defaults)
    override = size if config.vision_config.model_type == "siglip2_vision_model" else None
    return FrameLMImageProcessor.from_tower_processor(tower_processor, size_override=override)


CHATML = "chatml"  # `--chat-template chatml`: framelm's own ChatML template (processing/chat_template_framelm.py)


def build_from_components(
    vision: str, language: str, frame_timestamps: bool = False, chat_template: str | None = None, **config_kwargs
) -> tuple[PreTrainedModel, FrameLMProcessor]:
    """A new FrameLM (pretrained tower + pretrained LM, random projector) and its processor.

    `chat_template`: None keeps the LM's own template (made trainable: media placeholders and `{% generation %}`
    markers added), or ChatML when the LM has none (a base model); `chatml` picks ChatML; any other value is a Jinja
    file, made trainable the same way. A template that cannot be made trainable raises `ChatTemplateError`."""
    from framelm.training.model.llava_chat_template import lm_chat_template

    model, tokenizer = FrameLMForConditionalGeneration.from_components(
        vision, language, image_token=IMAGE_TOKEN, video_token=VIDEO_TOKEN, **config_kwargs
    )
    own = tokenizer.chat_template if chat_template is None else None
    if chat_template not in (None, CHATML):
        own = Path(chat_template).read_text(encoding="utf-8")
    if own is None:
        if chat_template is None:
            logger.info("%s has no chat template: using framelm's ChatML template", language)
        missing = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
        if missing:  # the chat template's turn markers must be single tokens, or <|im_end|> cannot end generation
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        stop = IM_END
    image_processor = tower_image_processor(vision, model.config)
    processor = processor_for(model.config, tokenizer, image_processor, frame_timestamps)
    if own is not None:
        trainable, stop = lm_chat_template(processor, own, end_of_turn_candidates(model, tokenizer))
        processor.chat_template = trainable.template
        for note in trainable.notes:
            logger.info("chat template of %s: %s", language if chat_template is None else chat_template, note)
    set_generation_defaults(model, tokenizer, stop)
    return model, processor


def end_of_turn_candidates(model: PreTrainedModel, tokenizer) -> list[str]:
    """The tokens an LM may end a turn with: its generation config's EOS tokens, then its tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in ids] + [tokenizer.eos_token]
    return list(dict.fromkeys(t for t in tokens if t))


def set_generation_defaults(model: PreTrainedModel, tokenizer, stop: str = IM_END) -> None:
    """Generation stops at the end-of-turn token `stop` the chat template trains (and the LM's own EOS tokens), pads
    with the tokenizer's pad token, and never samples `<image>`/`<video>`: a placeholder without pixels means
    nothing (the model embeds it as plain text). The one rule for built and imported models alike."""
    generation = model.generation_config
    end_of_turn = tokenizer.convert_tokens_to_ids(stop)
    eos = generation.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    generation.eos_token_id = [end_of_turn] + [e for e in eos if e != end_of_turn]
    if generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn
    # `suppress_tokens` sets their logits to -inf before temperature/top-k/top-p, so greedy, sampling and beam
    # search all skip them; the LM's own suppressed tokens stay suppressed.
    media = [model.config.image_token_id, model.config.video_token_id]
    generation.suppress_tokens = sorted(set(generation.suppress_tokens or []) | set(media))


def save_framelm(model: PreTrainedModel, processor: FrameLMProcessor, out_dir: str | Path) -> Path:
    """Write weights (safetensors), config with auto_map, remote code, processor, chat template, generation config."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
