"""The bad-record policy (`--bad_records strict|skip`): what happens to records that cannot be used. Never silent."""

from __future__ import annotations

import logging

from framelm.training.data.arguments import BAD_RECORD_POLICIES
from framelm.training.data.sample import RecordProblem
from framelm.training.errors import InputError

logger = logging.getLogger(__name__)

SHOWN_PROBLEMS = 20  # problems listed in a strict run's error before "... and N more"


class DataError(InputError, ValueError):
    """The data cannot be used as given (a mixture that does not parse, a file that cannot be read, bad records);
    the message says where, what and how to fix it, and commands print it without a traceback."""


class BadRecordsError(DataError):
    """Bad records under `strict`, or no usable record at all; the message lists the records and names the fixes."""


def apply_bad_record_policy(
    problems: list[RecordProblem], total: int, path: str, policy: str, skip_flag: str = "--bad-records skip"
) -> None:
    """`strict`: raise `BadRecordsError` listing the problems; `skip`: log each one and the count.

    `skip_flag` is how the calling command spells the switch to `skip`, named in the error.
    """
    if policy not in BAD_RECORD_POLICIES:
        raise ValueError(f"bad records policy {policy!r} is not one of {BAD_RECORD_POLICIES}")
    if not problems:
        return
    if policy == "strict":
        listed = "\n".join(f"  {p.where} (id={p.id}): {p.problem} -> {p.fix}" for p in problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise BadRecordsError(
            f"{path}: {len(problems)} of {total} records cannot be used:\n{listed}{more}\n"
            f"Fix them (`framelm data validate {path} --report bad.jsonl` lists every one), or pass {skip_flag} to "
            "go on without them."
        )
    for problem in problems:
        logger.warning("skipping %s (id=%s): %s", problem.where, problem.id, problem.problem)
    logger.warning("%s: skipped %d of %d records", path, len(problems), total)


def require_records(count: int, total: int, path: str) -> None:
    """Stop with a clear message when no record is left to use (every one was bad, or the file is empty)."""
    if count == 0:
        raise BadRecordsError(
            f"{path}: no usable record ({total} read, all of them skipped or none at all); "
            f"`framelm data validate {path}` says what is wrong with each one"
        )
