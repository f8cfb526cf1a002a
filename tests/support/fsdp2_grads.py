"""One FSDP2 training step of a saved FrameLM on CPU processes; rank 0 saves the full gradients.

    python -m torch.distributed.run --nproc_per_node 2 fsdp2_grads.py MODEL_DIR BATCHES.pt GRADS.pt

Rank r trains on `torch.load(BATCHES.pt)[r]`. Sharding is plain `torch.distributed.fsdp.fully_shard` (what accelerate's
FSDP2 does on GPUs, which it refuses to do on CPU): one unit per class the model names in `_no_split_modules`, then
the root. FSDP2 averages gradients over the ranks, so they must equal the mean of the per-batch gradients of one
process.
"""

import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from framelm.modeling import FrameLMForConditionalGeneration


def main(model_dir: str, batches_path: str, grads_path: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = FrameLMForConditionalGeneration.from_pretrained(model_dir).train()
    units = [m for m in model.modules() if type(m).__name__ in set(model._no_split_modules)]
    unit_classes = sorted({type(unit).__name__ for unit in units})  # before fully_shard renames them FSDP...
    for unit in units:
        fully_shard(unit)
    fully_shard(model)
    batch = torch.load(batches_path)[rank]
    model(**batch).loss.backward()
    grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}  # every rank joins the gathers
    if rank == 0:
        torch.save({"grads": grads, "units": unit_classes}, grads_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
