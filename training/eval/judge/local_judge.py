"""The local judge of `framelm judge --judge-model`: a transformers causal LM and its chat template, no server."""

from __future__ import annotations

import collections
import copy
import logging

from framelm.training.eval.judge.backends import Message

logger = logging.getLogger(__name__)


def fold_system_turn(messages: list[Message]) -> list[Message]:
    """Put the system text at the top of the first user turn, for chat templates that refuse a system role.

    Mistral and Mixtral instruct templates raise on a system turn, and Mixtral is NeMo's judge of choice.
    """
    if not messages or messages[0]["role"] != "system":
        return messages
    system, first, rest = messages[0], messages[1], messages[2:]
    return [{"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}, *rest]


class TransformersChatJudge:
    """A local judge: `AutoModelForCausalLM` and its tokenizer's chat template, greedy unless temperature > 0.

    Loaded once, one review at a time: judge replies are long and few (60 questions in llava-bench), so batching
    would save little and cost padding logic.
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        device: str = "auto",
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or path
        self.failures: collections.Counter[str] = collections.Counter()  # stays empty: a local failure raises
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not self.tokenizer.chat_template:
            raise ValueError(
                f"{path}: the tokenizer has no chat template; judge with an instruction-tuned model, or add a "
                "chat_template.jinja to the folder"
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device).eval()
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_tokens
        config.do_sample = temperature > 0
        # Greedy: clear the sampling knobs a model's generation_config may carry, so generate() does not warn.
        config.temperature, config.top_p, config.top_k = (temperature, 1.0, None) if temperature > 0 else (None,) * 3
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        self.generation_config = config

    def _encode(self, messages: list[Message]):
        from jinja2.exceptions import TemplateError

        kwargs = {"add_generation_prompt": True, "return_tensors": "pt", "return_dict": True}
        try:
            return self.tokenizer.apply_chat_template(messages, **kwargs)
        except TemplateError as error:
            if messages[0]["role"] != "system":
                raise
            logger.info("the judge's chat template refused a system turn (%s); folding it into the user turn", error)
            return self.tokenizer.apply_chat_template(fold_system_turn(messages), **kwargs)

    def chat(self, messages: list[Message]) -> str:
        import torch

        inputs = self._encode(messages).to(self.model.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.generation_config)  # (1, prompt + new)
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
