"""`framelm export`: a complete Hub folder from a trained (or freshly built) FrameLM.

    framelm export runs/my-run --out hub/my-model --repo-id me/my-model --eval-results review.json
    framelm push hub/my-model --repo-id me/my-model

The folder holds sharded safetensors weights, config.json with `auto_map` and `custom_pipelines`, the remote code,
the processor with its chat template, generation_config.json, and a README.md model card filled from the run
(`framelm_run.json`, written by `framelm train`) and from `framelm judge` results (`model-index`).

Nothing local is published: a local dataset path or tower folder appears in the card, the run record and config.json
by its base name only (and never in the card's `datasets:` / `base_model:`, which name Hub repositories). The folder
is written beside `--out` and renamed into place at the end, so an interrupted export leaves no folder that looks
complete, and the next export writes over what it left. An existing `--out` is replaced only when it is an earlier
export, unchanged in kind: a folder holding anything export did not write is refused.

`PUBLISHED` lists every file name export may write; export checks its own output against it, and `framelm push`
uploads only what matches it, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

from framelm.processing.sources_framelm import redact
from framelm.training.atomic_write import folder_written_beside, refuse_foreign
from framelm.training.data.paths import is_hub_id
from framelm.training.errors import FrameLMParser, InputError
from framelm.training.hub.card import evaluation_from_judge, public_name, write_card

WRITTEN_BY = "framelm export"
# What `save_pretrained` of the model and the processor, the card and the run record write (top level only).
PUBLISHED = (
    "README.md", "config.json", "generation_config.json", "model.safetensors", "model-*-of-*.safetensors",
    "model.safetensors.index.json", "*_framelm.py", "processor_config.json", "preprocessor_config.json",
    "video_preprocessor_config.json", "chat_template.jinja", "chat_template.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json",
    "vocab.txt", "merges.txt", "spiece.model", "framelm_run.json",
)  # fmt: skip


def is_published(name: str) -> bool:
    """Whether a top-level file name in an exported folder is one that export writes."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in PUBLISHED)


def build_parser() -> argparse.ArgumentParser:
    parser = FrameLMParser(prog="framelm export", description=__doc__)  # fmt: skip
    parser.add_argument("model", help="A saved FrameLM folder (the output_dir of `framelm train`, or `framelm init`).")
    parser.add_argument(
        "--out", required=True, type=Path, help="Folder to write the Hub-ready model into (absent or empty)."
    )
    card = parser.add_argument_group("model card")
    card.add_argument(
        "--repo-id", default=None, help="Hub id used in the card's usage snippets (default: folder name)."
    )
    card.add_argument(
        "--eval-results", default=None, type=Path, help="Output json of `framelm judge`: becomes `model-index`."
    )
    card.add_argument(
        "--candidate",
        default=None,
        help="Which judged model is this one, when the judge file compares several (its name there).",
    )
    card.add_argument("--license", default="apache-2.0", help="License id for the card (default: apache-2.0).")
    card.add_argument(
        "--dataset",
        action="append",
        default=None,
        help="Dataset names/ids for the card (repeatable); default: the datasets of the training run. Only Hub ids "
        "go into the card's metadata; a local path is shown by its base name.",
    )
    parser.add_argument("--max-shard-size", default="5GB", help="Largest safetensors shard (default 5GB).")
    parser.add_argument(
        "--merge-lora",
        action="store_true",
        help="MODEL is a LoRA run (`framelm train --use_peft`): fold its adapters into the base model named in its "
        "adapter_config.json, so that the export is a plain model that loads without peft.",
    )
    return parser  # fmt: skip


@dataclass
class Exported:
    folder: Path
    local_names: dict[str, str] = field(default_factory=dict)  # local path -> the base name published instead


def _publish_local_names(names: list[str], local_names: dict[str, str]) -> list[str]:
    """`names` with each local path replaced by its base name (recorded in `local_names`); Hub ids unchanged."""
    published = []
    for name in names:
        if name and not is_hub_id(name):
            local_names[redact(name)] = public_name(name)  # printed: a URL without its token or signature
        published.append(public_name(name) if name else name)
    return published


def export(
    model_dir: str | Path,
    out: str | Path,
    *,
    repo_id: str | None = None,
    eval_results: str | Path | None = None,
    candidate: str | None = None,
    license_id: str = "apache-2.0",
    datasets: list[str] | None = None,
    max_shard_size: str = "5GB",
    merge_lora: bool = False,
) -> Exported:
    """Write the Hub folder `out` from the FrameLM in `model_dir`, all inputs checked before anything is written."""
    from framelm.processing import FrameLMProcessor
    from framelm.training.hub.merge_lora import load_for_export
    from framelm.training.run_record import RUN_RECORD, read_run_record

    source, out = Path(model_dir), Path(out)
    refuse_foreign(out, WRITTEN_BY, "export into a new folder")
    evaluation = evaluation_from_judge(Path(eval_results), candidate) if eval_results else None
    model = load_for_export(source, merge_lora)
    processor = FrameLMProcessor.from_pretrained(source)
    run = read_run_record(source)
    result = Exported(folder=out)
    datasets = datasets or (run or {}).get("datasets", [])
    with folder_written_beside(out, WRITTEN_BY) as partial:
        write_card(
            model,
            processor,
            partial,
            repo_id=repo_id or out.name,
            license_id=license_id,
            datasets=datasets,
            run=run,
            evaluation=evaluation,
        )
        for sub_config in (model.config.vision_config, model.config.text_config):
            # config.json keeps each tower's origin (read by the card above); a local folder goes by its base name
            sub_config._name_or_path = _publish_local_names([sub_config._name_or_path], result.local_names)[0]
        if getattr(model.config, "base_model", None):  # the imported checkpoint (`framelm init --from-llava`)
            model.config.base_model = _publish_local_names([model.config.base_model], result.local_names)[0]
        model.save_pretrained(partial, max_shard_size=max_shard_size)
        processor.save_pretrained(partial)
        if run is not None:
            published_run = run | {"datasets": _publish_local_names(run.get("datasets", []), result.local_names)}
            (partial / RUN_RECORD).write_text(json.dumps(published_run, indent=2) + "\n")
        _publish_local_names(datasets, result.local_names)
        _check_no_local_paths(partial, [str(source.resolve()), *result.local_names])
        unknown = sorted(p.name for p in partial.iterdir() if not is_published(p.name))
        assert not unknown, f"export wrote {unknown}, which PUBLISHED does not list (push would leave them out): a bug"
    return result


def _check_no_local_paths(folder: Path, local_paths: list[str]) -> None:
    """The guard behind the mapping above, for a field it does not know: no text file may hold a local path."""
    absolute = [path for path in local_paths if Path(path).is_absolute()]
    for file in folder.iterdir():
        if file.suffix in (".json", ".md", ".jinja", ".py", ".txt"):
            text = file.read_text(encoding="utf-8", errors="replace")
            found = [path for path in absolute if path in text]
            assert not found, f"{file.name} would publish the local path(s) {found}: please report this bug"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        exported = export(
            args.model,
            args.out,
            repo_id=args.repo_id,
            eval_results=args.eval_results,
            candidate=args.candidate,
            license_id=args.license,
            datasets=args.dataset,
            max_shard_size=args.max_shard_size,
            merge_lora=args.merge_lora,
        )
    except (ValueError, OSError) as err:  # the model, the judge file or --out cannot be exported as asked
        raise InputError(str(err)) from err
    out = exported.folder
    files = sum(is_published(p.name) for p in out.iterdir())
    print(f"wrote a Hub-ready FrameLM to {out} ({files} files, README.md model card included)")
    for local, name in exported.local_names.items():
        print(f"  local path {local} is published as {name!r} only (not a Hub id: left out of the card metadata)")
    return 0
