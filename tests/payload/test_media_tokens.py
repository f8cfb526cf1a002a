"""`<image>`/`<video>` ids where no pixels back them: sampled or forced while decoding, left in labels by someone
else's collator, suppressed by the generation config; and generation with no FutureWarning (the `cache` keyword)."""

import json
import shutil
import warnings

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList, pipeline

from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration
from framelm.training.cli import main as cli
from framelm.training.model.build import set_generation_defaults


class ForceTokens(LogitsProcessor):
    """Forces `{step: token_id}` among the new tokens, whatever the model (and any suppression before it) says."""

    def __init__(self, prompt_length: int, forced: dict[int, int]):
        self.prompt_length, self.forced = prompt_length, forced

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        token_id = self.forced.get(input_ids.shape[1] - self.prompt_length)
        if token_id is None:
            return scores
        forced = torch.full_like(scores, -float("inf"))
        forced[:, token_id] = 0.0
        return forced


@pytest.fixture(scope="module")
def unsuppressed_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model as saved before media tokens were suppressed: its generation config may sample them."""
    folder = tmp_path_factory.mktemp("unsuppressed") / "model"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "generation_config.json"
    config = json.loads(config_path.read_text())
    del config["suppress_tokens"]
    config_path.write_text(json.dumps(config))
    return folder


def image_prompt(processor, make_image, question: str = "What colour is the shape?") -> dict:
    messages = processor.build_messages(question, images=[str(make_image("red.png"))])
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def text_prompt(processor, question: str = "Say hello.") -> dict:
    return processor.apply_chat_template(
        processor.build_messages(question), add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt",
    )  # fmt: skip


def test_a_forced_media_token_is_decoded_as_an_ordinary_token(tiny_model, tiny_processor, make_image):
    inputs = image_prompt(tiny_processor, make_image)
    prompt_length = inputs["input_ids"].shape[1]
    image_id, video_id = tiny_model.config.image_token_id, tiny_model.config.video_token_id
    forced = LogitsProcessorList([ForceTokens(prompt_length, {0: image_id, 2: video_id})])
    seen = []
    hook = tiny_model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        for sampling in ({"do_sample": False}, {"do_sample": True, "temperature": 1.5}):
            seen.clear()
            torch.manual_seed(0)
            out = tiny_model.generate(
                **inputs, logits_processor=forced, max_new_tokens=5, min_new_tokens=5, **sampling
            )
            new = out[0, prompt_length:].tolist()
            assert len(new) == 5 and new[0] == image_id and new[2] == video_id
            embeddings = tiny_model.get_input_embeddings().weight
            # decoding steps 1 and 3 feed the forced tokens back: their plain embedding rows, no pixels needed
            torch.testing.assert_close(seen[1][0, -1], embeddings[image_id])
            torch.testing.assert_close(seen[3][0, -1], embeddings[video_id])
    finally:
        hook.remove()


def test_the_model_never_emits_media_tokens_even_without_suppression(
    unsuppressed_model_dir, tiny_processor, make_image
):
    """A generation config without `suppress_tokens` (saved before it existed, or ignored as vLLM does): in
    `generate` the model itself gives `<image>`/`<video>` -inf logits, so twenty hot samples never hold one; any
    other forward returns the true logits (scores outside `generate`, e.g. TRL's DPO reference, stay the model's)."""
    model = FrameLMForConditionalGeneration.from_pretrained(unsuppressed_model_dir).eval()
    assert model.generation_config.suppress_tokens is None  # as saved before this release
    media_ids = torch.tensor([model.config.image_token_id, model.config.video_token_id])
    for inputs in (text_prompt(tiny_processor), image_prompt(tiny_processor, make_image)):
        torch.manual_seed(0)
        out = model.generate(**inputs, do_sample=True, temperature=1.5, max_new_tokens=12, num_return_sequences=20)
        assert not torch.isin(out[:, inputs["input_ids"].shape[1] :], media_ids).any()
        with torch.no_grad():
            plain = model(**inputs).logits[0, -1]
            generating = model(**inputs, suppress_media_tokens=True).logits[0, -1]
            model.train()
            training = model(**inputs).logits[0, -1]
            model.eval()
        assert torch.isneginf(generating[media_ids]).all()
        torch.testing.assert_close(plain, training)  # eval and train mode score alike, media tokens included
        other = torch.ones_like(plain, dtype=torch.bool)
        other[media_ids] = False
        torch.testing.assert_close(generating[other], plain[other])


def test_generation_config_suppresses_media_tokens(tiny_model, tiny_processor, make_image):
    media_ids = [tiny_model.config.image_token_id, tiny_model.config.video_token_id]
    assert tiny_model.generation_config.suppress_tokens == sorted(media_ids)
    inputs = image_prompt(tiny_processor, make_image)
    torch.manual_seed(0)
    out = tiny_model.generate(**inputs, do_sample=True, temperature=1.5, max_new_tokens=12, num_return_sequences=20)
    assert not torch.isin(out[:, inputs["input_ids"].shape[1] :], torch.tensor(media_ids)).any()


def test_generation_defaults_keep_the_lms_own_suppressed_tokens(tiny_model_dir):
    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir)
    model.generation_config.suppress_tokens = [7, model.config.image_token_id]
    set_generation_defaults(model, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert model.generation_config.suppress_tokens == sorted({7, model.config.image_token_id,
                                                              model.config.video_token_id})  # fmt: skip


def test_labels_on_media_tokens_never_carry_loss(tiny_model, tiny_processor, make_image):
    inputs = image_prompt(tiny_processor, make_image)
    input_ids = inputs["input_ids"]
    image_positions = input_ids == tiny_model.config.image_token_id
    assert image_positions.sum() == 16
    collator_labels = input_ids.clone()  # what TRL's default VLM collator does: every token, placeholders included
    masked_labels = collator_labels.masked_fill(image_positions, -100)
    with torch.no_grad():
        from_collator = tiny_model(**inputs, labels=collator_labels).loss
        expected = tiny_model(**inputs, labels=masked_labels).loss
    torch.testing.assert_close(from_collator, expected)
    logits = tiny_model(**inputs, labels=masked_labels).logits.detach()  # with labels: no media suppression
    shifted = masked_labels[0, 1:]
    reference = torch.nn.functional.cross_entropy(logits[0, :-1], shifted, ignore_index=-100)
    torch.testing.assert_close(from_collator, reference)


def test_a_training_batch_with_placeholders_but_no_pixels_fails_loudly(tiny_model, tiny_processor, make_image):
    inputs = image_prompt(tiny_processor, make_image)
    with pytest.raises(ValueError, match="neither pixel_values nor pixel_values_videos: the collator dropped"):
        tiny_model(input_ids=inputs["input_ids"], labels=inputs["input_ids"])


def test_generation_raises_no_future_warning(tiny_model_dir, tiny_model, tiny_processor, make_image, make_mp4):
    video = make_mp4("clip.mp4", num_frames=8)
    messages = tiny_processor.build_messages("Same colour?", images=[str(make_image())], videos=[str(video)])
    inputs = tiny_processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for use_cache in (True, False):
            tiny_model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False, use_cache=use_cache)
        image_pipe = pipeline("image-text-to-text", model=str(tiny_model_dir), trust_remote_code=True)
        chat = [{"role": "user", "content": [{"type": "image", "path": str(make_image())},
                                             {"type": "text", "text": "What colour?"}]}]  # fmt: skip
        assert image_pipe(text=chat, max_new_tokens=3, return_full_text=False)[0]["generated_text"] is not None
        video_pipe = pipeline("video-text-to-text", model=str(tiny_model_dir), trust_remote_code=True)
        assert isinstance(video_pipe(str(video), text="What moves?", max_new_tokens=3)[0]["generated_text"], str)


@pytest.mark.slow
def test_sampled_framelm_generate_finishes_forty_prompts(unsuppressed_model_dir, make_image, make_mp4, tmp_path):
    make_image("red.png"), make_mp4("clip.mp4", num_frames=8)
    kinds = [{}, {"image": "red.png"}, {"video": "clip.mp4"}, {"image": "red.png", "video": "clip.mp4"}]
    prompts = [{"question_id": i, "text": f"Describe it, part {i}.", **kinds[i % 4]} for i in range(40)]
    prompt_file, output = tmp_path / "prompts.jsonl", tmp_path / "answers.jsonl"
    prompt_file.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    argv = ["generate", str(unsuppressed_model_dir), "--prompt-file", str(prompt_file), "--output-file", str(output),
            "--media-base-path", str(tmp_path), "--temperature", "1.5", "--top-p", "1.0", "--max-new-tokens", "12",
            "--batch-size", "8"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert cli(argv) == 0
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(a["question_id"] for a in answers) == list(range(40))
