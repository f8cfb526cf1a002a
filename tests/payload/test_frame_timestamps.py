"""Frame timestamps (`FrameLMProcessor(frame_timestamps=True)`): each video's duration and each frame's time, read
from the decoded frames, written before the frame's tokens; counted exactly by the length rule; saved with the
processor and off for folders saved before the option existed."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import datasets
import numpy as np
import pytest
import torch
from support.llava_sources import save_llava_next_video
from support.pattern_video import pattern_frames, read_pattern_index
from support.processes import run_without_framelm
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from framelm.processing.chat_template_framelm import IM_END, IM_START, IMAGE_TOKEN, VIDEO_TOKEN
from framelm.processing.image_processing_framelm import FrameLMImageProcessor
from framelm.processing.media_framelm import load_video
from framelm.processing.processing_framelm import FrameLMProcessor
from framelm.processing.time_labels_framelm import format_time, timed_video_text
from framelm.training.batches.collator import FrameLMCollator
from framelm.training.cli import main as cli
from framelm.training.data.budget import measure_lengths, time_label_problem
from framelm.training.data.sample import SAMPLE_FEATURES, Media, Sample, Turn
from framelm.training.model.build import check_frame_timestamps
from framelm.training.model.tiny import CORPUS, build_tiny_framelm

FRAME = "<F>"  # one frame's 16 video tokens, in the expected texts below


@pytest.fixture(scope="module")
def timed():
    """(model, processor) of the tiny FrameLM with frame timestamps on: 4 frames of 16 tokens per video."""
    return build_tiny_framelm(frame_timestamps=True)


def prompt_text(processor, video, **kwargs) -> str:
    """The text the model reads for one `<video>` prompt, each frame's token run shortened to FRAME."""
    out = processor(text="<video>", videos=[video], **kwargs)
    return processor.decode(out["input_ids"][0]).replace(VIDEO_TOKEN * processor.tokens_per_frame, FRAME)


def write_vfr_mp4(path, pts_ms: list[int]):
    """An H.264 MP4 whose frames sit at the given millisecond times (a variable frame rate), pattern-coded."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for frame, pts in zip(pattern_frames(len(pts_ms), 48, 64), pts_ms, strict=True):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return path


# --- the label format ------------------------------------------------------------------------------------------


def test_time_labels_are_fixed_width_tenths():
    assert [format_time(t) for t in (0, 0.04, 0.05, 2.25, 59.96, 75, 754.96, 5999.9)] == [
        "00:00.0", "00:00.0", "00:00.1", "00:02.3", "01:00.0", "01:15.0", "12:35.0", "99:59.9",
    ]  # fmt: skip
    assert format_time(np.float32(1.5)) == "00:01.5"
    for bad in (-0.1, float("nan"), float("inf"), "soon"):
        with pytest.raises(ValueError, match="finite number of seconds"):
            format_time(bad)
    assert timed_video_text("<v>", 2, [0.0, 1.25], 3.0) == "[00:03.0 video][00:00.0]<v><v>[00:01.3]<v><v>"
    with pytest.warns(UserWarning, match="past 99:59.9"):
        assert timed_video_text("<v>", 1, [6000.0], 6001.0) == "[100:01.0 video][100:00.0]<v>"


# --- times from the decoded frames ------------------------------------------------------------------------------


def test_mp4_with_known_fps_gives_its_frame_times(timed, make_mp4):
    _, processor = timed
    path = make_mp4(num_frames=20, fps=5)  # frames every 0.2 s; 4 sampled: indices 2, 7, 12, 17
    expected = f"[00:04.0 video][00:00.4]{FRAME}[00:01.4]{FRAME}[00:02.4]{FRAME}[00:03.4]{FRAME}"
    assert prompt_text(processor, str(path)) == expected
    for backend in ("pyav", "decord"):  # both readers give the same times
        clip = load_video(path, num_frames=4, backend=backend)
        assert clip.timestamps == pytest.approx([0.4, 1.4, 2.4, 3.4]) and clip.duration == pytest.approx(4.0)
    assert prompt_text(processor, str(path), num_frames=2) == f"[00:04.0 video][00:01.0]{FRAME}[00:03.0]{FRAME}"


@pytest.mark.parametrize("fps", ["2.0", 4])
def test_frame_folder_times_come_from_its_json_fps(timed, make_frame_folder, fps):
    _, processor = timed
    folder = make_frame_folder(num_frames=10, fps=fps)  # {"fps": "2.0"} as Pai-Megatron-Patch writes it, or 4
    seconds = [i / float(fps) for i in (1, 3, 6, 8)]  # the frames `sample_frame_indices(10, 4)` picks
    labels = "".join(f"[{format_time(t)}]{FRAME}" for t in seconds)
    assert prompt_text(processor, str(folder)) == f"[{format_time(10 / float(fps))} video]{labels}"
    if fps == "2.0":
        assert labels == f"[00:00.5]{FRAME}[00:01.5]{FRAME}[00:03.0]{FRAME}[00:04.0]{FRAME}"


def test_frame_folder_without_fps_says_where_to_write_it(timed, make_frame_folder, tiny_processor):
    folder = make_frame_folder(fps=None)
    expected = r"clip has no frame rate.*frame_timestamps=True.*\{\"fps\": 2.0\}.*clip\.json"
    with pytest.raises(ValueError, match=expected):
        timed[1](text="<video>", videos=[str(folder)])
    assert tiny_processor(text="<video>", videos=[str(folder)])["input_ids"]  # without timestamps it needs none


def test_short_video_repeats_frames_with_their_real_times(timed, make_mp4):
    _, processor = timed
    path = make_mp4(num_frames=2, fps=5)  # 2 frames at 0.0 and 0.2 s, padded to 4 by repetition
    clip = load_video(path, num_frames=4)
    assert [read_pattern_index(f.numpy()) for f in clip.frames] == [0, 0, 1, 1]
    expected = f"[00:00.4 video][00:00.0]{FRAME}[00:00.0]{FRAME}[00:00.2]{FRAME}[00:00.2]{FRAME}"
    assert prompt_text(processor, str(path)) == expected


def test_variable_frame_rate_file_uses_its_real_pts(timed, tmp_path):
    _, processor = timed
    pts_ms = [0, 100, 150, 700, 1000, 1900, 2000, 3300]  # 8 frames at irregular times
    path = write_vfr_mp4(tmp_path / "vfr.mp4", pts_ms)
    for backend in ("pyav", "decord"):
        clip = load_video(path, num_frames=8, backend=backend)
        assert [read_pattern_index(f.numpy()) for f in clip.frames] == list(range(8))
        assert clip.timestamps == pytest.approx([t / 1000 for t in pts_ms], abs=1e-6)
    text = prompt_text(processor, str(path))  # indices 1, 3, 5, 7 of the 8 frames
    assert text.split("]", 1)[1] == f"[00:00.1]{FRAME}[00:00.7]{FRAME}[00:01.9]{FRAME}[00:03.3]{FRAME}"
    duration = load_video(path, num_frames=1).duration  # to the end of the last frame, as its packet says
    assert duration > 3.3 and text.startswith(f"[{format_time(duration)} video]")


def test_decoded_frames_need_their_times(timed):
    _, processor = timed
    frames = torch.zeros(8, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="decoded frames has no frame times.*pass the video's path, video_metadata="):
        processor(text="<video>", videos=[frames])
    clip = type("Clip", (), {"frames": frames, "timestamps": [i / 2 for i in range(8)], "duration": 4.0})()
    assert prompt_text(processor, clip) == f"[00:04.0 video][00:00.5]{FRAME}[00:01.5]{FRAME}[00:02.5]{FRAME}" + (
        f"[00:03.5]{FRAME}"
    )  # the times of the frames the sampler picks (1, 3, 5, 7)
    clip.timestamps = [0.0]
    with pytest.raises(ValueError, match="a clip of 8 frames came with 1 timestamps"):
        processor(text="<video>", videos=[clip])


# --- the model, the assistant mask and the collator -------------------------------------------------------------


def test_model_reads_labels_as_text_and_counts_video_tokens_exactly(timed, make_mp4):
    model, processor = timed
    messages = processor.build_messages("Which way?", videos=[str(make_mp4(num_frames=12))])
    conversation = messages + [{"role": "assistant", "content": [{"type": "text", "text": "left"}]}]
    out = processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids = out["input_ids"][0]
    assert int((ids == processor.video_token_id).sum()) == 4 * 16  # labels are text between the frame runs
    assert processor.decode(ids[out["assistant_masks"][0].bool()]) == "left" + IM_END  # spans realigned past labels
    with torch.no_grad():
        logits = model(**{k: out[k] for k in ("input_ids", "attention_mask", "pixel_values_videos")}).logits
    assert logits.shape[1] == len(ids)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[(ids == processor.video_token_id).nonzero()[:16, 0]] = False  # a sequence that lost one frame's tokens
    with pytest.raises(ValueError, match=r"<video> tokens per sample \[48\] do not fit 1 video\(s\) of 64"):
        model(input_ids=ids[keep][None], pixel_values_videos=out["pixel_values_videos"])


def test_replacement_offsets_cover_labels_and_frames(timed, make_mp4):
    _, processor = timed
    text = "Look: <video> now"
    out = processor(text=text, videos=[str(make_mp4(num_frames=8, fps=4))], return_text_replacement_offsets=True)
    (offset,) = out["text_replacement_offsets"][0]
    expanded = processor.decode(out["input_ids"][0])
    assert offset["span"] == (6, 13) and offset["replacement"].startswith("[00:02.0 video][00:00.3]<video>")
    start, end = offset["new_span"]
    assert expanded[start:end] == offset["replacement"] and expanded[end:] == " now"


# --- the length rule counts the labels --------------------------------------------------------------------------


def special_tokenizer(pre_tokenizer, corpus: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE with FrameLM's special tokens, trained on `corpus` with the given pre-tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", IM_START, IM_END, IMAGE_TOKEN, VIDEO_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus.split("\n") * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token="<|endoftext|>",
        extra_special_tokens=[IM_START, IMAGE_TOKEN, VIDEO_TOKEN],
    )


NUMBERS = "\n".join(f"[{i:02d}:{i:02d}.{i % 10}]" for i in range(100))  # every two-digit number, after "[" or ":"
TOKENIZERS = {
    # Qwen / Llama 2 style: every digit its own token, however often numbers appear in the corpus
    "digits-one-by-one": lambda: special_tokenizer(
        pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        ),
        CORPUS + NUMBERS * 3,
    ),
    # GPT-2 style, trained on text holding every two-digit number: each pair became one token
    "every-digit-pair-merged": lambda: special_tokenizer(
        pre_tokenizers.ByteLevel(add_prefix_space=False), CORPUS + (NUMBERS + "\n") * 5
    ),
}


def processor_with(tokenizer, frame_timestamps: bool = True) -> FrameLMProcessor:
    image_processor = FrameLMImageProcessor(size={"height": 32, "width": 32})
    return FrameLMProcessor(
        image_processor, tokenizer, tokens_per_image=16, tokens_per_frame=16, num_frames=4,
        frame_timestamps=frame_timestamps,
    )  # fmt: skip


@pytest.fixture
def video_samples(make_image, make_mp4, make_frame_folder) -> list[Sample]:
    """A file, a 2-frame file padded by repetition, a folder with a string fps, and a multi-turn mix."""
    long, short = str(make_mp4("long.mp4", num_frames=40, fps=8)), str(make_mp4("short.mp4", num_frames=2))
    folder, image = str(make_frame_folder(num_frames=10, fps="2.0")), str(make_image("a.png"))
    return [
        Sample(turns=(Turn("user", "Which way?\n<video>"), Turn("assistant", "left")), media=(Media("video", long),)),
        Sample(turns=(Turn("user", "<video>What moves?"), Turn("assistant", "a bar")),
               media=(Media("video", short),)),
        Sample(turns=(Turn("user", "<video>\nWhat moves?"), Turn("assistant", "a bar")),
               media=(Media("frames", folder),), system="Be brief."),
        Sample(turns=(Turn("user", "<video>Which way?"), Turn("assistant", "left"),
                      Turn("user", "<image><video>Same colour?"), Turn("assistant", "no")),
               media=(Media("video", long), Media("image", image), Media("frames", folder))),
    ]  # fmt: skip


@pytest.mark.parametrize("tokenizer", ["tiny", *TOKENIZERS])
def test_num_tokens_is_the_collated_length_with_timestamps(timed, video_samples, tokenizer):
    processor = timed[1] if tokenizer == "tiny" else processor_with(TOKENIZERS[tokenizer]())
    assert time_label_problem(processor) is None
    rows = measure_lengths(datasets.Dataset.from_list([s.to_row() for s in video_samples], features=SAMPLE_FEATURES),
                           processor, max_length=None)  # fmt: skip
    collator = FrameLMCollator(processor)
    for row in rows:
        encoded = collator.encode(row)
        assert row["num_tokens"] == row["total_tokens"] == len(encoded["input_ids"]), row["where"]
        assert " video][" in processor.decode(encoded["input_ids"])
    off = processor_with(processor.tokenizer, frame_timestamps=False)
    plain = measure_lengths(rows.remove_columns(["num_tokens"]), off, max_length=None)
    label_tokens = [t - p for t, p in zip(rows["num_tokens"], plain["num_tokens"], strict=True)]
    assert len(set(label_tokens[:3])) == 1 and label_tokens[3] == 2 * label_tokens[0] > 0  # per video, constant


def test_truncation_counts_the_labels(timed, video_samples):
    _, processor = timed
    sample = video_samples[3]  # two exchanges, one video each
    full = measure_lengths(datasets.Dataset.from_list([sample.to_row()], features=SAMPLE_FEATURES), processor, None)
    first = len(FrameLMCollator(processor).encode(full[0] | {"kept_turns": 2})["input_ids"])
    (row,) = measure_lengths(full, processor, max_length=full[0]["num_tokens"] - 1)
    assert (row["kept_turns"], row["num_tokens"]) == (2, first)


def test_a_tokenizer_that_splits_times_unevenly_is_refused_at_init_and_by_the_length_rule():
    uneven = special_tokenizer(pre_tokenizers.ByteLevel(add_prefix_space=False), CORPUS + "12:30 20:45 99\n" * 50)
    processor = processor_with(uneven)
    problem = time_label_problem(processor)
    assert re.match(r"its tokenizer splits time labels into 16 to 20 tokens \('\[99:12\.0 video\]", problem or "")
    assert "leave frame timestamps off" in problem
    with pytest.raises(ValueError, match="--frame-timestamps: its tokenizer splits time labels"):
        check_frame_timestamps(processor)
    text_only = Sample(turns=(Turn("user", "Say yes."), Turn("assistant", "yes")))
    rows = datasets.Dataset.from_list([text_only.to_row()], features=SAMPLE_FEATURES)
    with pytest.raises(ValueError, match="cannot count this processor's time labels exactly"):
        measure_lengths(rows, processor, max_length=None)
    check_frame_timestamps(processor_with(uneven, frame_timestamps=False))  # off: nothing to count


# --- the option is chosen at init, saved, and off for older folders ---------------------------------------------


@pytest.mark.slow
def test_init_chooses_the_option_and_it_round_trips_without_framelm(tmp_path, make_frame_folder):
    assert cli(["init", "--tiny", "--out", str(tmp_path / "plain")]) == 0
    assert cli(["init", "--tiny", "--frame-timestamps", "--out", str(tmp_path / "timed")]) == 0
    config = json.loads((tmp_path / "timed" / "processor_config.json").read_text())
    assert config["frame_timestamps"] is True
    assert json.loads((tmp_path / "plain" / "processor_config.json").read_text())["frame_timestamps"] is False
    assert FrameLMProcessor.from_pretrained(tmp_path / "timed").frame_timestamps is True
    folder = make_frame_folder(num_frames=10, fps="2.0")
    child = run_without_framelm(
        f"""
        import json
        from transformers import AutoProcessor, pipeline
        folder, video = {str(tmp_path / "timed")!r}, {str(folder)!r}
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        ids = processor(text="<video>", videos=[video])["input_ids"][0]
        pipe = pipeline("video-text-to-text", model=folder, trust_remote_code=True)
        prompt = pipe.preprocess(video, text="What moves?")["input_ids"][0]
        answer = pipe(video, text="What moves?", max_new_tokens=2)
        out = {{"on": processor.frame_timestamps, "answered": isinstance(answer[0]["generated_text"], str)}}
        for name, tokens in (("text", ids), ("prompt", prompt)):
            out[name] = processor.decode(tokens).replace("<video>" * 16, "<F>")
        print(json.dumps(out))
        """,
        cwd=tmp_path,
    )
    labels = f"[00:05.0 video][00:00.5]{FRAME}[00:01.5]{FRAME}[00:03.0]{FRAME}[00:04.0]{FRAME}"
    assert child["on"] is True and child["answered"] is True and child["text"] == labels
    assert child["prompt"] == f"{IM_START}user\n{labels}What moves?{IM_END}\n{IM_START}assistant\n"  # serving


def test_a_folder_saved_before_the_option_loads_with_it_off(tiny_model_dir, tmp_path, make_mp4):
    config = json.loads((tiny_model_dir / "processor_config.json").read_text())
    config.pop("frame_timestamps")
    old = tmp_path / "old"
    old.mkdir()
    for item in tiny_model_dir.iterdir():
        (old / item.name).write_bytes(item.read_bytes())
    (old / "processor_config.json").write_text(json.dumps(config))
    processor = FrameLMProcessor.from_pretrained(old)
    assert processor.frame_timestamps is False
    ids = processor(text="<video>", videos=[str(make_mp4(num_frames=8))])["input_ids"][0]
    assert ids == [processor.video_token_id] * 64  # no labels: exactly what it produced before
    assert FrameLMProcessor.from_pretrained(old, frame_timestamps=True).frame_timestamps is True
    with pytest.raises(TypeError, match="frame_timestamps must be True or False"):
        FrameLMProcessor.from_pretrained(old, frame_timestamps="yes")


def test_init_from_llava_takes_the_option_and_the_card_says_so(tmp_path, make_mp4):
    source = save_llava_next_video(tmp_path / "source")
    out = tmp_path / "imported"
    assert cli(["init", "--from-llava", str(source), "--out", str(out), "--frame-timestamps"]) == 0
    processor = FrameLMProcessor.from_pretrained(out)
    assert processor.frame_timestamps is True
    card = (out / "README.md").read_text()
    assert "**differs:** videos: each frame comes after a time label ('[00:02.3]', --frame-timestamps)" in card
    assert "(videos match it exactly)" not in card
    messages = processor.build_messages("What moves?", videos=[str(make_mp4(num_frames=8, fps=4))])
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    decoded = processor.decode(text["input_ids"][0]).replace(VIDEO_TOKEN * processor.tokens_per_frame, FRAME)
    frames = "".join(f"[{format_time(i / 4)}]{FRAME}" for i in range(8))  # all 8 frames of a 2 s clip at 4 fps
    assert frames.startswith(f"[00:00.0]{FRAME}[00:00.3]{FRAME}[00:00.5]{FRAME}[00:00.8]{FRAME}[00:01.0]")
    assert decoded == f"USER: [00:02.0 video]{frames}\nWhat moves? ASSISTANT:"  # in the source's Vicuna prompt
