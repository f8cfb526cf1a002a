"""`framelm push`: upload an exported folder to the Hugging Face Hub with `HfApi.upload_folder`.

    framelm export runs/my-run --out hub/my-model --repo-id me/my-model
    framelm push hub/my-model --repo-id me/my-model --private
    framelm push hub/my-model --repo-id me/my-model --revision v2 --create-pr

The token comes from `hf auth login` or the HF_TOKEN environment variable (huggingface_hub's own rules), the Hub from
HF_ENDPOINT. `upload_folder` uploads large folders in resumable batches when `hf_xet` is installed: after a cut,
rerun the same command and what is already on the Hub is not sent again.

Only what `framelm export` writes is pushed: the top-level files whose names export's `PUBLISHED` list matches. A
symlink (it may point at any file on the machine), a dotfile (`.env`, `.git`), a subfolder or any other file is left
out, and the push says so, file by file. A folder holding pickles (`*.bin`, `*.pt`, `*.pth`, `*.pkl`:
optimizer, scheduler and RNG states of a training output_dir; loading a pickle runs code) or lacking the model card
is refused before anything is sent. Every HTTP exchange stalls at most `--timeout` seconds, and the whole push ends
by `--deadline`, so an endpoint that accepts connections and never answers ends with an error, not a hang.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from framelm.training.atomic_write import WRITTEN_RECORD
from framelm.training.errors import FrameLMParser, InputError
from framelm.training.hub.export import is_published

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("README.md", "config.json", "processor_config.json", "modeling_framelm.py")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
LISTED = 10  # file names quoted in an error before "... and N more"


class PushError(RuntimeError):
    """The push cannot start or did not finish; the message says why and what to do."""


def build_parser() -> argparse.ArgumentParser:
    parser = FrameLMParser(prog="framelm push", description=__doc__)  # fmt: skip
    parser.add_argument("folder", type=Path, help="A folder written by `framelm export`.")
    parser.add_argument("--repo-id", required=True, help="Target model repository, e.g. me/my-framelm.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private (if it is new).")
    parser.add_argument("--revision", default=None, help="Branch to commit to (created from main if missing).")
    parser.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing directly.")
    parser.add_argument("--commit-message", default="Upload FrameLM with framelm push", help="Commit title.")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="Longest wait for any one network read or write (connect, send, answer) before the push fails.",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=6 * 3600.0,
        metavar="SECONDS",
        help="Longest time for the whole push (default 6 h); a cut push resumes when run again.",
    )
    return parser


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def check_folder(folder: Path) -> tuple[list[str], dict[str, str]]:
    """(the files to send, {left-out entry: why}) of a folder `framelm export` wrote; PushError for one holding
    pickles, or lacking the card or the code among the files to send."""
    if not folder.is_dir():
        raise PushError(f"{folder}: no such folder; push the --out folder of `framelm export`")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    pickles = [name for name in files if name.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise PushError(
            f"{folder} holds pickle files, which run code when loaded and are never published: {_listed(pickles)}. "
            f"It looks like a training output_dir; write a Hub folder (safetensors only) with "
            f"`framelm export {folder} --out {folder}-hub` and push that"
        )
    send, left_out = [], {}
    for entry in sorted(os.listdir(folder)):
        mode = os.lstat(folder / entry).st_mode
        if entry == WRITTEN_RECORD:
            continue  # framelm's own record of what it wrote: local bookkeeping
        if stat.S_ISLNK(mode):
            left_out[entry] = "a symlink: it may point at any file on this machine"
        elif entry.startswith("."):
            left_out[entry] = "a dotfile"
        elif stat.S_ISDIR(mode):
            left_out[entry + "/"] = "a folder: export writes none"
        elif not stat.S_ISREG(mode) or not is_published(entry):
            left_out[entry] = "not a file `framelm export` writes"
        else:
            send.append(entry)
    missing = [name for name in REQUIRED_FILES if name not in send]
    fix = "push a folder written by `framelm export MODEL --out FOLDER`"
    if "README.md" in missing:
        raise PushError(f"{folder} has no model card (README.md): {fix}, which writes the card from the run")
    if missing:
        raise PushError(f"{folder} is missing {missing}: {fix}")
    return send, left_out


def resolve_token(token: str | None) -> str:
    """The token to push with: the one given, else huggingface_hub's (HF_TOKEN, then `hf auth login`'s file)."""
    from huggingface_hub import get_token

    token = (token or get_token() or "").strip()
    if not token:
        raise PushError("no Hugging Face token: run `hf auth login`, or set HF_TOKEN to a token with write access")
    return token


def push(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload FrameLM with framelm push",
    token: str | None = None,
    endpoint: str | None = None,
    timeout: float = 60.0,
    deadline: float = 6 * 3600.0,
    notify: Callable[[str], None] | None = None,
):
    """Create the repository (and branch) if needed and upload the folder's published files; returns the last
    commit's info. Each entry left out is told to `notify` (default: a logged warning) before anything is sent.

    The upload runs in a daemon thread that this call waits for at most `deadline` seconds: huggingface_hub's own
    timeouts bound each network read, not a whole upload, and its xet uploads none at all.
    """
    folder = Path(folder)
    send, left_out = check_folder(folder)
    for entry, why in left_out.items():
        (notify or logger.warning)(f"left out, not sent: {entry} ({why})")
    from huggingface_hub import HfApi, close_session, constants, get_session

    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set: huggingface_hub sends nothing in offline mode; unset it to push")
    api = HfApi(endpoint=endpoint, token=resolve_token(token))
    session = get_session()
    previous_timeout, session.timeout = session.timeout, timeout  # the shared client: every call of this push
    outcome: dict = {}

    def upload() -> None:
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            if revision and not create_pr:
                api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
            outcome["info"] = api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=folder,
                allow_patterns=[_exact(name) for name in send],  # these files and nothing else
                commit_message=commit_message,
                revision=revision,
                create_pr=create_pr,
            )
        except BaseException as err:  # handed to the waiting thread, which explains it
            outcome["error"] = err

    worker = threading.Thread(target=upload, name="framelm-push", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        # The worker keeps the old client, still bounded by `timeout`, and ends on its own (a daemon); the next
        # huggingface_hub call gets a fresh client.
        close_session()
        raise PushError(
            f"{api.endpoint} did not finish the push within --deadline {deadline:g} s; check the network and "
            "HF_ENDPOINT, or raise --deadline (rerun to resume: files already uploaded are not sent again)"
        )
    session.timeout = previous_timeout
    if "error" in outcome:
        http = importlib.import_module(type(session).__module__.split(".")[0])  # httpx or httpx2: the session's
        raise PushError(_explain(outcome["error"], api.endpoint, timeout, http)) from None
    return outcome["info"]


def _exact(name: str) -> str:
    """An fnmatch pattern matching `name` only (brackets around each wildcard character)."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in name)


def _explain(error: BaseException, endpoint: str, timeout: float, http) -> str:
    """One line for what huggingface_hub or its HTTP library (`http`) raised: what happened and what to check."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, http.TimeoutException):
        return f"{endpoint} sent no answer within --timeout {timeout:g} s; check the network and HF_ENDPOINT"
    if isinstance(error, http.TransportError):
        return f"cannot reach {endpoint} ({error}); check the network and HF_ENDPOINT"
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        hints = {401: "check your token (`hf auth login` or HF_TOKEN)", 403: "check that your token may write there",
                 404: "check --repo-id and --revision"}  # fmt: skip
        return f"the Hub refused the push: {str(error).splitlines()[0]}" + (
            f"; {hints[status]}" if status in hints else ""
        )
    return f"the push failed: {type(error).__name__}: {error}"


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not all(0 < value < math.inf for value in (args.timeout, args.deadline)):
        parser.error("--timeout and --deadline must be positive numbers of seconds")
    try:
        info = push(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            commit_message=args.commit_message,
            timeout=args.timeout,
            deadline=args.deadline,
            notify=lambda line: print(line, file=sys.stderr),
        )
    except PushError as err:
        raise InputError(str(err)) from err
    where = getattr(info, "pr_url", None) or getattr(info, "commit_url", info)
    print(f"pushed {args.folder} to {args.repo_id}: {where}")
    return 0
