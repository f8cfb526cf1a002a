"""The tiny FrameLM trained by TRL as a stranger would: stock `SFTTrainer` with its default VLM collator (no framelm
collator), and the `trl sft` command line on a local parquet folder; then sampled generation must never fail."""

import json
import os
import sys

import pytest
import torch
from datasets import Dataset
from PIL import Image
from support.processes import run_process, run_without_framelm
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from framelm.modeling.modeling_framelm import FrameLMForConditionalGeneration

pytestmark = pytest.mark.slow

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0)}


def colour_rows(count: int) -> list[dict]:
    """`messages` + `images` rows, TRL's documented VLM format: one image, a question, a one-word answer."""
    names = list(COLOURS)
    return [
        {
            "images": [Image.new("RGB", (40, 30), COLOURS[names[i % 3]])],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is it ?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": names[i % 3]}]},
            ],
        }
        for i in range(count)
    ]


def image_question(processor) -> dict:
    messages = processor.build_messages("what colour is it ?", images=[Image.new("RGB", (40, 30), COLOURS["red"])])
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def test_stock_sft_trainer_with_its_default_collator(tiny_model_dir, tiny_processor, tmp_path):
    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir)
    media_ids = torch.tensor([model.config.image_token_id, model.config.video_token_id])
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-3,
                     use_cpu=True, report_to="none", save_strategy="no", seed=0)  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(colour_rows(6)),
                         processing_class=tiny_processor)  # fmt: skip
    assert isinstance(trainer.data_collator, DataCollatorForVisionLanguageModeling)  # TRL's own, not ours

    batch = next(iter(trainer.get_train_dataloader()))
    assert torch.isin(batch["labels"], media_ids).sum() == 2 * 16  # TRL leaves loss on every <image> token ...
    with torch.no_grad():  # ... through TRL's fused LM head (it replaced `forward`), none of them is scored
        fused = model(**batch, fused_lm_head=True)
    targets = batch["labels"][:, 1:]
    assert torch.equal(fused.label_mask, (targets != -100) & ~torch.isin(targets, media_ids))

    trainer.train()
    inputs = image_question(tiny_processor)
    prompt_length = inputs["input_ids"].shape[1]
    model.eval()
    # the symptom: trained on its placeholders, the model's first answer token was <image>
    greedy = model.generate(**inputs, do_sample=False, max_new_tokens=1, suppress_tokens=None)
    assert greedy[0, prompt_length].item() not in media_ids.tolist()
    for seed in range(20):
        torch.manual_seed(seed)
        out = model.generate(**inputs, do_sample=True, temperature=1.5, max_new_tokens=8)
        assert not torch.isin(out[0, prompt_length:], media_ids).any(), seed  # suppressed by generation_config
        torch.manual_seed(seed)
        model.generate(**inputs, do_sample=True, temperature=1.5, max_new_tokens=8, suppress_tokens=None)  # no raise


def test_trl_sft_command_line_trains_a_model_that_generates(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Dataset.from_list(colour_rows(6)).to_parquet(data / "train.parquet")  # `--dataset_name` takes a folder
    out = tmp_path / "sft"
    argv = [sys.executable, "-m", "trl.cli.main", "sft", "--model_name_or_path", str(tiny_model_dir),
            "--trust_remote_code", "--dataset_name", str(data), "--output_dir", str(out), "--max_steps", "3",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--use_cpu", "--report_to", "none",
            "--save_strategy", "no"]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = run_process(argv, cwd=tmp_path, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Training completed" in result.stdout

    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_framelm.FrameLMForConditionalGeneration"
    child = run_without_framelm(
        f"""
        import json, torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)
        messages = [{{"role": "user", "content": [{{"type": "image", "image": Image.new("RGB", (40, 30), "red")}},
                                                  {{"type": "text", "text": "what colour is it ?"}}]}}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
        for seed in range(20):
            torch.manual_seed(seed)
            model.generate(**inputs, do_sample=True, temperature=1.5, max_new_tokens=8, suppress_tokens=None)
        print(json.dumps({{"suppress": model.generation_config.suppress_tokens, "runs": seed + 1}}))
        """,
        cwd=tmp_path,
    )
    assert child["suppress"] == sorted([config["image_token_id"], config["video_token_id"]])
    assert child["runs"] == 20  # 20 sampled generations with suppression turned off, none raised
