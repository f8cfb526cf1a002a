"""`framelm init`: a new FrameLM folder, from pretrained parts or tiny and random.

framelm init --vision google/siglip-base-patch16-224 --language Qwen/Qwen2.5-0.5B-Instruct --out my-framelm
framelm init --tiny --out tiny-framelm        # tiny random model, tokenizer trained offline, no download
framelm init --from-llava llava-hf/llava-interleave-qwen-0.5b-hf --out my-framelm   # a pretrained llava-hf VLM
"""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framelm init", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="Folder to write the model, processor and remote code into.")
    source = parser.add_argument_group(
        "what to build from (pick --tiny, --from-llava, or both --vision and --language)"
    )
    source.add_argument(
        "--tiny", action="store_true", help="A tiny random model (2 layers, 32-px images) for tests and demos."
    )
    source.add_argument(
        "--vision", help="Vision tower: local folder or Hub id of a CLIP/SigLIP/SigLIP2 model (full or vision-only)."
    )
    source.add_argument("--language", help="Causal LM: local folder or Hub id (Llama, Qwen2/3, Mistral, Gemma, ...).")
    source.add_argument(
        "--from-llava",
        metavar="SRC",
        help="Import a llava-hf LlavaForConditionalGeneration or LlavaNextVideoForConditionalGeneration checkpoint "
        "(local folder or Hub id): its weights, tokenizer and chat template, with the architecture taken from it. "
        "What FrameLM cannot reproduce is refused or reported (see README, 'Start from a pretrained VLM').",
    )
    source.add_argument(
        "--chat-template",
        metavar="FILE",
        help="With --from-llava: a Jinja chat template to use instead of the source's; it must put each assistant "
        "reply and its end-of-turn token inside {%% generation %%} ... {%% endgeneration %%}.",
    )
    arch = parser.add_argument_group("architecture")
    arch.add_argument(
        "--projector-type",
        default="mlp2x_gelu",
        choices=["linear", "mlp2x_gelu"],
        help="Projector from vision features to LM embeddings (default: mlp2x_gelu, as LLaVA-1.5).",
    )
    arch.add_argument(
        "--vision-feature-layer",
        type=int,
        default=-2,
        help="Tower hidden state to read (-2 = penultimate layer, as LLaVA).",
    )
    arch.add_argument(
        "--vision-feature-select-strategy",
        default="default",
        choices=["default", "full"],
        help="default: drop the CLS token of towers that have one; full: keep it.",
    )
    arch.add_argument(
        "--num-frames", type=int, default=None, help="Frames sampled per video (default 8; 4 with --tiny)."
    )
    arch.add_argument(
        "--video-pooling-stride",
        type=int,
        default=1,
        help="Average-pool each frame's patch grid by this stride (1 = no pooling; 2 keeps a quarter of the tokens).",
    )
    arch.add_argument(
        "--frame-timestamps",
        action="store_true",
        help="Write each video's duration and each frame's time (from the decoded frames) before its tokens, e.g. "
        "'[00:12.0 video][00:00.8]<frame>[00:02.3]<frame>...': the LM then knows when things happen. Saved in "
        "processor_config.json; off by default and for models saved before the option existed (see README, "
        "'Frame timestamps').",
    )
    arch.add_argument(
        "--dtype",
        default="auto",
        help="Weights dtype when loading pretrained parts: auto, float32, bfloat16, float16.",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.from_llava or args.chat_template:
        from framelm.training.model.import_llava import run_import

        return run_import(args, build_parser())
    if args.tiny == bool(args.vision or args.language):
        build_parser().error("pass either --tiny, or both --vision and --language")
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

        model, processor = build_from_components(
            args.vision, args.language, args.frame_timestamps, dtype=args.dtype, **config_kwargs
        )
        out = save_framelm(model, processor, args.out)
    print(f"wrote a FrameLM to {out}")
    return 0
