"""What users and harnesses send to FrameLMProcessor: every image and video form, keyword groups (honoured or refused
by name), empty audio, the counts vLLM asks for, and the template's placeholder variables. Remote media come from a
loopback HTTP server started by the test."""

import base64
import copy
import io
import os
import tempfile
import time

import numpy as np
import pytest
import torch
from PIL import Image
from support.media_server import serve_media
from support.processes import run_without_framelm
from support.token_runs import runs
from transformers import AutoProcessor

from framelm.processing.chat_template_framelm import DEFAULT_CHAT_TEMPLATE
from framelm.processing.processing_framelm import FrameLMProcessor

LEGACY_TEMPLATE = DEFAULT_CHAT_TEMPLATE.replace("image_token | default('<image>')", "'<image>'").replace(
    "video_token | default('<video>')", "'<video>'"
)  # the template saved with models before the placeholders became variables


def png_bytes(seed: int = 0, size: tuple[int, int] = (45, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def user_turn(*items: dict) -> list[dict]:
    return [{"role": "user", "content": [*items, {"type": "text", "text": "What colour?"}]}]


def chat_pixels(processor, messages: list[dict]) -> torch.Tensor:
    out = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return torch.as_tensor(out["pixel_values"])


@pytest.fixture
def slow_processor(tiny_model_dir):
    """The tiny processor with short remote limits, set the way a user would: at load time."""
    return FrameLMProcessor.from_pretrained(tiny_model_dir, fetch_timeout=2.0, fetch_max_bytes=50_000)


# --- image and video forms --------------------------------------------------------------------------------------


def test_every_image_form_gives_the_pixels_of_the_file(tiny_processor, tmp_path):
    data = png_bytes()
    (tmp_path / "a.png").write_bytes(data)
    encoded = base64.b64encode(data).decode()
    data_url = "data:image/png;base64," + encoded
    expected = tiny_processor(text="<image>", images=[str(tmp_path / "a.png")], return_tensors="pt")["pixel_values"]
    with serve_media({"/a.png": data}) as server:
        forms = [data_url, encoded, encoded[:40] + "\n" + encoded[40:], data, (tmp_path / "a.png").as_uri(),
                 server.url("/a.png"), server.url("/redirect?to=/a.png")]  # fmt: skip
        for form in forms:
            out = tiny_processor(text="<image>", images=[form], return_tensors="pt")
            assert torch.equal(out["pixel_values"], expected), str(form)[:60]
        for item in ({"type": "image", "url": server.url("/a.png")}, {"type": "image", "url": data_url},
                     {"type": "image", "base64": encoded}, {"type": "image_url", "image_url": {"url": data_url}},
                     {"type": "image_url", "image_url": {"url": server.url("/a.png")}}):  # fmt: skip
            assert torch.equal(chat_pixels(tiny_processor, user_turn(item)), expected), item
    assert server.requests == ["/a.png", "/redirect?to=/a.png", "/a.png", "/a.png", "/a.png"]


def test_a_url_video_from_a_local_server_equals_the_file(tiny_processor, make_mp4):
    path = make_mp4("clip.mp4", num_frames=10)
    leftovers = set(os.listdir(tempfile.gettempdir()))
    expected = tiny_processor(text="<video>", videos=[str(path)], return_tensors="pt")
    with serve_media({"/clip.mp4": path.read_bytes()}) as server:
        out = tiny_processor(text="<video>", videos=[server.url("/clip.mp4")], return_tensors="pt")
        chat = tiny_processor.apply_chat_template(
            user_turn({"type": "video", "url": server.url("/clip.mp4")}), tokenize=True, return_dict=True
        )
    assert torch.equal(out["pixel_values_videos"], expected["pixel_values_videos"])
    assert torch.equal(torch.as_tensor(chat["pixel_values_videos"]), expected["pixel_values_videos"])
    assert runs(out["input_ids"][0], tiny_processor.video_token_id) == [4 * 16]
    assert {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("framelm-")} <= leftovers  # deleted


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind,route", [("images", "/trickle/100"), ("videos", "/silent")])
def test_a_stalled_or_trickling_server_fails_within_the_deadline(slow_processor, kind, route):
    placeholder = "<image>" if kind == "images" else "<video>"
    with serve_media() as server:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=f"fetching {server.url(route)} did not finish within 2 s"):
            slow_processor(text=placeholder, **{kind: [server.url(route)]})
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 8  # 2 s deadline for the whole file, not per read; generous bound for a busy machine


@pytest.mark.parametrize("route,what", [("/announce/999999999", "the server announces 999999999 bytes"),
                                        ("/endless", "more than 50000 bytes arrived")])  # fmt: skip
def test_an_oversized_remote_file_is_refused(slow_processor, route, what):
    with serve_media() as server:
        with pytest.raises(ValueError, match=f"{server.url(route)} is too large: {what}.*fetch_max_bytes"):
            slow_processor(text="<video>", videos=[server.url(route)])


def test_empty_audio_is_accepted_and_real_audio_refused(tiny_processor, make_image):
    image, video = str(make_image("a.png")), torch.zeros(6, 24, 40, 3, dtype=torch.uint8)
    plain = tiny_processor(text="<image><video>", images=[image], videos=[video], return_tensors="pt")
    for empty in ({"audios": []}, {"audios": None}, {"audio": []}, {"audios": [[], []]}):
        out = tiny_processor(text="<image><video>", images=[image], videos=[video], return_tensors="pt", **empty)
        assert all(torch.equal(out[key], plain[key]) for key in plain), empty
    with pytest.raises(ValueError, match="no audio input"):
        tiny_processor(text="hello", audios=[np.zeros(16000, dtype=np.float32)])


def test_images_text_and_videos_may_be_positional(tiny_processor, make_image, make_mp4):
    image, video = str(make_image("a.png")), str(make_mp4("v.mp4"))
    by_name = tiny_processor(images=[image], text="<image><video>", videos=[video], return_tensors="pt")
    by_position = tiny_processor([image], "<image><video>", [video], None, return_tensors="pt")
    assert all(torch.equal(by_name[key], by_position[key]) for key in by_name)


# --- keywords ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"videos_kwargs": {"num_frames": 2}}, {"num_frames": 2}, {"processor_kwargs": {"num_frames": 2}}],
    ids=["videos_kwargs", "top_level", "apply_chat_template"],
)
def test_num_frames_sets_the_frame_count_and_the_video_tokens(tiny_processor, kwargs):
    video = torch.arange(9, dtype=torch.uint8).view(9, 1, 1, 1).expand(9, 24, 40, 3).contiguous()  # frame i is i
    if "processor_kwargs" in kwargs:  # apply_chat_template also sends do_sample_frames=True with it
        out = tiny_processor.apply_chat_template(
            user_turn({"type": "video", "video": video}),
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **kwargs,
        )
    else:
        out = tiny_processor(text="<video>", videos=[video], return_tensors="pt", **kwargs)
    assert out["pixel_values_videos"].shape == (1, 2, 3, 32, 32)
    assert runs(out["input_ids"][0], tiny_processor.video_token_id) == [2 * 16]
    plain = tiny_processor.load_video_clip(video, num_frames=2).frames
    expected = tiny_processor.image_processor.preprocess_frames(plain)
    assert torch.equal(out["pixel_values_videos"][0], expected) and plain[:, 0, 0, 0].tolist() == [2, 6]


def test_image_settings_reach_images_and_video_frames(tiny_processor):
    black_image, black_video = np.zeros((8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8)

    def pixels(**kwargs):
        out = tiny_processor(text="<image><video>", images=[black_image], videos=[black_video], **kwargs)
        return out["pixel_values"].unique().tolist(), out["pixel_values_videos"].unique().tolist()

    assert pixels() == ([-1.0], [-1.0])  # (0 - 0.5) / 0.5
    assert pixels(do_normalize=False) == ([0.0], [0.0])
    assert pixels(images_kwargs={"do_normalize": False}) == ([0.0], [-1.0])
    assert pixels(videos_kwargs={"do_normalize": False}) == ([-1.0], [0.0])
    out = tiny_processor(text="<image>", images=[black_image], size={"height": 16, "width": 8}, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 16, 8)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"bogus": 1}, TypeError, r"unexpected keyword `bogus`; it accepts \[.*'num_frames'"),
        ({"images_kwargs": {"do_pad": True}}, TypeError, r"`images_kwargs\['do_pad'\]`"),
        ({"fps": 2}, ValueError, "`fps`: FrameLM samples a fixed number of frames.*pass num_frames=N"),
        ({"videos_kwargs": {"fps": 1.0}}, ValueError, r"`videos_kwargs\['fps'\]`.*num_frames"),
        ({"common_kwargs": {"num_frames": 2}}, TypeError, r"`common_kwargs\['num_frames'\]`.*\['return_tensors'\]"),
        ({"text_kwargs": "pt"}, TypeError, "`text_kwargs` must be a dict"),
        ({"audio_kwargs": {"sampling_rate": 16000}}, TypeError, r"`audio_kwargs\['sampling_rate'\]`"),
    ],
)
def test_a_keyword_not_honoured_raises_naming_it(tiny_processor, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_processor(text="hello", **kwargs)


def test_keywords_honoured_by_group(tiny_processor):
    two = tiny_processor(text=["a", "red circle"], padding=True, return_tensors="pt")
    assert two["input_ids"].shape[0] == 2 and two["attention_mask"][0].sum() < two["attention_mask"][1].sum()
    left = tiny_processor(text=["a", "red circle"], text_kwargs={"padding": True, "padding_side": "left"})
    assert left["attention_mask"][0][0] == 0
    out = tiny_processor(
        text="<image>hi", images=[np.zeros((8, 8, 3), np.uint8)], common_kwargs={"return_tensors": "pt"}
    )
    assert isinstance(out["input_ids"], torch.Tensor) and isinstance(out["pixel_values"], torch.Tensor)
    with pytest.raises(ValueError, match="`fps`: FrameLM samples"):
        tiny_processor.apply_chat_template(user_turn(), tokenize=True, return_dict=True, processor_kwargs={"fps": 1})
    with pytest.raises(TypeError, match="`do_sample`, a generation setting.*generate_kwargs"):
        tiny_processor(text="hello", do_sample=False)  # what a pipeline call forwards when not in generate_kwargs


def test_mm_token_type_ids_mark_image_and_video_tokens(tiny_processor):
    out = tiny_processor(text="a<image>b<video>", images=[np.zeros((8, 8, 3), np.uint8)],
                         videos=[np.zeros((4, 8, 8, 3), np.uint8)], return_mm_token_type_ids=True,
                         return_tensors="pt")  # fmt: skip
    ids, types = out["input_ids"][0], out["mm_token_type_ids"][0]
    assert torch.equal(types == 1, ids == tiny_processor.image_token_id) and (types == 1).sum() == 16
    assert torch.equal(types == 2, ids == tiny_processor.video_token_id) and (types == 2).sum() == 64
    assert (
        (types == 0) == ~torch.isin(ids, torch.tensor([tiny_processor.image_token_id, tiny_processor.video_token_id]))
    ).all()


@pytest.mark.parametrize("kwargs", [{}, {"num_frames": 2}, {"videos_kwargs": {"splice_single_frame": "middle"}}])
def test_get_num_multimodal_tokens_equals_the_real_output(tiny_processor, kwargs):
    images = [np.zeros((30, 50, 3), np.uint8), np.zeros((64, 20, 3), np.uint8)]
    videos = [np.zeros((9, 24, 40, 3), np.uint8), np.zeros((3, 10, 10, 3), np.uint8)]
    out = tiny_processor(text="<image><video> and <image><video>", images=images, videos=videos,
                         return_tensors="pt", **kwargs)  # fmt: skip
    counts = tiny_processor._get_num_multimodal_tokens(
        image_sizes=[i.shape[:2] for i in images], video_sizes=[v.shape[:3] for v in videos], **kwargs
    )
    ids = out["input_ids"][0]
    assert counts["num_image_tokens"] == runs(ids, tiny_processor.image_token_id) == [16, 16]
    assert counts["num_video_tokens"] == runs(ids, tiny_processor.video_token_id)
    assert counts["num_image_patches"] == [1, 1] == [len(p) for p in out["pixel_values"].split(1)]
    assert "num_video_tokens" in counts and "num_audio_tokens" not in counts
    only_images = tiny_processor._get_num_multimodal_tokens(image_sizes=[(100, 100)])
    assert only_images["num_image_tokens"] == [16] and only_images["num_video_tokens"] is None


# --- the template's placeholders --------------------------------------------------------------------------------


def test_the_template_renders_the_processors_own_tokens_and_saved_ones_win(tiny_processor, tmp_path):
    processor = copy.deepcopy(tiny_processor)
    processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<img>"]})
    processor.image_token = "<img>"
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.image_token == "<img>" and loaded.video_token == "<video>"
    messages = user_turn({"type": "image", "image": np.zeros((8, 8, 3), np.uint8)})
    assert loaded.apply_chat_template(messages).startswith("<|im_start|>user\n<img>What colour?")
    out = loaded.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    assert runs(out["input_ids"][0], loaded.tokenizer.convert_tokens_to_ids("<img>")) == [16]
    # a renderer that passes no variables (the tokenizer's own apply_chat_template) gets the default strings
    rendered = tiny_processor.tokenizer.apply_chat_template(
        messages, chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False
    )
    assert rendered.startswith("<|im_start|>user\n<image>What colour?")


def test_a_folder_saved_with_the_old_literal_template_still_works(tiny_processor, tmp_path):
    old = copy.deepcopy(tiny_processor)
    old.chat_template = LEGACY_TEMPLATE
    old.save_pretrained(tmp_path)
    assert "image_token" not in (tmp_path / "chat_template.jinja").read_text()
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    messages = user_turn({"type": "image", "image": np.zeros((8, 8, 3), np.uint8)})
    now = tiny_processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    before = loaded.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    assert torch.equal(now["input_ids"], before["input_ids"])


# --- a saved folder, where framelm is not installed ---------------------------------------------------------------


@pytest.mark.slow
def test_url_data_url_and_base64_images_work_in_pipelines_without_framelm(tiny_model_dir, tiny_model, tiny_processor,
                                                                          tmp_path):  # fmt: skip
    data = png_bytes(seed=3)
    (tmp_path / "a.png").write_bytes(data)
    messages = user_turn({"type": "image", "path": str(tmp_path / "a.png")})
    inputs = tiny_processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    generated = tiny_model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    expected = tiny_processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    encoded = base64.b64encode(data).decode()
    with serve_media({"/a.png": data}) as server:
        items = {
            "http": {"type": "image", "url": server.url("/a.png")},
            "data_url": {"type": "image", "url": "data:image/png;base64," + encoded},
            "base64": {"type": "image", "base64": encoded},
            "openai": {"type": "image_url", "image_url": {"url": "data:image/png;base64," + encoded}},
        }
        child = run_without_framelm(
            f"""
            import json, torch
            from transformers import AutoProcessor, pipeline
            folder, items = {str(tiny_model_dir)!r}, {items!r}
            local = [{{"type": "image", "path": {str(tmp_path / "a.png")!r}}},
                     {{"type": "text", "text": "What colour?"}}]
            processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
            pipe = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
            def pixels(content):
                out = processor.apply_chat_template([{{"role": "user", "content": content}}], tokenize=True,
                                                    return_dict=True, return_tensors="pt")
                return out["pixel_values"]
            result = {{}}
            for name, item in items.items():
                content = [item, {{"type": "text", "text": "What colour?"}}]
                same = torch.equal(pixels(content), pixels(local))
                answer = pipe(text=[{{"role": "user", "content": content}}], return_full_text=False,
                              generate_kwargs={{"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}})
                result[name] = [same, answer[0]["generated_text"], type(processor).__module__]
            print(json.dumps(result))
            """,
            cwd=tmp_path,
        )
    for name, (same_pixels, answer, module) in child.items():
        assert same_pixels, name
        assert answer == expected, name
        assert not module.startswith("framelm"), module  # the class came from the saved folder
    assert server.requests.count("/a.png") == 2  # the processor's and the pipeline's fetch of the http item
