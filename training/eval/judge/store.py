"""The review file of `framelm judge`: a cache of reviews keyed by question and models, rewritten atomically."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from framelm.training.eval.judge.backends import ChatJudge
from framelm.training.eval.judge.inputs import JudgeInputError, Task
from framelm.training.eval.judge.protocol import Review, review, summarize


def load_reviews(path: Path) -> dict[tuple[str, str, str, str], Review]:
    """The reviews of an earlier run's output json, by cache key; nothing when the file does not exist yet."""
    if not path.exists():
        return {}
    try:
        reviews = [Review(**record) for record in json.loads(path.read_text(encoding="utf-8"))["reviews"]]
    except (ValueError, KeyError, TypeError) as error:
        raise JudgeInputError(
            f"{path}: not a framelm judge review file ({error}); pass a new --output, or delete it to start over"
        ) from None
    return {item.key: item for item in reviews}


def write_output(path: Path, reviews: list[Review], summary: list[dict]) -> None:
    """Write the review json through a temporary file and a rename: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # same folder: os.replace is atomic only within one file system
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"summary": summary, "reviews": [asdict(item) for item in reviews]}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def fresh_reviews(tasks: list[Task], reviews: dict) -> list[Review]:
    """The reviews that answer these tasks as they are now (same prompt), in task order."""
    found = [(reviews.get(task.key), task) for task in tasks]
    return [item for item, task in found if item and item.prompt_sha256 == task.prompt_sha256]


def run_reviews(
    tasks: list[Task], pending: list[Task], judge: ChatJudge, reviews: dict, args: argparse.Namespace
) -> None:
    """Review `pending` into `reviews`, saving every `args.save_every` reviews and on the way out, error or not."""
    from tqdm import tqdm

    try:
        for done, task in enumerate(tqdm(pending, desc=f"judge {judge.name}", unit="review"), 1):
            reviews[task.key] = review(task, judge, args.attempts)
            if done % args.save_every == 0:
                write_output(args.output, list(reviews.values()), summarize(fresh_reviews(tasks, reviews)))
    finally:
        write_output(args.output, list(reviews.values()), summarize(fresh_reviews(tasks, reviews)))
