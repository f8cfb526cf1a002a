"""The `framelm data` commands: check, measure and convert training data, and extract video frames. Their entries
are in `framelm`'s one command table (training/cli.py); each `*_main(argv)` parses its options and runs.

    framelm data validate train.json --image-folder imgs/ --report bad.jsonl   # every record, every problem
    framelm data validate mix.yaml --no-media-check                            # structure only: fast
    framelm data validate train.json --max-length 4096 --model ./my-framelm    # also records too long to train
    framelm data stats train.json --model ./my-framelm --max-length 4096       # tokens per record
    framelm data convert train.json --out data/arrow                           # normalized Arrow (save_to_disk)
    framelm data convert mix.yaml --out data/wds --to webdataset --split 9,1,0  # media inside
    framelm data validate data/wds                                             # shards, Hub ids, save_to_disk too
    framelm data extract-frames videos/ --interval 0.5                         # clip.mp4 -> clip/00001.jpg + clip.json

PATH is a json, jsonl, csv, parquet or arrow file, a mixture YAML, a `save_to_disk` folder, a folder of data files
or a Hub dataset id, or WebDataset shards from `convert` (folder, .tar or glob). The data options are those of
`framelm train` (`DataArguments`), spelled with dashes or underscores. Heavy libraries load only when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from framelm.training.data.arguments import (
    ConvertArguments,
    DataArguments,
    StatsArguments,
    TokenCountArguments,
    ValidateArguments,
)
from framelm.training.errors import FrameLMParser, InputError, UsageError


def run_validate(data: DataArguments, counts: TokenCountArguments, options: ValidateArguments) -> int:
    from framelm.training.data.media_check import MediaCheck
    from framelm.training.data.validate import validate

    processor = _counting_processor(counts) if counts.model is not None else None
    media = MediaCheck(remote=options.remote_media_check)  # without --model: the processor's defaults
    if processor is not None:  # its frames per video (--num-frames applied) and fetch limits
        media = replace(media, num_frames=processor.num_frames, limits=processor.fetch_limits)
    elif counts.num_frames is not None:
        media = replace(media, num_frames=counts.num_frames)
    report = validate(
        data,
        check_media=options.media_check,
        media=media,
        max_length=counts.max_length,
        processor=processor,
        ignore=options.ignore,
    )
    print(report.table())
    if options.report:
        report.write_report(options.report)
        print(f"\n{len(report.problems)} problems written to {options.report}")
    if options.strict and report.warnings:
        print(f"\n--strict: {len(report.warnings)} warnings count as failures")
        return 1
    return 0 if report.ok else 1


def run_stats(data: DataArguments, counts: TokenCountArguments, options: StatsArguments) -> int:
    from framelm.training.data.budget import measure_lengths
    from framelm.training.data.loading import load_samples
    from framelm.training.data.policy import apply_bad_record_policy
    from framelm.training.data.stats import token_stats

    loaded = load_samples(data)
    apply_bad_record_policy(loaded.problems, loaded.total, data.dataset, data.bad_records)
    measured = measure_lengths(loaded.dataset, _counting_processor(counts), counts.max_length, data.num_proc)
    batch = (options.per_device_train_batch_size, options.gradient_accumulation_steps, options.num_processes)
    print(token_stats(measured, counts.max_length, batch).table(bins=options.bins))
    return 0


def run_convert(data: DataArguments, options: ConvertArguments) -> int:
    from framelm.training.data.convert import check_output_folder, parse_split, save_arrow
    from framelm.training.data.loading import load_samples
    from framelm.training.data.policy import apply_bad_record_policy
    from framelm.training.data.shard_writer import write_webdataset

    check_output_folder(options.out)
    split = parse_split(options.split)
    loaded = load_samples(data)
    apply_bad_record_policy(loaded.problems, loaded.total, data.dataset, data.bad_records)
    if options.to == "arrow":
        save_arrow(loaded, options.out, num_proc=data.num_proc)
        print(f"{len(loaded.dataset):,} samples saved to {options.out} (datasets.load_from_disk)")
    else:
        counts = write_webdataset(
            loaded.dataset,
            options.out,
            split=split,
            shard_size=options.shard_size,
            seed=data.sampling_seed,
            num_proc=data.num_proc,
            bad_records=data.bad_records,
        )
        print(f"WebDataset shards in {options.out}: " + ", ".join(f"{n:,} {name}" for name, n in counts.items()))
    return 0


def _counting_processor(counts: TokenCountArguments):
    """The processor of `--model`, with `--num-frames` applied: it counts the tokens of every record. Only FrameLM's
    own processor class is loaded (never a model's remote code), and only for a model whose type is framelm."""
    from transformers import PretrainedConfig

    from framelm.processing import FrameLMProcessor
    from framelm.training.data.paths import require_local_or_hub

    name = require_local_or_hub(counts.model, "--model")
    try:
        config, _ = PretrainedConfig.get_config_dict(name)
    except OSError as err:
        raise InputError(f"--model {name}: {_first_line(err)}", "pass a FrameLM folder or Hub id") from err
    if config.get("model_type") != "framelm":
        raise InputError(
            f"--model {name} is a {config.get('model_type')!r} model, not a FrameLM",
            "pass a folder from `framelm init` or `framelm train`; a llava-hf model imports with framelm init "
            "--from-llava",
        )
    processor = FrameLMProcessor.from_pretrained(name)
    if counts.num_frames is not None:
        processor.num_frames = counts.num_frames  # as model.loading.set_num_frames does for training
    return processor


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def run_extract_frames(args: argparse.Namespace) -> int:
    from framelm.training.data.extract_frames import extract_frames

    report = extract_frames(
        args.inputs,
        interval=args.interval,
        out_root=args.out,
        num_proc=args.num_proc,
        overwrite=args.overwrite,
    )
    print(f"{len(report.done)} videos extracted, {len(report.skipped)} already done, {len(report.failed)} failed")
    for video, why in report.failed.items():
        print(f"  {video}: {why}", file=sys.stderr)
    return 1 if report.failed else 0


DESCRIPTIONS = {
    "validate": "Check every record; print a summary of errors and warnings, write a report.",
    "stats": "Tokens per record (text, media, total) for a model's processor, and what max_length would do.",
    "convert": "Write the normalized Arrow dataset or WebDataset shards.",
    "extract-frames": "Videos -> folders of JPEG frames plus <video>.json (fps).",
}
_OPTIONS = {  # command -> its option dataclasses after DataArguments
    "validate": (TokenCountArguments, ValidateArguments),
    "stats": (TokenCountArguments, StatsArguments),
    "convert": (ConvertArguments,),
}


def build_parser(command: str):
    """The `HfArgumentParser` of one command reading data: `DataArguments` plus the command's own options."""
    from transformers import HfArgumentParser

    class DataParser(FrameLMParser, HfArgumentParser):
        pass

    parser = DataParser(
        (DataArguments, *_OPTIONS[command]), prog=f"framelm data {command}", description=DESCRIPTIONS[command]
    )
    parser.add_argument("path", metavar="PATH", nargs="?", help="The records (the same as --dataset).")
    return parser


def parse(command: str, argv: list[str]) -> tuple:
    """The command's dataclasses, PATH folded into `DataArguments.dataset`; user errors are `UsageError`s."""
    parser = build_parser(command)
    try:
        *parsed, extra, unknown = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except ValueError as err:  # a value a dataclass refuses
        parser.error(str(err))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    data = parsed[0]
    for name in DataArguments.TRAIN_ONLY:  # read by `framelm train` only: refused here rather than ignored
        if getattr(data, name) != getattr(DataArguments, name):
            parser.error(f"--{name} applies to `framelm train`, not to `framelm data {command}`")
    data.dataset = extra.path or data.dataset
    if data.dataset is None:
        parser.error("say which records: PATH (a data file or a mixture YAML)")
    counts = next((p for p in parsed if isinstance(p, TokenCountArguments)), None)
    if counts is not None and counts.max_length is not None and counts.model is None:
        parser.error("--max-length needs --model (its processor counts the tokens)")
    if command == "stats" and counts.model is None:
        parser.error("stats needs --model (its processor counts the tokens)")
    return tuple(parsed)


def extract_frames_parser() -> FrameLMParser:
    from framelm.training.data.extract_frames import interval_seconds  # standard library only at import time

    parser = FrameLMParser(prog="framelm data extract-frames", description=DESCRIPTIONS["extract-frames"])
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER", help="Video files or folders to search.")
    parser.add_argument(
        "--interval", type=interval_seconds, default=0.5, help="Seconds between kept frames (0.5: 2 fps), 0.001-86400."
    )
    parser.add_argument("--out", help="Root of the frame folders (default: beside each video).")
    parser.add_argument("--num-proc", type=int, help="Videos decoded in parallel (default: all cores).")
    parser.add_argument("--overwrite", action="store_true", help="Extract again videos that are already done.")
    return parser


def _run(command: str, run, argv: list[str]) -> int:
    parsed = parse(command, argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(*parsed)
    except (InputError, UsageError):
        raise
    except ValueError as err:  # the data room's own refusals (bad records, a bad YAML) name the file and the fix
        raise InputError(str(err)) from err


def validate_main(argv: list[str]) -> int:
    return _run("validate", run_validate, argv)


def stats_main(argv: list[str]) -> int:
    return _run("stats", run_stats, argv)


def convert_main(argv: list[str]) -> int:
    return _run("convert", run_convert, argv)


def extract_frames_main(argv: list[str]) -> int:
    args = extract_frames_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_extract_frames(args)
