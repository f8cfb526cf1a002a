"""The only real proof that a saved FrameLM is Hub-ready: load it in a fresh process where `import framelm` fails,
through every auto class and both pipelines, and get the same numbers as in-process."""

import json

import pytest
import torch
from support.processes import run_without_framelm

EXPECTED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer_config.json",
    "configuration_framelm.py",
    "modeling_framelm.py",
    "projector_framelm.py",
    "pipeline_framelm.py",
    "processing_framelm.py",
    "image_processing_framelm.py",
    "media_framelm.py",
    "sources_framelm.py",
    "inputs_framelm.py",
    "video_pyav_framelm.py",
    "chat_template_framelm.py",
    "time_labels_framelm.py",
}


def test_saved_folder_holds_weights_code_processor_and_template(tiny_model_dir):
    files = {p.name for p in tiny_model_dir.iterdir()}
    assert EXPECTED_FILES <= files, EXPECTED_FILES - files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)  # safetensors only
    config = json.loads((tiny_model_dir / "config.json").read_text())
    target = "modeling_framelm.FrameLMForConditionalGeneration"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_framelm.FrameLMConfig",
        "AutoModel": "modeling_framelm.FrameLMModel",  # the base model without the LM head, as LLaVA's
        "AutoModelForImageTextToText": target,
        "AutoModelForMultimodalLM": target,
    }
    processor_config = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_framelm.FrameLMProcessor"
    assert (processor_config["tokens_per_image"], processor_config["tokens_per_frame"]) == (16, 16)
    assert processor_config["num_frames"] == 4


@pytest.mark.slow
def test_auto_classes_load_without_framelm_and_give_the_same_logits(
    tiny_model_dir, tiny_model, tiny_processor, tmp_path
):
    torch.manual_seed(0)
    image = (torch.rand(40, 56, 3) * 255).to(torch.uint8)
    video = (torch.rand(6, 40, 56, 3) * 255).to(torch.uint8)
    torch.save({"image": image, "video": video}, tmp_path / "media.pt")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "red?"}]}]
    text = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = tiny_processor(text=text, images=[image], videos=[video], return_tensors="pt")
    with torch.no_grad():
        expected = tiny_model(**inputs).logits[0, -1]
    child = run_without_framelm(
        f"""
        import json, torch
        from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
        from transformers import AutoModelForMultimodalLM
        folder = {str(tiny_model_dir)!r}
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        media = torch.load({str(tmp_path / "media.pt")!r})
        inputs = processor(text={text!r}, images=[media["image"]], videos=[media["video"]], return_tensors="pt")
        out = {{"config": type(config).__name__, "processor": type(processor).__name__}}
        for auto in (AutoModelForImageTextToText, AutoModelForMultimodalLM):
            model = auto.from_pretrained(folder, trust_remote_code=True).eval()
            out[auto.__name__] = type(model).__name__
            with torch.no_grad():
                out["logits_" + auto.__name__] = model(**inputs).logits[0, -1].tolist()
        out["module"] = type(model).__module__
        out["AutoModel.from_config"] = type(AutoModel.from_config(config, trust_remote_code=True)).__name__
        loaded = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        out["AutoModel"], base = type(loaded).__name__, loaded.model  # a harness's load: the generating model
        with torch.no_grad():
            out["logits_AutoModel"] = loaded(**inputs).logits[0, -1].tolist()
            hidden = base(**inputs).last_hidden_state[0, -1]  # the base through the head model's lm_head
            out["logits_base"] = model.lm_head(hidden).tolist()
            features = base.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output
            out["image_features"] = list(features.shape)
            features = base.get_video_features(inputs["pixel_values_videos"], return_dict=True).pooler_output
            out["video_features"] = list(features.shape)
        print(json.dumps(out))
        """,
        cwd=tmp_path,
    )
    assert child["config"] == "FrameLMConfig" and child["processor"] == "FrameLMProcessor"
    assert "framelm" not in child["module"].split(".")[0]  # the class came from the saved folder, not the package
    assert child["AutoModel.from_config"] == "FrameLMModel"  # vLLM's Transformers backend builds the base so
    assert child["AutoModel"] == "FrameLMForConditionalGeneration"  # a saved model loads with its head
    assert child["image_features"] == [1, 16, 64] and child["video_features"] == [1, 4 * 16, 64]
    for auto in ("AutoModelForImageTextToText", "AutoModelForMultimodalLM"):
        assert child[auto] == "FrameLMForConditionalGeneration"
    for auto in ("AutoModel", "base", "AutoModelForImageTextToText", "AutoModelForMultimodalLM"):  # base: via lm_head
        torch.testing.assert_close(torch.tensor(child["logits_" + auto]), expected)


@pytest.mark.slow
def test_pipelines_answer_image_and_video_prompts_without_framelm(
    tiny_model_dir, tiny_model, tiny_processor, make_image, make_mp4, tmp_path
):
    image_path, video_path = make_image("red.png", color=(255, 0, 0)), make_mp4("clip.mp4", num_frames=12)
    question = "What colour is the shape?"
    expected = {}
    for kind, path in (("image", image_path), ("video", video_path)):
        messages = tiny_processor.build_messages(question, **{f"{kind}s": [str(path)]})
        inputs = tiny_processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        generated = tiny_model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
        expected[kind] = tiny_processor.batch_decode(
            generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )[0]
    child = run_without_framelm(
        f"""
        import json
        from transformers import pipeline
        folder = {str(tiny_model_dir)!r}
        image_pipe = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
        messages = [{{"role": "user", "content": [{{"type": "image", "path": {str(image_path)!r}}},
                                                  {{"type": "text", "text": {question!r}}}]}}]
        image_answer = image_pipe(text=messages, generate_kwargs={{"max_new_tokens": 6, "min_new_tokens": 6,
                                  "do_sample": False}}, return_full_text=False)
        video_pipe = pipeline("video-text-to-text", model=folder, trust_remote_code=True)
        video_answer = video_pipe({str(video_path)!r}, text={question!r}, max_new_tokens=6, min_new_tokens=6,
                                  do_sample=False)
        print(json.dumps({{"image": image_answer[0]["generated_text"], "video": video_answer[0]["generated_text"],
                           "video_pipe": type(video_pipe).__name__}}))
        """,
        cwd=tmp_path,
    )
    assert child["video_pipe"] == "FrameLMVideoTextToTextPipeline"
    assert child["image"] == expected["image"]
    assert child["video"] == expected["video"]
