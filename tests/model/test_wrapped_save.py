"""Saving a FrameLM from inside other people's wrappers (FSDP2's `fully_shard`, `torch.compile`, PEFT LoRA): the
folder names our classes in `auto_map`, ships our `*_framelm.py` files, and loads where framelm is not installed."""

import json
import socket
import sys
import textwrap

import pytest
import torch
from support.processes import run_process, run_without_framelm

from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration
from framelm.training.model.loading import LM_LORA_TARGETS

pytestmark = pytest.mark.slow

OUR_CLASS = "modeling_framelm.FrameLMForConditionalGeneration"
BASE_CLASS = "modeling_framelm.FrameLMModel"  # auto_map.AutoModel: the base model, as LLaVA maps it
MODEL_CODE = {"configuration_framelm.py", "modeling_framelm.py", "projector_framelm.py", "pipeline_framelm.py"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_saved_as_framelm(folder) -> None:
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["FrameLMForConditionalGeneration"]
    assert set(config["auto_map"].values()) == {"configuration_framelm.FrameLMConfig", OUR_CLASS, BASE_CLASS}
    code = {p.name for p in folder.glob("*.py")}
    assert code == MODEL_CODE, code  # ours, all of them, and nothing of the wrapper's (torch's _fsdp_*.py)


def logits_without_framelm(folder, inputs_path, cwd, adapter=None) -> torch.Tensor:
    """Last-position logits of the folder (plus a PEFT adapter) loaded in a process that cannot import framelm."""
    adapter_code = f"model = PeftModel.from_pretrained(model, {str(adapter)!r})" if adapter else ""
    child = run_without_framelm(
        f"""
        import json, torch
        from peft import PeftModel
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained({str(folder)!r}, trust_remote_code=True)
        {adapter_code}
        inputs = torch.load({str(inputs_path)!r})
        with torch.no_grad():
            logits = model.eval()(**inputs).logits[0, -1]
        print(json.dumps({{"module": type(model.get_base_model() if {bool(adapter)} else model).__module__,
                           "logits": logits.tolist()}}))
        """,
        cwd=cwd,
    )
    assert not child["module"].startswith("framelm")  # the saved code, not the installed package
    return torch.tensor(child["logits"])


@pytest.fixture
def image_inputs(tiny_processor, make_image, tmp_path):
    """An image prompt, as tensors and saved for a child process."""
    messages = tiny_processor.build_messages("What colour is the shape?", images=[str(make_image("red.png"))])
    inputs = dict(
        tiny_processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
    )
    path = tmp_path / "inputs.pt"
    torch.save(inputs, path)
    return inputs, path


def last_logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits[0, -1]


def test_fsdp2_wrapped_model_saves_as_framelm(tiny_model_dir, tiny_model, image_inputs, tmp_path):
    """The Trainer's FSDP2 save path on one CPU process: accelerate's auto-wrap policy (from `_no_split_modules`),
    `fully_shard` on each unit and the root, a full state dict, `save_pretrained` on the wrapped module."""
    out = tmp_path / "fsdp2"
    script = textwrap.dedent(
        f"""
        import torch.distributed as dist
        from accelerate.utils import FullyShardedDataParallelPlugin
        from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        from torch.distributed.fsdp import fully_shard
        from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration

        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        model = FrameLMForConditionalGeneration.from_pretrained({str(tiny_model_dir)!r})
        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        units = [module for module in model.modules() if policy(module)]
        for module in reversed(units):
            fully_shard(module)
        fully_shard(model)
        assert type(model).__name__ == "FSDPFrameLMForConditionalGeneration", type(model)
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        model.save_pretrained({str(out)!r}, state_dict=state)
        assert type(model).__name__ == "FSDPFrameLMForConditionalGeneration"  # the wrapper is back after saving
        print(len(units))
        dist.destroy_process_group()
        """
    )
    result = run_process([sys.executable, "-c", script], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    # units: the tower's embeddings, its 1 layer (trimmed at feature layer -2 of 2), the 2 LM decoder layers
    assert int(result.stdout.split()[-1]) == 1 + 1 + 2
    assert_saved_as_framelm(out)
    inputs, inputs_path = image_inputs
    torch.testing.assert_close(logits_without_framelm(out, inputs_path, tmp_path), last_logits(tiny_model, inputs))


def test_compiled_model_saves_as_framelm(tiny_model_dir, image_inputs, tmp_path):
    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir)
    compiled = torch.compile(model)
    compiled.save_pretrained(tmp_path / "compiled")
    assert_saved_as_framelm(tmp_path / "compiled")
    inputs, inputs_path = image_inputs
    loaded = logits_without_framelm(tmp_path / "compiled", inputs_path, tmp_path)
    torch.testing.assert_close(loaded, last_logits(model, inputs))


def test_lora_adapter_and_merged_model_load_without_framelm(tiny_model_dir, tiny_processor, image_inputs, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir)
    inputs, inputs_path = image_inputs
    before = last_logits(model, inputs)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=LM_LORA_TARGETS))
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in lora.named_parameters() if ".lora_A" in name}
    assert adapted and all(".language_model." in name for name in adapted)  # the regex never reaches the tower
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora.train()
    for _ in range(3):
        lora(**inputs, labels=inputs["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trained = last_logits(lora, inputs)
    assert not torch.allclose(trained, before)  # LoRA learned something, so equal logits below mean something

    lora.save_pretrained(tmp_path / "adapter")
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)
    reloaded = logits_without_framelm(tiny_model_dir, inputs_path, tmp_path, adapter=tmp_path / "adapter")
    torch.testing.assert_close(reloaded, trained)

    lora.merge_and_unload().save_pretrained(tmp_path / "merged")
    assert_saved_as_framelm(tmp_path / "merged")
    torch.testing.assert_close(logits_without_framelm(tmp_path / "merged", inputs_path, tmp_path), trained)


def test_plain_q_v_targets_also_adapt_the_vision_tower(tiny_model_dir):
    """Why README recommends `LM_LORA_TARGETS`: PEFT matches `q_proj`/`v_proj` by suffix, in the tower too."""
    from peft import LoraConfig, get_peft_model

    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapted = {name for name, _ in lora.named_parameters() if ".lora_A" in name}
    assert any(".vision_tower." in name for name in adapted) and any(".language_model." in name for name in adapted)
