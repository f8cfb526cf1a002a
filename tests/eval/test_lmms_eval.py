"""Against the real lmms-eval: its stock `huggingface` chat model, built from the same `model_args` string as
`lmms-eval --model huggingface --model_args pretrained=FOLDER,trust_remote_code=True`, answers text, image, video and
image+video requests on a saved FrameLM folder exactly as transformers' `generate` does on the same folder.

That model loads `AutoModel.from_pretrained` for every VLM (its `model_type in _model_mapping.keys()` tests compare a
string with config classes, so they never match) and calls `generate` on the result; `FrameLMModel.from_pretrained`
therefore returns the generating model for a folder saved from it (`modeling_framelm.FrameLMModel.from_pretrained`).
A stock llava-hf folder fails there (`LlavaModel` has no `generate`); the last test keeps that evidence.

lmms-eval runs in a venv of its own built from the registry as `pip install lmms-eval` resolves it (CPU torch pinned),
minus torchvision, torchaudio and torchcodec: the registry's builds of those are CUDA builds that fail to load here.
lmms-eval's import path and its `huggingface` model need none of them (only `qwen_vl_utils`, whose failed import
lmms-eval logs and ignores, imports torchvision). framelm is not importable there: the folder's code alone runs.
lmms-eval loads the model in bfloat16 whatever the folder says, so the reference runs in bfloat16 too.
"""

import json
import os

import pytest
import torch
from support.llava_sources import save_llava
from support.processes import run_process
from support.venvs import installed_version, venv_python

from framelm.modeling import FrameLMForConditionalGeneration
from framelm.processing import FrameLMProcessor

LMMS_VERSION = "0.7.3"
LMMS_REQUIREMENTS = [f"lmms-eval=={LMMS_VERSION}", "torch==2.13.0"]  # torch: the CPU build, as in this environment
CUDA_BUILDS = ("torchvision", "torchaudio", "torchcodec")
MAX_NEW_TOKENS = 6
QUESTION = "what colour is the shape ?"

# Requests as lmms-eval's evaluator builds them for a chat task: `ConfigurableMessagesTask.construct_requests`'
# arguments (context, doc_to_messages, generation kwargs, doc id, task, split), the user turn from the task's own
# `_build_user_turn` (an image as the PIL image a dataset gives, a video as a path), the docs in `task_dict`.
CHILD = """
import json, sys
sys.modules["framelm"] = None  # the folder's own code only
from PIL import Image
from lmms_eval.api.instance import Instance
from lmms_eval.api.task import ConfigurableMessagesTask
from lmms_eval.models import get_model

model_args, cases, max_new_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
lm = get_model("huggingface").create_from_arg_string(model_args, {"batch_size": 1, "device": "cpu"})
docs = [{"question": question, "visuals": [Image.open(p) if p.endswith(".png") else p for p in visuals]}
        for question, visuals in cases]
lm.task_dict = {"framelm": {"test": docs}}

def doc_to_messages(doc):
    return ConfigurableMessagesTask._build_user_turn(doc["visuals"], doc["question"])

gen_kwargs = {"max_new_tokens": max_new_tokens, "temperature": 0}
requests = [
    Instance("generate_until", ("", doc_to_messages, dict(gen_kwargs), doc_id, "framelm", "test"), idx=0,
             metadata={"task": "framelm", "doc_id": doc_id, "repeats": 1})
    for doc_id in range(len(docs))
]
results = lm.generate_until(requests)
print(json.dumps({"model": type(lm.model).__name__, "module": type(lm.model).__module__,
                  "generate": hasattr(lm.model, "generate"), "dtype": str(lm.model.dtype),
                  "answers": [r.text for r in results],
                  "new_tokens": [r.token_counts.output_tokens for r in results]}))
"""


def lmms_python():
    return venv_python(f"lmms-eval-{LMMS_VERSION}", LMMS_REQUIREMENTS, remove=CUDA_BUILDS, timeout=3000)


def run_lmms_eval(python, model_args: str, cases: list, cwd) -> dict:
    """lmms-eval's `huggingface` model built from `model_args`, answering `cases` [(question, [media path])]."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    argv = [str(python), "-c", CHILD, model_args, json.dumps(cases), str(MAX_NEW_TOKENS)]
    result = run_process(argv, cwd=cwd, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def reference_answer(model, processor, images: list, videos: list) -> tuple[str, int]:
    """framelm's own route to an answer: `build_messages`, the chat template, greedy `generate`."""
    messages = processor.build_messages(QUESTION, images=[str(p) for p in images], videos=[str(p) for p in videos])
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    new_ids = generated[0, inputs["input_ids"].shape[1] :]
    return processor.decode(new_ids, skip_special_tokens=True), len(new_ids)


@pytest.mark.slow
def test_lmms_eval_huggingface_model_answers_like_transformers(tiny_model_dir, make_image, make_mp4, tmp_path):
    python = lmms_python()
    assert installed_version(python, "lmms_eval") == LMMS_VERSION
    image, video = make_image("red.png", color=(255, 0, 0)), make_mp4("clip.mp4", num_frames=12)
    cases = {"text": ([], []), "image": ([image], []), "video": ([], [video]), "image+video": ([image], [video])}
    child = run_lmms_eval(
        python,
        f"pretrained={tiny_model_dir},trust_remote_code=True,device_map=cpu",
        [(QUESTION, [str(p) for p in images + videos]) for images, videos in cases.values()],
        tmp_path,
    )
    assert child["model"] == "FrameLMForConditionalGeneration" and child["dtype"] == "torch.bfloat16"
    assert child["module"].startswith("transformers_modules.")  # the folder's code, not an installed framelm
    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    processor = FrameLMProcessor.from_pretrained(tiny_model_dir)
    for (name, (images, videos)), answer, new_tokens in zip(
        cases.items(), child["answers"], child["new_tokens"], strict=True
    ):
        assert (answer, new_tokens) == reference_answer(model, processor, images, videos), name


@pytest.mark.slow
def test_lmms_eval_huggingface_model_loads_a_stock_llava_without_generate(tmp_path):
    """Upstream, not ours: why `FrameLMModel.from_pretrained` returns the generating model. lmms-eval 0.7.3 loads
    a llava-hf folder as the headless `LlavaModel` (dropping `lm_head`), which has no `generate` to answer with."""
    child = run_lmms_eval(lmms_python(), f"pretrained={save_llava(tmp_path / 'llava')},device_map=cpu", [], tmp_path)
    assert (child["model"], child["generate"], child["answers"]) == ("LlavaModel", False, [])
