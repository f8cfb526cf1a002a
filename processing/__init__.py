"""framelm's input side. Importing it registers the processor classes with transformers' auto classes for
model_type `framelm`. Not part of the Hub payload (a saved folder carries only the `*_framelm.py` files), which is
why this file, unlike the payload, may import the model side for its config class."""

from transformers import AutoImageProcessor, AutoProcessor

from framelm.modeling import FrameLMConfig

from .image_processing_framelm import FrameLMImageProcessor
from .processing_framelm import FrameLMProcessor

AutoImageProcessor.register(
    FrameLMConfig, image_processor_classes={"pil": FrameLMImageProcessor, "torchvision": FrameLMImageProcessor},
    exist_ok=True,
)  # fmt: skip
AutoProcessor.register(FrameLMConfig, FrameLMProcessor, exist_ok=True)

__all__ = ["FrameLMImageProcessor", "FrameLMProcessor"]
