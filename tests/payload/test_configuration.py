import pytest
from transformers import AutoConfig

from framelm.modeling.configuration_framelm import FrameLMConfig

CLIP_L14 = {"model_type": "clip_vision_model", "image_size": 224, "patch_size": 14, "num_hidden_layers": 24}
SIGLIP_384 = {"model_type": "siglip_vision_model", "image_size": 384, "patch_size": 14, "num_hidden_layers": 27}
SIGLIP2_NAFLEX = {"model_type": "siglip2_vision_model", "num_patches": 256, "patch_size": 16, "num_hidden_layers": 12}
SMALL_LM = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}


def test_tokens_per_image_follow_the_tower():
    # (224 // 14) ** 2 = 256 patches; CLIP's CLS token is dropped by the default strategy, kept by "full"
    assert FrameLMConfig(vision_config=CLIP_L14, text_config=SMALL_LM).tokens_per_image == 256
    full = FrameLMConfig(vision_config=CLIP_L14, text_config=SMALL_LM, vision_feature_select_strategy="full")
    assert full.tokens_per_image == 257
    assert FrameLMConfig(vision_config=SIGLIP_384, text_config=SMALL_LM).tokens_per_image == 27 * 27
    siglip2 = FrameLMConfig(vision_config=SIGLIP2_NAFLEX, text_config=SMALL_LM)
    assert (siglip2.tokens_per_image, siglip2.vision_image_size) == (256, 256)


def test_video_tokens_with_and_without_pooling():
    plain = FrameLMConfig(vision_config=CLIP_L14, text_config=SMALL_LM, num_frames=8)
    assert (plain.tokens_per_frame, plain.tokens_per_video) == (256, 8 * 256)
    pooled = FrameLMConfig(vision_config=CLIP_L14, text_config=SMALL_LM, num_frames=8, video_pooling_stride=2)
    # 16x16 grid pooled by 2 -> 8x8 = 64 tokens per frame; images are never pooled
    assert (pooled.tokens_per_image, pooled.tokens_per_frame, pooled.tokens_per_video) == (256, 64, 512)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"projector_type": "qformer"}, r"projector_type='qformer' is not supported; choose one of \('linear'"),
        ({"vision_feature_select_strategy": "cls"}, r"choose one of \('default', 'full'\)"),
        ({"video_pooling_stride": 3}, r"does not divide the 16x16 patch grid"),
        ({"vision_feature_layer": -30}, r"outside the tower's hidden states \(embeddings \+ 24 layers: use -25..24\)"),
        ({"num_frames": 0}, r"num_frames=0 must be at least 1"),
        ({"vision_feature_select_strategy": "full", "video_pooling_stride": 2}, r"a kept CLS token breaks"),
    ],
)
def test_bad_values_are_rejected_with_the_allowed_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrameLMConfig(vision_config=CLIP_L14, text_config=SMALL_LM, **kwargs)


def test_unknown_sub_model_type_names_the_sub_config():
    with pytest.raises(ValueError, match=r"vision_config: cannot build a config for model_type='no_such_tower'"):
        FrameLMConfig(vision_config={"model_type": "no_such_tower"}, text_config=SMALL_LM)


def test_tower_config_is_trimmed_to_the_feature_layer():
    config = FrameLMConfig(vision_config=SIGLIP_384, text_config=SMALL_LM, vision_feature_layer=-2)
    tower = config.tower_config()
    # hidden_states[-2] of 27 layers is the output of layer 26; the pooling head is never used
    assert (tower.num_hidden_layers, tower.vision_use_head) == (26, False)
    assert config.vision_config.num_hidden_layers == 27  # the saved config keeps the checkpoint's shape
    assert (
        FrameLMConfig(vision_config=SIGLIP_384, text_config=SMALL_LM, vision_feature_layer=5)
        .tower_config()
        .num_hidden_layers
        == 5
    )


def test_save_and_load_round_trip(tmp_path):
    config = FrameLMConfig(
        vision_config=CLIP_L14,
        text_config=SMALL_LM | {"tie_word_embeddings": True},
        projector_type="linear",
        vision_feature_layer=-3,
        image_token_id=11,
        video_token_id=12,
        num_frames=6,
        video_pooling_stride=2,
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "FrameLMConfig"
    for name in ("projector_type", "vision_feature_layer", "image_token_id", "video_token_id", "num_frames"):
        assert getattr(loaded, name) == getattr(config, name)
    assert loaded.vision_config.model_type == "clip_vision_model" and loaded.vision_config.patch_size == 14
    assert loaded.text_config.model_type == "llama" and loaded.text_config.hidden_size == 64
    assert loaded.tie_word_embeddings is True  # taken from the LM, which was pretrained tied
    assert loaded.auto_map["AutoModel"] == "modeling_framelm.FrameLMModel"  # the base model, as LLaVA maps it
    assert loaded.custom_pipelines["video-text-to-text"]["impl"] == "pipeline_framelm.FrameLMVideoTextToTextPipeline"
