"""`framelm init`: a new FrameLM folder, from pretrained parts or tiny and random.

framelm init --vision google/siglip-base-patch16-224 --language Qwen/Qwen2.5-0.5B-Instruct --out my-framelm
framelm init --tiny --out tiny-framelm        # tiny random model, tokenizer trained offline, no download
framelm init --from-llava llava-hf/llava-interleave-qwen-0.5b-hf --out my-framelm   # a pretrained llava-hf VLM
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


def _config_constants():
    """modeling/configuration_framelm.py, loaded alone (not through `framelm.modeling`, which imports torch): the
    choices below are its constants, never declared twice, and `framelm init --help` stays fast."""
    path = Path(__file__).resolve().parents[2] / "modeling" / "configuration_framelm.py"
    spec = importlib.util.spec_from_file_location("_framelm_configuration_constants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CONFIG = _config_constants()
ProjectorType = Literal[_CONFIG.PROJECTOR_TYPES]
FeatureSelectStrategy = Literal[_CONFIG.FEATURE_SELECT_STRATEGIES]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class InitArguments:
    """`framelm init`: what to build from, the architecture, where to write it."""

    out: str = field(metadata={"help": "Folder to write the model, processor and remote code into."})
    overwrite: bool = field(
        default=False, metadata={"help": "Write into --out even when it is not empty (its files are replaced)."}
    )
    tiny: bool = field(default=False, metadata={"help": "A tiny random model (2 layers, 32-px images), for tests."})
    vision: str | None = field(
        default=None,
        metadata={"help": "Vision tower: folder or Hub id of a CLIP/SigLIP/SigLIP2 model (full or vision-only)."},
    )
    language: str | None = field(
        default=None, metadata={"help": "Causal LM: local folder or Hub id (Llama, Qwen2/3, Mistral, Gemma, ...)."}
    )
    from_llava: str | None = field(
        default=None,
        metadata={"help": "Import a llava-hf LlavaForConditionalGeneration or LlavaNextVideoForConditionalGeneration "
                  "checkpoint (local folder or Hub id): its weights, tokenizer and chat template, with the "
                  "architecture taken from it. What FrameLM cannot reproduce is refused or reported (see README, "
                  "'Start from a pretrained VLM')."},
    )  # fmt: skip
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Default: the language model's own chat template (or the source's, with --from-llava), "
                  "made trainable: media placeholders and {%% generation %%} markers added. `chatml`: framelm's "
                  "ChatML template. FILE: a Jinja template to use instead (with --from-llava it must already put "
                  "each reply and its end-of-turn token inside {%% generation %%} ... {%% endgeneration %%})."},
    )  # fmt: skip
    projector_type: ProjectorType = field(
        default="mlp2x_gelu", metadata={"help": "Projector from vision features to LM embeddings (LLaVA-1.5's)."}
    )
    vision_feature_layer: int = field(
        default=-2, metadata={"help": "Tower hidden state to read (-2 = penultimate layer, as LLaVA)."}
    )
    vision_feature_select_strategy: FeatureSelectStrategy = field(
        default="default", metadata={"help": "default: drop the CLS token of towers that have one; full: keep it."}
    )
    num_frames: int | None = field(default=None, metadata={"help": "Frames sampled per video (8; 4 with --tiny)."})
    video_pooling_stride: int = field(
        default=1,
        metadata={"help": "Average-pool each frame's patch grid by this stride (1: none; 2 keeps a quarter)."},
    )
    frame_timestamps: bool = field(
        default=False,
        metadata={"help": "Write each video's duration and each frame's time before its tokens, e.g. '[00:12.0 "
                  "video][00:00.8]<frame>[00:02.3]<frame>...': the LM then knows when things happen. Saved in "
                  "processor_config.json (see README, 'Frame timestamps')."},
    )  # fmt: skip
    dtype: Dtype = field(default="auto", metadata={"help": "Weights dtype when loading pretrained parts."})


def build_parser():
    from transformers import HfArgumentParser

    from framelm.training.errors import FrameLMParser

    class InitParser(FrameLMParser, HfArgumentParser):
        pass

    return InitParser(InitArguments, prog="framelm init", description=__doc__)


def parse(argv: list[str]) -> InitArguments:
    from framelm.training.errors import UsageError

    parser = build_parser()
    try:
        (args,) = parser.parse_args_into_dataclasses(argv)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0], "see `framelm init --help`") from err
    return args


def require_empty_out(out: str, overwrite: bool) -> None:
    """`--out` must be new or empty: a trained model there would be silently replaced by a fresh one."""
    from framelm.training.errors import UsageError

    folder = Path(out)
    if folder.is_file():
        raise UsageError(f"--out {out} is a file", "name a new folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} is not empty; init would replace what is there",
                         "name a new folder, or pass --overwrite")  # fmt: skip


@contextmanager
def template_errors():
    from framelm.training.errors import InputError
    from framelm.training.model.llava_chat_template import ChatTemplateError

    try:
        yield
    except ChatTemplateError as err:
        raise InputError(str(err)) from err  # its message names the fix


def main(argv: list[str]) -> int:
    from framelm.training.errors import UsageError

    args = parse(argv)
    if args.tiny == bool(args.vision or args.language) and not (args.from_llava or args.chat_template):
        build_parser().error("pass either --tiny, or both --vision and --language (or --from-llava)")
    if args.from_llava:  # the architecture comes from the source, so setting it is an error
        parser = build_parser()
        chosen = [
            "--" + name.replace("_", "-")
            for name in ("tiny", "vision", "language", "projector_type", "vision_feature_layer",
                         "vision_feature_select_strategy", "video_pooling_stride")
            if getattr(args, name) != parser.get_default(name)
        ]  # fmt: skip
        if chosen:
            parser.error(f"--from-llava takes the model from the source; drop {' '.join(chosen)}")
    require_empty_out(args.out, args.overwrite)
    from framelm.training.data.paths import require_local_or_hub

    for option in ("vision", "language", "from_llava"):  # a mistyped folder is never looked up on the Hub
        if getattr(args, option):
            require_local_or_hub(getattr(args, option), "--" + option.replace("_", "-"))
    if args.chat_template not in (None, "chatml") and not os.path.isfile(args.chat_template):
        raise UsageError(f"--chat-template {args.chat_template}: no such file", "pass a Jinja file, or `chatml`")
    if args.from_llava and args.chat_template == "chatml":
        raise UsageError("--from-llava keeps the source's prompt format", "pass a template FILE, or none")
    if args.tiny and args.chat_template not in (None, "chatml"):
        raise UsageError("--tiny models use framelm's ChatML template", "drop --chat-template")
    if args.from_llava:
        from framelm.training.model.import_llava import run_import

        return run_import(args)
    if not args.tiny and not (args.vision and args.language):
        build_parser().error("--vision and --language go together")
    config_kwargs = {
        "projector_type": args.projector_type,
        "vision_feature_layer": args.vision_feature_layer,
        "vision_feature_select_strategy": args.vision_feature_select_strategy,
        "video_pooling_stride": args.video_pooling_stride,
    }
    if args.num_frames is not None:
        config_kwargs["num_frames"] = args.num_frames
    if args.tiny:
        from framelm.training.model.tiny import build_tiny_framelm

        out = build_tiny_framelm(args.out, frame_timestamps=args.frame_timestamps, **config_kwargs)
    else:
        from framelm.training.model.build import build_from_components, save_framelm
        from framelm.training.model.loading import model_load_errors

        with model_load_errors("--vision/--language", f"{args.vision} + {args.language}"), template_errors():
            model, processor = build_from_components(
                args.vision,
                args.language,
                args.frame_timestamps,
                args.chat_template,
                dtype=args.dtype,
                **config_kwargs,
            )
        out = save_framelm(model, processor, args.out)
    print(f"wrote a FrameLM to {out}")
    return 0
