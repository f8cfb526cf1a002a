"""`AutoModel` on FrameLM: the headless base from a config (vLLM's Transformers backend builds it so and adds its own
LM head), the generating model from a folder saved from it (harnesses such as lmms-eval's `huggingface` model load
`AutoModel.from_pretrained` and call `generate`), the base from a folder saved from the base."""

import logging

import torch
from transformers import AutoConfig, AutoModel

from framelm.modeling import FrameLMModel


def test_auto_model_from_config_is_the_headless_base(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir, trust_remote_code=True)
    assert config.architectures == ["FrameLMForConditionalGeneration"]
    for base in (AutoModel.from_config(config), AutoModel.from_config(config, trust_remote_code=True)):
        assert type(base).__name__ == "FrameLMModel"
        assert not hasattr(base, "lm_head") and not hasattr(base, "generate")


def test_auto_model_from_a_saved_model_generates_like_it(tiny_model_dir, tiny_model, tiny_processor, caplog):
    with caplog.at_level(logging.INFO, logger=FrameLMModel.__module__):
        loaded = AutoModel.from_pretrained(tiny_model_dir, trust_remote_code=True).eval()
    assert type(loaded).__name__ == "FrameLMForConditionalGeneration" and type(loaded.model).__name__ == "FrameLMModel"
    [record] = [r for r in caplog.records if "holds FrameLMForConditionalGeneration" in r.getMessage()]
    assert record.levelno == logging.INFO and "`.model` is the FrameLMModel base" in record.getMessage()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour ?"}]}]
    text = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = tiny_processor(text=text, images=[torch.zeros(32, 32, 3, dtype=torch.uint8)], return_tensors="pt")
    with torch.no_grad():
        expected = tiny_model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        generated = loaded.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert generated.tolist() == expected.tolist()


def test_base_model_saved_alone_loads_as_the_base(tiny_model, tmp_path):
    tiny_model.model.save_pretrained(tmp_path / "base")
    for load in (FrameLMModel.from_pretrained, AutoModel.from_pretrained):
        base = load(tmp_path / "base")
        assert type(base) is FrameLMModel
        for name, tensor in tiny_model.model.state_dict().items():
            torch.testing.assert_close(base.state_dict()[name], tensor, msg=name)
