"""What inference never pays for and what it always checks: no blank-image pass outside training (vLLM runs the
model under tensor/pipeline parallelism in a process group), the placeholder count check without a host sync on
accelerators, and the base model's media features as vLLM's Transformers backend reads them."""

import pytest
import torch

from framelm.modeling import FrameLMModel


@pytest.fixture
def two_ranks(monkeypatch):
    """A process group of world size 2 as the model sees it (vLLM under TP=2, a DDP job)."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)


def tower_calls(model, run) -> int:
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    try:
        run()
    finally:
        hook.remove()
    return len(calls)


def test_no_blank_image_pass_at_inference_in_a_process_group(two_ranks, tiny_model, tiny_processor):
    inputs = tiny_processor(text="hello there", return_tensors="pt")
    tiny_model.eval()
    with torch.no_grad():
        assert tower_calls(tiny_model, lambda: tiny_model.generate(**inputs, max_new_tokens=3, do_sample=False)) == 0
        embeds = tiny_model.get_input_embeddings()(inputs["input_ids"])  # how vLLM calls the base model
        assert tower_calls(tiny_model, lambda: tiny_model.model(inputs_embeds=embeds, use_cache=False)) == 0
    tiny_model.train()
    try:
        assert tower_calls(tiny_model, lambda: tiny_model(**inputs)) == 1  # DDP/ZeRO need every rank's gradient
    finally:
        tiny_model.eval()


def test_sharded_towers_keep_the_pass_in_evaluation(two_ranks, tiny_model):
    """ZeRO-3 gathers sharded weights in every forward, evaluation included: a rank skipping the tower would hang
    the others. Its parameters carry `ds_id`; FSDP2's are DTensors."""
    model = tiny_model.model.eval()
    assert not model._needs_blank_media_pass()
    first = next(model.multi_modal_projector.parameters())
    first.ds_id = 7
    try:
        assert model._needs_blank_media_pass()
    finally:
        del first.ds_id


def test_placeholder_mask_checks_counts_and_masks_every_hidden_unit(tiny_model):
    config = tiny_model.config
    input_ids = torch.tensor([[5] + [config.image_token_id] * 16 + [6, config.video_token_id, 7]])
    embeds = torch.zeros(1, input_ids.shape[1], 64)
    image_mask, video_mask = tiny_model.get_placeholder_mask(
        input_ids, embeds, torch.zeros(1, 16, 64), torch.zeros(1, 1, 64)
    )
    assert image_mask.shape == video_mask.shape == embeds.shape
    assert image_mask[0, 1:17].all() and image_mask.sum() == 16 * 64
    assert video_mask[0, 18].all() and video_mask.sum() == 64
    with pytest.raises(ValueError, match=r"<video> tokens per sample \[1\] do not fit 0 video\(s\)"):
        tiny_model.get_placeholder_mask(input_ids, embeds, torch.zeros(1, 16, 64))
    with pytest.raises(ValueError, match=r"<image> tokens per sample \[16\] do not fit 2 image\(s\) of 16 tokens"):
        tiny_model.get_placeholder_mask(input_ids, embeds, torch.zeros(2, 16, 64))


def test_base_model_media_features_are_the_ones_the_head_model_scatters(tiny_model, tiny_processor, make_mp4):
    base = tiny_model.model
    assert isinstance(base, FrameLMModel)
    pixels = torch.rand(2, 3, 32, 32)
    videos = torch.rand(1, 4, 3, 32, 32)
    with torch.no_grad():
        images = base.get_image_features(pixels, return_dict=True).pooler_output
        frames = tiny_model.get_video_features(videos, return_dict=True).pooler_output
        together = base.get_media_features(pixels, videos)
    assert images.shape == (2, 16, 64) and frames.shape == (1, 4 * 16, 64)
    torch.testing.assert_close(images, together[0])
    torch.testing.assert_close(frames, together[1])
