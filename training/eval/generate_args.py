"""`framelm generate`: batch inference from a prompt jsonl, resumable, one bad prompt never loses the rest.

    framelm generate out/ --prompt-file prompts.jsonl --media-base-path videos/ --output-file answers.jsonl
    framelm generate out/ --prompt-file prompts.jsonl --output-file answers.jsonl --device cuda --dtype bfloat16 \
        --temperature 0.2 --top-p 0.9 --repetition-penalty 1.2 --insert-media-token right

A prompt line is NeVA's `{"video": "video_test.mp4", "text": "Can you describe the scene?", "category": "conv",
"question_id": 0}` (or `"image"`; either may be a list), or a record in the messages format training reads (TRL's):
`{"id": 0, "messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...], "images": [...],
"videos": [...]}`, content a string with <image>/<video> placeholders or a list of {"type": "text" | "image" |
"video"} parts, checked as training checks it. The whole conversation is the context and its last user turn is
answered; a record ending with an assistant turn (training data) is asked the turn before, and that turn is written
as the answer's `reference`. The format is told from the file's records; a file mixing the two is refused.

Media paths resolve as in training data (`data/paths.py`): against `--media-base-path`, or the prompt file's own
folder; a path leading outside it is refused unless `--allow-outside-root`. The prompt becomes messages through the
same builder as training records. Each answer line holds question_id (a messages record's question_id or id),
prompt, text, answer_id, model_id and metadata (category, media, generation settings) - the answer-file format
llava-bench and `framelm judge` read. A line that cannot be answered (not JSON, no usable id, text or media, an id
already used, placeholders and media that do not match) is reported with its line and skipped (`prompts.py`), as is
a prompt whose media cannot be read; every other prompt is answered, and the exit code is 1.

This module holds the options and the checks made before the model loads (free of torch: `--help` and a mistyped
path answer at once); `eval/generate.py` runs the job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from framelm.training.errors import FrameLMParser, InputError, UsageError

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class GenerateArguments:
    """`framelm generate MODEL --prompt-file P --output-file A`: files, prompt, sampling, execution."""

    prompt_file: str = field(
        metadata={"help": "jsonl of prompts: question_id, text, image or video (NeVA); or id, messages, images, "
                  "videos (the training format)."}
    )  # fmt: skip
    output_file: str = field(metadata={"help": "jsonl of answers; question ids already in it are skipped."})
    media_base_path: str | None = field(
        default=None, metadata={"help": "Root that media paths resolve against (default: the prompt file's folder)."}
    )
    allow_outside_root: bool = field(
        default=False, metadata={"help": "Accept media paths whose real location is outside the root (refused)."}
    )
    model_id: str | None = field(
        default=None, metadata={"help": "model_id written in every answer (default: the folder name)."}
    )
    max_bad_fraction: float = field(
        default=0.01,
        metadata={"help": "Share of prompts whose local media files may be missing (checked before the model loads); "
                  "past it nothing is generated."},
    )  # fmt: skip
    system_prompt: str | None = field(default=None, metadata={"help": "System prompt placed before every question."})
    insert_media_token: Literal["left", "right"] = field(
        default="left",
        metadata={"help": "Where the media go when a prompt's text has no <image>/<video> placeholder (NeVA: right)."},
    )
    num_frames: int | None = field(default=None, metadata={"help": "Frames per video (default: the model's)."})
    greedy: bool = field(default=False, metadata={"help": "Greedy decoding; ignores temperature/top-k/top-p."})
    temperature: float = field(default=0.2, metadata={"help": "Sampling temperature."})
    top_k: int = field(default=0, metadata={"help": "Keep the k most likely tokens; 0 = no top-k limit."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling mass."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "1.0 = none; NeVA's example: 1.2."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens generated per answer at most."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampler, for reproducible runs."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call (left-padded)."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when there is one, else cpu), cpu, cuda:1, mps"})
    dtype: Dtype = field(default="auto", metadata={"help": "Weights dtype (auto: as saved)."})
    model: str = ""  # the positional MODEL

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size {self.batch_size} must be at least 1")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"--num_frames {self.num_frames} must be at least 1")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ValueError(f"--max_bad_fraction {self.max_bad_fraction} must be a share from 0 to 1")


def build_parser():
    from transformers import HfArgumentParser

    class GenerateParser(FrameLMParser, HfArgumentParser):
        pass

    parser = GenerateParser(GenerateArguments, prog="framelm generate", description=__doc__)
    parser.add_argument("model_path", metavar="MODEL", help="A saved FrameLM: local folder or Hub id.")
    return parser


def parse(argv: list[str]) -> GenerateArguments:
    """The options, checked: a usage error, a missing prompt file or a mistyped model path stop here."""
    from framelm.training.data.paths import require_local_or_hub

    parser = build_parser()
    try:
        args, extra = parser.parse_args_into_dataclasses(argv)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0], "see `framelm generate --help`") from err
    args.model = require_local_or_hub(extra.model_path, "MODEL")
    if not os.path.isfile(args.prompt_file):
        raise InputError(f"--prompt-file {args.prompt_file}: no such file", "check the path")
    if os.path.realpath(args.output_file) == os.path.realpath(args.prompt_file):
        raise UsageError(
            f"--output-file {args.output_file} is the prompt file: answers would be appended to the prompts",
            "write them to another file",
        )
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    from framelm.training.eval.generate import run

    return run(args)
