"""`framelm generate`: batch inference from a NeVA-style prompt jsonl, resumable, one bad prompt never loses the rest.

    framelm generate out/ --prompt-file prompts.jsonl --media-base-path videos/ --output-file answers.jsonl
    framelm generate out/ --prompt-file prompts.jsonl --output-file answers.jsonl --device cuda --dtype bfloat16 \
        --temperature 0.2 --top-p 0.9 --repetition-penalty 1.2 --insert-media-token right

A prompt line is `{"video": "video_test.mp4", "text": "Can you describe the scene?", "category": "conv",
"question_id": 0}` (or `"image"`; either may be a list). Media paths resolve as in training data (`data/paths.py`):
against `--media-base-path`, or the prompt file's own folder; a path leading outside it is refused unless
`--allow-outside-root`. The prompt becomes messages through the same builder as training records. Each answer line
holds question_id, prompt, text, answer_id, model_id and metadata (category, media, generation settings) - the
answer-file format llava-bench and `framelm judge` read. A line that cannot be answered (not JSON, no usable
question_id, text or media, an id already used) is reported with its line and skipped (`prompts.py`), as is a prompt
whose media cannot be read; every other prompt is answered, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import uuid
from pathlib import Path

from framelm.processing.messages_framelm import build_messages
from framelm.training.batches.padding import PIXEL_KEYS, collate
from framelm.training.data.paths import is_remote, resolve_media_path
from framelm.training.eval.prompts import answered_keys, media_lists, read_prompts

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framelm generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="A saved FrameLM: local folder or Hub id.")
    io = parser.add_argument_group("files")
    io.add_argument("--prompt-file", required=True, help="jsonl of prompts: question_id, text, image or video.")
    io.add_argument("--output-file", required=True, help="jsonl of answers; question ids already in it are skipped.")
    io.add_argument(
        "--media-base-path", default=None,
        help="Root that image/video paths resolve against (default: the prompt file's folder).",
    )  # fmt: skip
    io.add_argument(
        "--allow-outside-root", action="store_true",
        help="Accept media paths whose real location is outside the root (refused by default).",
    )  # fmt: skip
    io.add_argument("--model-id", default=None, help="model_id written in every answer (default: the folder name).")
    prompt = parser.add_argument_group("prompt")
    prompt.add_argument("--system-prompt", default=None, help="System prompt placed before every question.")
    prompt.add_argument(
        "--insert-media-token", default="left", choices=["left", "right"],
        help="Where the media go when a prompt's text has no <image>/<video> placeholder (NeVA uses right).",
    )  # fmt: skip
    prompt.add_argument("--num-frames", type=int, default=None, help="Frames per video (default: the model's).")
    sampling = parser.add_argument_group("sampling (NeVA's inference options)")
    sampling.add_argument("--greedy", action="store_true", help="Greedy decoding; ignores temperature/top-k/top-p.")
    sampling.add_argument("--temperature", type=float, default=0.2, help="Sampling temperature (default 0.2).")
    sampling.add_argument("--top-k", type=int, default=0, help="Keep the k most likely tokens; 0 = no top-k limit.")
    sampling.add_argument("--top-p", type=float, default=0.9, help="Nucleus sampling mass (default 0.9).")
    sampling.add_argument("--repetition-penalty", type=float, default=1.0, help="1.0 = none; NeVA's example: 1.2.")
    sampling.add_argument("--max-new-tokens", type=int, default=256, help="Tokens generated per answer at most.")
    sampling.add_argument("--seed", type=int, default=0, help="Seed of the sampler, for reproducible runs.")
    run = parser.add_argument_group("execution")
    run.add_argument("--batch-size", type=int, default=8, help="Prompts per generate call (left-padded).")
    run.add_argument("--device", default="cuda" if _cuda() else "cpu", help="cpu, cuda, cuda:1, mps ...")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="Weights dtype (auto: as saved).")  # fmt: skip
    return parser


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def generation_kwargs(
    *, max_new_tokens: int, repetition_penalty: float, greedy: bool, temperature: float, top_p: float, top_k: int
) -> dict:
    """NeVA's sampling options as `generate` keywords (`top_k=0`: no top-k limit)."""
    kwargs = {"max_new_tokens": max_new_tokens, "repetition_penalty": repetition_penalty}
    if greedy:
        return kwargs | {"do_sample": False}
    return kwargs | {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or None}


def prompt_media(record: dict, root: str, allow_outside_root: bool = False) -> dict[str, list[str]]:
    """The prompt's `images` and `videos` (each key a path or a list), resolved by the training data's rule;
    raises `OutsideRootError` or `FileNotFoundError`. URLs are fetched later, by the processor."""
    media = {key: [resolve_media_path(p, root, allow_outside_root) for p in paths]
             for key, paths in media_lists(record).items()}  # fmt: skip
    for path in media["images"] + media["videos"]:
        if not is_remote(path) and not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
    return media


def encode_prompt(
    processor,
    record: dict,
    media_root: str,
    *,
    system_prompt: str | None = None,
    insert_media_token: str = "left",
    allow_outside_root: bool = False,
) -> dict:
    """One NeVA prompt record -> unpadded model inputs: `input_ids` (L,) and its pixel tensors."""
    media = prompt_media(record, media_root, allow_outside_root)
    messages = build_messages(
        [("user", record["text"])],
        media["images"],
        media["videos"],
        image_token=processor.image_token,
        video_token=processor.video_token,
        system_prompt=system_prompt,
        insert_media_token=insert_media_token,
    )
    out = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    return {"input_ids": out["input_ids"][0]} | {key: out[key] for key in PIXEL_KEYS if key in out}


def answer(model, processor, encoded: list[dict], **generate_kwargs) -> list[str]:
    """Generate for a list of encoded prompts in one left-padded batch; returns the new text of each."""
    batch = collate(encoded, processor.tokenizer.pad_token_id, side="left")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    for key in PIXEL_KEYS:
        if key in batch:
            batch[key] = batch[key].to(model.dtype)
    generated = model.generate(**batch, **generate_kwargs)
    new_tokens = generated[:, batch["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def append_line(handle, record: dict) -> None:
    """One whole line per write, flushed and synced: a killed run leaves at most one torn line, never a mix."""
    handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode())
    handle.flush()
    os.fsync(handle.fileno())


def check_files_and_batch(args: argparse.Namespace) -> str | None:
    """What is wrong with `--batch-size` or the two files, before a model is loaded; None when nothing is."""
    if args.batch_size < 1:
        return f"--batch-size must be at least 1, not {args.batch_size}"
    if os.path.realpath(args.output_file) == os.path.realpath(args.prompt_file):
        return (
            f"--output-file {args.output_file} is the prompt file: answers would be appended to the prompts; "
            "write them to another file"
        )
    return None


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if problem := check_files_and_batch(args):
        print(f"framelm generate: error: {problem} (see `framelm generate --help`)", file=sys.stderr)
        return 2
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.processing import FrameLMProcessor
    from framelm.training.model.loading import set_num_frames

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    set_seed(args.seed)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = FrameLMForConditionalGeneration.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
    processor = FrameLMProcessor.from_pretrained(args.model)
    if args.num_frames is not None:
        set_num_frames(processor, args.num_frames)
    model_id = args.model_id or Path(args.model.rstrip("/")).name
    media_root = args.media_base_path if args.media_base_path is not None else os.path.dirname(args.prompt_file)
    prompt_file = read_prompts(args.prompt_file)
    for problem in prompt_file.problems:  # reported now, before any answer is generated
        logger.error("%s (question_id=%s) skipped: %s -> %s", problem.where, problem.id, problem.problem, problem.fix)
    output = Path(args.output_file)
    done = answered_keys(output)
    todo = [p for p in prompt_file.prompts if p.key not in done]
    settings = generation_kwargs(
        max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty, greedy=args.greedy,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
    )  # fmt: skip
    failed = [p.id or p.where for p in prompt_file.problems]  # question ids, or the line of a prompt without one
    encode = functools.partial(encode_prompt, processor, media_root=media_root, system_prompt=args.system_prompt,
                               insert_media_token=args.insert_media_token,
                               allow_outside_root=args.allow_outside_root)  # fmt: skip
    with output.open("ab") as handle, tqdm(total=len(todo), desc="generating", unit="prompt") as bar:
        for start in range(0, len(todo), args.batch_size):
            chunk, encoded = [], []
            for prompt in todo[start : start + args.batch_size]:
                try:
                    encoded.append(encode(prompt.record))
                    chunk.append(prompt)
                except (OSError, ValueError, ImportError) as err:  # missing, outside the root, undecodable, unfetched
                    failed.append(prompt.key)
                    logger.error("%s (question_id=%s) skipped: %s", prompt.where, prompt.key, err)
            if chunk:
                with torch.inference_mode():
                    texts = answer(model, processor, encoded, **settings)
                for prompt, text in zip(chunk, texts, strict=True):
                    append_line(handle, answer_record(prompt.record, text, model_id, settings, processor.num_frames))
            bar.update(len(todo[start : start + args.batch_size]))
    answered = len(todo) - (len(failed) - len(prompt_file.problems))
    print(
        f"{prompt_file.total} prompts: {len(prompt_file.prompts) - len(todo)} already answered, {answered} answered "
        f"now, {len(failed)} failed{' (' + ', '.join(failed) + ')' if failed else ''} -> {output}"
    )
    return 1 if failed else 0


def answer_record(record: dict, text: str, model_id: str, settings: dict, num_frames: int) -> dict:
    metadata = {k: v for k, v in record.items() if k not in ("question_id", "text")}
    return {
        "question_id": record["question_id"],
        "prompt": record["text"],
        "text": text,
        "answer_id": uuid.uuid4().hex,
        "model_id": model_id,
        "metadata": metadata | {"generation": settings, "num_frames": num_frames},
    }
