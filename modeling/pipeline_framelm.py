"""`pipeline("video-text-to-text", model=folder, trust_remote_code=True)`: ask a FrameLM about a video.

transformers' own video route (the `any-to-any` pipeline) requires torchvision, which CPU-only machines often lack.
This pipeline needs only the FrameLM processor (PyAV/decord/frame folders), and is declared in the saved config's
`custom_pipelines`, so it ships with every saved model.

    pipe = pipeline("video-text-to-text", model="out/", trust_remote_code=True)
    pipe("clip.mp4", text="Which way does the shape move?", max_new_tokens=16)
    # [{"generated_text": "left"}]
"""

from __future__ import annotations

from transformers import Pipeline


class FrameLMVideoTextToTextPipeline(Pipeline):
    """Videos (a path, a frame folder, or decoded frames) plus a question -> generated text.

    Preprocessing is the processor's `build_messages` + `apply_chat_template`, exactly as in training.
    """

    _load_processor = True
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(
        self,
        text: str | None = None,
        num_frames: int | None = None,
        system_prompt: str | None = None,
        insert_media_token: str | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        **kwargs,
    ) -> tuple[dict, dict, dict]:
        preprocess = {
            k: v
            for k, v in {
                "text": text,
                "num_frames": num_frames,
                "system_prompt": system_prompt,
                "insert_media_token": insert_media_token,
            }.items()
            if v is not None
        }
        forward = dict(generate_kwargs or {}) | kwargs
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        return preprocess, forward, {}

    def __call__(self, videos, text: str | None = None, **kwargs):
        """`videos`: one video or a list (then one answer each); `text`: the question."""
        if text is None:
            raise ValueError("pass the question as text=..., e.g. pipe('clip.mp4', text='What happens?')")
        return super().__call__(videos, text=text, **kwargs)

    def preprocess(
        self,
        video,
        text: str = "",
        num_frames: int | None = None,
        system_prompt: str | None = None,
        insert_media_token: str = "left",
    ) -> dict:
        messages = self.processor.build_messages(
            text, videos=[video], insert_media_token=insert_media_token, system_prompt=system_prompt
        )
        processor_kwargs = {"num_frames": num_frames} if num_frames else {}
        return self.processor.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs=processor_kwargs,
        )

    def _forward(self, model_inputs: dict, **generate_kwargs) -> dict:
        prompt_length = model_inputs["input_ids"].shape[1]
        generated = self.model.generate(**model_inputs, **generate_kwargs)
        return {"new_tokens": generated[:, prompt_length:]}

    def postprocess(self, model_outputs: dict) -> list[dict]:
        texts = self.processor.batch_decode(model_outputs["new_tokens"], skip_special_tokens=True)
        return [{"generated_text": t} for t in texts]
