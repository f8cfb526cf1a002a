"""`framelm chat MODEL`: talk to a FrameLM in the terminal, the reply streamed token by token (transformers).

Each line you type is a user turn. A line `/image PATH_OR_URL` or `/video PATH_OR_URL` attaches media to your next
turn (any form the processor reads: paths, URLs, data URLs); `/reset` starts a new conversation, `/quit` (or end of
input) leaves. Replies go to stdout, prompts and notices to stderr, so `framelm chat M < questions.txt > answers.txt`
works. Decoding is greedy unless `--temperature` is above 0.
"""

from __future__ import annotations

import argparse
import sys
import threading

from framelm.training.errors import FrameLMParser

COMMANDS = "/image PATH_OR_URL, /video PATH_OR_URL, /reset, /quit"


def build_parser() -> argparse.ArgumentParser:
    parser = FrameLMParser(prog="framelm chat", description=__doc__)
    parser.add_argument("model", help="A FrameLM folder or Hub id.")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy decoding.")
    parser.add_argument("--system-prompt", default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps ...")
    return parser


def user_turn(text: str, images: list[str], videos: list[str]) -> dict:
    content = [{"type": "image", "image": source} for source in images]
    content += [{"type": "video", "video": source} for source in videos]
    return {"role": "user", "content": content + [{"type": "text", "text": text}]}


def reply(model, processor, messages: list[dict], args, out) -> str:
    """Generate the assistant's answer to `messages`, writing it to `out` as it comes; returns the whole text."""
    from transformers import TextIteratorStreamer

    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": args.temperature} if args.temperature > 0 else {"do_sample": False}
    failure = []

    def generate():
        try:
            model.generate(**inputs, max_new_tokens=args.max_new_tokens, streamer=streamer, **sampling)
        except BaseException as err:  # shown after the stream ends, not lost in the thread
            failure.append(err)
            streamer.end()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        out.write(piece)
        out.flush()
    worker.join()
    out.write("\n")
    out.flush()
    if failure:
        raise failure[0]
    return "".join(pieces)


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be at least 1")
    if not args.temperature >= 0:
        parser.error("--temperature must be 0 (greedy) or more")
    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.processing import FrameLMProcessor

    try:
        model = FrameLMForConditionalGeneration.from_pretrained(args.model).to(args.device).eval()
        processor = FrameLMProcessor.from_pretrained(args.model)
    except (OSError, ValueError) as err:
        print(f"framelm chat: error: cannot load {args.model}: {err}", file=sys.stderr)
        return 1
    system_turn = {"role": "system", "content": [{"type": "text", "text": args.system_prompt}]}
    system = [system_turn] if args.system_prompt else []
    messages, images, videos = list(system), [], []
    print(f"framelm chat: {args.model} loaded; commands: {COMMANDS}", file=sys.stderr)
    while True:
        print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/quit":
            return 0
        line = line.strip()
        command, _, rest = line.partition(" ")
        if command in ("/image", "/video"):
            if not rest.strip():
                print(f"{command} needs a path or URL", file=sys.stderr)
                continue
            (images if command == "/image" else videos).append(rest.strip())
            print(f"attached {command[1:]} {rest.strip()} to your next message", file=sys.stderr)
            continue
        if command == "/reset":
            messages, images, videos = list(system), [], []
            continue
        if not line:
            continue
        turn = user_turn(line, images, videos)
        try:
            answer = reply(model, processor, messages + [turn], args, sys.stdout)
        except (OSError, ValueError, TypeError) as err:  # a media file that cannot be read: say so, keep chatting
            print(f"framelm chat: error: {err}", file=sys.stderr)
            images, videos = [], []
            continue
        messages += [turn, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        images, videos = [], []
