"""FrameLMCollator and the one padder: labels token by token, padding on either side. (Truncation is decided by the
length rule before training: `test_length_rule.py`.)"""

import torch

from framelm.training.batches.collator import FrameLMCollator
from framelm.training.batches.padding import IGNORE_INDEX, collate, pad_sequences
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


def test_pad_to_multiple_of(tiny_processor):
    text_only = Sample(turns=(Turn("user", "Say yes."), Turn("assistant", "yes")))
    batch = FrameLMCollator(tiny_processor, pad_to_multiple_of=64)([text_only.to_row()])
    assert batch["input_ids"].shape[1] == 64 and batch["labels"].dtype == torch.long


def test_one_padder_pads_on_the_side_asked_for():
    sequences = [torch.tensor([5, 6, 7]), torch.tensor([8])]
    right, right_mask = pad_sequences(sequences, 0, "right")
    left, left_mask = pad_sequences(sequences, 0, "left", pad_to_multiple_of=4)
    assert right.tolist() == [[5, 6, 7], [8, 0, 0]] and right_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert left.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]] and left_mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    batch = collate(
        [{"input_ids": torch.tensor([1, 2]), "labels": torch.tensor([-100, 2]), "pixel_values": torch.zeros(1, 3)},
         {"input_ids": torch.tensor([3]), "labels": torch.tensor([3])}],
        pad_token_id=9, side="left",
    )  # fmt: skip
    assert batch["input_ids"].tolist() == [[1, 2], [9, 3]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2], [IGNORE_INDEX, 3]]
    assert batch["pixel_values"].shape == (1, 3) and "pixel_values_videos" not in batch
