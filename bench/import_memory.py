"""Peak memory of `framelm init --from-llava` against the checkpoint it imports, and against two peers.

    python bench/import_memory.py            # a ~0.5 GB bf16 Llava (CLIP-B tower, 8-layer Llama of width 1024)
    python bench/import_memory.py --quick    # a ~0.1 GB one

Target: a 7B source must import on a machine with little more RAM than its checkpoint, i.e. the weights exist once.
Each case runs in its own process and reports its peak RSS (`VmHWM`; not `ru_maxrss`, which survives `exec` and
so counts the RSS of the parent that forked the case) and its RSS after importing torch, transformers and framelm,
before touching any weight; the difference is what the case itself needed, compared with the checkpoint's size on
disk (bf16, the source dtype). transformers maps the checkpoint file, so its weights count as file-backed RSS:

- `load_source`: `LlavaForConditionalGeneration.from_pretrained` alone, the floor any import through the source's
  own class pays;
- `framelm_import`: `import_llava` (load, hand the tensors over, write the FrameLM folder);
- `naive_import`: the obvious alternative, a materialized FrameLM given the source's weights by `load_state_dict`
  (a copy) and saved: two copies of the weights at once.

The imported weights are checked tensor by tensor against the checkpoint (equal work).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.3
# A CLIP ViT-B/16 tower and a Llama of width 1024 with LLaVA's 32000-token vocabulary.
FULL = {
    "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "patch_size": 16, "image_size": 224},
    "text": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 16,
             "num_key_value_heads": 16},
    "spare_vocab_rows": 32000 - 512,
}  # fmt: skip
QUICK = {
    "vision": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6, "num_attention_heads": 6,
               "patch_size": 16, "image_size": 224},
    "text": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 6, "num_attention_heads": 8,
             "num_key_value_heads": 8},
    "spare_vocab_rows": 32000 - 512,
}  # fmt: skip

# Run in a fresh interpreter per case: imports first (the baseline), then the case, then the peak.
CHILD = """
import json, sys
import torch, transformers
from transformers import LlavaForConditionalGeneration
from framelm.modeling import FrameLMForConditionalGeneration
from framelm.training.model import import_llava as importer

def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

case, source, out = sys.argv[1:4]
baseline = status_mb("VmRSS")
if case == "load_source":
    model = LlavaForConditionalGeneration.from_pretrained(source)
    checksum = sum(float(p.sum()) for p in model.parameters())  # every weight read, nothing big allocated
elif case == "framelm_import":
    importer.import_llava(source, out)
elif case == "naive_import":
    source_model = LlavaForConditionalGeneration.from_pretrained(source)
    config = importer.framelm_config(source_model.config, source_model.config.image_token_id,
                                     source_model.config.image_token_id + 1, None)
    model = FrameLMForConditionalGeneration(config).to(source_model.dtype)
    model.load_state_dict(source_model.state_dict(), strict=False)
    model.save_pretrained(out)
peak = status_mb("VmHWM")
print(json.dumps({"baseline_mb": baseline, "peak_mb": peak}))
"""
CASES = ("load_source", "framelm_import", "naive_import")


def build_source(folder: Path, sizes: dict) -> Path:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from support.llava_sources import save_llava

    return save_llava(
        folder,
        sizes={"vision": sizes["vision"], "text": sizes["text"]},
        spare_vocab_rows=sizes["spare_vocab_rows"],
        dtype=torch.bfloat16,
    )


def measure(case: str, source: Path, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(source), str(out)], capture_output=True, text=True, timeout=1800
    )
    if result.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def imported_weights_identical(source: Path, out: Path) -> tuple[int, int]:
    """(tensors of the FrameLM folder equal to the source's tensor of the same name, tensors in the folder).

    The source is read through its transformers class: on disk llava-hf keeps its legacy key names, in memory
    transformers gives it the names FrameLM's checkpoints use."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlavaForConditionalGeneration

    theirs = LlavaForConditionalGeneration.from_pretrained(source).state_dict()
    ours = {}
    for path in out.glob("*.safetensors"):
        ours.update(load_file(path))
    equal = sum(name in theirs and torch.equal(tensor, theirs[name]) for name, tensor in ours.items())
    return equal, len(ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A ~0.1 GB source instead of ~0.5 GB.")
    quick = parser.parse_args().quick
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = build_source(tmp / "source", QUICK if quick else FULL)
        checkpoint_mb = sum(p.stat().st_size for p in source.glob("*.safetensors")) / 2**20
        cases = []
        for case in CASES:
            measured = measure(case, source, tmp / case)
            net = measured["peak_mb"] - measured["baseline_mb"]
            cases.append({"case": case, **measured, "net_peak_mb": net, "net_vs_checkpoint": net / checkpoint_mb})
            print(f"{case:>15}: peak {measured['peak_mb']:.0f} MB, after imports {measured['baseline_mb']:.0f} MB, "
                  f"net {net:.0f} MB = {net / checkpoint_mb:.2f}x the {checkpoint_mb:.0f} MB checkpoint")  # fmt: skip
        equal, total = imported_weights_identical(source, tmp / "framelm_import")
    by_case = {c["case"]: c for c in cases}
    ours = by_case["framelm_import"]["net_vs_checkpoint"]
    summary = {
        "net_peak_rss_vs_checkpoint": {"target": f"<= {TARGET_RATIO}x", "measured": ours, "met": ours <= TARGET_RATIO},
        "imported_weights_identical": {"target": "every tensor", "measured": f"{equal} of {total}",
                                       "met": equal == total},
        "vs_loading_the_source": {"target": "reported", "measured": by_case["framelm_import"]["net_peak_mb"]
                                  / by_case["load_source"]["net_peak_mb"]},
        "naive_import_vs_checkpoint": {"target": "reported", "measured": by_case["naive_import"]["net_vs_checkpoint"]},
        "checkpoint_mb": {"target": "reported", "measured": checkpoint_mb},
    }  # fmt: skip
    path = write_results("import_memory", cases, summary, quick)
    naive = summary["naive_import_vs_checkpoint"]["measured"]
    print(f"framelm import: {ours:.2f}x the checkpoint (target <= {TARGET_RATIO}x); {equal} of {total} tensors "
          f"identical; naive import {naive:.2f}x; wrote {path}")  # fmt: skip


if __name__ == "__main__":
    main()
