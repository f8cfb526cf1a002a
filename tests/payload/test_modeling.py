"""FrameLM forward/backward, media placement, the text-only gradient path, generation with the KV cache, and
`from_components` on local folders. Sub-configs are tiny dicts, as transformers' ModelTester does."""

import pytest
import torch
from transformers import AutoModel, AutoModelForImageTextToText, CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM

from framelm.modeling.configuration_framelm import FrameLMConfig
from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration
from framelm.modeling.projector_framelm import pool_frame_features
from framelm.processing.chat_template_framelm import IMAGE_TOKEN, VIDEO_TOKEN
from framelm.training.model.tiny import train_tiny_tokenizer

IMAGE, VIDEO, VOCAB = 98, 99, 100
MEDIA_TOKENS = {"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN}
TOWERS = {
    "siglip": {"model_type": "siglip_vision_model", "image_size": 32},
    "clip": {"model_type": "clip_vision_model", "image_size": 32},
    "siglip2": {"model_type": "siglip2_vision_model", "num_patches": 16},
}


def make_model(tower: str = "siglip", seed: int = 0, **overrides) -> FrameLMForConditionalGeneration:
    vision = TOWERS[tower] | {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    vision |= {"num_attention_heads": 4, "patch_size": 8}
    text = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB}
    kwargs = {"image_token_id": IMAGE, "video_token_id": VIDEO, "num_frames": 2} | overrides
    torch.manual_seed(seed)
    return FrameLMForConditionalGeneration(FrameLMConfig(vision_config=vision, text_config=text, **kwargs)).eval()


def count_tower_calls(model) -> list:
    calls = []
    model.model.vision_tower.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return calls


def capture_lm_inputs(model) -> list:
    seen = []
    model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True
    )
    return seen


def sequence(*parts) -> torch.Tensor:
    ids = []
    for part in parts:
        ids += part if isinstance(part, list) else [part]
    return torch.tensor(ids)


@pytest.mark.parametrize("tower", ["siglip", "clip", "siglip2"])
def test_images_and_videos_land_in_their_placeholders_in_order(tower):
    model = make_model(tower)
    # sample 0: video then image (order of appearance differs from argument order); sample 1: text, image, text
    sample0 = sequence(5, [VIDEO] * 32, 6, [IMAGE] * 16, 7)
    sample1 = sequence(5, 6, [IMAGE] * 16, 7, [8] * 32)
    input_ids = torch.stack([sample0, sample1])
    pixel_values = torch.randn(2, 3, 32, 32)
    pixel_values_videos = torch.randn(1, 2, 3, 32, 32)
    calls, seen = count_tower_calls(model), capture_lm_inputs(model)
    with torch.no_grad():
        model(input_ids=input_ids, pixel_values=pixel_values, pixel_values_videos=pixel_values_videos)
        image_embeds, video_embeds = model.model.get_media_features(pixel_values, pixel_values_videos)
    embeds = seen[0]
    assert calls == [2 + 2, 2 + 2]  # one tower pass for 2 images + 2 frames, in the forward and in our check
    torch.testing.assert_close(embeds[0, 1:33], video_embeds[0])
    torch.testing.assert_close(embeds[0, 34:50], image_embeds[0])  # first image of the batch -> sample 0
    torch.testing.assert_close(embeds[1, 2:18], image_embeds[1])
    text_embeds = model.get_input_embeddings()(input_ids)
    torch.testing.assert_close(embeds[1, 18:], text_embeds[1, 18:])  # text positions untouched


def test_media_features_match_a_per_item_pass():
    """Batching images with frames must not change any feature (one pass == separate passes)."""
    model = make_model(video_pooling_stride=2)
    pixel_values, pixel_values_videos = torch.randn(3, 3, 32, 32), torch.randn(2, 2, 3, 32, 32)
    with torch.no_grad():
        images, videos = model.model.get_media_features(pixel_values, pixel_values_videos)
        images_alone, _ = model.model.get_media_features(pixel_values=pixel_values)
        _, videos_alone = model.model.get_media_features(pixel_values_videos=pixel_values_videos)
    assert images.shape == (3, 16, 64) and videos.shape == (2, 2 * 4, 64)  # pooled: 4x4 grid -> 2x2 per frame
    torch.testing.assert_close(images, images_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(videos, videos_alone, atol=1e-5, rtol=1e-5)


def test_pool_frame_features_averages_each_window():
    grid = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)  # a 4x4 grid numbered row by row
    pooled = pool_frame_features(grid, grid=4, stride=2)
    # windows {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


@pytest.mark.parametrize("media", ["image", "video", "both", "text"])
def test_forward_and_backward(media):
    model = make_model().train()
    parts = {"image": [IMAGE] * 16, "video": [VIDEO] * 32, "both": [IMAGE] * 16 + [VIDEO] * 32, "text": []}[media]
    input_ids = sequence(5, parts, 6, 7, 8).unsqueeze(0)
    inputs = {
        "pixel_values": torch.randn(1, 3, 32, 32) if media in ("image", "both") else None,
        "pixel_values_videos": torch.randn(1, 2, 3, 32, 32) if media in ("video", "both") else None,
    }
    labels = input_ids.clone()
    labels[0, :-3] = -100
    out = model(input_ids=input_ids, labels=labels, **inputs)
    expected = torch.nn.functional.cross_entropy(out.logits[0, -4:-1], input_ids[0, -3:])
    torch.testing.assert_close(out.loss, expected)  # loss only on the unmasked positions, shifted by one
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []  # every parameter, tower and projector included, takes part in every batch


def test_text_only_batch_gives_zero_but_present_gradients_to_tower_and_projector():
    model = make_model().train()
    input_ids = torch.tensor([[5, 6, 7, 8]])
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    for name, param in model.model.vision_tower.named_parameters():
        assert param.grad is not None and torch.count_nonzero(param.grad) == 0, name
    for name, param in model.model.multi_modal_projector.named_parameters():
        assert param.grad is not None and torch.count_nonzero(param.grad) == 0, name
    # and the blank image changes nothing: same loss as the plain LM path
    model.zero_grad()
    model.model.vision_tower.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(False)
    calls = count_tower_calls(model)
    frozen_loss = model(input_ids=input_ids, labels=input_ids).loss
    assert calls == []  # frozen tower: no dummy pass at all
    model.model.vision_tower.requires_grad_(True)
    torch.testing.assert_close(model(input_ids=input_ids, labels=input_ids).loss, frozen_loss)


def test_placeholder_count_mismatch_names_the_counts_and_the_fix():
    model = make_model()
    input_ids = torch.stack([sequence(5, [IMAGE] * 16, 6), sequence(5, [IMAGE] * 15, 6, 7)])
    with pytest.raises(ValueError, match=r"<image> tokens per sample \[16, 15\] do not fit 2 image\(s\) of 16 tokens"):
        model(input_ids=input_ids, pixel_values=torch.randn(2, 3, 32, 32))
    # with pixels given, every kind is checked: a stray <video> without a video is an error too
    with pytest.raises(ValueError, match=r"<video> tokens per sample \[1\] do not fit 0 video\(s\).*FrameLMProcessor"):
        model(input_ids=sequence(5, [IMAGE] * 16, VIDEO).unsqueeze(0), pixel_values=torch.randn(1, 3, 32, 32))


def test_without_pixels_media_ids_are_ordinary_tokens():
    model = make_model()
    input_ids = sequence(5, IMAGE, 6, VIDEO).unsqueeze(0)  # e.g. a decoding step that sampled a placeholder
    seen = capture_lm_inputs(model)
    with torch.no_grad():
        model(input_ids=input_ids)
    torch.testing.assert_close(seen[0], model.get_input_embeddings()(input_ids))


def test_greedy_generation_with_cache_equals_without_and_sees_pixels_once():
    model = make_model()
    input_ids = sequence(5, [IMAGE] * 16, [VIDEO] * 32, 6).unsqueeze(0)
    media = {"pixel_values": torch.randn(1, 3, 32, 32), "pixel_values_videos": torch.randn(1, 2, 3, 32, 32)}
    calls = count_tower_calls(model)
    cached = model.generate(input_ids=input_ids, **media, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert calls == [3]  # prefill only: 1 image + 2 frames in one pass, never again while decoding
    uncached = model.generate(
        input_ids=input_ids, **media, max_new_tokens=12, do_sample=False, min_new_tokens=12, use_cache=False
    )
    assert cached.shape == (1, input_ids.shape[1] + 12)
    assert torch.equal(cached, uncached)


def test_generation_depends_on_the_pixels():
    model = make_model(seed=3)
    input_ids = sequence(5, [IMAGE] * 16, 6).unsqueeze(0)
    with torch.no_grad():
        a = model(input_ids=input_ids, pixel_values=torch.zeros(1, 3, 32, 32)).logits[0, -1]
        b = model(input_ids=input_ids, pixel_values=torch.ones(1, 3, 32, 32)).logits[0, -1]
    assert not torch.allclose(a, b)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    input_ids = sequence(5, [IMAGE] * 16, [VIDEO] * 32, 6, 7).unsqueeze(0)
    media = {"pixel_values": torch.randn(1, 3, 32, 32), "pixel_values_videos": torch.randn(1, 2, 3, 32, 32)}
    grads = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        loss = model(input_ids=input_ids, labels=input_ids, **media).loss
        loss.backward()
        grads.append((loss.detach(), model.model.multi_modal_projector.linear_1.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_bfloat16_forward_matches_float32():
    model = make_model()
    input_ids = sequence(5, [IMAGE] * 16, 6).unsqueeze(0)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        full = model(input_ids=input_ids, pixel_values=pixels).logits
        half = model.to(torch.bfloat16)(input_ids=input_ids, pixel_values=pixels).logits
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    ("tower", "expected"),
    [
        ("siglip", {"SiglipEncoderLayer", "SiglipVisionEmbeddings"}),
        ("clip", {"CLIPEncoderLayer", "CLIPVisionEmbeddings"}),
        ("siglip2", {"Siglip2EncoderLayer", "Siglip2VisionEmbeddings"}),
    ],
)
def test_no_split_modules_name_only_classes_the_model_contains(tower, expected):
    """The towers' class lists name text embeddings and pooling heads that a FrameLM never holds; accelerate's
    FSDP auto-wrap raises on any such name ("Could not find the transformer layer class ...")."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    model = make_model(tower)
    assert set(model._no_split_modules) == expected | {"LlamaDecoderLayer"}
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)  # the check that failed with a SigLIP tower
    wrapped = {type(module).__name__ for module in model.modules() if policy(module)}
    assert wrapped == expected | {"LlamaDecoderLayer"}


def test_from_components_loads_both_halves_from_local_folders(tmp_path):
    clip = CLIPModel(
        CLIPConfig(
            vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                           "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
            text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 4, "vocab_size": 99},
            projection_dim=16,
        )
    )  # fmt: skip
    clip.save_pretrained(tmp_path / "clip")
    tokenizer = train_tiny_tokenizer()
    lm = LlamaForCausalLM(
        LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=len(tokenizer), tie_word_embeddings=True)
    )  # fmt: skip
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    before = len(tokenizer)

    model, new_tokenizer = FrameLMForConditionalGeneration.from_components(
        str(tmp_path / "clip"), str(tmp_path / "lm"), dtype=torch.float32, projector_type="linear", **MEDIA_TOKENS
    )
    config = model.config
    assert new_tokenizer.convert_tokens_to_ids("<image>") == config.image_token_id
    assert new_tokenizer.convert_tokens_to_ids("<video>") == config.video_token_id
    assert len(new_tokenizer) == before  # the tiny tokenizer already had both tokens: nothing added twice
    # the vision half: layers up to the feature layer (-2 of 3 -> 2 layers), equal to the CLIP checkpoint
    tower = model.model.vision_tower
    assert len(tower.encoder.layers) == 2
    reference = AutoModel.from_pretrained(tmp_path / "clip").vision_model
    torch.testing.assert_close(tower.encoder.layers[1].mlp.fc1.weight, reference.encoder.layers[1].mlp.fc1.weight)
    torch.testing.assert_close(tower.embeddings.patch_embedding.weight, reference.embeddings.patch_embedding.weight)
    # the language half, tied head included
    torch.testing.assert_close(
        model.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight
    )
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert not any(p.is_meta for p in model.parameters())
    # saved and loaded back through the auto classes, the logits are the same
    model.save_pretrained(tmp_path / "framelm")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "framelm", trust_remote_code=True)
    input_ids = sequence(5, [config.image_token_id] * 16, 6).unsqueeze(0)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval()(input_ids=input_ids, pixel_values=pixels).logits,
            model.eval()(input_ids=input_ids, pixel_values=pixels).logits,
        )


def test_from_components_adds_media_tokens_and_resizes(tmp_path):
    tokenizer = train_tiny_tokenizer()
    plain = type(tokenizer)(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    plain.save_pretrained(tmp_path / "lm")
    siglip = make_model().model.vision_tower  # any saved SigLIP vision tower will do
    siglip.save_pretrained(tmp_path / "tower")
    sizes = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4}
    lm = LlamaForCausalLM(LlamaConfig(**sizes, vocab_size=len(plain)))
    lm.save_pretrained(tmp_path / "lm")
    model, new_tokenizer = FrameLMForConditionalGeneration.from_components(
        str(tmp_path / "tower"), str(tmp_path / "lm"), **MEDIA_TOKENS
    )
    assert model.get_input_embeddings().weight.shape[0] == len(new_tokenizer) == model.config.text_config.vocab_size
    assert new_tokenizer.convert_tokens_to_ids("<video>") == model.config.video_token_id
    assert new_tokenizer.tokenize("<image> red")[0] == "<image>"
