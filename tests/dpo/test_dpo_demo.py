"""`framelm dpo-demo`: the quick run goes through the whole path (SFT start, pairs, `framelm dpo`, held-out scores,
README table), and the committed README holds exactly the render of the committed full run's metrics."""

import json
from pathlib import Path

import pytest

from framelm.training.cli import main as cli
from framelm.training.demo.dpo_demo import BEGIN, END, render

ROOT = Path(__file__).resolve().parents[2]


def test_readme_holds_the_committed_full_run():
    metrics = json.loads((ROOT / "training" / "demo" / "dpo_demo_metrics.json").read_text())
    assert metrics["mode"] == "full"
    for scores in metrics["after"].values():  # the targets the README states
        assert scores["preference_accuracy"] >= metrics["target_preference_accuracy"]
    readme = (ROOT / "README.md").read_text()
    assert f"{BEGIN}\n{render(metrics)}{END}" in readme  # regenerate: framelm dpo-demo --out OUT --write-readme


@pytest.mark.slow
def test_quick_run_goes_through_the_whole_path(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{BEGIN}\nold\n{END}\ntail\n")
    out = tmp_path / "demo"
    assert cli(["dpo-demo", "--out", str(out), "--quick", "--write-readme", str(readme)]) == 0
    metrics = json.loads((out / "dpo_demo_metrics.json").read_text())
    assert set(metrics["before"]) == set(metrics["after"]) == {"colour (image)", "motion (video)"}
    for phase in ("before", "after"):
        for scores in metrics[phase].values():
            assert set(scores) == {"preference_accuracy", "answer_accuracy"}
            assert all(0 <= value <= 1 for value in scores.values())
    assert metrics["dpo_steps"] == 12 and metrics["train_pairs"] == {"colour": 48, "motion": 48}  # 96 pairs, 8 a step
    assert len(metrics["load_average_at_start"]) == 3 and metrics["dpo"]["loss"] == "sigmoid + 1.0 x sft"
    pairs = [json.loads(line) for line in (out / "data" / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["chosen"] != p["rejected"] and ("images" in p) != ("videos" in p) for p in pairs)
    assert (out / "model.safetensors").exists() and (out / "dpo" / "framelm_run.json").exists()
    assert readme.read_text() == f"# x\n{BEGIN}\n{render(metrics)}{END}\ntail\n"
