"""framelm's model side. Importing it registers model_type `framelm` with transformers' auto classes, so that
`AutoModel.from_pretrained(folder)` uses these installed classes (no `trust_remote_code` needed where framelm is
installed). This file is not part of the Hub payload: a saved folder carries only the `*_framelm.py` files."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM

from .configuration_framelm import FrameLMConfig
from .modeling_framelm import FrameLMForConditionalGeneration, FrameLMModel

AutoConfig.register("framelm", FrameLMConfig, exist_ok=True)
AutoModel.register(FrameLMConfig, FrameLMModel, exist_ok=True)
for _auto in (AutoModelForImageTextToText, AutoModelForMultimodalLM):
    _auto.register(FrameLMConfig, FrameLMForConditionalGeneration, exist_ok=True)

__all__ = ["FrameLMConfig", "FrameLMForConditionalGeneration", "FrameLMModel"]
