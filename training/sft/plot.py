"""The loss curve of a run as a PNG: `framelm train --plot_loss` at the end of training, `framelm plot RUN_DIR` at any
time (the run's `trainer_state.json`, or its newest checkpoint's while it trains). Drawn with Pillow: no plotting
library to install.

    framelm plot runs/mine                 # runs/mine/training_loss.png (and training_eval_loss.png with evaluation)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from framelm.training.errors import FrameLMParser, InputError

WIDTH, HEIGHT, MARGIN = 800, 480, 64
PLOTS = {"loss": "training_loss.png", "eval_loss": "training_eval_loss.png"}


def points(log_history: list[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) of every log line holding `key` (finite values only)."""
    found = [(float(entry["step"]), float(entry[key])) for entry in log_history if key in entry and "step" in entry]
    return [(step, value) for step, value in found if math.isfinite(value)]


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard-style exponential moving average (debiased), as LLaMA-Factory draws beside the raw curve."""
    out, last = [], 0.0
    for n, value in enumerate(values, start=1):
        last = weight * last + (1 - weight) * value
        out.append(last / (1 - weight**n))
    return out


def draw(series: list[tuple[float, float]], title: str, path: Path) -> Path:
    """A line chart of `series` (raw in light blue, smoothed in dark blue) with labelled axes, written beside then
    renamed into `path`."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    pen = ImageDraw.Draw(image)
    steps, values = [s for s, _ in series], [v for _, v in series]
    x0, x1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    y0, y1 = min(values), max(values) if max(values) > min(values) else min(values) + 1

    def xy(step: float, value: float) -> tuple[float, float]:
        x = MARGIN + (step - x0) / (x1 - x0) * (WIDTH - 2 * MARGIN)
        return x, HEIGHT - MARGIN - (value - y0) / (y1 - y0) * (HEIGHT - 2 * MARGIN)

    pen.rectangle([MARGIN, MARGIN, WIDTH - MARGIN, HEIGHT - MARGIN], outline="black")
    for i in range(5):  # tick labels: 5 on each axis
        value, step = y0 + (y1 - y0) * i / 4, x0 + (x1 - x0) * i / 4
        _, y = xy(x0, value)
        x, _ = xy(step, y0)
        pen.text((4, y - 6), f"{value:.3g}", fill="black")
        pen.text((x - 10, HEIGHT - MARGIN + 6), f"{step:.0f}", fill="black")
    pen.text((WIDTH // 2 - 40, 20), title, fill="black")
    pen.text((WIDTH // 2 - 10, HEIGHT - 24), "step", fill="black")
    raw = [xy(s, v) for s, v in series]
    if len(raw) > 1:
        pen.line(raw, fill=(160, 190, 230), width=1)
        pen.line([xy(s, v) for s, v in zip(steps, smoothed(values), strict=True)], fill=(20, 60, 160), width=2)
    else:
        pen.ellipse([raw[0][0] - 3, raw[0][1] - 3, raw[0][0] + 3, raw[0][1] + 3], fill=(20, 60, 160))
    partial = path.with_name(f".{path.name}.partial")
    image.save(partial, format="PNG")
    os.replace(partial, path)
    return path


def plot_loss(log_history: list[dict], out_dir: str | Path) -> list[Path]:
    """training_loss.png (and training_eval_loss.png when the run evaluated) in `out_dir`; [] when nothing logged."""
    written = []
    for key, name in PLOTS.items():
        series = points(log_history, key)
        if series:
            written.append(draw(series, f"{key} of {Path(out_dir).resolve().name}", Path(out_dir) / name))
    return written


def trainer_state(run_dir: Path) -> Path:
    """The run's trainer_state.json, or its newest checkpoint's (a run still training)."""
    if (run_dir / "trainer_state.json").is_file():
        return run_dir / "trainer_state.json"
    checkpoints = sorted(
        run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])
    )
    if not checkpoints:
        raise InputError(
            f"{run_dir}: no trainer_state.json (nor in a checkpoint-N folder)",
            "pass the --output_dir of a `framelm train` run that saved a checkpoint or finished",
        )
    return checkpoints[-1]


def main(argv: list[str]) -> int:
    parser = FrameLMParser(prog="framelm plot", description=__doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="The --output_dir of a `framelm train` run.")
    parser.add_argument("--out", default=None, help="Folder for the PNG files (default: RUN_DIR).")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such folder", "pass the --output_dir of a `framelm train` run")
    state = trainer_state(run_dir)
    written = plot_loss(json.loads(state.read_text(encoding="utf-8")).get("log_history", []), args.out or run_dir)
    if not written:
        raise InputError(f"{state}: no loss logged yet", "wait for the first --logging_steps")
    for path in written:
        print(f"wrote {path}")
    return 0
