"""`framelm export` writes a complete, loadable Hub folder with a valid card, publishes no local path, and is atomic:
killed at any step, it leaves no folder that looks complete and the rerun succeeds."""

import json
import random
import shutil
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from support.kill_points import run_killed_at

from framelm.training.cli import main as cli
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
    args = [str(trained_dir), "--out", str(out), "--repo-id", "me/tiny-framelm", "--max-shard-size", "200KB",
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
    assert cli(["export", str(tiny_model_dir), "--out", str(out)]) == 0
    child = (
        "import sys; sys.modules['framelm'] = None\n"
        "from transformers import AutoModel, AutoProcessor\n"
        f"model = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        f"processor = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "print(type(model).__name__, type(processor).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", child], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["FrameLMForConditionalGeneration", "FrameLMProcessor"]  # with its LM head
    assert "No training record was found" in (out / "README.md").read_text()  # honest about an untrained projector


def test_export_refuses_an_ambiguous_judge_file_and_a_non_empty_target(trained_dir, tmp_path, capsys):
    two = json.loads(json.dumps(JUDGE_OUTPUT))
    two["summary"].append(dict(two["summary"][0], candidate_model="other"))
    (tmp_path / "two.json").write_text(json.dumps(two))
    judged = ["--eval-results", str(tmp_path / "two.json")]
    assert cli(["export", str(trained_dir), "--out", str(tmp_path / "a"), *judged]) == 1
    assert (
        "compares several models ['other', 'tiny']: say which one this is with --candidate" in capsys.readouterr().err
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert cli(["export", str(trained_dir), "--out", str(tmp_path / "full")]) == 1
    assert (
        "full holds what `framelm export` did not write (x), which framelm never replaces or deletes: export into a "
        "new folder" in capsys.readouterr().err
    )
    assert (tmp_path / "full" / "x").read_bytes() == b""  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "review.json", "run", "two.json"]  # no "a"


@pytest.mark.parametrize("relative", [None, float("nan")], ids=["null", "nan"])
def test_an_all_unparseable_judge_file_is_an_error_before_anything_is_written(trained_dir, tmp_path, capsys, relative):
    unparseable = {"reference_model": "gpt4", "candidate_model": "tiny", "reference": None, "candidate": None,
                   "relative": relative, "scored": 0, "unparseable": 5}  # fmt: skip
    judged = {"summary": [dict(unparseable, category="all"), dict(unparseable, category="llava_bench_conv")]}
    (tmp_path / "bad.json").write_text(json.dumps(judged))
    out = tmp_path / "hub"
    assert cli(["export", str(trained_dir), "--out", str(out), "--eval-results", str(tmp_path / "bad.json")]) == 1
    err = capsys.readouterr().err
    assert "bad.json: no scored review for 'tiny' (5 unparseable)" in err and "--retry-unparseable" in err
    assert not out.exists() and not list(tmp_path.glob(".hub*"))  # nothing written, no partial folder
    assert cli(["export", str(trained_dir), "--out", str(out)]) == 0  # and nothing in the way of the next export


def test_no_local_path_reaches_the_exported_folder(tmp_path, capsys):
    """A model assembled from local tower folders and trained on a local data file: only base names are published."""
    from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM

    from framelm.training.model.tiny import train_tiny_tokenizer

    local = tmp_path / "local"
    clip_vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "image_size": 32, "patch_size": 8}  # fmt: skip
    clip_text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    CLIPModel(CLIPConfig(vision_config=clip_vision, text_config=clip_text, projection_dim=16)).save_pretrained(
        local / "clip-tower"
    )
    tokenizer = train_tiny_tokenizer()
    LlamaForCausalLM(
        LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=len(tokenizer))
    ).save_pretrained(local / "my-lm")  # fmt: skip
    tokenizer.save_pretrained(local / "my-lm")
    model_dir = tmp_path / "run"
    assert cli(["init", "--vision", str(local / "clip-tower"), "--language", str(local / "my-lm"),
                "--out", str(model_dir)]) == 0  # fmt: skip
    dataset = local / "data" / "train.jsonl"
    (model_dir / RUN_RECORD).write_text(json.dumps(RUN | {"datasets": [str(dataset), "me/hub-data"]}))
    out = tmp_path / "hub"
    capsys.readouterr()
    assert cli(["export", str(model_dir), "--out", str(out)]) == 0

    for file in out.iterdir():  # every file, weights included, as bytes
        assert str(tmp_path).encode() not in file.read_bytes(), f"{file.name} holds a local path"
    card = ModelCard.load(out / "README.md")
    assert card.data.datasets == ["me/hub-data"] and card.data.base_model is None  # Hub ids only
    assert "Data: `train.jsonl` (local data), `me/hub-data`" in card.text
    assert "the my-lm causal LM" in card.text
    assert json.loads((out / RUN_RECORD).read_text())["datasets"] == ["train.jsonl", "me/hub-data"]
    assert json.loads((out / "config.json").read_text())["text_config"]["_name_or_path"] == "my-lm"
    printed = capsys.readouterr().out
    assert f"local path {dataset} is published as 'train.jsonl' only" in printed
    assert f"local path {local / 'my-lm'} is published as 'my-lm' only" in printed


@pytest.mark.slow
def test_export_killed_at_random_steps_leaves_nothing_that_looks_complete_and_the_rerun_works(trained_dir, tmp_path):
    out = tmp_path / "hub"
    code = f"from framelm.training.hub.export import export\nexport({str(trained_dir)!r}, {str(out)!r})"
    steps = run_killed_at(code, kill_at=10**9).steps  # not killed: how many file-system steps an export takes
    expected = {p.name: p.read_bytes() for p in out.iterdir()}  # export is deterministic, bytes and all
    shutil.rmtree(out)
    for seed in range(3):
        kill_at = random.Random(seed).randrange(steps)
        assert run_killed_at(code, kill_at).killed
        if out.exists():  # the folder appears whole (the last rename) or not at all
            assert {p.name: p.read_bytes() for p in out.iterdir()} == expected, f"killed at step {kill_at}"
            shutil.rmtree(out)
        assert cli(["export", str(trained_dir), "--out", str(out)]) == 0, f"rerun after a kill at step {kill_at}"
        assert {p.name: p.read_bytes() for p in out.iterdir()} == expected
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # leftovers cleaned by the rerun
        shutil.rmtree(out)


@pytest.mark.parametrize(
    ("base_model", "expected", "relation"),
    [("llava-hf/llava-1.5-7b-hf", ["llava-hf/llava-1.5-7b-hf"], "finetune"), ("/data/llava-local", None, None)],
)
def test_an_imported_model_names_its_source_as_base_model_only_when_it_is_a_hub_id(
    tiny_model, base_model, expected, relation
):
    import copy

    from framelm.training.hub.card import card_data

    config = copy.deepcopy(tiny_model.config)
    config.base_model = base_model
    data = card_data(config, "m", "apache-2.0", [], None)
    assert data.base_model == expected and data.base_model_relation == relation
