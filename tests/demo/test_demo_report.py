"""The README's demo table is rendered from `demo_metrics.json`, and the committed README holds exactly that render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framelm.training.demo.report import BEGIN, END, render, write_readme

ROOT = Path(__file__).resolve().parents[2]
METRICS = {"before": {"colour": 0.0, "shape": 0.25}, "after": {"colour": 1.0, "shape": 0.9}, "mode": "full",
           "targets": {"colour": 0.95, "shape": 0.95}, "train_records": 7300, "steps": 2061, "first_loss": 5.1234,
           "last_loss": 0.0412, "seconds": 636.4}  # fmt: skip


def test_render_compares_each_type_with_its_target():
    lines = render(METRICS).splitlines()
    assert lines[:4] == [
        "| question | before | after | target | met |",
        "|---|---|---|---|---|",
        "| colour | 0% | 100% | 95% | yes |",
        "| shape | 25% | 90% | 95% | **no** |",
    ]
    assert lines[-1] == "full run: 7,300 training records, 2,061 steps, loss 5.123 -> 0.041, 636 s in all."


def test_render_gives_the_time_of_each_phase_and_the_load_it_ran_under():
    timed = METRICS | {"phases": {"drawing": 21.44, "evaluation": 9.6, "training": 200.2}, "load_average": 0.43}
    assert render(timed).splitlines()[-1] == (
        "full run: 7,300 training records, 2,061 steps, loss 5.123 -> 0.041, 636 s in all "
        "(drawing 21 s, evaluation 10 s, training 200 s), load average 0.4 at the start."
    )


def test_write_replaces_only_the_text_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    write_readme(METRICS, readme)
    assert readme.read_text() == f"intro\n{BEGIN}\n{render(METRICS)}{END}\noutro\n"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no <!-- demo:begin -->"):
        write_readme(METRICS, readme)


def test_the_readme_table_is_the_render_of_the_committed_metrics():
    metrics = json.loads((ROOT / "training" / "demo" / "demo_metrics.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert f"{BEGIN}\n{render(metrics)}{END}" in readme  # regenerate: python -m framelm.training.demo.report ...
