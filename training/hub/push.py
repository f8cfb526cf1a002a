"""`framelm push`: upload an exported folder to the Hugging Face Hub in one commit.

    framelm export runs/my-run hub/my-model --repo-id me/my-model
    framelm push hub/my-model --repo-id me/my-model --private
    framelm push hub/my-model --repo-id me/my-model --revision v2 --create-pr

The token comes from `hf auth login` or the HF_TOKEN environment variable (huggingface_hub's own rules).
"""

from __future__ import annotations

import argparse
from pathlib import Path

REQUIRED_FILES = ("config.json", "processor_config.json", "README.md", "modeling_framelm.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framelm push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("folder", help="A folder written by `framelm export`.")
    parser.add_argument("--repo-id", required=True, help="Target model repository, e.g. me/my-framelm.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private (if it is new).")
    parser.add_argument("--revision", default=None, help="Branch to commit to (created from main if missing).")
    parser.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing directly.")
    parser.add_argument("--commit-message", default="Upload FrameLM with framelm push", help="Commit title.")
    return parser


def upload_operations(folder: Path) -> list:
    """One `CommitOperationAdd` per file of the folder, paths relative to it (hidden files left out)."""
    from huggingface_hub import CommitOperationAdd

    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if missing:
        raise ValueError(f"{folder} is missing {missing}: push a folder written by `framelm export`")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))
    return [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)) for p in files]


def push(args: argparse.Namespace, api=None):
    """Create the repository (and branch) if needed and upload every file in one commit; returns the commit info."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    operations = upload_operations(Path(args.folder))
    api.create_repo(args.repo_id, repo_type="model", private=args.private, exist_ok=True)
    if args.revision and not args.create_pr:
        api.create_branch(args.repo_id, branch=args.revision, repo_type="model", exist_ok=True)
    return api.create_commit(
        repo_id=args.repo_id,
        repo_type="model",
        operations=operations,
        commit_message=args.commit_message,
        revision=args.revision,
        create_pr=args.create_pr,
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    info = push(args)
    print(
        f"pushed {args.folder} to {args.repo_id}: {getattr(info, 'pr_url', None) or getattr(info, 'commit_url', info)}"
    )
    return 0
