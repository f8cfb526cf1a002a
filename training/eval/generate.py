"""`framelm generate`: batch inference from a prompt jsonl (NeVA's prompts or training's messages records, see
`prompts.py`), resumable, one bad prompt never loses the rest. The options, their help and the checks made before the
model loads are in `generate_args.py`."""

from __future__ import annotations

import functools
import json
import logging
import os
import uuid
from dataclasses import replace
from pathlib import Path

from framelm.processing.messages_framelm import build_messages
from framelm.training.batches.padding import PIXEL_KEYS, collate
from framelm.training.data.media_exists import local_paths
from framelm.training.data.paths import is_remote, resolve_media_path
from framelm.training.data.sample import Sample
from framelm.training.eval.prompts import Prompt, answered_keys, media_lists, read_prompts

logger = logging.getLogger(__name__)


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
    return encode_messages(processor, messages)


def encode_sample(processor, sample: Sample, *, system_prompt: str | None = None) -> dict:
    """A messages prompt's conversation (read by the training reader, ending with the user turn to answer) ->
    unpadded model inputs, by training's own `Sample.to_messages`. `system_prompt` applies when the record has none;
    raises `FileNotFoundError` for a missing local file (its path was resolved and checked when the file was read)."""
    for path in local_paths(m.to_row() for m in sample.media):
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
    if system_prompt and not sample.system:
        sample = replace(sample, system=system_prompt)
    return encode_messages(processor, sample.to_messages())


def encode_messages(processor, messages: list[dict]) -> dict:
    """Content-list messages -> `input_ids` (L,) of the chat template with the generation prompt, and pixel tensors."""
    out = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    return {"input_ids": out["input_ids"][0]} | {key: out[key] for key in PIXEL_KEYS if key in out}


def encode_any(processor, prompt: Prompt, media_root: str, *, system_prompt: str | None, insert_media_token: str,
               allow_outside_root: bool) -> dict:  # fmt: skip
    """A prompt of either format -> unpadded model inputs."""
    if prompt.sample is not None:
        return encode_sample(processor, prompt.sample, system_prompt=system_prompt)
    return encode_prompt(processor, prompt.record, media_root, system_prompt=system_prompt,
                         insert_media_token=insert_media_token, allow_outside_root=allow_outside_root)  # fmt: skip


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


def run(args) -> int:
    """`args`: a checked `GenerateArguments` (eval/generate_args.py)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.processing import FrameLMProcessor
    from framelm.training.model.loading import set_num_frames

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    set_seed(args.seed)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    media_root = args.media_base_path if args.media_base_path is not None else os.path.dirname(args.prompt_file)
    prompt_file = read_prompts(args.prompt_file, media_root, args.allow_outside_root)
    require_prompt_media(prompt_file, media_root, args)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = FrameLMForConditionalGeneration.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
    processor = FrameLMProcessor.from_pretrained(args.model)
    if args.num_frames is not None:
        set_num_frames(processor, args.num_frames)
    model_id = args.model_id or Path(args.model.rstrip("/")).name
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
    encode = functools.partial(encode_any, processor, media_root=media_root, system_prompt=args.system_prompt,
                               insert_media_token=args.insert_media_token,
                               allow_outside_root=args.allow_outside_root)  # fmt: skip
    with output.open("ab") as handle, tqdm(total=len(todo), desc="generating", unit="prompt") as bar:
        for start in range(0, len(todo), args.batch_size):
            chunk, encoded = [], []
            for prompt in todo[start : start + args.batch_size]:
                try:
                    encoded.append(encode(prompt))
                    chunk.append(prompt)
                except (OSError, ValueError, ImportError) as err:  # missing, outside the root, undecodable, unfetched
                    failed.append(prompt.key)
                    logger.error("%s (question_id=%s) skipped: %s", prompt.where, prompt.key, err)
            if chunk:
                with torch.inference_mode():
                    texts = answer(model, processor, encoded, **settings)
                for prompt, text in zip(chunk, texts, strict=True):
                    append_line(handle, answer_record(prompt, text, model_id, settings, processor.num_frames))
            bar.update(len(todo[start : start + args.batch_size]))
    answered = len(todo) - (len(failed) - len(prompt_file.problems))
    print(
        f"{prompt_file.total} prompts: {len(prompt_file.prompts) - len(todo)} already answered, {answered} answered "
        f"now, {len(failed)} failed{' (' + ', '.join(failed) + ')' if failed else ''} -> {output}"
    )
    return 1 if failed else 0


def require_prompt_media(prompt_file, media_root: str, args) -> None:
    """Before the model loads: a stat of every local media file the prompts name; past `--max_bad_fraction` of the
    prompts missing one, stop (a wrong --media-base-path), naming the first."""
    from framelm.training.data.media_exists import existing, require_within_budget

    per_prompt = []
    for prompt in prompt_file.prompts:
        if prompt.sample is not None:  # resolved when the file was read
            per_prompt.append(local_paths(m.to_row() for m in prompt.sample.media))
            continue
        try:
            media = {key: [resolve_media_path(p, media_root, args.allow_outside_root) for p in paths]
                     for key, paths in media_lists(prompt.record).items()}  # fmt: skip
        except ValueError:  # outside the root: reported per prompt when it is answered
            media = {}
        per_prompt.append([p for paths in media.values() for p in paths if not is_remote(p)])
    there = existing(p for paths in per_prompt for p in paths)
    missing = [(prompt, [p for p in paths if p not in there])
               for prompt, paths in zip(prompt_file.prompts, per_prompt, strict=True)]  # fmt: skip
    missing = [(prompt, paths) for prompt, paths in missing if paths]
    if missing:
        prompt, paths = missing[0]
        cause = f"missing media files, first {prompt.where}: {paths[0]} does not exist"
        require_within_budget(len(missing), len(prompt_file.prompts), args.prompt_file, args.max_bad_fraction, cause,
                              "nothing was generated")  # fmt: skip


def answer_record(prompt: Prompt, text: str, model_id: str, settings: dict, num_frames: int) -> dict:
    """llava-bench's answer line. A messages prompt: `question_id` is its question_id or id, `prompt` the user turn
    answered (placeholders as written), `reference` the training record's own answer to it, when it had one."""
    record = prompt.record
    if prompt.sample is None:
        id_key, question = "question_id", record["text"]
    else:
        id_key, question = ("question_id" if "question_id" in record else "id"), prompt.sample.turns[-1].text
    metadata = {k: v for k, v in record.items() if k not in (id_key, "text" if prompt.sample is None else "messages")}
    line = {
        "question_id": record[id_key],
        "prompt": question,
        "text": text,
        "answer_id": uuid.uuid4().hex,
        "model_id": model_id,
        "metadata": metadata | {"generation": settings, "num_frames": num_frames},
    }
    return line | ({"reference": prompt.reference} if prompt.reference is not None else {})
