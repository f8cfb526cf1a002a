"""What a server sends the processor, and the bounds on what data may cost: videos inline (data URL, base64, bytes)
like images, frame times from the metadata vLLM passes with frames it decoded, raster-only image formats (never
Ghostscript), video frames bounded by their stream header before decoding, frame-folder fps in a sane range."""

import base64
import json
import os
import stat
import sys

import pytest
import torch
from support.processes import run_process

from framelm.processing.media_framelm import FOLDER_FPS_RANGE, load_image, load_video
from framelm.training.model.tiny import build_tiny_framelm

FRAME = "<F>"


@pytest.fixture(scope="module")
def timed():
    return build_tiny_framelm(frame_timestamps=True)[1]


def short_text(processor, out) -> str:
    return processor.decode(out["input_ids"][0]).replace("<video>" * processor.tokens_per_frame, FRAME)


@pytest.mark.parametrize("form", ["data URL", "base64", "bytes"])
def test_a_video_given_inline_equals_the_same_file_by_path(tiny_processor, make_mp4, form):
    path = make_mp4("clip.mp4", num_frames=12)
    data = path.read_bytes()
    inline = {"data URL": "data:video/mp4;base64," + base64.b64encode(data).decode(),
              "base64": base64.b64encode(data).decode(), "bytes": data}[form]  # fmt: skip
    by_path = tiny_processor(text="<video>", videos=[str(path)], return_tensors="pt")
    given = tiny_processor(text="<video>", videos=[inline], return_tensors="pt")
    assert given["input_ids"].tolist() == by_path["input_ids"].tolist()
    torch.testing.assert_close(given["pixel_values_videos"], by_path["pixel_values_videos"], rtol=0, atol=0)


def test_a_broken_inline_video_is_named_by_its_size_never_by_its_text(tiny_processor, make_mp4):
    encoded = base64.b64encode(make_mp4("clip.mp4", num_frames=12).read_bytes()[:300]).decode()
    with pytest.raises(ValueError) as caught:
        tiny_processor(text="<video>", videos=[encoded])
    message = str(caught.value)
    assert f"video given as base64 ({len(encoded)} characters" in message
    assert encoded[40:80] not in message and len(message) < 600
    with pytest.raises(ValueError) as caught:
        tiny_processor(text="<video>", videos=["data:video/mp4;base64," + encoded])
    assert "video data URL (data:video/mp4;base64," in str(caught.value) and encoded[40:80] not in str(caught.value)


def test_frame_times_come_from_the_metadata_vllm_passes(timed, make_mp4):
    """vLLM decodes every frame (12 at 8 fps) and passes them with their metadata: the processor samples its 4 and
    writes the same times as for the file itself."""
    path = make_mp4("clip.mp4", num_frames=12, fps=8)
    by_path = timed(text="<video>", videos=[str(path)], return_tensors="pt")
    frames = load_video(path, num_frames=12).frames  # every frame, as vLLM's loader returns them
    metadata = {"fps": 8.0, "duration": 1.5, "total_num_frames": 12, "frames_indices": list(range(12)),
                "video_backend": "opencv"}  # fmt: skip
    given = timed(text="<video>", videos=[frames.numpy()], video_metadata=[metadata], do_sample_frames=True,
                  return_tensors="pt")  # fmt: skip
    assert short_text(timed, given) == "[00:01.5 video][00:00.1]<F>[00:00.5]<F>[00:00.9]<F>[00:01.3]<F>"
    assert given["input_ids"].tolist() == by_path["input_ids"].tolist()
    torch.testing.assert_close(given["pixel_values_videos"], by_path["pixel_values_videos"], rtol=0, atol=0)
    # frames vLLM already sampled (do_sample_frames=False): their own source indices give the times
    picked = {"fps": 8.0, "total_num_frames": 12, "frames_indices": [1, 4, 7, 10]}
    out = timed(text="<video>", videos=[frames[[1, 4, 7, 10]]], video_metadata=picked, do_sample_frames=False)
    assert short_text(timed, out) == "[00:01.5 video][00:00.1]<F>[00:00.5]<F>[00:00.9]<F>[00:01.3]<F>"
    with pytest.raises(ValueError, match="video_metadata lists 3 frames_indices for 4 frames"):
        timed(text="<video>", videos=[frames[:4]], video_metadata={"fps": 8.0, "frames_indices": [0, 1, 2]})


def test_the_token_counts_match_what_the_processor_writes(tiny_processor, make_mp4, make_image):
    counts = tiny_processor._get_num_multimodal_tokens(image_sizes=[(48, 64)], video_sizes=[(12, 48, 64)])
    out = tiny_processor(text="<image><video>", images=[str(make_image())], videos=[str(make_mp4(num_frames=12))])
    ids = out["input_ids"][0]
    assert counts["num_image_tokens"] == [ids.count(tiny_processor.image_token_id)] == [16]
    assert counts["num_video_tokens"] == [ids.count(tiny_processor.video_token_id)] == [4 * 16]
    six = tiny_processor._get_num_multimodal_tokens(video_sizes=[(12, 48, 64)], num_frames=6)
    assert six["num_video_tokens"] == [6 * 16]
    assert tiny_processor.video_processor.model_input_names == ["pixel_values_videos"]
    assert tiny_processor.video_processor.do_sample_frames is True


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\nnewpath 0 0 moveto 8 8 lineto stroke\n%%EOF\n"


def test_an_eps_image_is_refused_and_ghostscript_never_runs(tmp_path):
    """Pillow hands EPS/PS to Ghostscript; data images are opened as rasters only. A `gs` on PATH that leaves a
    mark proves it was never started."""
    fake_bin, mark = tmp_path / "bin", tmp_path / "ghostscript-ran"
    fake_bin.mkdir()
    for name in ("gs", "gswin32c", "gswin64c"):
        script = fake_bin / name
        script.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "drawing.eps").write_bytes(EPS)
    code = f"""
import sys
from framelm.processing.media_framelm import load_image
for source in ({str(tmp_path / "drawing.eps")!r}, {EPS!r}):
    try:
        load_image(source)
    except ValueError as err:
        print("refused:", err)
    else:
        print("opened")
"""
    env = os.environ | {"PATH": f"{fake_bin}:{os.environ['PATH']}"}
    result = run_process([sys.executable, "-c", code], cwd=tmp_path, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("refused: cannot decode image") for line in lines), lines
    assert "not a raster image: PNG, JPEG" in lines[0]
    assert not mark.exists()


def test_raster_formats_still_open(make_image):
    for name in ("a.png", "a.jpg", "a.webp", "a.bmp", "a.gif", "a.tiff"):
        assert load_image(str(make_image(name, size=(8, 6)))).size == (8, 6)


def test_huge_video_frames_are_refused_from_the_header_before_decoding(make_mp4, tmp_path):
    """A 4000x4000 mp4 against a 1000x1000 limit: refused, and the peak memory of the process did not grow by even
    one decoded frame (24 MB of YUV, 48 MB of RGB)."""
    from framelm.training.data.media_writer import write_mp4

    path = write_mp4(tmp_path / "huge.mp4", torch.zeros(1, 4000, 4000, 3, dtype=torch.uint8).numpy(), fps=1)
    code = f"""
import json, resource
from framelm.processing.media_framelm import load_video
import av  # imported before measuring, as in any worker
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_video({str(path)!r}, num_frames=1, max_frame_pixels=1000 * 1000)
    message = None
except ValueError as err:
    message = str(err)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"message": message, "grew_kb": after - before}}))
"""
    result = run_process([sys.executable, "-c", code], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert "has 4000x4000 frames (16000000 pixels), above the limit of 1000000 pixels" in child["message"]
    assert child["grew_kb"] < 16 * 1024, child


def test_the_default_frame_limit_is_8k_and_the_processor_saves_its_own(tiny_processor, tmp_path):
    from framelm.processing import FrameLMProcessor

    assert tiny_processor.max_frame_pixels == 7680 * 4320
    tiny_processor.max_frame_pixels = 640 * 480
    try:
        tiny_processor.save_pretrained(tmp_path / "saved")
    finally:
        tiny_processor.max_frame_pixels = 7680 * 4320
    assert FrameLMProcessor.from_pretrained(tmp_path / "saved").max_frame_pixels == 640 * 480


@pytest.mark.parametrize("fps", ["1e-300", "0.0001", "1e6"])
def test_a_folder_fps_outside_the_sane_range_is_refused(make_frame_folder, fps):
    folder = make_frame_folder(num_frames=4, fps=fps)
    low, high = FOLDER_FPS_RANGE
    with pytest.raises(ValueError, match=f"'fps' must be a number from {low:g} to {high:g}"):
        load_video(folder, num_frames=2)
