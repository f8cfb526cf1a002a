"""The loss curve: `--plot_loss` at the end of training and `framelm plot RUN_DIR`, drawn with Pillow."""

from __future__ import annotations

import json

from PIL import Image

from framelm.training.cli import main as cli
from framelm.training.sft.plot import plot_loss, points, smoothed


def history(steps: int, evaluate: bool = False) -> list[dict]:
    lines = [{"step": s, "loss": 4.0 / s, "learning_rate": 1e-3} for s in range(1, steps + 1)]
    lines += [{"step": steps, "eval_loss": 1.5}] if evaluate else []
    return lines + [{"step": steps, "train_loss": 2.0}]  # the summary line holds no `loss`


def test_the_curve_is_drawn_from_the_logged_losses(tmp_path):
    assert points(history(3), "loss") == [(1.0, 4.0), (2.0, 2.0), (3.0, 4.0 / 3)]
    assert smoothed([2.0, 2.0, 2.0]) == [2.0, 2.0, 2.0]  # debiased: a constant stays itself from the first point
    written = plot_loss(history(10, evaluate=True), tmp_path)
    assert [p.name for p in written] == ["training_loss.png", "training_eval_loss.png"]
    with Image.open(written[0]) as image:
        assert image.format == "PNG" and image.size == (800, 480)
        colours = {colour for _, colour in image.getcolors(maxcolors=100_000)}
        assert (20, 60, 160) in colours  # the smoothed curve was drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_eval_loss.png", "training_loss.png"]  # no .partial


def test_framelm_plot_reads_a_run_or_its_newest_checkpoint(tmp_path, capsys):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"log_history": history(2)}))
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text(json.dumps({"log_history": history(10)}))
    assert cli(["plot", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'training_loss.png'}\n"
    assert cli(["plot", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err == (
        f"framelm plot: error: {tmp_path / 'nowhere'}: no such folder (pass the --output_dir of a `framelm train` "
        "run)\n"
    )
