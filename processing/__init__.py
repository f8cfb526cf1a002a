"""framelm's input side. Not part of the Hub payload (a saved folder carries only the `*_framelm.py` files), which is
why this file, unlike the payload, may import the model side for its config class.

The processor classes load, and register with transformers' auto classes for model_type `framelm`, on first use of
`framelm.processing.FrameLMProcessor` (or `FrameLMImageProcessor`): importing a submodule such as `sources_framelm`
(URL fetching and redaction, used by every data command and every error message) then costs that module alone, not
transformers and torch."""

from __future__ import annotations

import importlib

_CLASSES = {"FrameLMImageProcessor": ".image_processing_framelm", "FrameLMProcessor": ".processing_framelm"}
__all__ = sorted(_CLASSES)


def __getattr__(name: str):
    if name not in _CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _register()
    return getattr(importlib.import_module(_CLASSES[name], __name__), name)


def _register() -> None:
    from transformers import AutoImageProcessor, AutoProcessor

    from framelm.modeling import FrameLMConfig

    from .image_processing_framelm import FrameLMImageProcessor
    from .processing_framelm import FrameLMProcessor

    AutoImageProcessor.register(
        FrameLMConfig, image_processor_classes={"pil": FrameLMImageProcessor, "torchvision": FrameLMImageProcessor},
        exist_ok=True,
    )  # fmt: skip
    AutoProcessor.register(FrameLMConfig, FrameLMProcessor, exist_ok=True)
