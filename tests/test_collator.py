"""FrameLMCollator: labels token by token, padding, truncation at turn boundaries with media spans intact."""

import pytest
import torch

from framelm.training.collator import IGNORE_INDEX, FrameLMCollator, TruncationError
from framelm.training.data.sample import Media, Sample, Turn


def red_square(image_path) -> Sample:
    return Sample(
        system="Answer with one word.",
        turns=(Turn("user", "<image>What colour is the shape?"), Turn("assistant", "red")),
        media=(Media("image", str(image_path)),),
        id="red-1",
        where="train.jsonl:1",
    )


def test_only_assistant_tokens_are_trained(tiny_processor, make_image):
    batch = FrameLMCollator(tiny_processor)([red_square(make_image("red.png")).to_row()])
    trained = batch["input_ids"][batch["labels"] != IGNORE_INDEX]
    assert tiny_processor.decode(trained) == "red<|im_end|>"  # exact text: fails if the mask shifts by one
    labels = batch["labels"][0]
    unmasked = (labels != IGNORE_INDEX).nonzero().flatten()
    # the trained span is contiguous and sits right after "<|im_start|>assistant\n"
    assert unmasked.tolist() == list(range(unmasked[0], unmasked[0] + len(unmasked)))
    prefix = tiny_processor.decode(batch["input_ids"][0, : unmasked[0]])
    assert prefix.endswith("What colour is the shape?<|im_end|>\n<|im_start|>assistant\n")
    assert batch["pixel_values"].shape == (1, 3, 32, 32)


def test_multi_turn_labels_and_padding(tiny_processor, make_image, make_mp4):
    long = Sample(
        turns=(
            Turn("user", "<video>Which way does the shape move?"),
            Turn("assistant", "left"),
            Turn("user", "And the colour?"),
            Turn("assistant", "blue"),
        ),
        media=(Media("video", str(make_mp4("v.mp4", num_frames=8))),),
    )
    short = red_square(make_image("red.png"))
    text_only = Sample(turns=(Turn("user", "Say yes."), Turn("assistant", "yes")))
    batch = FrameLMCollator(tiny_processor)([long.to_row(), short.to_row(), text_only.to_row()])
    decoded = [tiny_processor.decode(batch["input_ids"][i][batch["labels"][i] != IGNORE_INDEX]) for i in range(3)]
    assert decoded == ["left<|im_end|>blue<|im_end|>", "red<|im_end|>", "yes<|im_end|>"]
    lengths = batch["attention_mask"].sum(1)
    pad = tiny_processor.tokenizer.pad_token_id
    for row, length in enumerate(lengths.tolist()):
        assert (batch["input_ids"][row, length:] == pad).all()
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape == (1, 3, 32, 32)
    assert batch["pixel_values_videos"].shape == (1, 4, 3, 32, 32)


def test_truncation_drops_whole_exchanges_and_their_media(tiny_processor, make_image):
    image = make_image("a.png")
    sample = Sample(
        turns=(
            Turn("user", "<image>What colour is the shape?"),
            Turn("assistant", "red"),
            Turn("user", "<image>And this one?"),
            Turn("assistant", "blue"),
        ),
        media=(Media("image", str(image)), Media("image", str(image))),
        where="train.jsonl:7",
    )
    collator = FrameLMCollator(tiny_processor)
    full = collator([sample.to_row()])["input_ids"].shape[1]
    assert collator.length(sample.to_messages()) == full  # counted without decoding media
    cut = FrameLMCollator(tiny_processor, max_length=full - 1)([sample.to_row()])
    ids = cut["input_ids"][0]
    assert len(ids) < full
    assert (ids == tiny_processor.image_token_id).sum() == 16  # one whole image span left, never a partial one
    assert tiny_processor.decode(ids[cut["labels"][0] != IGNORE_INDEX]) == "red<|im_end|>"
    assert "pixel_values" in cut and cut["pixel_values"].shape[0] == 1


def test_a_first_exchange_that_cannot_fit_is_reported_with_its_record(tiny_processor, make_image):
    sample = red_square(make_image("red.png"))
    with pytest.raises(
        TruncationError, match=r"train.jsonl:1: the first exchange needs \d+ tokens .* max_length is 10"
    ):
        FrameLMCollator(tiny_processor, max_length=10)([sample.to_row()])


def test_pad_to_multiple_of(tiny_processor):
    text_only = Sample(turns=(Turn("user", "Say yes."), Turn("assistant", "yes")))
    batch = FrameLMCollator(tiny_processor, pad_to_multiple_of=64)([text_only.to_row()])
    assert batch["input_ids"].shape[1] == 64 and batch["labels"].dtype == torch.long
