"""`framelm export`: a complete Hub folder from a trained (or freshly built) FrameLM.

    framelm export runs/my-run hub/my-model --repo-id me/my-model --eval-results review.json
    framelm push hub/my-model --repo-id me/my-model

The folder holds sharded safetensors weights, config.json with `auto_map` and `custom_pipelines`, the remote code,
the processor with its chat template, generation_config.json, and a README.md model card filled from the run
(`framelm_run.json`, written by `framelm train`) and from `framelm judge` results (`model-index`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from importlib import resources
from pathlib import Path

LLAVA_BENCH = ("liuhaotian/llava-bench-in-the-wild", "LLaVA-Bench (In-the-Wild)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framelm export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("model", help="A saved FrameLM folder (the output_dir of `framelm train`, or `framelm init`).")
    parser.add_argument("out", help="Folder to write the Hub-ready model into (created; must be empty if it exists).")
    card = parser.add_argument_group("model card")
    card.add_argument(
        "--repo-id", default=None, help="Hub id used in the card's usage snippets (default: folder name)."
    )
    card.add_argument("--eval-results", default=None, help="Output json of `framelm judge`: becomes `model-index`.")
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
        help="Dataset names/ids for the card (repeatable); default: the datasets of the training run.",
    )
    parser.add_argument("--max-shard-size", default="5GB", help="Largest safetensors shard (default 5GB).")
    parser.add_argument(
        "--merge-lora",
        action="store_true",
        help="MODEL is a LoRA run (`framelm train --use_peft`): fold its adapters into the base model named in its "
        "adapter_config.json, so that the export is a plain model that loads without peft.",
    )
    return parser  # fmt: skip


def evaluation_from_judge(path: str, candidate: str | None) -> dict:
    """The summary rows of one candidate in a `framelm judge` output json."""
    judged = json.loads(Path(path).read_text())
    rows = judged.get("summary", [])
    candidates = sorted({row["candidate_model"] for row in rows})
    if not candidates:
        raise ValueError(f"{path}: no summary rows; is this the output json of `framelm judge`?")
    if candidate is None and len(candidates) > 1:
        raise ValueError(f"{path} compares several models {candidates}: say which one this is with --candidate")
    candidate = candidate or candidates[0]
    if candidate not in candidates:
        raise ValueError(f"{path}: no results for --candidate {candidate!r}; it has {candidates}")
    mine = [row for row in rows if row["candidate_model"] == candidate]
    judges = sorted({review.get("judge", "") for review in judged.get("reviews", [])} - {""})
    return {"reference_model": mine[0]["reference_model"], "judge": ", ".join(judges) or "unknown", "rows": mine}


def card_data(config, model_name: str, license_id: str, datasets: list[str], evaluation: dict | None):
    from huggingface_hub import EvalResult, ModelCardData

    bases = [c._name_or_path for c in (config.vision_config, config.text_config) if getattr(c, "_name_or_path", "")]
    eval_results = None
    if evaluation:
        eval_results = [
            EvalResult(
                task_type="image-text-to-text",
                dataset_type=LLAVA_BENCH[0],
                dataset_name=LLAVA_BENCH[1],
                metric_type="relative_score",
                metric_name=f"relative score ({row['category']})",
                metric_value=row["relative"],
            )
            for row in evaluation["rows"]
        ]
    return ModelCardData(
        model_name=model_name,
        license=license_id,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=bases or None,
        datasets=datasets or None,
        tags=["framelm", "multimodal", "video", "image-text-to-text", "custom_code"],
        eval_results=eval_results,
    )


def write_card(model, processor, out: Path, repo_id: str, run: dict | None, evaluation: dict | None, args) -> Path:
    """Render hub_cards/model_card.md into out/README.md."""
    from huggingface_hub import ModelCard

    config = model.config
    datasets = args.dataset or (run or {}).get("datasets", [])
    data = card_data(config, repo_id.split("/")[-1], args.license, datasets, evaluation)
    template = resources.files("framelm.hub_cards") / "model_card.md"
    card = ModelCard.from_template(
        data,
        template_path=str(template),
        repo_id=repo_id,
        vision_model=getattr(config.vision_config, "_name_or_path", "") or "randomly initialised",
        language_model=getattr(config.text_config, "_name_or_path", "") or "randomly initialised",
        vision_type=config.vision_config.model_type,
        text_type=config.text_config.model_type,
        projector_type=config.projector_type,
        image_size=config.vision_image_size,
        tokens_per_image=config.tokens_per_image,
        tokens_per_frame=processor.tokens_per_frame,
        num_frames=processor.num_frames,
        tokens_per_video=processor.tokens_per_video,
        parameters=f"{sum(p.numel() for p in model.parameters()):,}",
        training=run,
        datasets=datasets,
        evaluation=evaluation,
    )
    card.save(out / "README.md")
    return out / "README.md"


def export(args: argparse.Namespace) -> Path:
    from framelm.processing import FrameLMProcessor
    from framelm.training.hub.merge_lora import load_for_export
    from framelm.training.run_record import RUN_RECORD, read_run_record

    source, out = Path(args.model), Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty: export into a new folder")
    model = load_for_export(source, args.merge_lora)
    processor = FrameLMProcessor.from_pretrained(source)
    evaluation = evaluation_from_judge(args.eval_results, args.candidate) if args.eval_results else None
    run = read_run_record(source)
    model.save_pretrained(out, max_shard_size=args.max_shard_size)
    processor.save_pretrained(out)
    if run is not None:
        shutil.copy(source / RUN_RECORD, out / RUN_RECORD)
    write_card(model, processor, out, args.repo_id or out.name, run, evaluation, args)
    return out


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    out = export(args)
    print(f"wrote a Hub-ready FrameLM to {out} ({len(list(out.iterdir()))} files, README.md model card included)")
    return 0
