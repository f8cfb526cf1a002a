"""`framelm export` writes a complete, loadable Hub folder with a valid card; `framelm push` sends exactly it."""

import json
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from framelm.training.cli import main as cli
from framelm.training.hub.push import build_parser, push
from framelm.training.run_record import RUN_RECORD

JUDGE_OUTPUT = {
    "summary": [
        {"reference_model": "gpt4", "candidate_model": "tiny", "category": "all", "reference": 80.0,
         "candidate": 60.0, "relative": 75.0, "scored": 4, "unparseable": 0},
        {"reference_model": "gpt4", "candidate_model": "tiny", "category": "llava_bench_conv", "reference": 90.0,
         "candidate": 45.0, "relative": 50.0, "scored": 2, "unparseable": 0},
    ],
    "reviews": [{"judge": "local-judge"}],
}  # fmt: skip
RUN = {"stage": "full", "use_peft": False, "lora_r": None, "datasets": ["my/llava-data"], "skipped_records": 3,
       "hyperparameters": {"learning_rate": 2e-5, "num_train_epochs": 1.0, "per_device_train_batch_size": 4},
       "final_train_loss": 1.25}  # fmt: skip


@pytest.fixture
def trained_dir(tiny_model_dir, tmp_path):
    """The tiny model as `framelm train` leaves it: with its run record, and a judge output beside it."""
    folder = tmp_path / "run"
    subprocess.run(["cp", "-r", str(tiny_model_dir), str(folder)], check=True)
    (folder / RUN_RECORD).write_text(json.dumps(RUN))
    (tmp_path / "review.json").write_text(json.dumps(JUDGE_OUTPUT))
    return folder


def test_export_writes_sharded_weights_code_processor_and_a_valid_card(trained_dir, tmp_path):
    out = tmp_path / "hub"
    args = [str(trained_dir), str(out), "--repo-id", "me/tiny-framelm", "--max-shard-size", "200KB",
            "--eval-results", str(tmp_path / "review.json")]  # fmt: skip
    assert cli(["export", *args]) == 0
    files = {p.name for p in out.iterdir()}
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and shards <= files  # sharded, every shard present
    assert {"config.json", "generation_config.json", "processor_config.json", "chat_template.jinja", "README.md",
            "modeling_framelm.py", "processing_framelm.py", "media_framelm.py", RUN_RECORD} <= files  # fmt: skip

    card = ModelCard.load(out / "README.md")
    data = card.data
    assert (data.pipeline_tag, data.library_name, data.license) == ("image-text-to-text", "transformers", "apache-2.0")
    assert data.datasets == ["my/llava-data"]
    name, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == "tiny-framelm"
    assert [(r.metric_name, r.metric_value) for r in results] == [
        ("relative score (all)", 75.0),
        ("relative score (llava_bench_conv)", 50.0),
    ]
    text = card.text
    assert 'pipeline("video-text-to-text", model="me/tiny-framelm", trust_remote_code=True)' in text
    assert "| llava_bench_conv | 90.0 | 45.0 | 50.0 |" in text
    assert "| learning_rate | 2e-05 |" in text and "3 bad records were skipped" in text
    assert "4 frames x 16 tokens = 64" in text


def test_exported_folder_loads_where_framelm_is_not_installed(tiny_model_dir, tmp_path):
    out = tmp_path / "hub"
    assert cli(["export", str(tiny_model_dir), str(out)]) == 0
    child = (
        "import sys; sys.modules['framelm'] = None\n"
        "from transformers import AutoModel, AutoProcessor\n"
        f"model = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        f"processor = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "print(type(model).__name__, type(processor).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", child], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["FrameLMForConditionalGeneration", "FrameLMProcessor"]
    assert "No training record was found" in (out / "README.md").read_text()  # honest about an untrained projector


def test_export_refuses_an_ambiguous_judge_file_and_a_non_empty_target(trained_dir, tmp_path):
    two = json.loads(json.dumps(JUDGE_OUTPUT))
    two["summary"].append(dict(two["summary"][0], candidate_model="other"))
    (tmp_path / "two.json").write_text(json.dumps(two))
    with pytest.raises(ValueError, match=r"compares several models \['other', 'tiny'\]: say which one .* --candidate"):
        cli(["export", str(trained_dir), str(tmp_path / "a"), "--eval-results", str(tmp_path / "two.json")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ValueError, match="exists and is not empty"):
        cli(["export", str(trained_dir), str(tmp_path / "full")])


class RecordingHub:
    """Stands in for `HfApi`: records the calls `push` makes instead of sending them."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, kwargs))
        self.operations = operations
        return "commit"


def test_push_sends_every_exported_file_in_one_commit(trained_dir, tmp_path):
    out = tmp_path / "hub"
    cli(["export", str(trained_dir), str(out)])
    hub = RecordingHub()
    args = build_parser().parse_args([str(out), "--repo-id", "me/m", "--private", "--revision", "v2"])
    assert push(args, api=hub) == "commit"
    assert hub.calls[0] == ("create_repo", "me/m", {"repo_type": "model", "private": True, "exist_ok": True})
    assert hub.calls[1] == ("create_branch", "me/m", {"branch": "v2", "repo_type": "model", "exist_ok": True})
    assert hub.calls[2][2] | {} == {"repo_type": "model", "commit_message": "Upload FrameLM with framelm push",
                                    "revision": "v2", "create_pr": False}  # fmt: skip
    sent = sorted(op.path_in_repo for op in hub.operations)
    assert sent == sorted(p.name for p in out.iterdir())


def test_push_refuses_a_folder_that_was_not_exported(tmp_path):
    args = build_parser().parse_args([str(tmp_path), "--repo-id", "me/m"])
    with pytest.raises(ValueError, match=r"missing \['config.json', .*push a folder written by `framelm export`"):
        push(args, api=RecordingHub())
