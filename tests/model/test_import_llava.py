"""`framelm init --from-llava`: tiny random llava-hf checkpoints (built here, never downloaded) become FrameLMs that
give the source's logits and greedy tokens on the same inputs, train with the collator's labels, load where framelm
is not installed, and refuse, in one message, what FrameLM cannot reproduce."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from support.llava_sources import (
    INTERLEAVE_TEMPLATE,
    VICUNA_TEMPLATE,
    image_processor_settings,
    save_llava,
    save_llava_next_video,
)
from support.processes import run_without_framelm
from transformers import (
    LlavaForConditionalGeneration,
    LlavaNextVideoForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.activations import ACT2FN

from framelm.modeling.configuration_framelm import PROJECTOR_ACTIVATIONS, VIDEO_POOLING_MODES, FrameLMConfig
from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration
from framelm.modeling.projector_framelm import ACTIVATIONS, POOLS, FrameLMMultiModalProjector, pool_frame_features
from framelm.processing.chat_template_framelm import DEFAULT_CHAT_TEMPLATE
from framelm.processing.image_processing_framelm import FrameLMImageProcessor
from framelm.processing.processing_framelm import FrameLMProcessor
from framelm.training.batches.collator import IGNORE_INDEX, FrameLMCollator
from framelm.training.cli import main as cli
from framelm.training.data.sample import Media, Sample, Turn
from framelm.training.model.import_llava import ImportReport, UnsupportedSourceError, import_card, import_llava
from framelm.training.model.llava_chat_template import ChatTemplateError, check_trainable, trainable_chat_template
from framelm.training.model.tiny import train_tiny_tokenizer

QUESTION = "What colour is the shape?"
NEW_TOKENS = 8


def load_imported(out):
    return FrameLMForConditionalGeneration.from_pretrained(out).eval(), FrameLMProcessor.from_pretrained(out)


def assert_same_outputs(source, framelm, inputs, vocab_size: int) -> float:
    """Logits within 1e-4 (fp32) and the same greedy tokens; returns the largest logit difference."""
    with torch.no_grad():
        expected, actual = source(**inputs).logits, framelm(**inputs).logits[..., :vocab_size]
    difference = (expected - actual).abs().max().item()
    assert difference <= 1e-4, difference
    greedy = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    suppressed = framelm.generation_config.suppress_tokens  # <image>/<video>: never sampled by a FrameLM
    assert suppressed == sorted([framelm.config.image_token_id, framelm.config.video_token_id])
    expected = source.generate(**inputs, **greedy, suppress_tokens=suppressed)  # the same decoding settings
    assert torch.equal(framelm.generate(**inputs, **greedy), expected)
    return difference


def random_image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(40, 56, 3, generator=generator) * 255).to(torch.uint8)  # non-square on purpose


def tokenizer_without_video_token() -> PreTrainedTokenizerFast:
    """The tiny tokenizer with its `<video>` special token renamed, as a Llava checkpoint's tokenizer has none."""
    spec = json.loads(train_tiny_tokenizer().backend_tokenizer.to_str())
    for added in spec["added_tokens"]:
        if added["content"] == "<video>":
            added["content"] = "<|vision_pad|>"
    vocab = spec["model"]["vocab"]
    vocab["<|vision_pad|>"] = vocab.pop("<video>")
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<image>"],
    )


# --- image prompts: Llava with CLIP (default, layer -2) and SigLIP (full) towers ---------------------------------


LLAVA_CASES = {
    "clip-default-layer-2": {"tower": "clip", "strategy": "default", "feature_layer": -2},
    "clip-full-layer-1": {"tower": "clip", "strategy": "full", "feature_layer": -1},
    "siglip-full-layer-1": {
        "tower": "siglip",
        "strategy": "full",
        "feature_layer": -1,
        "chat_template": INTERLEAVE_TEMPLATE,
        "projector_hidden_act": "gelu_pytorch_tanh",
        "multimodal_projector_bias": False,
        "spare_vocab_rows": 8,  # as llava-1.5's 32064 rows for 32002 tokens: `<video>` takes a spare row
    },
}


@pytest.mark.parametrize("case", list(LLAVA_CASES))
def test_llava_image_prompt_gives_the_sources_logits_and_greedy_tokens(case, tmp_path):
    settings = dict(LLAVA_CASES[case])
    if settings["tower"] == "siglip":
        settings["tokenizer"] = tokenizer_without_video_token()
    source_dir = save_llava(tmp_path / "source", **settings)
    report = import_llava(str(source_dir), tmp_path / "framelm")
    assert report.differences == []
    framelm, processor = load_imported(tmp_path / "framelm")
    source = LlavaForConditionalGeneration.from_pretrained(source_dir).eval()
    llava_processor = LlavaProcessor.from_pretrained(source_dir)

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == llava_processor.apply_chat_template(messages, add_generation_prompt=True)  # prompt format kept
    image = random_image()
    theirs = llava_processor(text=prompt, images=[image.numpy()], return_tensors="pt")
    ours = processor(text=prompt, images=[image], return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])  # same placeholder expansion and tokenization
    std = torch.tensor(image_processor_settings(settings["tower"], 32)["image_std"]).view(1, 3, 1, 1)
    assert ((ours["pixel_values"] - theirs["pixel_values"]).abs() * std).max() <= 2 / 255  # PIL vs torch resize

    vocab_size = source.config.text_config.vocab_size
    assert_same_outputs(source, framelm, dict(theirs), vocab_size)  # the llava processor's inputs to both
    assert_same_outputs(source, framelm, dict(ours), vocab_size)  # and FrameLM's
    config = framelm.config
    assert (config.vision_feature_layer, config.vision_feature_select_strategy) == (
        settings["feature_layer"],
        settings["strategy"],
    )
    assert config.base_model == str(source_dir)


def test_a_llava_tokenizer_without_a_video_token_gets_one_and_the_model_a_row(tmp_path):
    source_dir = save_llava(tmp_path / "source", tokenizer=tokenizer_without_video_token())
    report = import_llava(str(source_dir), tmp_path / "framelm")
    framelm, processor = load_imported(tmp_path / "framelm")
    source_vocab = LlavaForConditionalGeneration.from_pretrained(source_dir).config.text_config.vocab_size
    video_id = processor.video_token_id
    assert video_id == source_vocab == framelm.config.video_token_id  # appended after the source's rows
    assert framelm.config.text_config.vocab_size == source_vocab + 1
    assert any("'<video>' was added" in note for note in report.notes)
    inputs = processor(text=f"<video>{QUESTION}", videos=[torch.zeros(4, 32, 32, 3, dtype=torch.uint8)])
    assert inputs["input_ids"][0].count(video_id) == 8 * 16  # FrameLM's default 8 frames, each read as an image


# --- video prompts: LLaVA-NeXT-Video's pooled video path --------------------------------------------------------


@pytest.mark.parametrize("pool_mode", ["average", "max"])
def test_llava_next_video_prompt_gives_the_sources_logits_and_greedy_tokens(pool_mode, tmp_path):
    source_dir = save_llava_next_video(tmp_path / "source", pool_mode=pool_mode)
    report = import_llava(str(source_dir), tmp_path / "framelm", num_frames=3)
    assert len(report.differences) == 1 and "images will NOT match the source" in report.differences[0]
    framelm, processor = load_imported(tmp_path / "framelm")
    assert (framelm.config.video_pooling_stride, framelm.config.video_pooling_mode) == (2, pool_mode)
    assert (processor.tokens_per_frame, processor.num_frames) == (4, 3)  # 4x4 patches pooled by 2
    source = LlavaNextVideoForConditionalGeneration.from_pretrained(source_dir).eval()
    frames = (torch.rand(5, 40, 56, 3, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == f"USER: <video>\n{QUESTION} ASSISTANT:"  # LLaVA-NeXT-Video-7B-hf's own format
    inputs = processor(text=prompt, videos=[frames], return_tensors="pt")
    assert_same_outputs(source, framelm, dict(inputs), source.config.text_config.vocab_size)


# --- training labels through the imported chat template --------------------------------------------------------


def test_collator_labels_of_an_imported_model_are_the_reply_and_the_stop_token(tmp_path, make_image):
    source_dir = save_llava(tmp_path / "source", chat_template=VICUNA_TEMPLATE)
    import_llava(str(source_dir), tmp_path / "framelm")
    _, processor = load_imported(tmp_path / "framelm")
    sample = Sample(
        turns=(Turn("user", "<image>" + QUESTION), Turn("assistant", "red"), Turn("user", "Sure?"),
               Turn("assistant", "yes")),
        media=(Media("image", str(make_image("red.png"))),),
    )  # fmt: skip
    batch = FrameLMCollator(processor)([sample.to_row()])
    labels = batch["labels"][0]
    trained = labels[labels != IGNORE_INDEX]
    # LLaVA's own training ended each reply with the stop token; llava-hf's template ends it with a space
    assert processor.decode(trained) == "red <|im_end|> yes <|im_end|>"  # " yes" is one token
    text = processor.decode(batch["input_ids"][0]).replace("<image>" * 16, "<image>")
    assert text == f"USER: <image>\n{QUESTION} ASSISTANT: red <|im_end|>USER: Sure? ASSISTANT: yes <|im_end|>"


OLD_VICUNA = VICUNA_TEMPLATE.replace(
    "{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}{% endif %}",
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}",
)


TRIM = "the text of a turn with an image or video is trimmed"


@pytest.mark.parametrize(
    ("template", "reply_labels", "edits"),
    [
        (
            OLD_VICUNA,
            "red <|im_end|>",
            (TRIM, "video items", "marked with {% generation %}", "end with the stop token"),
        ),
        (VICUNA_TEMPLATE, "red <|im_end|>", (TRIM, "video items", "end with the stop token")),
        (INTERLEAVE_TEMPLATE, "\nred<|im_end|>", (TRIM, "marked with {% generation %}", "end-of-turn print")),
    ],
    ids=["vicuna-without-markers", "vicuna-llava-1.5", "chatml-interleave"],
)
def test_llava_hf_templates_become_trainable_without_changing_prompts(template, reply_labels, edits):
    tokenizer = train_tiny_tokenizer()
    processor = FrameLMProcessor(FrameLMImageProcessor(), tokenizer, tokens_per_image=1, tokens_per_frame=1)
    result = trainable_chat_template(processor, template, tokenizer.eos_token)
    assert len(result.notes) == len(edits) and all(e in n for e, n in zip(edits, result.notes, strict=True))
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    for render in (dict(add_generation_prompt=True), dict(add_generation_prompt=False)):
        assert processor.apply_chat_template(prompt, chat_template=result.template, **render) == (
            processor.apply_chat_template(prompt, chat_template=template, **render)
        )
    question = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    conversation = question + [{"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    out = processor.apply_chat_template(
        conversation, chat_template=result.template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, m in zip(out["input_ids"][0], out["assistant_masks"][0], strict=True) if m]
    assert tokenizer.decode(trained) == reply_labels


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (VICUNA_TEMPLATE, f"USER: <image>\n{QUESTION} ASSISTANT: red <|im_end|>USER: Sure? ASSISTANT:"),
        (INTERLEAVE_TEMPLATE, f"<|im_start|>user <image>\n{QUESTION}<|im_end|><|im_start|>assistant \nred<|im_end|>"
                              "<|im_start|>user \nSure?<|im_end|><|im_start|>assistant\n"),
    ],
    ids=["vicuna-llava-1.5", "chatml-interleave"],
)  # fmt: skip
def test_llava_data_renders_one_newline_after_the_image_as_the_source_saw(tmp_path, make_image, template, expected):
    """LLaVA data writes `<image>\nQuestion`; llava-hf templates print their own newline after the image, and
    LLaVA's training strips the text of a turn that holds an image: one newline, not two."""
    source_dir = save_llava(tmp_path / "source", chat_template=template)
    import_llava(str(source_dir), tmp_path / "framelm")
    _, processor = load_imported(tmp_path / "framelm")
    sample = Sample(
        turns=(Turn("user", f"<image>\n{QUESTION}\n"), Turn("assistant", "red"), Turn("user", "Sure?")),
        media=(Media("image", str(make_image("red.png"))),),
    )
    rendered = processor.apply_chat_template(sample.to_messages(), add_generation_prompt=True)
    assert rendered == expected
    source = LlavaProcessor.from_pretrained(source_dir)
    clean = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    ours = processor.apply_chat_template(sample.to_messages()[:1], add_generation_prompt=True)
    assert ours == source.apply_chat_template(clean, add_generation_prompt=True)
    spaced = [{"role": "user", "content": [{"type": "text", "text": " Sure? "}]}]  # no media: kept as LLaVA kept it
    assert processor.apply_chat_template(spaced) == source.apply_chat_template(spaced)
    assert " Sure? " in processor.apply_chat_template(spaced)


def test_a_template_whose_replies_cannot_be_marked_is_refused_with_the_fix():
    tokenizer = train_tiny_tokenizer()
    processor = FrameLMProcessor(FrameLMImageProcessor(), tokenizer, tokens_per_image=1, tokens_per_frame=1)
    # the reply is printed through a variable: nothing marks it, and labels would be empty
    template = (
        "{% for m in messages %}{% set said = m['content'][0]['text'] %}{{ m['role'] }}: {{ said }}\n{% endfor %}"
    )
    with pytest.raises(ChatTemplateError, match=r"0 labelled spans for 2 assistant replies.*--chat-template FILE"):
        trainable_chat_template(processor, template, tokenizer.eos_token)
    # a replacement file must label the stop token too
    unfinished = (
        "{% for m in messages %}{{ m['role'] }}: {% if m['role'] == 'assistant' %}{% generation %}"
        "{{ m['content'][0]['text'] }}{% endgeneration %}{% else %}{{ m['content'][0]['text'] }}{% endif %}\n"
        "{% endfor %}"
    )
    with pytest.raises(ChatTemplateError, match="not on the stop token"):
        check_trainable(processor, unfinished, tokenizer.eos_token)


# --- refusals: one message listing what FrameLM lacks -----------------------------------------------------------


def test_unsupported_features_are_refused_in_one_message_and_nothing_is_written(tmp_path):
    source_dir = save_llava(tmp_path / "source", tower="siglip", strategy="default", feature_layer=[-3, -2])
    with pytest.raises(UnsupportedSourceError) as refused:
        import_llava(str(source_dir), tmp_path / "framelm")
    assert str(refused.value) == (
        f"cannot import {source_dir}: FrameLM would not give the source's outputs, because\n"
        "  - it concatenates several tower layers [-3, -2]; FrameLM reads one\n"
        "  - vision_feature_select_strategy='default' drops the first patch of a 'siglip_vision_model' tower, "
        "which has no CLS token (FrameLM drops CLS tokens only)\n"
        "Nothing was written."
    )
    assert not (tmp_path / "framelm").exists()


def test_conv_pooling_and_other_llava_classes_are_refused(tmp_path):
    from transformers import LlavaNextConfig

    source_dir = save_llava_next_video(tmp_path / "conv", pool_mode="conv")
    with pytest.raises(UnsupportedSourceError, match=r"spatial_pool_mode='conv'; FrameLM has \('average', 'max'\)"):
        import_llava(str(source_dir), tmp_path / "out")
    vision, text = {"model_type": "clip_vision_model"}, {"model_type": "llama"}
    LlavaNextConfig(vision_config=vision, text_config=text).save_pretrained(tmp_path / "next")
    with pytest.raises(UnsupportedSourceError, match="'llava_next' model: LLaVA-NeXT reads images only through"):
        import_llava(str(tmp_path / "next"), tmp_path / "out")


# --- the CLI, the card, and the folder where framelm is not installed --------------------------------------------


def test_init_from_llava_cli_and_its_card(tmp_path, capsys):
    source_dir = save_llava_next_video(tmp_path / "source")
    out = tmp_path / "framelm"
    assert cli(["init", "--from-llava", str(source_dir), "--out", str(out), "--num-frames", "2"]) == 0
    assert FrameLMProcessor.from_pretrained(out).num_frames == 2
    card = (out / "README.md").read_text()
    assert "**differs:** images: LLaVA-NeXT's any-resolution tiling" in card
    assert "Add `base_model: <Hub id of the source>`" in card  # a local folder is no Hub id
    assert cli(["init", "--from-llava", str(source_dir), "--out", str(out), "--video-pooling-stride", "4"]) == 2
    assert "--from-llava takes the model from the source; drop --video-pooling-stride" in capsys.readouterr().err
    template = tmp_path / "chatml.jinja"
    template.write_text(DEFAULT_CHAT_TEMPLATE)  # framelm's own: replies and <|im_end|> already labelled
    cli(["init", "--from-llava", str(source_dir), "--out", str(tmp_path / "chatml"), "--chat-template", str(template)])
    assert FrameLMProcessor.from_pretrained(tmp_path / "chatml").chat_template == DEFAULT_CHAT_TEMPLATE


def test_card_names_a_hub_source_as_base_model_with_the_finetune_relation(tmp_path):
    report = ImportReport("llava-hf/llava-1.5-7b-hf", tmp_path / "llava-1.5", "LlavaForConditionalGeneration")
    card = import_card(report)
    assert card.data.base_model == "llava-hf/llava-1.5-7b-hf" and card.data.base_model_relation == "finetune"
    assert "Same outputs as the source" in card.text


@pytest.mark.slow
def test_imported_folder_loads_without_framelm_and_trains_one_step(tmp_path, make_image, make_mp4):
    source_dir = save_llava_next_video(tmp_path / "source")
    out = tmp_path / "framelm"
    import_llava(str(source_dir), out, num_frames=2)
    framelm, processor = load_imported(out)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True,
    )
    frames = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    with torch.no_grad():
        expected = framelm(**processor(text=prompt, videos=[frames], return_tensors="pt")).logits[0, -1]
    child = run_without_framelm(
        f"""
        import json, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)
        inputs = processor(text={prompt!r}, videos=[torch.zeros(2, 32, 32, 3, dtype=torch.uint8)], return_tensors="pt")
        with torch.no_grad():
            print(json.dumps({{"module": type(model).__module__, "logits": model(**inputs).logits[0, -1].tolist()}}))
        """,
        cwd=tmp_path,
    )
    assert not child["module"].startswith("framelm")
    torch.testing.assert_close(torch.tensor(child["logits"]), expected, rtol=0, atol=1e-5)

    make_image("red.png"), make_mp4("clip.mp4", num_frames=6)
    records = [
        {"id": "a", "image": "red.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"},
                                                          {"from": "gpt", "value": "red"}]},
        {"id": "b", "video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>\nWhat moves?"},
                                                           {"from": "gpt", "value": "a bar"}]},
    ]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    trained = tmp_path / "trained"
    command = [sys.executable, "-m", "framelm.training.cli", "train", "--model_name_or_path", str(out),
               "--dataset", str(tmp_path / "train.jsonl"), "--output_dir", str(trained), "--max_steps", "1",
               "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--dataloader_num_workers", "0",
               "--report_to", "none", "--save_strategy", "no"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, text=True,
                               stderr=subprocess.STDOUT)  # fmt: skip
    try:
        log, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, log[-4000:]
    before = FrameLMForConditionalGeneration.from_pretrained(out).state_dict()
    after = FrameLMForConditionalGeneration.from_pretrained(trained).state_dict()
    assert not torch.equal(before["model.multi_modal_projector.linear_1.weight"],
                           after["model.multi_modal_projector.linear_1.weight"])  # fmt: skip
    assert torch.equal(
        before["model.vision_tower.embeddings.patch_embedding.weight"],
        after["model.vision_tower.embeddings.patch_embedding.weight"],
    )  # stage full: tower frozen


# --- the model features an import needs ------------------------------------------------------------------------


def test_projector_activation_bias_and_max_pooling_are_config_settings():
    vision = {"model_type": "siglip_vision_model", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 16, "image_size": 16, "patch_size": 4}  # fmt: skip
    text = {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "vocab_size": 32}  # fmt: skip
    old = FrameLMConfig.from_dict({"vision_config": vision, "text_config": text})  # a config saved before these
    assert (old.projector_hidden_act, old.projector_bias, old.video_pooling_mode) == ("gelu", True, "average")
    projector = FrameLMMultiModalProjector.from_config(
        FrameLMConfig(vision_config=vision, text_config=text, projector_hidden_act="relu", projector_bias=False)
    )
    assert projector.linear_1.bias is None and projector.linear_2.bias is None
    with torch.no_grad():
        projector.linear_1.weight.abs_()
    assert torch.equal(projector(-torch.ones(1, 1, 8)), torch.zeros(1, 1, 16))  # relu zeroes it; no bias moves it
    grid = torch.arange(16.0).reshape(1, 16, 1)  # one frame, 4x4 grid, one channel
    assert pool_frame_features(grid, grid=4, stride=2, mode="max").flatten().tolist() == [5.0, 7.0, 13.0, 15.0]
    assert set(ACTIVATIONS) == set(PROJECTOR_ACTIVATIONS) and set(POOLS) == set(VIDEO_POOLING_MODES)
    x = torch.linspace(-4, 4, 101)
    for name, activation in ACTIVATIONS.items():  # the same functions as the llava-hf projector's
        assert torch.equal(activation()(x), ACT2FN[name](x)), name
    with pytest.raises(ValueError, match=r"video_pooling_mode='conv' is not supported; choose one of"):
        FrameLMConfig(vision_config=vision, text_config=text, video_pooling_mode="conv")
