"""The demo's synthetic task: questions a tiny model can only answer by looking at its images and videos.

Question types (chance level in brackets):
- colour: an image of one coloured shape, "What colour is the shape?" (1 in 4)
- shape: the same kind of image, "What shape is this?" (1 in 4)
- motion: a video of a shape moving, "Which way does the shape move?" (1 in 4; needs frame order)
- compare: an image and a video, "Is the shape in the image the same colour as the one in the video?" (1 in 2)
- text: text-only questions, mixed in as real datasets are (not scored)

Everything is drawn with Pillow and written with PyAV from a seed, so the data is identical on every machine.
"""

from __future__ import annotations

import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from framelm.training.data.media_writer import write_mp4
from framelm.training.env import usable_cores

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle", "cross")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is this?",
    "motion": "Which way does the shape move?",
    "compare": "Is the shape in the image the same colour as the one in the video?",
}
SCORED_TYPES = tuple(QUESTIONS)
TEXT_FACTS = {  # text-only turns, so that batches mix multimodal and text-only records as real data does
    "Say hello.": "hello",
    "Count to three.": "one two three",
    "What comes after one?": "two",
    "What comes after two?": "three",
    "What comes after three?": "four",
    "Answer yes.": "yes",
    "Answer no.": "no",
}
SIZE = 64  # pixels of the generated images and frames; the processor resizes them for the tower
FRAMES = 4  # frames in every generated video
# libx264's lookahead (frame types, macroblock tree) runs beside the encoding and, on a busy machine, makes the same
# frames encode to other bytes from run to run (measured: 13-44 of 300 videos differ between two runs, even with one
# encoding thread). The ultrafast preset has no lookahead, and is the fastest: the same seed gives the same videos.
X264_OPTIONS = {"preset": "ultrafast", "threads": "1"}


def draw_shape(
    shape: str, colour: str, centre: tuple[float, float], radius: float, background: tuple, rng: random.Random
) -> Image.Image:
    """One shape on a greyish background with a little noise, so that the task is not a lookup of exact pixels."""
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    x, y, r = centre[0], centre[1], radius
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    else:  # cross
        w = r / 2.5
        draw.rectangle([x - r, y - w, x + r, y + w], fill=fill)
        draw.rectangle([x - w, y - r, x + w, y + r], fill=fill)
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-12, 13, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def _background(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randint(90, 150) for _ in range(3))


def _still(rng: random.Random) -> tuple[Image.Image, str, str]:
    """A large, roughly centred shape: its outline then spans the tower's whole patch grid, which a two-layer ViT
    trained from scratch tells apart within minutes (a small shape anywhere stays at chance for thousands of steps)."""
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    radius = rng.uniform(22, 28)
    centre = (SIZE / 2 + rng.uniform(-3, 3), SIZE / 2 + rng.uniform(-3, 3))
    return draw_shape(shape, colour, centre, radius, _background(rng), rng), shape, colour


def _moving(rng: random.Random, colour: str | None = None) -> tuple[np.ndarray, str, str]:
    """A shape (of `colour`, else a random one) crossing the frame from one side to the other in `FRAMES` steps;
    which side it starts on says the direction, so the answer needs the frames in order (reversed, the same frames
    mean the opposite)."""
    shape, direction = rng.choice(SHAPES), rng.choice(list(DIRECTIONS))
    colour = colour or rng.choice(list(COLOURS))
    radius = rng.uniform(12, 14)  # a quarter of the frame across: at 32 pixels the shape still spans tower patches
    dx, dy = DIRECTIONS[direction]
    start, end = radius + 2 + rng.uniform(0, 4), SIZE - radius - 2 - rng.uniform(0, 4)  # along the motion
    across = rng.uniform(radius + 2, SIZE - radius - 2)  # perpendicular to it
    background = _background(rng)  # one per video: only the shape moves
    frames = []
    for i in range(FRAMES):
        along = start + (end - start) * i / (FRAMES - 1)
        if dx < 0 or dy < 0:  # moving left or up: from the far side to the near one
            along = SIZE - along
        centre = (along, across) if dx else (across, along)
        frames.append(np.asarray(draw_shape(shape, colour, centre, radius, background, rng)))
    return np.stack(frames), colour, direction


def make_record(kind: str, index: int, out_dir: Path, rng: random.Random) -> dict:
    """One LLaVA-format record of question type `kind`, writing its media under `out_dir`."""
    record = {"id": f"{kind}-{index}", "type": kind}
    if kind in ("colour", "shape"):
        image, shape, colour = _still(rng)
        image.save(out_dir / f"{record['id']}.png")
        record["image"] = f"{record['id']}.png"
        answer = colour if kind == "colour" else shape
        question = f"<image>\n{QUESTIONS[kind]}"
    elif kind == "motion":
        frames, _, direction = _moving(rng)
        write_mp4(out_dir / f"{record['id']}.mp4", frames, fps=4, options=X264_OPTIONS)
        record["video"] = f"{record['id']}.mp4"
        answer, question = direction, f"<video>\n{QUESTIONS[kind]}"
    elif kind == "compare":
        image, _, image_colour = _still(rng)
        same = rng.random() < 0.5
        video_colour = image_colour if same else rng.choice([c for c in COLOURS if c != image_colour])
        frames, _, _ = _moving(rng, video_colour)
        image.save(out_dir / f"{record['id']}.png")
        write_mp4(out_dir / f"{record['id']}.mp4", frames, fps=4, options=X264_OPTIONS)
        record |= {"image": f"{record['id']}.png", "video": f"{record['id']}.mp4"}
        answer, question = ("yes" if same else "no"), f"<image>\n<video>\n{QUESTIONS[kind]}"
    else:
        question, answer = rng.choice(list(TEXT_FACTS.items()))
    record["conversations"] = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return record


def write_split(out_dir: Path, counts: dict[str, int], seed: int) -> Path:
    """Write `counts[kind]` records of each question type to `out_dir/data.jsonl` (media beside it), shuffled.

    Record i is drawn from its own generator, seeded by (seed, i), so the records can be drawn on every core at
    once and still be the same, in the same order, for the same seed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    random.Random(seed).shuffle(kinds)
    jobs = [(kind, i, out_dir, f"{seed}-{i}") for i, kind in enumerate(kinds)]
    cores = usable_cores()
    # spawn: the caller may hold threads (torch) that a forked child must not inherit
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        drawn = pool.map(_draw_record, jobs, chunksize=max(1, len(jobs) // (8 * cores)))
        records = list(tqdm(drawn, total=len(jobs), desc=f"drawing {out_dir.name}"))
    path = out_dir / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _draw_record(job: tuple[str, int, Path, str]) -> dict:
    kind, index, out_dir, seed = job
    return make_record(kind, index, out_dir, random.Random(seed))
