"""The review file of `framelm judge`: a cache of reviews keyed by question and models, rewritten atomically."""

from __future__ import annotations

import json
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from framelm.training.atomic_write import write_text_atomically
from framelm.training.eval.judge.backends import ChatJudge, JudgeUnavailableError
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
    write_text_atomically(
        path, json.dumps({"summary": summary, "reviews": [asdict(item) for item in reviews]}, indent=1)
    )


def fresh_reviews(tasks: list[Task], reviews: dict) -> list[Review]:
    """The reviews that answer these tasks as they are now (same prompt), in task order."""
    found = [(reviews.get(task.key), task) for task in tasks]
    return [item for item, task in found if item and item.prompt_sha256 == task.prompt_sha256]


def run_reviews(
    tasks: list[Task],
    pending: list[Task],
    judge: ChatJudge,
    reviews: dict,
    *,
    output: Path,
    attempts: int,
    save_every: int,
    parallel: int = 1,
) -> None:
    """Review `pending` into `reviews`, `parallel` at a time, saving every `save_every` reviews and on the way out.

    Reviews are stored in task order whatever order they finish in, so the review file does not depend on timing.
    When one fails (`JudgeUnavailableError`), no new review starts; those already running finish and are saved,
    then the error is raised.
    """
    from tqdm import tqdm

    def save() -> None:
        write_output(output, list(reviews.values()), summarize(fresh_reviews(tasks, reviews)))

    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="judge") as pool:
        futures = [pool.submit(review, task, judge, attempts) for task in pending]
        try:
            with tqdm(total=len(pending), desc=f"judge {judge.name}", unit="review") as bar:
                for task, future in zip(pending, futures, strict=True):
                    try:
                        reviews[task.key] = future.result()
                    except CancelledError:
                        continue
                    except JudgeUnavailableError as error:
                        failure = failure or error
                        for later in futures:
                            later.cancel()
                        continue
                    bar.update()
                    if bar.n % save_every == 0:
                        save()
        except BaseException:  # Ctrl-C: start nothing new, keep what is done
            for later in futures:
                later.cancel()
            raise
        finally:
            save()
    if failure is not None:
        raise failure
