"""`framelm init --vision X --language Y` keeps Y's own chat template: a text-only conversation renders exactly as Y
renders it, media items render as placeholders, and the labels are each reply and its end-of-turn token."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, SiglipVisionConfig, SiglipVisionModel

from framelm.training.cli import main as cli
from framelm.training.model.tiny import CORPUS

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<pad>"]
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
TEXT_ONLY = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "What colour is the square?"},
    {"role": "assistant", "content": "The square is red."},
    {"role": "user", "content": "And the circle?"},
]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A Llama-3-style LM (its own template, <|eot_id|> ends a turn, no ChatML tokens) and a SigLIP tower, offline."""
    root = tmp_path_factory.mktemp("parts")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS.split("\n") * 20, trainers.BpeTrainer(
        vocab_size=400, special_tokens=LLAMA3_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                        pad_token="<pad>")  # fmt: skip
    tokenizer.chat_template = LLAMA3_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    tower = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=32, patch_size=8)  # fmt: skip
    SiglipVisionModel(tower).save_pretrained(root / "tower")
    return root


def test_the_lms_own_template_is_kept_and_trains_replies(parts, tmp_path):
    from transformers import AutoTokenizer

    from framelm.modeling import FrameLMForConditionalGeneration
    from framelm.processing import FrameLMProcessor

    out = tmp_path / "m"
    assert cli(["init", "--vision", str(parts / "tower"), "--language", str(parts / "lm"), "--out", str(out)]) == 0
    processor, lm = FrameLMProcessor.from_pretrained(out), AutoTokenizer.from_pretrained(parts / "lm")
    theirs = lm.apply_chat_template(TEXT_ONLY, tokenize=False, add_generation_prompt=True)
    assert processor.apply_chat_template(TEXT_ONLY, add_generation_prompt=True) == theirs
    as_items = [dict(m, content=[{"type": "text", "text": m["content"]}]) for m in TEXT_ONLY]
    assert processor.apply_chat_template(as_items, add_generation_prompt=True) == theirs
    assert "<|im_start|>" not in processor.tokenizer.get_vocab()  # no ChatML tokens added
    # media items are placeholders inside the message text
    image_turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    assert processor.apply_chat_template(image_turn) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<image>What?<|eot_id|>"
    )
    # the labels of each reply end on the LM's own end of turn, which also stops generation
    rendered = processor.apply_chat_template(TEXT_ONLY[:3], tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)  # fmt: skip
    labelled = [t for t, m in zip(rendered["input_ids"][0], rendered["assistant_masks"][0], strict=True) if m]
    assert "The square is red." in processor.tokenizer.decode(labelled)
    eot = processor.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert labelled[-1] == eot and "What colour" not in processor.tokenizer.decode(labelled)
    assert FrameLMForConditionalGeneration.from_pretrained(out).generation_config.eos_token_id[0] == eot


def test_chatml_on_request_and_an_untrainable_template_refused_in_one_line(parts, tmp_path, capsys):
    from framelm.processing import FrameLMProcessor

    base = ["init", "--vision", str(parts / "tower"), "--language", str(parts / "lm")]
    assert cli([*base, "--out", str(tmp_path / "chatml"), "--chat-template", "chatml"]) == 0
    assert FrameLMProcessor.from_pretrained(tmp_path / "chatml").apply_chat_template(TEXT_ONLY[1:2]) == (
        "<|im_start|>user\nWhat colour is the square?<|im_end|>\n"
    )
    users_only = tmp_path / "users_only.jinja"  # prints no assistant reply: nothing to train
    users_only.write_text(
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    capsys.readouterr()
    assert cli([*base, "--out", str(tmp_path / "bad"), "--chat-template", str(users_only)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' loading bars
    assert err.startswith("framelm init: error: the language model's chat template cannot be made trainable (")
    assert err.endswith("pass it with --chat-template FILE); or pass --chat-template chatml")
    assert not (tmp_path / "bad").exists()
