"""processing/media_framelm.py: image mode fixes, the frame sampler, and the three video readers agreeing pixel for
pixel with a plain sequential decode. Every media file is generated here; pattern frames carry their index."""

from __future__ import annotations

import importlib.util
import json
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image
from support.broken_media import png_claiming
from support.pattern_video import pattern_frames, read_pattern_index

from framelm.processing.media_framelm import (
    load_image,
    load_video,
    probe_video,
    sample_frame_indices,
    select_frame_indices,
)
from framelm.training.data.media_writer import write_frame_folder, write_mp4


def sequential_decode(path) -> list[np.ndarray]:
    """The reference: every frame in output order, one thread, converted to RGB24."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def pixels(image: Image.Image) -> list:
    assert image.mode == "RGB", image.mode
    return np.asarray(image).reshape(-1, 3).tolist()


# --- frame sampling ---------------------------------------------------------------------------------------------


def test_sample_frame_indices_takes_segment_centres():
    assert sample_frame_indices(10, 4) == [1, 3, 6, 8]  # centres 1.25, 3.75, 6.25, 8.75
    assert sample_frame_indices(24, 8) == [1, 4, 7, 10, 13, 16, 19, 22]  # segments of 3, centres 1.5 + 3i
    assert sample_frame_indices(100, 3) == [16, 50, 83]  # 16.7, 50, 83.3
    assert sample_frame_indices(7, 7) == [0, 1, 2, 3, 4, 5, 6]


def test_sample_frame_indices_repeats_frames_of_short_videos():
    assert sample_frame_indices(2, 4) == [0, 0, 1, 1]
    assert sample_frame_indices(1, 3) == [0, 0, 0]
    assert sample_frame_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]  # (i + 0.5) * 3 / 8 = 0.19, 0.56, 0.94, 1.31, ...


@pytest.mark.parametrize("total, num_frames", [(0, 4), (10, 0), (-1, 2), (10, 2.0), (True, 2)])
def test_sample_frame_indices_rejects_bad_counts(total, num_frames):
    with pytest.raises(ValueError, match="must be a positive integer"):
        sample_frame_indices(total, num_frames)


def test_select_frame_indices_keeps_one_frame_when_splicing():
    assert select_frame_indices(10, 4, None) == [1, 3, 6, 8]
    assert select_frame_indices(10, 4, "first") == [0]
    assert select_frame_indices(10, 4, "middle") == [5]
    assert select_frame_indices(10, 4, "last") == [9]
    assert select_frame_indices(1, 4, "last") == [0]
    with pytest.raises(ValueError, match=r"choose one of \('first', 'middle', 'last'\)"):
        select_frame_indices(10, 4, "random")


# --- videos -----------------------------------------------------------------------------------------------------

VIDEOS = {  # name -> make_mp4 arguments: B-frame H.264 in short and long GOPs, and VP9 in WebM
    "h264_gop12": {"name": "a.mp4", "num_frames": 40, "gop": 12},
    "h264_gop250": {"name": "b.mp4", "num_frames": 40, "gop": 250},
    "vp9": {"name": "c.webm", "num_frames": 40, "gop": 12, "codec": "libvpx-vp9"},
}


@pytest.mark.parametrize("video", sorted(VIDEOS))
@pytest.mark.parametrize("num_frames", [4, 13])
def test_pyav_and_decord_return_the_sequential_decode_of_the_sampled_frames(make_mp4, video, num_frames):
    path = make_mp4(**VIDEOS[video])
    reference = sequential_decode(path)
    wanted = sample_frame_indices(len(reference), num_frames)
    for backend in ("pyav", "decord"):
        clip = load_video(path, num_frames, backend=backend)
        assert clip.backend == backend and clip.total_frames == 40 and clip.fps == 8.0
        assert clip.frames.dtype == torch.uint8 and clip.frames.shape == (num_frames, 48, 64, 3)
        for frame, i in zip(clip.frames, wanted, strict=True):
            assert np.array_equal(frame.numpy(), reference[i]), f"{backend} frame {i} differs from the reference"


def test_video_frames_are_the_sampled_ones_with_their_timestamps(make_mp4):
    path = make_mp4(num_frames=24, fps=8)
    for backend in ("pyav", "decord"):
        clip = load_video(path, num_frames=8, backend=backend)
        assert [read_pattern_index(f.numpy()) for f in clip.frames] == [1, 4, 7, 10, 13, 16, 19, 22]
        assert clip.timestamps == [i / 8 for i in [1, 4, 7, 10, 13, 16, 19, 22]]


def test_auto_backend_reads_files_with_pyav(make_mp4):
    clip = load_video(make_mp4(num_frames=10), num_frames=4)
    assert clip.backend == "pyav" and [read_pattern_index(f.numpy()) for f in clip.frames] == [1, 3, 6, 8]


def test_short_video_repeats_frames(make_mp4):
    path = make_mp4(num_frames=2)
    for backend in ("pyav", "decord"):
        clip = load_video(path, num_frames=4, backend=backend)
        assert [read_pattern_index(f.numpy()) for f in clip.frames] == [0, 0, 1, 1]
        assert torch.equal(clip.frames[0], clip.frames[1]) and clip.timestamps == [0.0, 0.0, 0.125, 0.125]


def test_splice_single_frame_keeps_the_middle_frame(make_mp4):
    clip = load_video(make_mp4(num_frames=24), num_frames=8, splice_single_frame="middle")
    assert clip.frames.shape[0] == 1 and read_pattern_index(clip.frames[0].numpy()) == 12


def test_frame_folder_loads_in_name_order_with_fps_from_json(make_frame_folder):
    folder = make_frame_folder(num_frames=10, fps="2.0")  # Pai-Megatron-Patch writes the fps as a string
    clip = load_video(folder, num_frames=4)
    assert clip.backend == "frames" and clip.total_frames == 10 and clip.fps == 2.0
    assert [read_pattern_index(f.numpy()) for f in clip.frames] == [1, 3, 6, 8]
    assert clip.timestamps == [0.5, 1.5, 3.0, 4.0]
    assert load_video(make_frame_folder("numeric", fps=4), num_frames=2).fps == 4.0


def test_frame_folder_without_json_has_no_frame_rate(make_frame_folder):
    clip = load_video(make_frame_folder(fps=None), num_frames=3, backend="frames")
    assert clip.fps is None and clip.timestamps is None
    assert [read_pattern_index(f.numpy()) for f in clip.frames] == [1, 5, 8]


def test_frame_folder_sorts_numbers_naturally_and_ignores_other_files(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    frames = pattern_frames(11, 48, 64)
    for i, frame in enumerate(frames):  # frame_1 ... frame_11, unpadded: "frame_10" must not sort before "frame_2"
        Image.fromarray(frame).save(folder / f"frame_{i + 1}.png")
    (folder / "notes.txt").write_text("not a frame")
    (folder / "._frame_1.png").write_bytes(b"macOS resource fork")
    clip = load_video(folder, num_frames=11)
    assert [read_pattern_index(f.numpy()) for f in clip.frames] == list(range(11))
    assert np.array_equal(clip.frames[3].numpy(), frames[3])  # PNG is lossless


def test_frame_folder_with_bad_fps_names_the_json(make_frame_folder):
    folder = make_frame_folder(fps="fast")
    with pytest.raises(ValueError, match=r"clip\.json: 'fps' must be a number from 0.001 to 1000.*'fast'"):
        load_video(folder, num_frames=2)


def test_probe_video_reports_frames_rate_and_size(make_mp4, make_frame_folder):
    expected = {"total_frames": 24, "fps": 8.0, "duration": 3.0, "width": 64, "height": 48}
    assert probe_video(make_mp4(num_frames=24, fps=8)) == expected
    assert probe_video(make_frame_folder(num_frames=10, fps="2.0")) == {**expected, "total_frames": 10, "fps": 2.0,
                                                                         "duration": 5.0}  # fmt: skip


def test_missing_and_undecodable_videos_name_the_file(tmp_path, make_mp4):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        load_video(missing)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        probe_video(missing)
    not_video = tmp_path / "text.mp4"
    not_video.write_text("hello")
    cut = tmp_path / "cut.mp4"  # default mp4: the index (moov) is written last, so a cut file has none
    cut.write_bytes(make_mp4("whole.mp4").read_bytes()[:2000])
    for path in (not_video, cut):
        for backend in ("pyav", "decord"):
            with pytest.raises(ValueError, match=f"cannot decode video {path}"):
                load_video(path, backend=backend)


def test_truncated_video_with_index_first_is_detected(tmp_path):
    whole = write_mp4(tmp_path / "fast.mp4", pattern_frames(40, 48, 64), container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"video {cut} is truncated: its header lists 40 frames but only"):
        probe_video(cut)


def test_bad_arguments_list_the_choices(make_mp4, make_frame_folder):
    path = make_mp4()
    with pytest.raises(ValueError, match=r"choose one of \('auto', 'pyav', 'decord', 'frames'\)"):
        load_video(path, backend="opencv")
    with pytest.raises(ValueError, match="reads a folder of frame images"):
        load_video(path, backend="frames")
    with pytest.raises(ValueError, match="is a folder of frames: use backend='frames'"):
        load_video(make_frame_folder(), backend="pyav")
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        load_video(path, num_frames=0)


def test_missing_video_libraries_say_what_to_install(make_mp4, monkeypatch):
    path = make_mp4()
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    with pytest.raises(ImportError, match="pip install decord"):
        load_video(path, backend="decord")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ImportError, match="pip install av"):
        load_video(path)


# --- images -----------------------------------------------------------------------------------------------------


def test_plain_rgb_file_loads_unchanged(make_image):
    image = load_image(make_image("red.png", size=(3, 2), color=(255, 0, 0)))
    assert image.size == (3, 2) and pixels(image) == [[255, 0, 0]] * 6


def test_gray_and_one_bit_images_become_rgb():
    gray = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8))
    assert gray.mode == "L" and pixels(load_image(gray)) == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]
    bits = Image.fromarray(np.array([[True, False]]))
    assert bits.mode == "1" and pixels(load_image(bits)) == [[255, 255, 255], [0, 0, 0]]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.fromarray(np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [255, 0, 0, 128]]], dtype=np.uint8))
    # alpha 128: 255 * 128/255 + 255 * 127/255 = 255 for red; 0 + 255 * 127/255 = 127 for green and blue
    assert pixels(load_image(rgba)) == [[255, 255, 255], [255, 0, 0], [255, 127, 127]]
    rgba.save(tmp_path / "logo.png")
    assert pixels(load_image(tmp_path / "logo.png")) == [[255, 255, 255], [255, 0, 0], [255, 127, 127]]
    gray_alpha = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA")
    assert pixels(load_image(gray_alpha)) == [[255, 255, 255], [0, 0, 0]]


def test_palette_images_with_and_without_transparency(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)  # index 0 blue, index 1 green
    palette.putpixel((1, 0), 1)
    assert pixels(load_image(palette)) == [[0, 0, 255], [0, 255, 0]]
    palette.info["transparency"] = 0  # index 0 transparent, as GIF and PNG store it
    palette.save(tmp_path / "sprite.png")
    assert pixels(load_image(tmp_path / "sprite.png")) == [[255, 255, 255], [0, 255, 0]]


def test_cmyk_uses_pillows_multiplicative_conversion():
    cmyk = Image.new("CMYK", (3, 1))
    for x, value in enumerate([(0, 255, 255, 0), (0, 0, 0, 128), (10, 20, 30, 40)]):
        cmyk.putpixel((x, 0), value)
    # (255 - C) * (255 - K) / 255 rounded: 245 * 215 / 255 = 206.6 -> 207, 235 * 215 / 255 = 198.1, 225 * 215 / 255
    assert pixels(load_image(cmyk)) == [[255, 0, 0], [127, 127, 127], [207, 198, 190]]


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 65535]], dtype=np.uint16)  # -> round(v / 257): 0, 1, 3.9 -> 4, 255
    expected = [[v] * 3 for v in (0, 1, 4, 255)]
    image = Image.fromarray(values)
    assert image.mode == "I;16" and pixels(load_image(image)) == expected
    image.save(tmp_path / "depth.png")
    assert pixels(load_image(tmp_path / "depth.png")) == expected
    assert pixels(load_image(values)) == expected
    wide = Image.fromarray(np.array([[65535, 70000, -5]], dtype=np.int32))  # mode "I": clipped to 16 bit first
    assert wide.mode == "I" and pixels(load_image(wide)) == [[255] * 3, [255] * 3, [0] * 3]


def test_arrays_and_tensors_load_channels_last():
    rgb = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    assert pixels(load_image(rgb)) == [[1, 2, 3], [4, 5, 6]]
    assert pixels(load_image(torch.from_numpy(rgb))) == [[1, 2, 3], [4, 5, 6]]
    assert pixels(load_image(np.array([[7]], dtype=np.uint8))) == [[7, 7, 7]]
    assert pixels(load_image(np.array([[[9, 9, 9, 0]]], dtype=np.uint8))) == [[255, 255, 255]]
    with pytest.raises(ValueError, match="must be uint8"):
        load_image(np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"channels-last; got shape \(3, 2, 2\)"):
        load_image(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="cannot read float as an image"):
        load_image(3.5)
    with pytest.raises(ValueError, match="cannot decode image of 4 bytes"):
        load_image(b"\x89PNG")  # bytes are read as an encoded file


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8))  # 2 wide, 1 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    loaded = load_image(tmp_path / "phone.jpg")
    assert loaded.size == (1, 2)


def test_missing_and_truncated_images_name_the_file(tmp_path, make_image):
    with pytest.raises(FileNotFoundError, match="image file not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    whole = make_image("big.png", size=(256, 256)).read_bytes()
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noisy.save(tmp_path / "noise.jpg")
    for name, data in [("cut.png", whole[: len(whole) // 2]), ("cut.jpg", (tmp_path / "noise.jpg").read_bytes()[:900]),
                       ("text.png", b"not an image")]:  # fmt: skip
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=f"cannot decode image {tmp_path / name}"):
            load_image(tmp_path / name)


def test_media_writer_frame_folder_json_keeps_fps_as_given(tmp_path):
    folder = write_frame_folder(tmp_path / "v", pattern_frames(3, 48, 64), fps="2.0", ext="png")
    assert sorted(p.name for p in folder.iterdir()) == ["00001.png", "00002.png", "00003.png"]
    assert json.loads((tmp_path / "v.json").read_text()) == {"fps": "2.0"}


def test_pyav_returns_the_right_frames_of_an_open_gop_stream(tmp_path):
    # Open GOPs (x265's default, common in camera files): B-frames after an I-frame in decode order are shown before
    # it and reference the previous GOP. decord 0.6 returns neighbouring frames here; framelm's PyAV reader must not.
    options = {"x264-params": "open-gop=1:keyint=10:min-keyint=10:scenecut=0"}
    path = write_mp4(tmp_path / "open.mkv", pattern_frames(60, 48, 96), fps=10, gop=10, options=options)
    reference = sequential_decode(path)
    clip = load_video(path, num_frames=7, backend="pyav")
    wanted = sample_frame_indices(60, 7)
    assert wanted == [4, 12, 21, 30, 38, 47, 55]
    assert [read_pattern_index(f.numpy()) for f in clip.frames] == wanted
    assert all(np.array_equal(f.numpy(), reference[i]) for f, i in zip(clip.frames, wanted, strict=True))


class CountingContainer:
    """Wraps a PyAV container to count seeks and the packets demuxed after each seek."""

    def __init__(self, container, log: list):
        self._container, self._log = container, log

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._container.__exit__(*exc)

    def seek(self, *args, **kwargs):
        self._log.append(0)
        return self._container.seek(*args, **kwargs)

    def demux(self, *args, **kwargs):
        for packet in self._container.demux(*args, **kwargs):
            if self._log:
                self._log[-1] += 1
            yield packet


def test_pyav_seeks_once_per_wanted_gop_and_reads_no_other_gop(make_mp4, monkeypatch):
    sparse = make_mp4("sparse.mp4", num_frames=120, gop=12)  # keyframes at 0, 12, 24, ... 108
    dense = make_mp4("dense.mp4", num_frames=40, gop=12)  # keyframes at 0, 12, 24, 36
    seeks: list[int] = []  # packets read after each seek
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: CountingContainer(real_open(*args, **kwargs), seeks))

    clip = load_video(sparse, num_frames=4, backend="pyav")
    assert [read_pattern_index(f.numpy()) for f in clip.frames] == [15, 45, 75, 105]  # GOPs 1, 3, 6, 8
    assert len(seeks) == 4 and all(count <= 12 for count in seeks)  # one seek per GOP, never reading past it

    seeks.clear()
    clip = load_video(dense, num_frames=13, backend="pyav")
    wanted = [1, 4, 7, 10, 13, 16, 20, 23, 26, 29, 32, 35, 38]  # (i + 0.5) * 40 / 13: 4 frames in most GOPs
    assert [read_pattern_index(f.numpy()) for f in clip.frames] == wanted
    assert len(seeks) == 4 and all(count <= 12 for count in seeks)  # one seek per GOP, not one per frame


def _frames_of(path: str) -> np.ndarray:
    return load_video(path, num_frames=4, backend="pyav").frames


def _frames_in_worker(path: str) -> np.ndarray:
    torch.set_num_threads(1)  # as torch's DataLoader workers do: OpenMP threads do not survive a fork
    return _frames_of(path)


@pytest.mark.timeout(120)
def test_a_forked_worker_decodes_after_its_parent_did(tmp_path):
    """DataLoader workers are forked after the parent has decoded (the demo evaluates before training): state kept
    for speed (the RGB converter and its swscale threads) must not be inherited, or the worker hangs."""
    import multiprocessing

    small = str(write_mp4(tmp_path / "small.mp4", pattern_frames(8, 64, 64)))  # single-threaded decode
    large = str(write_mp4(tmp_path / "large.mp4", pattern_frames(8, 288, 352)))  # decoder threads
    expected = {path: _frames_of(path) for path in (small, large)}  # decoded in this (parent) process first
    with multiprocessing.get_context("fork").Pool(1) as pool:
        for path, frames in expected.items():
            np.testing.assert_array_equal(pool.apply_async(_frames_in_worker, (path,)).get(timeout=60), frames)


class RecordingConverter:
    """Stands in for PyAV's VideoReformatter to record the keywords each conversion gets."""

    def __init__(self, real, calls: list):
        self._real, self._calls = real, calls

    def reformat(self, frame, **kwargs):
        self._calls.append(sorted(kwargs))
        return self._real.reformat(frame, **kwargs)


def test_pyav_before_17_converts_without_the_threads_keyword(make_mp4, monkeypatch):
    """PyAV 14-16 (lmms-eval pins av<16) have no `reformat(threads=)`: the reader leaves it out there and gets the
    same frames. Also run against real av 14.2 and 15.1 installs (see the report of the PyAV-floor change)."""
    from av.video.reformatter import VideoReformatter

    from framelm.processing import video_pyav_framelm

    path = make_mp4("clip.mp4", num_frames=12)
    expected = load_video(path, num_frames=3, backend="pyav").frames
    calls: list = []
    monkeypatch.setattr(video_pyav_framelm, "_rgb_converter", lambda: RecordingConverter(VideoReformatter(), calls))
    with_threads = load_video(path, num_frames=3, backend="pyav").frames
    monkeypatch.setattr(video_pyav_framelm, "_reformat_takes_threads", lambda: False)
    without = load_video(path, num_frames=3, backend="pyav").frames
    installed = ["format", "threads"] if int(av.__version__.split(".")[0]) >= 17 else ["format"]
    assert calls == [installed] * 3 + [["format"]] * 3
    assert torch.equal(with_threads, expected) and torch.equal(without, expected)


# --- one alpha rule, and inputs that must not hang or escape ------------------------------------------------------


def test_alpha_is_composited_one_way_and_rounds_like_transformers():
    from transformers.image_transforms import convert_to_rgb  # the peer: float64 blend, round half to even

    from framelm.processing.image_processing_framelm import FrameLMImageProcessor

    colour, alpha = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    rgba = np.stack([colour, colour, colour, alpha], axis=-1)  # every (value, alpha) pair, (256, 256, 4)
    theirs = np.asarray(convert_to_rgb(Image.fromarray(rgba, mode="RGBA"), return_numpy=True))
    ours = np.asarray(load_image(rgba))
    assert np.array_equal(ours, theirs)  # all 65,536 pairs
    assert ours[1, 128].tolist() == [128] * 3  # 1 * 128/255 + 255 * 127/255 = 127.502: rounded, not floored
    assert ours[128, 128].tolist() == [191] * 3  # 128 * 128/255 + 127 = 191.25
    processor = FrameLMImageProcessor(do_resize=False, do_normalize=False, rescale_factor=1.0)
    from_array = processor(rgba)["pixel_values"][0].permute(1, 2, 0)  # the image processor's own 4-channel path
    assert torch.equal(from_array, torch.tensor(ours).float())


@pytest.mark.timeout(60)
def test_fifos_and_devices_are_refused_not_read(tmp_path, tiny_processor):
    import os

    os.mkfifo(tmp_path / "clip.mp4")
    os.mkfifo(tmp_path / "photo.png")
    folder = tmp_path / "frames"
    folder.mkdir()
    os.mkfifo(folder / "00001.jpg")
    with pytest.raises(ValueError, match=r"video .*clip.mp4 is a FIFO \(named pipe\), not a regular file"):
        load_video(tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match=r"image .*photo.png is a FIFO \(named pipe\), not a regular file"):
        load_image(tmp_path / "photo.png")
    with pytest.raises(ValueError, match=r"00001.jpg is a FIFO"):
        load_video(folder)
    with pytest.raises(ValueError, match=r"video .*clip.mp4 is a FIFO"):
        probe_video(tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="image /dev/zero is a character device"):
        load_image("/dev/zero")
    with pytest.raises(ValueError, match=r"clip.mp4 is a FIFO"):
        tiny_processor(text="<video>", videos=[str(tmp_path / "clip.mp4")])
    with pytest.raises(ValueError, match=r"photo.png is a FIFO"):
        tiny_processor(text="<image>", images=[(tmp_path / "photo.png").as_uri()])


def test_a_decompression_bomb_is_a_value_error_naming_the_file(tmp_path, tiny_processor):
    import base64

    from framelm.processing.image_processing_framelm import FrameLMImageProcessor

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(100_000, 100_000))
    match = f"image {bomb} is too large to decode safely: .*10000000000 pixels.*MAX_IMAGE_PIXELS"
    with pytest.raises(ValueError, match=match):
        load_image(bomb)
    with pytest.raises(ValueError, match=match):
        tiny_processor(text="<image>", images=[str(bomb)])
    with pytest.raises(ValueError, match=match):
        FrameLMImageProcessor()(str(bomb))
    data_url = "data:image/png;base64," + base64.b64encode(bomb.read_bytes()).decode()
    with pytest.raises(ValueError, match=r"image data URL \(data:image/png;base64,.*\) is too large to decode"):
        load_image(data_url)
