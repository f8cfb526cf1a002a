"""FrameLMVideoProcessor: the video half of the processor's image + video pair (the stock VLM shape that vLLM's
Transformers backend and `AutoProcessor` users look for as `processor.video_processor`).

Hub payload: the standard library, torch and the public transformers API only.

It samples `num_frames` frames per video (or keeps the frames a caller already sampled, with the times it gives in
`video_metadata`) and turns them into `pixel_values_videos` with the image processor's settings, so images and video
frames are preprocessed by one rule. Its settings are the processor's (`num_frames`, the image processor's), saved in
`processor_config.json` with the processor: it is built from them, not saved on its own.
"""

from __future__ import annotations

from transformers import BaseImageProcessor


class FrameLMVideoProcessor(BaseImageProcessor):
    """Frames of one video -> float32 `(F, 3, H, W)`, through the image processor's `preprocess_frames`.

    `do_sample_frames` is True: FrameLM picks its frames itself, so callers that decode whole videos (vLLM) pass
    the frames with their metadata (fps, frame indices) and the processor reads the frame times from it.
    """

    model_input_names = ["pixel_values_videos"]
    # The frame rate vLLM writes into the metadata of the dummy videos it profiles memory with (real videos come
    # with their own): without one, a processor with frame_timestamps could not time those frames.
    fps = 1.0

    def __init__(self, image_processor=None, num_frames: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.image_processor = image_processor
        self.num_frames = num_frames
        self.do_sample_frames = True
        self.size = dict(getattr(image_processor, "size", None) or {})

    def preprocess_frames(self, frames, **settings):
        return self.image_processor.preprocess_frames(frames, **settings)

    def __call__(self, videos, **settings):
        raise TypeError("call the FrameLMProcessor (processor(text=..., videos=...)), which samples the frames")
