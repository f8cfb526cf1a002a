"""Tiny randomly initialised FrameLMs with a tokenizer trained offline: for `framelm init --tiny`, tests and the demo.

No download anywhere: the tokenizer is a byte-level BPE trained here on a fixed word list, the vision tower and the
LM are built from configs. One builder serves tests, the demo and the CLI, so they cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from framelm.modeling.configuration_framelm import FrameLMConfig
from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration
from framelm.processing import FrameLMImageProcessor
from framelm.processing.chat_template_framelm import IM_END, IM_START, IMAGE_TOKEN, VIDEO_TOKEN
from framelm.training.model.build import processor_for, save_framelm, set_generation_defaults

PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, IMAGE_TOKEN, VIDEO_TOKEN]
# Enough English for the demo's questions and answers and for test prompts; byte fallback covers everything else.
CORPUS = """
what colour is the shape in the image ? what shape is this ? which way does the shape move in the video ?
is the shape in the image the same colour as the one in the video ? answer with one word .
red green blue yellow white purple orange black circle square triangle cross left right up down yes no
the a an of to and in is it this that there here what which who how why when where please describe scene
you are a helpful assistant . be brief . hello world ! count one two three four five six seven eight nine ten
a chat between a curious user and an artificial intelligence assistant . the assistant gives helpful answers .
"""


def train_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `CORPUS`, with the chat and media special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.split("\n") * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[IM_START, IMAGE_TOKEN, VIDEO_TOKEN],
    )


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden_size: int = 32,
    text_hidden_size: int = 64,
    num_layers: int = 2,
    vision_model_type: str = "siglip_vision_model",
    **config_kwargs,
) -> FrameLMConfig:
    """Two-layer towers: 32-px images in 8-px patches (16 tokens per image), width 32 (vision) and 64 (LM)."""
    vision = {
        "model_type": vision_model_type,
        "hidden_size": vision_hidden_size,
        "intermediate_size": 2 * vision_hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "patch_size": patch_size,
    }
    if vision_model_type == "siglip2_vision_model":
        vision["num_patches"] = (image_size // patch_size) ** 2
    else:
        vision["image_size"] = image_size
    text = {
        "model_type": "llama",
        "hidden_size": text_hidden_size,
        "intermediate_size": 2 * text_hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": text_hidden_size // 32,  # head_dim 32: the least vLLM's CPU attention serves
        "num_key_value_heads": max(1, text_hidden_size // 64),
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 4096,
        "bos_token_id": None,
        "eos_token_id": tokenizer.convert_tokens_to_ids(IM_END),
        "pad_token_id": tokenizer.pad_token_id,
    }
    config_kwargs.setdefault("num_frames", 4)
    return FrameLMConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        **config_kwargs,
    )


def build_tiny_framelm(
    out_dir: str | Path | None = None, seed: int = 0, frame_timestamps: bool = False, **config_kwargs
):
    """A tiny random FrameLM and its processor (`frame_timestamps`: the processor's time labels); saved to `out_dir`
    (and the folder returned) when given.

    Returns `out_dir` when saving, else `(model, processor)`.
    """
    tokenizer = train_tiny_tokenizer()
    config = tiny_config(tokenizer, **config_kwargs)
    torch.manual_seed(seed)
    model = FrameLMForConditionalGeneration(config)
    set_generation_defaults(model, tokenizer)
    size = config.vision_image_size
    image_processor = FrameLMImageProcessor(
        size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = processor_for(config, tokenizer, image_processor, frame_timestamps)
    if out_dir is None:
        return model, processor
    return save_framelm(model, processor, out_dir)
