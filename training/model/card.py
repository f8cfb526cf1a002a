"""The model card framelm writes: `hub_cards/model_card.md` filled from the model, the run record and (for
`framelm export`) the judge's results. `framelm train` writes it into its output folder and at each checkpoint, and
`framelm export` into the Hub folder (hub/card.py adds the evaluation), so both say the same thing.

Only Hub ids are published as such: a local path (a dataset file, a tower loaded from a folder) is shown by its base
name and kept out of the card's `datasets:` and `base_model:` metadata, which the Hub links to repositories.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

from framelm.processing.sources_framelm import redact
from framelm.training.atomic_write import write_text_atomically
from framelm.training.data.paths import is_hub_id

LLAVA_BENCH = ("liuhaotian/llava-bench-in-the-wild", "LLaVA-Bench (In-the-Wild)")


def public_name(name: str) -> str:
    """What may be published of a name: a Hub id as it is, a local path or a URL as its base name (a URL's user,
    token and signed query removed first)."""
    return name if is_hub_id(name) else Path(redact(name).rstrip("/\\")).name


def card_data(config, model_name: str, license_id: str, datasets: list[str], evaluation: dict | None):
    from huggingface_hub import EvalResult, ModelCardData

    # an imported VLM (`framelm init --from-llava`) is fine-tuned from that checkpoint; a built one from its two towers
    imported = getattr(config, "base_model", None)
    bases = (
        [imported]
        if imported
        else [getattr(c, "_name_or_path", "") for c in (config.vision_config, config.text_config)]
    )
    bases = [name for name in bases if name and is_hub_id(name)]
    eval_results = [
        EvalResult(
            task_type="image-text-to-text",
            dataset_type=LLAVA_BENCH[0],
            dataset_name=LLAVA_BENCH[1],
            metric_type="relative_score",
            metric_name=f"relative score ({row['category']})",
            metric_value=row["relative"],
        )
        for row in (evaluation or {}).get("rows", [])
        if row["relative"] is not None and math.isfinite(row["relative"])  # no scored review: nothing to publish
    ]
    return ModelCardData(
        model_name=model_name,
        license=license_id,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=bases or None,
        base_model_relation="finetune" if imported and bases else None,
        datasets=[name for name in datasets if is_hub_id(name)] or None,
        tags=["framelm", "multimodal", "video", "image-text-to-text", "custom_code"],
        eval_results=eval_results or None,
    )


def write_card(
    model,
    processor,
    out: Path,
    *,
    repo_id: str,
    license_id: str,
    datasets: list[str],
    run: dict | None,
    evaluation: dict | None,
) -> Path:
    """Render hub_cards/model_card.md into out/README.md."""
    from huggingface_hub import ModelCard

    config = model.config
    data = card_data(config, repo_id.split("/")[-1], license_id, datasets, evaluation)
    data_names = [f"`{name}`" if is_hub_id(name) else f"`{public_name(name)}` (local data)" for name in datasets]
    template = resources.files("framelm.hub_cards") / "model_card.md"
    card = ModelCard.from_template(
        data,
        template_path=str(template),
        repo_id=repo_id,
        vision_model=public_name(getattr(config.vision_config, "_name_or_path", "")) or "randomly initialised",
        language_model=public_name(getattr(config.text_config, "_name_or_path", "")) or "randomly initialised",
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
        datasets=data_names,
        evaluation=evaluation,
    )
    write_text_atomically(out / "README.md", str(card))  # a checkpoint's card is replaced whole, never half-written
    return out / "README.md"
