"""`framelm data stats`: percentiles, histogram and what max_length does, read from the length rule's columns."""

from __future__ import annotations

import json

import datasets
import numpy as np

from framelm.training.cli import data_main
from framelm.training.data.budget import measure_lengths
from framelm.training.data.sample import SAMPLE_FEATURES, Media, Sample, Turn
from framelm.training.data.stats import TokenStats, token_stats

# the tiny processor: 16 tokens per image, 4 frames x 16 tokens per video; nothing is decoded, so no file exists
SAMPLES = [
    Sample(turns=(Turn("user", "Say yes."), Turn("assistant", "yes"))),
    Sample(
        turns=(Turn("user", "<image>What colour?"), Turn("assistant", "red")),
        media=(Media("image", "a.png"),),
        system="Answer with one word.",
    ),
    Sample(
        turns=(
            Turn("user", "<video>Which way?"),
            Turn("assistant", "left"),
            Turn("user", "<image><image>Same colour?"),
            Turn("assistant", "no"),
        ),
        media=(Media("video", "v.mp4"), Media("image", "a.png"), Media("image", "b.png")),
    ),  # fmt: skip
]


def measured(processor, max_length):
    dataset = datasets.Dataset.from_list([s.to_row() for s in SAMPLES], features=SAMPLE_FEATURES)
    return measure_lengths(dataset, processor, max_length)


def test_token_stats_percentiles_histogram_and_max_length(tiny_processor):
    totals = measured(tiny_processor, None)["total_tokens"]
    first_exchange = measured(tiny_processor, 1)[2]["num_tokens"]  # what the video exchange alone needs
    stats = token_stats(measured(tiny_processor, first_exchange), max_length=first_exchange)
    assert stats.total.tolist() == totals and stats.media.tolist() == [0, 16, 64 + 2 * 16]
    assert stats.percentiles()["total"][100] == max(totals) and stats.percentiles()["media"][50] == 16
    assert sum(n for _, _, n in stats.histogram(bins=4)) == 3
    assert (stats.shortened, stats.dropped) == (1, 0)  # the video record keeps its first exchange
    assert f"max_length {first_exchange}: 1 records are longer; 1 keep their leading exchanges" in stats.table()
    assert token_stats(measured(tiny_processor, 5), max_length=5).dropped == 3


def test_empty_stats_have_a_table():
    empty = TokenStats(text=np.zeros(0, dtype=np.int64), media=np.zeros(0, dtype=np.int64))
    assert empty.histogram() == [] and empty.table().startswith("0 records")


def test_stats_cli(tmp_path, tiny_model_dir, capsys):
    records = [
        {"id": str(i), "conversations": [{"from": "human", "value": "hi " * i}, {"from": "gpt", "value": "ok"}]}
        for i in range(1, 21)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["stats", str(path), "--model", str(tiny_model_dir), "--max-length", "30", "--cache-dir", str(tmp_path)]
    assert data_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("20 records") and "p50" in out and "max_length 30:" in out
    assert data_main(["stats", str(path)]) == 2  # no model: nothing to count with
    assert "stats needs --model" in capsys.readouterr().err


def test_stats_per_modality_and_steps_per_epoch(tiny_processor):
    from framelm.training.data.stats import steps_per_epoch

    stats = token_stats(measured(tiny_processor, None), batch=(2, 1, 1))
    assert stats.modality.tolist() == ["text-only", "image", "image+video"]
    table = stats.table()
    text = stats.text.tolist()
    assert f"  text-only            1{text[0]:>14,}{0:>14,}" in table
    assert f"  image                1{text[1]:>14,}{16:>14,}" in table
    assert f"  image+video          1{text[2]:>14,}{96:>14,}" in table
    assert "steps per epoch: 2 (3 records, 2 per device x 1 process(es) x 1 accumulation)" in table
    # as the Trainer counts: batches per process, then optimizer steps (a partial one counts)
    assert [steps_per_epoch(1000, 8, 4, 2), steps_per_epoch(1000, 8), steps_per_epoch(0, 8)] == [16, 125, 0]
