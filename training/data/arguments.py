"""The data options: one `DataArguments` for `framelm train` and every `framelm data` command that reads records.

`framelm train` parses it with TRL's `TrlParser` (so a YAML recipe sets the same keys) and `framelm data
validate|stats|convert` with transformers' `HfArgumentParser`; both accept `--image_folder` and `--image-folder`.
Functions that read data take the whole dataclass, never its fields one by one. Kept free of trl and torch, so that
the data commands start fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

DataFormat = Literal["auto", "llava", "lmms", "sharegpt", "preference"]
BadRecordPolicy = Literal["strict", "skip"]
BAD_RECORD_POLICIES: tuple[str, ...] = get_args(BadRecordPolicy)


@dataclass
class DataArguments:
    """Where the records are and how to read them."""

    _argument_group_name = "data"

    dataset: str | None = field(
        default=None,
        metadata={"help": "The records: a json/jsonl/csv/parquet/arrow file, a mixture YAML, a `save_to_disk` folder, "
                  "a folder of data files or a Hub dataset id (`datasets.load_dataset`), or WebDataset shards written "
                  "by `framelm data convert` (their folder, a .tar or a glob)."},
    )  # fmt: skip
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration (subset) of a Hub dataset, as `load_dataset(name=...)`."}
    )
    dataset_split: str = field(
        default="train",
        metadata={"help": "Split read from a Hub dataset, a saved DatasetDict or a shard folder (train, val, ...)."},
    )
    data_format: DataFormat = field(
        default="auto",
        metadata={"help": "Record format; auto detects it from the first records of each file.",
                  "aliases": ["--format"]},
    )  # fmt: skip
    image_folder: str | None = field(
        default=None, metadata={"help": "Root that relative image paths resolve to (default: the data file's folder)."}
    )
    video_folder: str | None = field(
        default=None,
        metadata={"help": "Root that relative video paths and frame folders resolve to (default: the data file's "
                  "folder)."},
    )  # fmt: skip
    user_key: str | None = field(
        default=None, metadata={"help": "Role name of user turns in your data (default: `human` or `user`)."}
    )
    assistant_key: str | None = field(
        default=None, metadata={"help": "Role name of assistant turns in your data (default: `gpt` or `assistant`)."}
    )
    allow_outside_root: bool = field(
        default=False,
        metadata={"help": "Accept media paths whose real location is outside their root folder (absolute paths, "
                  "`..`, symlinks pointing out); refused by default."},
    )  # fmt: skip
    trust_preprocess_code: bool = field(
        default=False,
        metadata={"help": "Let a mixture YAML's preprocess_fn name any import path ('package.module:function'), "
                  "importing and running that code, as `datasets`' trust_remote_code does. Off: only registered "
                  "functions run. Never applies to a mixture YAML fetched from a URL."},
    )  # fmt: skip
    bad_records: BadRecordPolicy = field(
        default="strict",
        metadata={"help": "Records that cannot be used. strict: stop and list them all; skip: leave them out, count "
                  "and report them. Never silent. (`data validate` always lists every one.)"},
    )  # fmt: skip
    max_bad_fraction: float = field(
        default=0.01,
        metadata={"help": "`framelm train`: the share of records a run may leave out under --bad_records skip "
                  "(missing or undecodable media, records too long). Past it the run stops, before the first step "
                  "(every local media file is checked to exist first) and while training; 0: none."},
    )  # fmt: skip
    num_proc: int | None = field(
        default=None,
        metadata={
            "help": "Worker processes reading the data and checking its media files (default: all cores for "
            "large inputs)."
        },
    )
    sampling_seed: int = field(
        default=0,
        metadata={"help": "Seed of the record sampling: mixture entries `random:N` and the shuffle before a "
                  "WebDataset split. The same seed picks the same records on every machine."},
    )  # fmt: skip
    cache_dir: str | None = field(
        default=None, metadata={"help": "Arrow cache folder (default: the Hugging Face datasets cache)."}
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "Read at most this many records of each dataset (of each mixture entry, after its "
                  "sampling): the first ones. For quick runs and debugging."},
    )  # fmt: skip
    val_size: float = field(
        default=0,
        metadata={"help": "`framelm train`: hold out this share (0.05) or number (500) of the training records as the "
                  "evaluation set, chosen with --sampling_seed; 0: none. Evaluation runs with --eval_strategy."},
    )  # fmt: skip
    streaming: bool = field(
        default=False,
        metadata={"help": "`framelm train`: read the records as training goes instead of into the Arrow cache first "
                  "(WebDataset shards always stream). Needs --max_steps, except for shards (their manifest counts "
                  "the records)."},
    )  # fmt: skip
    shuffle_buffer: int = field(
        default=1000,
        metadata={"help": "Streaming: records held to shuffle from (shards are also read in a seeded random "
                  "order); 0 keeps the stored order."},
    )  # fmt: skip

    def __post_init__(self):
        # argparse checks the choices typed on the command line, not the values a YAML recipe sets
        for name, value, allowed in (
            ("data_format", self.data_format, get_args(DataFormat)),
            ("bad_records", self.bad_records, BAD_RECORD_POLICIES),
        ):
            if value not in allowed:
                raise ValueError(f"--{name} {value!r} is not one of {allowed}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max_samples {self.max_samples} must be at least 1")
        if self.val_size < 0 or not (self.val_size < 1 or float(self.val_size).is_integer()):
            raise ValueError(f"--val_size {self.val_size} must be a share in [0, 1) or a whole number of records")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ValueError(f"--max_bad_fraction {self.max_bad_fraction} must be a share from 0 to 1")
        if self.shuffle_buffer < 0:
            raise ValueError(f"--shuffle_buffer {self.shuffle_buffer} must be 0 (no shuffling) or more")

    # options that only `framelm train` reads; the data commands refuse them rather than ignore them
    TRAIN_ONLY = ("val_size", "streaming", "shuffle_buffer", "max_bad_fraction")


@dataclass
class FramesArguments:
    """Frames per video: owned by the model and its processor; this option changes them where they are loaded."""

    num_frames: int | None = field(
        default=None,
        metadata={"help": "Frames sampled per video; short videos repeat frames. Default: the model's own setting."},
    )

    def __post_init__(self):
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"--num_frames {self.num_frames} must be at least 1")


@dataclass
class TokenCountArguments(FramesArguments):
    """`framelm data validate|stats`: whose processor counts the tokens, and the length training will use."""

    _argument_group_name = "token count"

    model: str | None = field(
        default=None,
        metadata={"help": "Model folder (or Hub id) whose processor counts the tokens per image and per frame."},
    )
    max_length: int | None = field(default=None, metadata={"help": "Sequence length training will use, in tokens."})


@dataclass
class ValidateArguments:
    """`framelm data validate`."""

    _argument_group_name = "validate"

    media_check: bool = field(
        default=True,
        metadata={"help": "Read every media file as training will (each image whole, the frames training picks from "
                  "each video); --no-media-check checks structure only (fast)."},
    )  # fmt: skip
    remote_media_check: bool = field(
        default=True,
        metadata={"help": "Fetch URL media (http(s)://, s3://, gs://) within the processor's fetch limits; "
                  "--no-remote-media-check reports each URL as a `remote_not_checked` warning instead."},
    )  # fmt: skip
    strict: bool = field(
        default=False, metadata={"help": "Exit non-zero on warnings too (unusual modes, URLs not fetched, ...)."}
    )
    report: str | None = field(default=None, metadata={"help": "Write every problem to this file as JSON Lines."})
    ignore: list[str] = field(
        default_factory=list,
        metadata={"help": "Problem kinds not to report (repeatable), e.g. unusual_mode.", "action": "extend"},
    )


@dataclass
class StatsArguments:
    """`framelm data stats`."""

    _argument_group_name = "stats"

    bins: int = field(default=10, metadata={"help": "Bars of the histogram of total tokens."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Records per device and step, for the steps per epoch (TRL's default: 8)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps summed per optimizer step."})
    num_processes: int = field(default=1, metadata={"help": "Training processes (GPUs) sharing each step."})

    def __post_init__(self):
        for name in ("bins", "per_device_train_batch_size", "gradient_accumulation_steps", "num_processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be at least 1")


@dataclass
class ConvertArguments:
    """`framelm data convert`."""

    _argument_group_name = "convert"

    out: str = field(metadata={"help": "Output folder."})
    to: Literal["arrow", "webdataset"] = field(
        default="arrow", metadata={"help": "arrow: `save_to_disk`; webdataset: tar shards."}
    )
    split: str = field(
        default="9,1,0", metadata={"help": "train,val,test weights of the WebDataset split (records are shuffled)."}
    )
    shard_size: int = field(default=10_000, metadata={"help": "Records per WebDataset shard."})
