"""`framelm data`: check, measure and convert training data, and extract video frames.

    framelm data validate train.json --image-folder imgs/ --report bad.jsonl   # every record, every problem
    framelm data validate mix.yaml --no-media-check                            # structure only: fast
    framelm data validate train.json --max-length 4096 --model ./my-framelm    # also media spans cut by truncation
    framelm data stats train.json --model ./my-framelm --max-length 4096       # tokens per record
    framelm data convert train.json --out data/arrow                           # normalized Arrow (save_to_disk)
    framelm data convert mix.yaml --out data/wds --to webdataset --split 9,1,0
    framelm data extract-frames videos/ --interval 0.5                         # clip.mp4 -> clip/00001.jpg + clip.json

PATH is a json, jsonl, csv or parquet file, or a mixture YAML. Heavy libraries load only when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _data_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that reads PATH shares (the same names exist in `framelm train` recipes)."""
    parser.add_argument("path", metavar="PATH", help="A json/jsonl/csv/parquet data file or a mixture YAML.")
    group = parser.add_argument_group("reading the data")
    group.add_argument(
        "--format",
        default="auto",
        choices=["auto", "llava", "lmms", "sharegpt"],
        help="Record format; auto detects it from the first records of each file.",
    )
    group.add_argument(
        "--image-folder", help="Root that relative image paths resolve to (default: the file's folder)."
    )
    group.add_argument(
        "--video-folder",
        help="Root that relative video paths and frame folders resolve to (default: the file's folder).",
    )
    group.add_argument("--user-key", help="Role name of user turns in your data (default: human or user).")
    group.add_argument(
        "--assistant-key", help="Role name of assistant turns in your data (default: gpt or assistant)."
    )
    group.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="Accept media paths that escape their root folder (refused by default).",
    )
    group.add_argument("--num-proc", type=int, help="Worker processes (default: all cores for large files).")
    group.add_argument("--seed", type=int, default=0, help="Seed of mixture sampling (random:N) and of splits.")
    group.add_argument("--cache-dir", help="Arrow cache folder (default: the Hugging Face datasets cache).")


def _load_kwargs(args) -> dict:
    return {
        "format": args.format,
        "image_folder": args.image_folder,
        "video_folder": args.video_folder,
        "user_key": args.user_key,
        "assistant_key": args.assistant_key,
        "allow_outside_root": args.allow_outside_root,
        "num_proc": args.num_proc,
        "seed": args.seed,
        "cache_dir": args.cache_dir,
    }


def _model_options(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("token budget")
    group.add_argument(
        "--model", required=required, help="Model folder (or Hub id) whose processor sets the tokens per image/frame."
    )
    group.add_argument("--num-frames", type=int, help="Frames per video (default: the processor's own setting).")
    group.add_argument("--max-length", type=int, help="Sequence length training will use, in tokens.")


def run_validate(args) -> int:
    from framelm.training.data.budget import TokenBudget
    from framelm.training.data.validate import validate

    budget = None
    if args.max_length is not None:
        if not args.model:
            print(
                "framelm data validate: --max-length needs --model (its processor counts the tokens)", file=sys.stderr
            )
            return 2
        budget = TokenBudget.from_pretrained(args.model, args.num_frames)
    report = validate(
        args.path,
        **_load_kwargs(args),
        check_media=not args.no_media_check,
        max_length=args.max_length,
        budget=budget,
        ignore=args.ignore or (),
    )
    print(report.table())
    if args.report:
        report.write_report(args.report)
        print(f"\n{len(report.problems)} problems written to {args.report}")
    return 0 if report.ok else 1


def run_stats(args) -> int:
    from framelm.training.data.budget import TokenBudget
    from framelm.training.data.loading import load_samples
    from framelm.training.data.stats import token_stats

    loaded = load_samples(args.path, **_load_kwargs(args))
    if loaded.problems:
        print(f"{len(loaded.problems)} records cannot be read and are not counted (framelm data validate lists them)")
    stats = token_stats(loaded.dataset, TokenBudget.from_pretrained(args.model, args.num_frames), args.max_length)
    print(stats.table(bins=args.bins))
    return 0


def run_convert(args) -> int:
    from framelm.training.data.convert import save_arrow, write_webdataset
    from framelm.training.data.loading import apply_bad_record_policy, load_samples

    loaded = load_samples(args.path, **_load_kwargs(args))
    apply_bad_record_policy(loaded, args.path, args.bad_records)
    if args.to == "arrow":
        save_arrow(loaded, args.out, num_proc=args.num_proc)
        print(f"{len(loaded.dataset):,} samples saved to {args.out} (datasets.load_from_disk)")
    else:
        split = tuple(float(x) for x in args.split.split(","))
        counts = write_webdataset(loaded.dataset, args.out, split=split, shard_size=args.shard_size, seed=args.seed)
        print(f"WebDataset shards in {args.out}: " + ", ".join(f"{n:,} {name}" for name, n in counts.items()))
    return 0


def run_extract_frames(args) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framelm data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="Check every record; print a summary, write a report.")
    _data_options(validate)
    _model_options(validate, required=False)
    validate.add_argument(
        "--no-media-check", action="store_true", help="Check structure only; do not open media files (fast)."
    )
    validate.add_argument("--report", metavar="FILE", help="Write every problem to FILE as JSON Lines.")
    validate.add_argument(
        "--ignore",
        action="append",
        metavar="KIND",
        help="Do not report problems of this kind (repeatable), e.g. unusual_mode for grayscale images.",
    )
    validate.set_defaults(run=run_validate)

    stats = commands.add_parser("stats", help="Tokens per record (text, media, total) for a model's processor.")
    _data_options(stats)
    _model_options(stats, required=True)
    stats.add_argument("--bins", type=int, default=10, help="Bars of the histogram of total tokens.")
    stats.set_defaults(run=run_stats)

    convert = commands.add_parser("convert", help="Write the normalized Arrow dataset or WebDataset shards.")
    _data_options(convert)
    convert.add_argument("--out", required=True, help="Output folder.")
    convert.add_argument(
        "--to", choices=["arrow", "webdataset"], default="arrow", help="arrow: save_to_disk; webdataset: tar shards."
    )
    convert.add_argument(
        "--split", default="9,1,0", help="train,val,test weights of the WebDataset split (records are shuffled)."
    )
    convert.add_argument("--shard-size", type=int, default=10_000, help="Records per WebDataset shard.")
    convert.add_argument(
        "--bad-records",
        choices=["strict", "skip"],
        default="strict",
        help="strict: stop and list bad records; skip: leave them out and log each one.",
    )
    convert.set_defaults(run=run_convert)

    from framelm.training.data.extract_frames import interval_seconds  # standard library only at import time

    frames = commands.add_parser("extract-frames", help="Videos -> folders of JPEG frames plus <video>.json (fps).")
    frames.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER", help="Video files or folders to search.")
    frames.add_argument(
        "--interval", type=interval_seconds, default=0.5, help="Seconds between kept frames (0.5: 2 fps), 0.001-86400."
    )
    frames.add_argument("--out", help="Root of the frame folders (default: beside each video).")
    frames.add_argument("--num-proc", type=int, help="Videos decoded in parallel (default: all cores).")
    frames.add_argument("--overwrite", action="store_true", help="Extract again videos that are already done.")
    frames.set_defaults(run=run_extract_frames)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:  # user errors (bad YAML, strict conversion): message, no traceback
        print(f"framelm data {args.command}: {err}", file=sys.stderr)
        return 1
