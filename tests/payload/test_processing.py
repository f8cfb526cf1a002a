"""FrameLMProcessor: exact placeholder expansion, count checks, chat-template parity, assistant masks, save/load."""

import pytest
import torch
from support.token_runs import runs
from transformers import AutoProcessor

from framelm.processing.media_framelm import sample_frame_indices

IMAGE, VIDEO = "<image>", "<video>"


def frames(count: int, height: int = 24, width: int = 40) -> torch.Tensor:
    """uint8 frames whose first pixel holds the frame number, so resampling can be checked."""
    clip = torch.zeros(count, height, width, 3, dtype=torch.uint8)
    clip[:, 0, 0, 0] = torch.arange(count, dtype=torch.uint8)
    return clip


def test_each_placeholder_expands_to_its_exact_token_count(tiny_processor):
    image = (torch.rand(30, 50, 3) * 255).to(torch.uint8)
    out = tiny_processor(
        text=f"{IMAGE}Compare{VIDEO} and {IMAGE}", images=[image, image], videos=[frames(9)], return_tensors="pt"
    )
    ids = out["input_ids"][0]
    assert runs(ids, tiny_processor.image_token_id) == [16, 16]  # (32 // 8) ** 2 per image
    assert runs(ids, tiny_processor.video_token_id) == [4 * 16]  # 4 frames x 16 tokens
    assert out["pixel_values"].shape == (2, 3, 32, 32)
    assert out["pixel_values_videos"].shape == (1, 4, 3, 32, 32)
    two_frames = tiny_processor(text=VIDEO, videos=[frames(9)], num_frames=2, return_tensors="pt")
    assert runs(two_frames["input_ids"][0], tiny_processor.video_token_id) == [2 * 16]


def test_decoded_frames_are_resampled_with_the_shared_sampler(tiny_processor):
    picked = tiny_processor.load_video_clip(frames(10), num_frames=4).frames
    assert picked[:, 0, 0, 0].tolist() == sample_frame_indices(10, 4) == [1, 3, 6, 8]
    short = tiny_processor.load_video_clip(frames(2), num_frames=4).frames
    assert short[:, 0, 0, 0].tolist() == [0, 0, 1, 1]  # a short video repeats frames
    single = tiny_processor(text=VIDEO, videos=[frames(10)], splice_single_frame="middle", return_tensors="pt")
    assert runs(single["input_ids"][0], tiny_processor.video_token_id) == [16]


def test_mismatched_counts_say_how_many_of_each(tiny_processor):
    image = torch.zeros(8, 8, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"<image> placeholders per sample \[2\] do not match the images given \[1\]"):
        tiny_processor(text=f"{IMAGE}{IMAGE}", images=[image])
    with pytest.raises(
        ValueError, match=r"<video> placeholders per sample \[1, 0\] do not match the videos given \[0, 1\]"
    ):
        tiny_processor(text=[VIDEO, "no video here"], videos=[[], [frames(4)]])
    with pytest.raises(ValueError, match=r"<image> placeholders per sample \[0\] do not match the images given \[1\]"):
        tiny_processor(text="hello", images=[image])


def test_audio_is_refused_but_an_audios_none_is_tolerated(tiny_processor):
    assert tiny_processor(text="hello", audios=None)["input_ids"]
    with pytest.raises(ValueError, match="no audio input"):
        tiny_processor(text="hello", audio=[0.0, 0.1])


def test_apply_chat_template_equals_calling_the_processor_on_the_rendered_text(tiny_processor, make_image, make_mp4):
    image_path, video_path = make_image("a.png", size=(45, 30)), make_mp4("v.mp4", num_frames=10)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image", "path": str(image_path)}, {"type": "text", "text": "And"},
                                     {"type": "video", "path": str(video_path)}]},
    ]  # fmt: skip
    direct = tiny_processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    text = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>And<video><|im_end|>\n"
    assert text == expected + "<|im_start|>assistant\n"
    manual = tiny_processor(text=text, images=[str(image_path)], videos=[str(video_path)], return_tensors="pt")
    assert set(direct.keys()) == set(manual.keys())
    for key in manual:
        assert torch.equal(direct[key], manual[key]), key


def test_assistant_mask_covers_exactly_the_replies_and_their_end_of_turn(tiny_processor):
    image = torch.zeros(8, 8, 3, dtype=torch.uint8)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
        {"role": "user", "content": [{"type": "text", "text": "What shape?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "circle"}]},
    ]
    out = tiny_processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0].bool()
    assert tiny_processor.decode(ids[mask]) == "red<|im_end|>circle<|im_end|>"
    assert not mask[ids == tiny_processor.image_token_id].any()


def test_build_messages_places_media_left_or_right_or_keeps_given_placeholders(tiny_processor):
    left = tiny_processor.build_messages("Describe it.", videos=["v.mp4"], system_prompt="Be brief.")
    assert left == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "video", "video": "v.mp4"}, {"type": "text", "text": "Describe it."}]},
    ]
    right = tiny_processor.build_messages("Describe it.", images=["a.png"], insert_media_token="right")
    assert right[0]["content"] == [{"type": "text", "text": "Describe it."}, {"type": "image", "image": "a.png"}]
    kept = tiny_processor.build_messages("Is <image> like <video>?", images=["a.png"], videos=["v.mp4"])
    assert [item["type"] for item in kept[0]["content"]] == ["text", "image", "text", "video", "text"]
    with pytest.raises(ValueError, match="more <video> placeholders than videos"):
        tiny_processor.build_messages("<video><video>", videos=["v.mp4"])
    with pytest.raises(ValueError, match=r"fewer placeholders than media \(1 left over\)"):
        tiny_processor.build_messages("<image>", images=["a.png", "b.png"])
    with pytest.raises(ValueError, match=r"insert_media_token='middle': choose one of \('left', 'right'\)"):
        tiny_processor.build_messages("hi", images=["a.png"], insert_media_token="middle")


def test_saved_processor_round_trips(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    for name in ("image_token", "video_token", "tokens_per_image", "tokens_per_frame", "num_frames", "chat_template"):
        assert getattr(loaded, name) == getattr(tiny_processor, name), name
    image = (torch.rand(20, 30, 3) * 255).to(torch.uint8)
    a = tiny_processor(text=f"{IMAGE}hi", images=[image], return_tensors="pt")
    b = loaded(text=f"{IMAGE}hi", images=[image], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])


def test_post_process_decodes_a_batch(tiny_processor):
    ids = tiny_processor.tokenizer(["red", "blue circle"], padding=True, return_tensors="pt")["input_ids"]
    assert tiny_processor.post_process_image_text_to_text(ids) == ["red", "blue circle"]
