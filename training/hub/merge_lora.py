"""`framelm export RUN --merge-lora`: fold the LoRA adapters of a `framelm train --use_peft` run into its base model.

A LoRA run saves only its adapters, the modules it trained in full (the projector, the tower at stage `all`) and the
processor; its `adapter_config.json` names the base model. The merged model is a plain FrameLM: its folder loads with
`AutoModelForImageTextToText` and `trust_remote_code=True` where peft is not installed, and gives the adapted
model's outputs.
"""

from __future__ import annotations

from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"


def is_lora_run(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def load_for_export(source: str | Path, merge_lora: bool):
    """The model `framelm export` writes: the saved one, or a LoRA run's base model with its adapters merged in."""
    from framelm.modeling import FrameLMForConditionalGeneration

    if merge_lora:
        return load_merged_lora(source)
    if is_lora_run(source):
        raise ValueError(f"{source} holds LoRA adapters, not a whole model: pass --merge-lora to fold them into the "
                         "base model's weights")  # fmt: skip
    return FrameLMForConditionalGeneration.from_pretrained(source)


def base_model_folder(folder: str | Path, base: str) -> str:
    """The base model an adapter config names: an absolute path or Hub id as written; a relative path as the run's
    folder sees it, else as the current directory does (runs before paths were written absolute)."""
    import os

    from framelm.training.data.paths import is_hub_id
    from framelm.training.errors import InputError

    if os.path.isabs(base):
        if os.path.isdir(base):
            return base
    else:
        for candidate in (Path(folder) / base, Path(base)):
            if candidate.is_dir():
                return str(candidate)
        if is_hub_id(base) and not base.startswith("."):
            return base
    raise InputError(
        f"{folder}/{ADAPTER_CONFIG} names base model {base!r}, which is not a folder here",
        f"set base_model_name_or_path in {ADAPTER_CONFIG} to the base model's folder or Hub id",
    )


def load_merged_lora(folder: str | Path):
    """The base model named by `folder`'s adapter config with the adapters merged in, as a plain FrameLM."""
    from peft import PeftConfig, PeftModel

    from framelm.modeling import FrameLMForConditionalGeneration

    if not is_lora_run(folder):
        raise ValueError(f"{folder} has no {ADAPTER_CONFIG}: --merge-lora takes the output folder of a LoRA run "
                         "(`framelm train --use_peft`); export other folders without it")  # fmt: skip
    base = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    if not base:
        raise ValueError(f"{folder}/{ADAPTER_CONFIG} names no base model (base_model_name_or_path): set it to the "
                         "folder or Hub id the run started from")  # fmt: skip
    model = FrameLMForConditionalGeneration.from_pretrained(base_model_folder(folder, base))
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
