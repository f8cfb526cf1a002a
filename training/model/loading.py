"""Which model `framelm train` trains, and which of its parameters: loading or building, stages, LoRA."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import replace

from torch import nn

from framelm.training.data.paths import require_local_or_hub
from framelm.training.errors import InputError

logger = logging.getLogger(__name__)

# Linear layers of the causal LM that LoRA adapts by default (Llama/Qwen/Mistral/Gemma names); the tower and the
# projector are never LoRA targets: the projector trains fully, the tower only at stage `all`.
LM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# Modules QLoRA leaves unquantized, as full names from the model's root: transformers matches these patterns from the
# start of a module's name (a bare "vision_tower" would match nothing and the tower would be quantized)
KEPT_IN_FULL_PRECISION = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def load_model_and_processor(script_args, model_args):
    """`--init_from tiny`, `--init_from VISION LM`, or a saved FrameLM at `--model_name_or_path`; then
    `--num_frames`, when given, set on both (`set_num_frames`)."""
    model, processor = _load_or_build(script_args, model_args)
    if script_args.num_frames is not None:
        set_num_frames(processor, script_args.num_frames, model)
    return model, processor


def set_num_frames(processor, num_frames: int, model: nn.Module | None = None) -> None:
    """The one place a command changes the frames per video: on the processor and the model's config, which are
    saved with a trained model, so that generation, the model card and the run record say what training used.
    Everything else (the collator, the token counts, validation, generation) reads `processor.num_frames`."""
    if num_frames != processor.num_frames:
        logger.info("frames per video: %d (the model's setting is %d)", num_frames, processor.num_frames)
    processor.num_frames = num_frames
    if model is not None:
        model.config.num_frames = num_frames


def _load_or_build(script_args, model_args):
    from framelm.training.model.build import build_from_components

    dtype = model_args.dtype or "float32"
    if script_args.init_from and (model_args.load_in_4bit or model_args.load_in_8bit):
        raise ValueError("--load_in_4bit/--load_in_8bit quantize a saved model: build it first (`framelm init`), "
                         "then train it with --model_name_or_path FOLDER")  # fmt: skip
    if script_args.init_from == ["tiny"]:
        from framelm.training.model.tiny import build_tiny_framelm

        return build_tiny_framelm()
    if script_args.init_from:
        vision, language = script_args.init_from
        return build_from_components(
            vision, language, chat_template=getattr(script_args, "chat_template", None), dtype=dtype
        )

    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.processing import FrameLMProcessor

    # a local folder by its absolute path: a LoRA run's adapter_config.json then names its base model wherever
    # `framelm export --merge-lora` runs from
    name = local_absolute(require_local_or_hub(model_args.model_name_or_path, "--model_name_or_path"))
    with model_load_errors("--model_name_or_path", name):
        model = FrameLMForConditionalGeneration.from_pretrained(
            name,
            revision=model_args.model_revision,
            dtype=dtype,
            attn_implementation=model_args.attn_implementation,
            quantization_config=quantization_config_for(model_args),
        )
        processor = FrameLMProcessor.from_pretrained(name, revision=model_args.model_revision)
    return model, processor


def local_absolute(name: str) -> str:
    return os.path.abspath(name) if os.path.isdir(name) else name


@contextmanager
def model_load_errors(option: str, name: str):
    """A model that cannot be loaded (not a FrameLM folder, a Hub id that does not exist, offline) as one line."""
    try:
        yield
    except OSError as err:
        if isinstance(err, FileNotFoundError) and err.filename:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        fix = "pass a local folder or an existing Hub id (HF_HUB_OFFLINE=1: only models already downloaded)"
        raise InputError(f"{option} {name}: {first}", fix) from err


def quantization_config_for(model_args):
    """TRL's bitsandbytes config from `--load_in_4bit`/`--load_in_8bit` (None without), quantizing the LM only: the
    tower, the projector and the LM head stay in full precision (QLoRA trains the projector in full)."""
    from trl import get_quantization_config

    quantization = get_quantization_config(model_args)
    if quantization is not None and model_args.dtype != "bfloat16":
        # SFTTrainer casts every trainable parameter of a quantized model to bf16, the projector included, so the
        # tower's features must be bf16 too: in fp32 the first step fails on a dtype mismatch
        raise ValueError(f"--load_in_4bit/--load_in_8bit (QLoRA) trains in bf16: pass --dtype bfloat16, not "
                         f"{model_args.dtype!r}")  # fmt: skip
    if quantization is not None:
        quantization.llm_int8_skip_modules = KEPT_IN_FULL_PRECISION
    return quantization


def set_stage(model: nn.Module, stage: str, use_peft: bool = False) -> None:
    """LLaVA/NeVA stages. projector: only the projector; full: projector + LM (tower frozen); all: everything.

    With LoRA the LM's own weights stay frozen and PEFT adds adapters (see `peft_config_for`).
    """
    if use_peft and stage == "projector":
        raise ValueError("--stage projector trains the projector only; LoRA (--use_peft) adapts the LM: pick one")
    inner = model.model
    _trainable(model, False)
    _trainable(inner.multi_modal_projector, True)
    if stage in ("full", "all") and not use_peft:
        _trainable(inner.language_model, True)
        _trainable(model.lm_head, True)
    if stage == "all":
        _trainable(inner.vision_tower, True)
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    total = sum(parameter_count(p) for p in model.parameters())
    logger.info("stage %s: %s of %s parameters trainable", stage, f"{trainable:,}", f"{total:,}")


def parameter_count(parameter: nn.Parameter) -> int:
    """Elements of a parameter; under ZeRO-3 each process holds an empty placeholder whose full size is `ds_numel`."""
    return getattr(parameter, "ds_numel", parameter.numel())


def _trainable(module: nn.Module, on: bool) -> None:
    """`requires_grad` of the module's floating-point parameters: QLoRA's 4-bit weights are integers, which torch
    refuses to mark either way (they never train; LoRA adapters do)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            parameter.requires_grad_(on)


def peft_config_for(model_args, stage: str):
    """TRL's LoRA config from `ModelConfig` (every `lora_*` option counts), with framelm's defaults: LoRA on the LM's
    linear layers unless `--lora_target_modules` says otherwise, and the projector (and the tower at stage `all`)
    trained in full next to any `--lora_modules_to_save`."""
    if not model_args.use_peft:
        return None
    from trl import get_peft_config

    trained_in_full = ["multi_modal_projector"] + (["vision_tower"] if stage == "all" else [])
    extra = [name for name in model_args.lora_modules_to_save or [] if name not in trained_in_full]
    return get_peft_config(
        replace(
            model_args,
            lora_target_modules=model_args.lora_target_modules or LM_LORA_TARGETS,
            lora_modules_to_save=trained_in_full + extra,
        )
    )
