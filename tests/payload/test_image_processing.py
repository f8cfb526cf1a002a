"""FrameLMImageProcessor: numerics against transformers' PIL processors, exact hand-checked values, settings copied
from tower processors, save/load round trips, the batched frame path, input conversions and error messages.

Grey levels: `abs(ours - theirs) * std * 255` turns a difference of normalized values back into 0-255 pixel units.
torch's uint8 antialiased kernel quantizes its weights to 16 bits where PIL uses 22, so a pixel whose exact value
lies within ~0.001 of a rounding boundary can round the other way in each of the two passes: differences are 0 for
over 98% of values, 1 for the rest, and 2 for at most a few values in 100,000 (bench/preprocessing.py prints the same).
"""

import enum
import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil, Siglip2ImageProcessorPil, SiglipImageProcessorPil
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from framelm.processing.image_processing_framelm import SETTINGS, FrameLMImageProcessor

CLIP_MEAN = list(OPENAI_CLIP_MEAN)
CLIP_STD = list(OPENAI_CLIP_STD)


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, non-square uint8 RGB image: a few grey levels per pixel of slope, different in each channel."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [128 + 100 * np.sin(x / (37 + seed) + k) * np.cos(y / 23 - k) for k in range(3)]
    return np.stack(channels, axis=-1).clip(0, 255).astype(np.uint8)


def grey_levels(ours: torch.Tensor, theirs, std) -> torch.Tensor:
    """Absolute difference of two normalized (N, 3, H, W) batches in 0-255 pixel units."""
    theirs = torch.as_tensor(np.stack(theirs) if isinstance(theirs, list) else theirs)
    assert ours.shape == theirs.shape, f"{tuple(ours.shape)} != {tuple(theirs.shape)}"
    return (ours - theirs).abs() * torch.tensor(std).view(1, 3, 1, 1) * 255


def assert_close_to_pil(diff: torch.Tensor) -> None:
    levels = diff.round()
    assert levels.max() <= 2, f"max difference {levels.max()} grey levels"
    assert (levels > 1).float().mean() <= 1e-4, "more than 1 value in 10,000 off by 2 grey levels"
    assert (levels == 0).float().mean() >= 0.98, "fewer than 98% of values identical to PIL's"


@pytest.mark.parametrize("side", [384, 224])
@pytest.mark.parametrize("height,width", [(316, 503), (480, 640), (503, 316)])
def test_siglip_squash_matches_siglip_pil(side, height, width):
    peer = SiglipImageProcessorPil(size={"height": side, "width": side})
    ours = FrameLMImageProcessor.from_tower_processor(peer)
    image = smooth_image(height, width)
    out = ours(image)["pixel_values"]
    assert out.shape == (1, 3, side, side) and out.dtype == torch.float32
    assert_close_to_pil(grey_levels(out, peer(Image.fromarray(image))["pixel_values"], peer.image_std))


@pytest.mark.parametrize("height,width", [(316, 503), (503, 316), (480, 640), (333, 333)])
def test_clip_shortest_edge_and_centre_crop_match_clip_pil(height, width):
    peer = CLIPImageProcessorPil()  # shortest_edge 224, centre crop 224, OpenAI CLIP mean/std
    ours = FrameLMImageProcessor.from_tower_processor(peer)
    image = smooth_image(height, width)
    out = ours(image)["pixel_values"]
    assert out.shape == (1, 3, 224, 224)
    # a one-pixel offset in the crop would move a gradient of ~4 grey levels per pixel: this checks the offsets too
    assert_close_to_pil(grey_levels(out, peer(Image.fromarray(image))["pixel_values"], CLIP_STD))


@pytest.mark.parametrize("crop", [(7, 9), (8, 10), (21, 4), (30, 40)])
def test_centre_crop_uses_transformers_offsets_and_padding(crop):
    """Without a resize the crop is a pure slice (or zero pad), so the values must match exactly."""
    image = np.random.default_rng(1).integers(0, 256, (19, 24, 3), dtype=np.uint8)
    crop_size = {"height": crop[0], "width": crop[1]}
    peer = CLIPImageProcessorPil(do_resize=False, crop_size=crop_size)
    ours = FrameLMImageProcessor(
        do_resize=False, do_center_crop=True, crop_size=crop_size, image_mean=CLIP_MEAN, image_std=CLIP_STD
    )
    theirs = torch.as_tensor(np.stack(peer(image)["pixel_values"]))
    torch.testing.assert_close(ours(image)["pixel_values"], theirs, atol=1e-5, rtol=0)


def test_bilinear_matches_pil_bilinear():
    peer = SiglipImageProcessorPil(size={"height": 384, "width": 384}, resample=Image.Resampling.BILINEAR)
    ours = FrameLMImageProcessor.from_tower_processor(peer)
    assert ours.resample == 2
    for image in (smooth_image(316, 503), smooth_image(720, 1280, seed=3)):
        diff = grey_levels(ours(image)["pixel_values"], peer(Image.fromarray(image))["pixel_values"], [0.5] * 3)
        assert diff.round().max() <= 1


def test_constant_colour_normalizes_to_the_hand_computed_value():
    image = np.empty((50, 70, 3), dtype=np.uint8)
    image[...] = (255, 0, 51)
    siglip = FrameLMImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    out = siglip(image)["pixel_values"]
    # (255/255 - 0.5) / 0.5 = 1, (0 - 0.5) / 0.5 = -1, (51/255 - 0.5) / 0.5 = -0.6
    torch.testing.assert_close(out[0, :, 5, 7], torch.tensor([1.0, -1.0, -0.6]), atol=1e-6, rtol=0)
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # resampling a constant image keeps it constant
    raw = FrameLMImageProcessor(size=8, do_rescale=False, do_normalize=False)(image)["pixel_values"]
    assert raw[0, :, 0, 0].tolist() == [255.0, 0.0, 51.0]
    rescaled_only = FrameLMImageProcessor(size=8, do_normalize=False)(image)["pixel_values"]
    assert rescaled_only[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2], abs=1e-7)


def test_from_tower_processor_copies_every_setting():
    clip = FrameLMImageProcessor.from_tower_processor(CLIPImageProcessorPil())
    assert clip.size == {"shortest_edge": 224} and clip.crop_size == {"height": 224, "width": 224}
    assert clip.do_center_crop and clip.resample == 3 and clip.do_convert_rgb
    assert clip.image_mean == pytest.approx(CLIP_MEAN) and clip.image_std == pytest.approx(CLIP_STD)
    custom = SiglipImageProcessorPil(size={"height": 256, "width": 320}, rescale_factor=1 / 127.5, do_normalize=False)
    siglip = FrameLMImageProcessor.from_tower_processor(custom)
    assert siglip.size == {"height": 256, "width": 320} and not siglip.do_center_crop and siglip.crop_size is None
    assert siglip.rescale_factor == pytest.approx(1 / 127.5) and not siglip.do_normalize
    assert siglip.image_mean == [0.5] * 3 and siglip.image_std == [0.5] * 3


def test_siglip2_naflex_needs_a_size_override():
    naflex = Siglip2ImageProcessorPil()
    with pytest.raises(ValueError, match="has no fixed `size`.*size_override"):
        FrameLMImageProcessor.from_tower_processor(naflex)
    fixed = FrameLMImageProcessor.from_tower_processor(naflex, size_override=256)
    assert fixed.size == {"height": 256, "width": 256} and fixed.resample == 2  # SigLIP2 resizes bilinearly
    clip_square = FrameLMImageProcessor.from_tower_processor(CLIPImageProcessorPil(), size_override=336)
    assert clip_square.size == {"height": 336, "width": 336} and not clip_square.do_center_crop


def test_from_tower_processor_reads_torchvision_style_interpolation_by_name():
    """The torchvision classes can hold an InterpolationMode; it is read by name, without importing torchvision."""
    interpolation_mode = enum.Enum("InterpolationMode", {"BILINEAR": "bilinear", "BICUBIC": "bicubic"})
    fast_like = types.SimpleNamespace(size={"height": 64, "width": 48}, resample=interpolation_mode.BILINEAR)
    assert FrameLMImageProcessor.from_tower_processor(fast_like).resample == 2


def test_from_pretrained_reads_a_tower_preprocessor_config(tmp_path):
    """A CLIP/SigLIP `preprocessor_config.json` loads as is; null flags (as transformers writes them) keep defaults."""
    CLIPImageProcessorPil().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    config["do_convert_rgb"] = None
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    loaded = FrameLMImageProcessor.from_pretrained(tmp_path)
    copied = FrameLMImageProcessor.from_tower_processor(CLIPImageProcessorPil())
    assert {name: getattr(loaded, name) for name in SETTINGS} == {name: getattr(copied, name) for name in SETTINGS}


@pytest.mark.parametrize(
    "settings",
    [
        dict(
            size={"shortest_edge": 40},
            resample=2,
            do_center_crop=True,
            crop_size={"height": 36, "width": 30},
            rescale_factor=1 / 128,
            image_mean=[0.1, 0.2, 0.3],
            image_std=[0.7, 0.8, 0.9],
            do_convert_rgb=False,
        ),
        dict(do_resize=False, size={"height": 20, "width": 24}, do_rescale=False, do_normalize=False),
    ],
)
def test_save_and_load_round_trip_every_setting(tmp_path, settings):
    processor = FrameLMImageProcessor(**settings)
    assert {name: getattr(processor, name) for name in settings} == settings
    processor.save_pretrained(tmp_path)
    loaded = FrameLMImageProcessor.from_pretrained(tmp_path)
    assert {name: getattr(loaded, name) for name in SETTINGS} == {name: getattr(processor, name) for name in SETTINGS}
    assert loaded.to_dict() == processor.to_dict()
    image = smooth_image(61, 83)
    assert torch.equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])


def test_auto_image_processor_loads_the_saved_remote_code_without_framelm(tmp_path):
    """The saved folder alone must work: load it where `import framelm` fails and compare the outputs."""
    FrameLMImageProcessor.register_for_auto_class("AutoImageProcessor")
    processor = FrameLMImageProcessor(size={"shortest_edge": 40}, do_center_crop=True, crop_size=32)
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    assert (saved / "image_processing_framelm.py").exists() and (saved / "media_framelm.py").exists()
    image = smooth_image(45, 70)
    np.save(tmp_path / "image.npy", image)
    child = f"""import sys; sys.modules["framelm"] = None  # any `import framelm` now raises
import numpy as np, torch
from transformers import AutoImageProcessor
loaded = AutoImageProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)
assert type(loaded).__module__.startswith("transformers_modules"), type(loaded).__module__
torch.save({{"config": loaded.to_dict(), "pixel_values": loaded(np.load("image.npy"))["pixel_values"]}}, "out.pt")
"""
    subprocess.run([sys.executable, "-c", child], cwd=tmp_path, check=True)  # cwd outside the repo
    result = torch.load(tmp_path / "out.pt")
    assert result["config"] == processor.to_dict()
    assert torch.equal(result["pixel_values"], processor(image)["pixel_values"])


def test_preprocess_frames_equals_per_frame_calls():
    processor = FrameLMImageProcessor.from_tower_processor(CLIPImageProcessorPil())
    frames = torch.from_numpy(np.stack([smooth_image(240, 320, seed=s) for s in range(4)]))  # (4, H, W, 3)
    batched = processor.preprocess_frames(frames)
    assert batched.shape == (4, 3, 224, 224) and batched.is_contiguous()
    per_frame = torch.cat([processor(frame)["pixel_values"] for frame in frames])
    assert torch.equal(batched, per_frame)
    assert torch.equal(processor.preprocess_frames(frames.numpy()), batched)


def test_mixed_sizes_and_inputs_come_back_in_order(tmp_path):
    processor = FrameLMImageProcessor(size={"height": 48, "width": 48})
    small, large = smooth_image(30, 40), smooth_image(90, 60, seed=2)
    path = tmp_path / "large.png"
    Image.fromarray(large).save(path)
    batch = [small, Image.fromarray(large), [torch.from_numpy(small), str(path)]]
    out = processor(batch, return_tensors="pt")["pixel_values"]
    expected = [processor(image)["pixel_values"][0] for image in (small, large, small, large)]
    assert torch.equal(out, torch.stack(expected))


def test_pil_images_give_the_array_result():
    processor = FrameLMImageProcessor(
        size={"shortest_edge": 40}, do_center_crop=True, crop_size={"height": 32, "width": 36}
    )
    small = smooth_image(61, 83)
    assert torch.equal(processor(Image.fromarray(small))["pixel_values"], processor(small)["pixel_values"])
    together = processor([Image.fromarray(small), small])["pixel_values"]
    assert torch.equal(together[0], together[1])


def test_grayscale_inputs_become_three_equal_channels():
    processor = FrameLMImageProcessor(size={"height": 24, "width": 20})
    grey = smooth_image(40, 50)[..., 0]
    as_rgb = processor(np.repeat(grey[..., None], 3, axis=-1))["pixel_values"]
    for image in (grey, grey[..., None], torch.from_numpy(grey), Image.fromarray(grey, mode="L")):
        assert torch.equal(processor(image)["pixel_values"], as_rgb)


def test_rgba_is_composited_on_white_like_transformers():
    rgba = smooth_image(40, 50).copy()
    rgba = np.concatenate([rgba, smooth_image(40, 50, seed=5)[..., :1]], axis=-1)  # varying alpha
    peer = SiglipImageProcessorPil(do_resize=False)
    ours = FrameLMImageProcessor(do_resize=False)
    theirs = torch.as_tensor(np.stack(peer(rgba)["pixel_values"]))
    torch.testing.assert_close(ours(rgba)["pixel_values"], theirs, atol=1e-5, rtol=0)
    from_pil = ours(Image.fromarray(rgba, mode="RGBA"))["pixel_values"]  # through media_framelm.load_image
    assert grey_levels(from_pil, theirs, [0.5] * 3).round().max() <= 1
    transparent = np.zeros((4, 4, 4), dtype=np.uint8)
    assert ours(transparent)["pixel_values"].eq(1.0).all()  # fully transparent -> white -> (1 - 0.5) / 0.5


def test_per_call_overrides_do_not_change_the_processor():
    processor = FrameLMImageProcessor(size={"height": 32, "width": 32})
    image = smooth_image(40, 50)
    assert processor(image, size={"height": 16, "width": 8})["pixel_values"].shape == (1, 3, 16, 8)
    assert processor(image, do_resize=None)["pixel_values"].shape == (1, 3, 32, 32)  # None means "not given"
    assert processor.size == {"height": 32, "width": 32}


@pytest.mark.parametrize(
    "images,error,match",
    [
        ([], ValueError, "no images given"),
        ([[], []], ValueError, "no images given"),
        (np.zeros((20, 30), dtype=np.float32), ValueError, "image 0: expected uint8 pixels, got ndarray of shape"),
        (np.zeros((20, 30), dtype=np.int64), ValueError, "expected uint8 pixels.*dtype int64"),
        (np.zeros((3, 20, 30), dtype=np.uint8), ValueError, r"looks channels-first: use x.permute\(1, 2, 0\)"),
        (np.zeros((20, 30, 5), dtype=np.uint8), ValueError, r"expected a channels-last \(H, W\)"),
        (np.zeros((0, 30, 3), dtype=np.uint8), ValueError, "expected a channels-last"),
        ([np.zeros((8, 8, 3), np.uint8), 7], TypeError, "image 1: cannot read int as an image"),
    ],
)
def test_bad_inputs_say_what_is_wrong(images, error, match):
    with pytest.raises(error, match=match):
        FrameLMImageProcessor(size=16)(images)


def test_bad_settings_and_calls_say_how_to_fix_them():
    with pytest.raises(ValueError, match=r"size=\{'longest_edge': 5\} is not supported.*shortest_edge"):
        FrameLMImageProcessor(size={"longest_edge": 5})
    with pytest.raises(ValueError, match="resample=0 is not supported; use bicubic"):
        FrameLMImageProcessor(resample=0)
    with pytest.raises(ValueError, match="do_center_crop=True needs crop_size"):
        FrameLMImageProcessor(do_center_crop=True)
    with pytest.raises(ValueError, match="image_mean must have 3 values"):
        FrameLMImageProcessor(image_mean=[0.5, 0.5])
    processor = FrameLMImageProcessor(size={"shortest_edge": 16})
    with pytest.raises(ValueError, match="follows the aspect ratio; set do_center_crop=True"):
        processor([smooth_image(20, 30), smooth_image(30, 20)])
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['do_resise'\]"):
        processor(smooth_image(20, 30), do_resise=False)
    with pytest.raises(ValueError, match="always returns torch tensors"):
        processor(smooth_image(20, 30), return_tensors="np")
    with pytest.raises(ValueError, match=r"4-channel image with do_convert_rgb=False"):
        FrameLMImageProcessor(do_convert_rgb=False)(np.zeros((8, 8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"expects uint8 frames of shape \(N, H, W, 3\), got Tensor of shape"):
        processor.preprocess_frames(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expects uint8 frames, got torch.float32"):
        processor.preprocess_frames(torch.zeros(2, 8, 8, 3))
