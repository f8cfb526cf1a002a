"""The PyAV video reader: decode only the frames wanted, seeking only when the next one lies in a later GOP.

Hub payload (imported by `media_framelm.py`); PyAV is imported inside the reader. Measured on this project's bench
(`bench/frame_sampling.py`), this reader is the fastest of those compared, which is why `load_video` prefers it.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# FFmpeg decoders that check `skip_frame` per frame, so it can be switched between packets. Others (libdav1d) read
# it once when they open and would then drop wanted frames too.
SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})
SINGLE_THREAD_PIXELS = 256 * 256  # frames smaller than this decode on one thread (see `_configure_threads`)
_thread_state = threading.local()  # one RGB converter per thread, reused across frames and videos


@dataclass
class _PacketIndex:
    """Every frame's pts in presentation order and the presentation positions of the keyframes (sorted)."""

    pts: list[int]
    keyframes: list[int]
    first_keyframe: bytes | None  # its packet data, to choose slice or frame threads
    last_duration: int  # how long the last frame shows (its packet's duration, in the stream's time base); 0: unknown

    def gop(self, index: int) -> int:
        """The GOP to decode frame `index` from (0, 1, ...): the last keyframe shown at or before it."""
        return max(0, bisect.bisect_right(self.keyframes, index) - 1)


def read_pyav(
    path: str, choose: Callable[[int], list[int]], check_size: Callable[[int, int], None] | None = None
) -> tuple[dict[int, np.ndarray], list[int], list[float], float, float | None, int]:
    """Decode the frames `choose(total)` picks; returns (frames by index, wanted, timestamps, duration, fps, total).
    `check_size(width, height)` sees the frame size from the stream header before any frame is decoded.

    Times are the frames' presentation timestamps, in seconds from the first frame (variable frame rates included);
    the duration runs from the first frame's start to the last one's end."""
    try:
        import av
    except ImportError as err:
        raise ImportError("backend='pyav' needs PyAV: `pip install av`") from err
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            if check_size is not None:
                check_size(stream.codec_context.width, stream.codec_context.height)
            index = _index_packets(container, stream, path)
            _configure_threads(stream.codec_context, index.first_keyframe)
            wanted = choose(len(index.pts))
            frames = _decode_frames(container, stream, index, sorted(set(wanted)))
            time_base, rate = stream.time_base, stream.average_rate or stream.guessed_rate
        missing = sorted(set(wanted) - frames.keys())
        if missing:  # an unusual stream layout: decode everything from the start with a fresh decoder
            logger.debug("%s: frames %s not found by seeking; decoding the whole stream", path, missing)
            frames.update(_decode_sequentially(path, index, missing))
    except av.FFmpegError as err:
        raise ValueError(f"cannot decode video {path}: {err}; re-encode or replace the file") from err
    missing = sorted(set(wanted) - frames.keys())
    if missing:
        raise ValueError(f"cannot decode frames {missing} of video {path} (corrupt stream?); re-encode the file")
    timestamps = [float((index.pts[i] - index.pts[0]) * time_base) for i in wanted]
    fps = float(rate) if rate else None
    return frames, wanted, timestamps, _duration(index, time_base, fps), fps, len(index.pts)


def _duration(index: _PacketIndex, time_base, fps: float | None) -> float:
    """Seconds from the first frame's start to the last frame's end. The last frame lasts its packet's duration; a
    stream without packet durations gets the step before it (or one frame at the nominal rate)."""
    span = float((index.pts[-1] - index.pts[0]) * time_base)
    if index.last_duration > 0:
        return span + float(index.last_duration * time_base)
    if len(index.pts) > 1:
        return span + float((index.pts[-1] - index.pts[-2]) * time_base)
    return span + (1 / fps if fps else 0.0)


def _configure_threads(codec, first_keyframe: bytes | None) -> None:
    """Slice threads for H.264 cut into at least one slice per core, else frame threads, two per core (at most 16).

    Threads never change the frames FFmpeg returns, only the speed. On 2 cores: a 720p H.264 stream in 2 slices per
    frame (what PyAV's libx264 writes by default) decoded in 215 ms with slice threads and 287 ms with frame threads;
    single-slice streams (the ffmpeg command line's default) can only use frame threads. Frame threads: FFmpeg's
    automatic count is cores + 1; 4 threads decoded long GOPs 5-15% faster (30 s 720p VP9: 1.86 s vs 2.03 s, best
    of 5), since a thread waiting for its reference rows no longer leaves a core idle. Small frames decode on one
    thread: starting decoder threads costs more than they save there (64x64 H.264, 4 frames: 0.9 ms per video on one
    thread, 2.7 ms with frame threads).
    """
    if codec.width * codec.height < SINGLE_THREAD_PIXELS:
        codec.thread_type, codec.thread_count = "SLICE", 1
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if codec.name == "h264" and _h264_slices(codec.extradata, first_keyframe) >= max(2, cores):
        codec.thread_type, codec.thread_count = "SLICE", cores
    else:
        codec.thread_type, codec.thread_count = "AUTO", min(16, 2 * cores)


def _h264_slices(extradata: bytes | None, packet: bytes | None) -> int:
    """Slices in one H.264 packet stored as length-prefixed NAL units (MP4, MKV); 0 when it cannot tell."""
    if not extradata or not packet or len(extradata) < 5 or extradata[0] != 1:  # not an avcC record: Annex B
        return 0
    length_size, offset, slices = (extradata[4] & 3) + 1, 0, 0
    while offset + length_size < len(packet):
        size = int.from_bytes(packet[offset : offset + length_size], "big")
        slices += packet[offset + length_size] & 0x1F in (1, 5)  # NAL types of coded slices
        offset += length_size + size
    return slices


def _index_packets(container, stream, path: str) -> _PacketIndex:
    """Demux (no decoding) every packet: frame i is the i-th smallest pts, as decord counts frames.

    Reading the packets, not trusting the header's frame count, finds files whose data ends early.
    """
    entries, first_keyframe = [], None
    for packet in container.demux(stream):
        if packet.size and packet.pts is not None and not packet.is_discard:
            entries.append((packet.pts, packet.is_keyframe, packet.duration or 0))
            if first_keyframe is None and packet.is_keyframe:
                first_keyframe = bytes(packet)
    if not entries:
        raise ValueError(f"video {path} has no decodable video packets")
    if len(entries) < stream.frames:
        raise ValueError(
            f"video {path} is truncated: its header lists {stream.frames} frames but only {len(entries)} are present"
        )
    entries.sort()
    keyframes = [i for i, (_, key, _) in enumerate(entries) if key] or [0]
    return _PacketIndex([pts for pts, _, _ in entries], keyframes, first_keyframe, entries[-1][2])


def _decode_frames(container, stream, index: _PacketIndex, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode each GOP that holds a wanted frame once, converting only the wanted frames to RGB24: seek only when
    the next wanted frame lies in a later GOP than the decoder's position, else keep decoding forward. (Decoding on
    into the next GOP instead of seeking, when few frames of the current one are left, measured no faster.)

    Non-reference frames that are not wanted are skipped (`skip_frame=NONREF`) where the decoder checks that flag
    per frame (`SKIP_NONREF_CODECS`): nothing else depends on such frames, so the frames returned are bit-identical
    to a full decode, for a fraction of the work on B-frame streams.
    """
    groups: dict[int, list[int]] = {}  # GOP -> its wanted frames, decoded in one pass after one seek
    for i in wanted:
        groups.setdefault(index.gop(i), []).append(i)
    pts_to_index = {pts: i for i, pts in enumerate(index.pts)}
    skip = stream.codec_context.name in SKIP_NONREF_CODECS
    frames: dict[int, np.ndarray] = {}
    for gop, members in groups.items():
        frames.update(_decode_gop(container, stream, index, index.keyframes[gop], members, pts_to_index, skip))
    return frames


def _decode_gop(container, stream, index: _PacketIndex, key: int, members: list[int], pts_to_index, skip: bool):
    """Seek to keyframe `key` and decode forward until every frame in `members` has come out of the decoder."""
    codec = stream.codec_context
    key_pts = index.pts[key]
    unfed = {index.pts[i] for i in members}
    wanted_pts = frozenset(unfed)
    found: dict[int, np.ndarray] = {}
    container.seek(key_pts, stream=stream, backward=True, any_frame=False)
    codec.flush_buffers()
    started = False
    for packet in container.demux(stream):
        if packet.pts is None or not packet.size:
            continue
        if not started:  # the demuxer may land on an earlier keyframe: skip to ours, which needs none of them
            if packet.is_keyframe and packet.pts > key_pts:
                break  # landed past it (a demuxer seeking by dts): `_read_pyav` decodes sequentially instead
            started = packet.is_keyframe and packet.pts == key_pts
            if not started:
                continue
        codec.skip_frame = "NONREF" if skip and packet.pts not in wanted_pts else "DEFAULT"
        _take(codec.decode(packet), pts_to_index, members, found)
        unfed.discard(packet.pts)
        if not unfed:
            break  # every wanted frame is submitted: drain the decoder rather than feed it more
    _take(codec.decode(None), pts_to_index, members, found)
    codec.skip_frame = "DEFAULT"
    codec.flush_buffers()
    return found


def _decode_sequentially(path: str, index: _PacketIndex, wanted: list[int]) -> dict[int, np.ndarray]:
    """The fallback: every frame from the start, nothing skipped, in a fresh container and decoder."""
    import av

    pts_to_index = {pts: i for i, pts in enumerate(index.pts)}
    found: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        _configure_threads(stream.codec_context, index.first_keyframe)
        for frame in container.decode(stream):
            _take([frame], pts_to_index, wanted, found)
            if len(found) == len(wanted):
                break
    return found


def _take(decoded, pts_to_index: dict[int, int], members: list[int], found: dict[int, np.ndarray]) -> None:
    """Convert to RGB24 only the decoded frames that are wanted."""
    for frame in decoded:
        i = pts_to_index.get(frame.pts)
        if i in members and i not in found:
            found[i] = _to_rgb24(frame)


def _to_rgb24(frame) -> np.ndarray:
    """One decoded frame -> (H, W, 3) uint8, converted on the calling thread (see `_rgb_converter`)."""
    if _reformat_takes_threads():
        return _rgb_converter().reformat(frame, format="rgb24", threads=1).to_ndarray()
    return _rgb_converter().reformat(frame, format="rgb24").to_ndarray()


@functools.cache
def _reformat_takes_threads() -> bool:
    """PyAV 17 added `reformat(..., threads=)` and with it made swscale use all cores when it is not given (`None`
    means 0, "automatic"); PyAV 14-16 have no such argument and never set swscale's thread count, whose FFmpeg
    default is one thread. (Cython methods carry no signature to inspect, hence the version.)"""
    import av

    return int(av.__version__.split(".")[0]) >= 17


def _rgb_converter():
    """A reused `VideoReformatter`: `frame.to_ndarray(format=...)` builds a new swscale context for every frame, which
    costs 10x the conversion itself on small frames (1.1 ms against 0.1 ms for 64x64 measured here); a reused one
    keeps its context while the frame size and format stay the same. The output is identical. It converts on the
    calling thread (`threads=1` where PyAV has the argument, FFmpeg's one-thread default before): a converter with
    swscale threads, made before a fork (DataLoader workers start after the parent has decoded), would hang the
    forked worker, whose copy of those threads does not exist."""
    converter = getattr(_thread_state, "converter", None)
    if converter is None:
        from av.video.reformatter import VideoReformatter

        converter = _thread_state.converter = VideoReformatter()
    return converter
