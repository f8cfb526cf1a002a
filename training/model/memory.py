"""`framelm estimate-memory`: parameters, trainable parameters and the training memory of a FrameLM, per method (full
fine-tuning, LoRA, QLoRA), from its config alone: nothing is downloaded but config.json, no weight is allocated (the
model is built on torch's meta device).

    framelm estimate-memory --model my-framelm --max_length 4096 --per_device_train_batch_size 1
    framelm estimate-memory --vision google/siglip-base-patch16-224 --language Qwen/Qwen2.5-7B-Instruct

The estimate for one device, AdamW, no ZeRO/FSDP sharding (divide the optimizer and gradient parts by the number of
GPUs under ZeRO-2, everything but activations under ZeRO-3/FSDP):

    weights      parameters x bytes of --dtype (QLoRA: the LM's linear layers at 4 bits, ~0.55 byte a weight)
    gradients    trainable parameters x bytes of --dtype
    optimizer    trainable parameters x 8 (AdamW's two fp32 moments)
    activations  LM layers x batch x tokens x hidden x 28 values of --dtype (measured for a Llama layer with
                 SwiGLU, fp32 SDPA on CPU, by tests/support/measure_memory.py; Korthikanti et al. 2022 count 17 for
                 GPT-style layers with flash attention: a GPU run with flash-attention keeps less); with
                 --activation_checkpointing 2 values a layer plus one layer recomputed; plus the logits (batch x
                 tokens x vocabulary, fp32, and their gradient)

CUDA's own context (~0.5-1 GiB) and allocator fragmentation come on top; `framelm train` on the GPU shows the truth
in `nvidia-smi`. The README's "On GPUs" section lists the numbers for common sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from framelm.training.errors import FrameLMParser, UsageError

MiB = 1024**2
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QLORA_BYTES = 0.55  # NF4: half a byte per weight plus double-quantized scales (~0.127 bit a weight)
ACTIVATION_VALUES = 28  # values kept per token, hidden unit and LM layer for backward (no recompute): see below
CHECKPOINTED_VALUES = 2  # with activation checkpointing: each layer's input only (plus one layer recomputed)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class MemoryArguments:
    model: str | None = field(default=None, metadata={"help": "A FrameLM folder or Hub id (its config.json is read)."})
    vision: str | None = field(default=None, metadata={"help": "Or a vision tower (folder or Hub id) ..."})
    language: str | None = field(default=None, metadata={"help": "... and a causal LM, as `framelm init` takes them."})
    dtype: Literal["bfloat16", "float16", "float32"] = field(
        default="bfloat16", metadata={"help": "Training dtype of the weights (bf16 on GPUs that have it)."}
    )
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Sequences per device and step."})
    max_length: int = field(default=4096, metadata={"help": "Tokens per sequence (vision tokens included)."})
    activation_checkpointing: bool = field(
        default=True, metadata={"help": "TRL's default: recompute activations in backward (--no-activation-...)."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank, as --lora_r of `framelm train`."})
    stage: Literal["projector", "full", "all"] = field(
        default="full", metadata={"help": "What trains in full fine-tuning (the tower too at `all`)."}
    )


@dataclass
class Counts:
    tower: int
    projector: int
    language_model: int  # LM layers, embeddings and head
    lora_targets: int  # weights of the LM's linear layers LoRA adapts (and QLoRA quantizes)
    lora_params: int  # LoRA A and B of rank r on those layers
    lm_layers: int
    hidden: int
    vocab: int

    @property
    def total(self) -> int:
        return self.tower + self.projector + self.language_model


def count_parameters(config, lora_r: int) -> Counts:
    """Parameters per part of a FrameLM built from `config` on the meta device (no memory allocated)."""
    import torch

    from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration

    with torch.device("meta"):
        model = FrameLMForConditionalGeneration(config)
    inner = model.model
    tower = sum(p.numel() for p in inner.vision_tower.parameters())
    projector = sum(p.numel() for p in inner.multi_modal_projector.parameters())
    lm = sum(p.numel() for p in inner.language_model.parameters())
    if not config.tie_word_embeddings:
        lm += sum(p.numel() for p in model.lm_head.parameters())
    targets, lora = 0, 0
    for name, module in inner.language_model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS:
            targets += module.weight.numel()
            lora += lora_r * (module.in_features + module.out_features)
    text = config.text_config
    return Counts(tower, projector, lm, targets, lora, text.num_hidden_layers, text.hidden_size, text.vocab_size)


def estimate(counts: Counts, args: MemoryArguments) -> dict[str, dict[str, float]]:
    """{method: {"trainable": parameters, part: bytes, ..., "total": bytes}} for full, LoRA and QLoRA."""
    width = DTYPE_BYTES[args.dtype]
    tokens = args.per_device_train_batch_size * args.max_length
    values = CHECKPOINTED_VALUES if args.activation_checkpointing else ACTIVATION_VALUES
    layers = counts.lm_layers + (1 if args.activation_checkpointing else 0)  # one layer recomputed at a time
    activations = layers * tokens * counts.hidden * values * width + tokens * counts.vocab * 4 * 2  # + fp32 logits
    full_trainable = {
        "projector": counts.projector,
        "full": counts.projector + counts.language_model,
        "all": counts.total,
    }[args.stage]
    lora_trainable = counts.projector + counts.lora_params
    methods = {
        "full": (full_trainable, counts.total * width),
        "lora": (lora_trainable, (counts.total + counts.lora_params) * width),
        "qlora": (
            lora_trainable,
            (counts.total - counts.lora_targets + counts.lora_params) * width + counts.lora_targets * QLORA_BYTES,
        ),
    }
    out = {}
    for method, (trainable, weights) in methods.items():
        parts = {
            "weights": weights,
            "gradients": trainable * width,
            "optimizer": trainable * 8,
            "activations": activations,
        }
        out[method] = {"trainable": trainable, **parts, "total": sum(parts.values())}
    return out


def config_of(args: MemoryArguments):
    from transformers import AutoConfig

    from framelm.modeling.configuration_framelm import FrameLMConfig
    from framelm.training.data.paths import require_local_or_hub

    if args.model:
        return FrameLMConfig.from_pretrained(require_local_or_hub(args.model, "--model"))
    vision = AutoConfig.from_pretrained(require_local_or_hub(args.vision, "--vision"))
    language = AutoConfig.from_pretrained(require_local_or_hub(args.language, "--language"))
    vision = getattr(vision, "vision_config", vision)
    vocab = language.vocab_size + 2  # `<image>` and `<video>` are added
    language.vocab_size = vocab
    tied = getattr(language, "tie_word_embeddings", False)
    return FrameLMConfig(vision_config=vision, text_config=language, image_token_id=vocab - 2,
                         video_token_id=vocab - 1, tie_word_embeddings=tied)  # fmt: skip


def table(counts: Counts, result: dict, args: MemoryArguments) -> str:
    lines = [
        f"parameters: {counts.total:,} (tower {counts.tower:,}, projector {counts.projector:,}, "
        f"language model {counts.language_model:,})",
        f"per device: batch {args.per_device_train_batch_size} x {args.max_length:,} tokens, {args.dtype}, "
        f"activation checkpointing {'on' if args.activation_checkpointing else 'off'}, AdamW, LoRA r={args.lora_r}",
        "",
        f"  {'MiB':<12}{'trainable':>16}{'weights':>10}{'grads':>10}{'optimizer':>10}{'activ.':>10}{'total':>10}",
    ]
    for method, row in result.items():
        mib = [row[k] / MiB for k in ("weights", "gradients", "optimizer", "activations", "total")]
        label = {"full": f"full ({args.stage})", "lora": "LoRA", "qlora": "QLoRA"}[method]
        lines.append(f"  {label:<12}{row['trainable']:>16,}" + "".join(f"{m:>10,.0f}" if m >= 10 else f"{m:>10.2f}"
                                                                      for m in mib))  # fmt: skip
    lines += ["", "Add ~1 GiB for the CUDA context; ZeRO/FSDP divide weights, gradients and optimizer by the GPUs."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    class MemoryParser(FrameLMParser, HfArgumentParser):
        pass

    parser = MemoryParser(MemoryArguments, prog="framelm estimate-memory", description=__doc__)
    (args,) = parser.parse_args_into_dataclasses(argv)
    if bool(args.model) == bool(args.vision or args.language) or (
        not args.model and not (args.vision and args.language)
    ):
        raise UsageError("pass --model, or both --vision and --language", "see `framelm estimate-memory --help`")
    counts = count_parameters(config_of(args), args.lora_r)
    print(table(counts, estimate(counts, args), args))
    return 0
