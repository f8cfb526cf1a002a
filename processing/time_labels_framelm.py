"""Frame time labels: the one definition of the text that tells the LM when each frame of a video was shot.

Hub payload: standard library only. With `FrameLMProcessor(frame_timestamps=True)` a `<video>` placeholder expands to

    [00:12.0 video][00:00.8]<video>...<video>[00:02.3]<video>...<video> ...

the clip's duration once ("a 00:12.0 video"), then each frame's time before that frame's run of `tokens_per_frame`
video tokens. Times are seconds from the first frame, read from the decoded frames (presentation timestamps, or a
frame folder's fps).

Why this form:
- Fixed width (`mm:ss.s`, minutes zero-padded to two digits): a label's token count does not depend on its value for
  tokenizers that split digits evenly (Qwen, Llama, Mistral, Gemma; `training/data/budget.py` checks the tokenizer),
  so the length rule counts labels exactly without opening any media.
- Tenths of a second: short clips (a 2 s clip of 8 frames) would otherwise give several frames the same label.
- Digits follow only `[`, `:` and `.`, never a space or a letter: text before a label cannot merge with its digits
  (GPT-2-style tokenizers glue a space to the digits after it, " 12", and merge only some such pairs), and brackets
  show the model where a label ends.
- Compact: 7-10 tokens per frame, against the 64-729 tokens of the frame itself (Qwen3-VL writes `<t seconds>` per
  frame group, SmolVLM2 "Frame from mm:ss:"; their variable width is what the length rule cannot count unopened).

The processor expands placeholders (the template prints only `<video>`): only the processor holds the decoded frames,
and `pipeline()`, `framelm generate` and training all call it, so train and serve write the same labels.
"""

from __future__ import annotations

import math
import warnings

WIDE_LABEL_SECONDS = 6000  # 100:00.0 and later take a third minute digit, which the length rule does not count


def format_time(seconds: float) -> str:
    """Seconds -> `mm:ss.s`, rounded to the nearest tenth (2.25 -> "00:02.3", 75 -> "01:15.0").

    >>> format_time(0.125), format_time(754.96)
    ('00:00.1', '12:35.0')
    """
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"a frame time must be a finite number of seconds >= 0; got {seconds!r}")
    tenths = math.floor(value * 10 + 0.5)
    minutes, tenths = divmod(tenths, 600)
    return f"{minutes:02d}:{tenths // 10:02d}.{tenths % 10}"


def timed_video_text(video_token: str, tokens_per_frame: int, timestamps: list[float], duration: float) -> str:
    """What one `<video>` placeholder expands to: the duration label, then each frame's label and token run."""
    if duration >= WIDE_LABEL_SECONDS:
        warnings.warn(
            f"a video of {duration:.0f} s has time labels past 99:59.9, one token longer than the length rule "
            "counts them: sequences of such videos can exceed max_length by a few tokens",
            stacklevel=2,
        )
    frames = "".join(f"[{format_time(t)}]{video_token * tokens_per_frame}" for t in timestamps)
    return f"[{format_time(duration)} video]{frames}"
