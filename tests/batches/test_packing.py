"""Padding-free packing: the packer, the packed batch layout, and a packed row computing exactly what its samples
compute one by one (logits, loss, gradients) on SDPA, eager, `sdpa_varlen` and the flash-attention varlen path, with
no token attending across a sample boundary."""

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from framelm.training.batches.collator import FrameLMCollator
from framelm.training.batches.packing import (
    PACKED_COLUMN,
    best_fit_decreasing,
    collate_packed,
    count_samples_and_tokens,
    pack_rows,
)
from framelm.training.batches.padding import IGNORE_INDEX
from framelm.training.batches.varlen_attention import SDPA_VARLEN, attend_sample_by_sample
from framelm.training.data.budget import LENGTH_FEATURES
from framelm.training.data.sample import SAMPLE_FEATURES, Media, Sample, Turn

ATTENTION = ("sdpa", "eager", SDPA_VARLEN)  # transformers' block-diagonal masks, and ours one sample at a time


@pytest.fixture(scope="module")
def mixed_samples(tmp_path_factory) -> list[Sample]:
    """Text-only, image, video and image + video samples (two different images, so that order matters)."""
    from PIL import Image
    from support.pattern_video import pattern_frames

    from framelm.training.data.media_writer import write_mp4

    folder = tmp_path_factory.mktemp("mixed")
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "red.png")
    Image.new("RGB", (30, 40), (30, 30, 200)).save(folder / "blue.png")
    write_mp4(folder / "clip.mp4", pattern_frames(8, 48, 64), fps=8)
    red, blue, clip = (Media(kind, str(folder / name)) for kind, name in
                       (("image", "red.png"), ("image", "blue.png"), ("video", "clip.mp4")))  # fmt: skip
    return [
        Sample(turns=(Turn("user", "Say yes."), Turn("assistant", "yes")), id="text"),
        Sample(turns=(Turn("user", "<image>What colour?"), Turn("assistant", "red")), media=(red,), id="red"),
        Sample(turns=(Turn("user", "<video>Which way?"), Turn("assistant", "left")), media=(clip,), id="clip"),
        Sample(
            turns=(
                Turn("user", "<image><video>Same colour?"),
                Turn("assistant", "no"),
                Turn("user", "Sure?"),
                Turn("assistant", "yes"),
            ),
            media=(blue, clip),
            system="Answer with one word.",
            id="both",
        ),  # fmt: skip
        Sample(turns=(Turn("user", "Count to three."), Turn("assistant", "one two three")), id="count"),
    ]


ROWS = [[0, 1, 2], [3, 4]]  # samples of each packed row: every kind of sample, a row shorter than the other


@pytest.fixture(scope="module", params=ATTENTION)
def model(request, tiny_model_dir):
    from framelm.modeling import FrameLMForConditionalGeneration

    return FrameLMForConditionalGeneration.from_pretrained(
        tiny_model_dir, attn_implementation=request.param, dtype=torch.float32
    ).eval()


def encoded(processor, samples: list[Sample]) -> list[dict[str, torch.Tensor]]:
    collator = FrameLMCollator(processor)
    return [collator.encode(sample.to_row()) for sample in samples]


def packed_batch(processor, samples: list[Sample], rows=ROWS, **kwargs) -> dict:
    examples = encoded(processor, samples)
    return collate_packed([[examples[i] for i in row] for row in rows], processor.tokenizer.pad_token_id, **kwargs)


def spans(processor, samples: list[Sample], rows=ROWS) -> dict[int, tuple[int, slice]]:
    """sample index -> (row, its token positions in that row)."""
    lengths = [len(e["input_ids"]) for e in encoded(processor, samples)]
    found = {}
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            found[i] = (r, slice(start, start + lengths[i]))
            start += lengths[i]
    return found


# --- the packer -----------------------------------------------------------------------------------------------------


def test_best_fit_decreasing_puts_each_length_where_least_room_is_left():
    # longest first: 6 opens bin 0 (room 2), 5 bin 1 (room 3), 4 bin 2 (room 4); 3 fits bin 1 exactly, 2 bin 0,
    # and 1 goes to the only bin with room left
    assert best_fit_decreasing(np.array([5, 3, 4, 2, 6, 1]), capacity=8) == [[4, 3], [0, 1], [2, 5]]
    assert best_fit_decreasing(np.array([4, 4, 4]), capacity=4) == [[0], [1], [2]]  # ties keep their order
    assert best_fit_decreasing(np.array([], dtype=np.int64), capacity=8) == []
    with pytest.raises(ValueError, match="a sample of 9 tokens cannot fit a row of max_length=8"):
        best_fit_decreasing(np.array([3, 9]), capacity=8)


def measured(lengths: list[int]) -> datasets.Dataset:
    """A dataset with the columns `measure_lengths` leaves, with the given `num_tokens`."""
    rows = [Sample(turns=(Turn("user", "q"), Turn("assistant", "a")), id=str(i)).to_row()
            | {"kept_turns": 2, "num_tokens": n, "total_tokens": n, "media_tokens": 0}
            for i, n in enumerate(lengths)]  # fmt: skip
    return datasets.Dataset.from_list(rows, features=datasets.Features({**SAMPLE_FEATURES, **LENGTH_FEATURES}))


def test_pack_rows_keeps_every_sample_whole_and_fills_rows():
    lengths = np.random.default_rng(0).integers(20, 900, size=3000).tolist()
    dataset = measured(lengths)
    packed = pack_rows(dataset, max_length=1024, seed=3)
    ids = [sample["id"] for row in packed for sample in row[PACKED_COLUMN]]
    assert sorted(ids, key=int) == [str(i) for i in range(3000)]  # each sample once, none split
    for row in packed:
        assert row["num_tokens"] == sum(s["num_tokens"] for s in row[PACKED_COLUMN]) <= 1024
        assert {s["num_tokens"] for s in row[PACKED_COLUMN]} <= set(lengths)
    # within 1% of a lower bound on the rows any packer needs (+ 2 for the tails of the two packing windows)
    fewest = max(sum(lengths) / 1024, sum(n > 512 for n in lengths))  # no two samples over 512 share a row
    assert len(packed) <= 1.01 * fewest + 2
    again, other = pack_rows(dataset, 1024, seed=3), pack_rows(dataset, 1024, seed=4)
    assert again[PACKED_COLUMN] == packed[PACKED_COLUMN]  # same seed, same rows
    assert other[PACKED_COLUMN] != packed[PACKED_COLUMN]


# --- the packed batch -----------------------------------------------------------------------------------------------


def test_collate_packed_lays_out_positions_labels_and_boundaries():
    def example(ids: list[int], labels: list[int], **pixels) -> dict:
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)} | pixels

    a = example([1, 2, 3], [1, 2, 3], pixel_values=torch.full((1, 3, 2, 2), 1.0))
    b = example([4, 5], [4, 5])
    c = example([6, 7, 8, 9], [IGNORE_INDEX, 7, 8, 9], pixel_values=torch.full((1, 3, 2, 2), 2.0))
    batch = collate_packed([[a, b], [c]], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]  # the pad is a segment of its own
    # each sample's first label is dropped: the previous sample's last token must not learn to predict it
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5], [-100, 7, 8, 9, -100]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5, 9, 10] and batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == 4 and "attention_mask" not in batch
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [1.0, 2.0]  # in row order
    wide = collate_packed([[a, b], [c]], pad_token_id=0, pad_to_multiple_of=8)
    assert wide["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3]]
    assert wide["cu_seq_lens_k"].tolist() == [0, 3, 5, 8, 12, 16]
    assert [int(n) for n in count_samples_and_tokens(wide, pad_token_id=0)] == [3, 9]
    padded = {"input_ids": torch.ones(2, 4), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])}
    assert [int(n) for n in count_samples_and_tokens(padded, pad_token_id=0)] == [2, 7]


def test_collator_packs_rows_of_samples_and_flattens_padding_free_batches(tiny_processor, mixed_samples):
    rows = [[mixed_samples[i].to_row() for i in row] for row in ROWS]
    packed = FrameLMCollator(tiny_processor)([{PACKED_COLUMN: row} for row in rows])
    answers = {"text": "yes", "red": "red", "clip": "left", "both": "no<|im_end|>yes", "count": "one two three"}
    located = spans(tiny_processor, mixed_samples)
    for i, sample in enumerate(mixed_samples):
        row, span = located[i]
        labels = packed["labels"][row, span]
        assert tiny_processor.decode(packed["input_ids"][row, span][labels != IGNORE_INDEX]) == (
            answers[sample.id] + "<|im_end|>"
        )  # assistant-only, sample by sample
    assert packed["pixel_values"].shape[0] == 2 and packed["pixel_values_videos"].shape[0] == 2
    assert packed["pixel_values"][0].mean() > packed["pixel_values"][1].mean()  # red (row 0) before blue (row 1)
    flat = FrameLMCollator(tiny_processor, padding_free=True, pad_to_multiple_of=64)(
        [sample.to_row() for sample in mixed_samples]
    )
    total = sum(len(e["input_ids"]) for e in encoded(tiny_processor, mixed_samples))
    assert flat["input_ids"].shape == (1, -(-total // 64) * 64)
    assert int((flat["position_ids"] == 0).sum()) == len(mixed_samples) + 1  # five samples and the padding
    assert [int(n) for n in count_samples_and_tokens(flat, tiny_processor.tokenizer.pad_token_id)] == [5, total]


# --- a packed row computes what its samples compute one by one --------------------------------------------------


def one_by_one(model, processor, samples: list[Sample]) -> list:
    collator = FrameLMCollator(processor)
    with torch.no_grad():
        return [model(**collator([sample.to_row()])) for sample in samples]


def test_packed_logits_and_loss_equal_the_samples_run_one_by_one(model, tiny_processor, mixed_samples):
    batch = packed_batch(tiny_processor, mixed_samples)
    with torch.no_grad():
        out = model(**batch)  # no use_cache given: the model must not build the cache that hides the boundaries
    assert out.cache is None
    alone = one_by_one(model, tiny_processor, mixed_samples)
    for i, (row, span) in spans(tiny_processor, mixed_samples).items():
        torch.testing.assert_close(out.logits[row, span], alone[i].logits[0], atol=1e-5, rtol=0)
    # the loss is the mean over every label token of the batch: the token-weighted mean of the samples' losses
    collator = FrameLMCollator(processor=tiny_processor)
    tokens = [int((collator([s.to_row()])["labels"][0, 1:] != IGNORE_INDEX).sum()) for s in mixed_samples]
    expected = sum(o.loss * n for o, n in zip(alone, tokens, strict=True)) / sum(tokens)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=0)


def test_packed_gradients_equal_the_padded_batch_gradients(model, tiny_processor, mixed_samples):
    collator = FrameLMCollator(tiny_processor)
    grads = {}
    for name, batch in (("padded", collator([s.to_row() for s in mixed_samples])),
                        ("packed", packed_batch(tiny_processor, mixed_samples))):  # fmt: skip
        model.zero_grad()
        model(**batch).loss.backward()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    assert grads["packed"].keys() == grads["padded"].keys()
    assert any(n.startswith("model.vision_tower.") for n in grads["packed"])  # the tower learns from packed rows
    for name, grad in grads["packed"].items():
        torch.testing.assert_close(grad, grads["padded"][name], atol=1e-5, rtol=1e-4, msg=name)


def test_no_token_attends_across_a_sample_boundary(model, tiny_processor, mixed_samples):
    batch = packed_batch(tiny_processor, mixed_samples)
    located = spans(tiny_processor, mixed_samples)
    with torch.no_grad():
        reference = model(**batch).logits
    for changed in range(len(mixed_samples)):
        row, span = located[changed]
        perturbed = {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        text = perturbed["input_ids"][row, span]
        media = torch.isin(text, torch.tensor([tiny_processor.image_token_id, tiny_processor.video_token_id]))
        text[~media] = (text[~media] + 7) % 300  # every text token of this sample changes, its media stay in place
        with torch.no_grad():
            logits = model(**perturbed).logits
        assert not torch.equal(logits[row, span], reference[row, span])
        for other, (other_row, other_span) in located.items():
            if other != changed:  # bit-identical: not one value moved
                assert torch.equal(logits[other_row, other_span], reference[other_row, other_span]), (changed, other)


def test_flash_attention_varlen_path_keeps_samples_apart(monkeypatch, tiny_model_dir, tiny_processor, mixed_samples):
    """transformers' own flash-attention path (`flash_attention_forward` -> `_flash_attention_forward`), with the
    CUDA kernel replaced by a CPU varlen reference: our `cu_seq_lens` reach `flash_attn_varlen_func` and give the
    one-by-one logits. (No GPU here; the kernel itself is flash-attn's.) With two rows and no `cu_seq_lens`,
    transformers would take the dense kernel: position ids alone mark packing for a single row only."""
    import transformers.modeling_flash_attention_utils as flash_utils
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.flash_attention import flash_attention_forward
    from transformers.masking_utils import flash_attention_mask

    from framelm.modeling import FrameLMForConditionalGeneration

    seen = []

    def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None, causal=False):
        seen.append(cu_seqlens_q.tolist())
        out = torch.empty_like(q)  # (tokens, heads, head_dim)
        for start, end in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist(), strict=True):
            q_, k_, v_ = (x[start:end].transpose(0, 1) for x in (q, k, v))  # (heads, n, head_dim)
            attended = F.scaled_dot_product_attention(
                q_, k_, v_, is_causal=causal, scale=softmax_scale, enable_gqa=True
            )
            out[start:end] = attended.transpose(0, 1)
        return out

    def dense(*args, **kwargs):
        raise AssertionError("the dense flash kernel ran on a packed batch: samples would attend to each other")

    kernels = ((dense, varlen, None, None, None), (flash_utils._lazy_define_process_function(varlen), dict))
    monkeypatch.setattr(flash_utils, "lazy_import_flash_attention", lambda *args, **kwargs: kernels)
    monkeypatch.setitem(AttentionInterface._global_mapping, "varlen_cpu", flash_attention_forward)
    monkeypatch.setitem(AttentionMaskInterface._global_mapping, "varlen_cpu", flash_attention_mask)
    model = FrameLMForConditionalGeneration.from_pretrained(
        tiny_model_dir, attn_implementation={"text_config": "varlen_cpu", "vision_config": "sdpa", "": "sdpa"}
    ).eval()
    reference = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    batch = packed_batch(tiny_processor, mixed_samples)
    with torch.no_grad():
        logits = model(**batch).logits
    assert seen and seen[0] == batch["cu_seq_lens_q"].tolist()
    alone = one_by_one(reference, tiny_processor, mixed_samples)
    for i, (row, span) in spans(tiny_processor, mixed_samples).items():
        torch.testing.assert_close(logits[row, span], alone[i].logits[0], atol=1e-5, rtol=0)


def test_a_packed_text_only_batch_still_runs_the_blank_image_pass(tiny_model_dir, tiny_processor, mixed_samples):
    from framelm.modeling import FrameLMForConditionalGeneration

    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir).train()  # the tower trains: pass needed
    text_only = [mixed_samples[0], mixed_samples[4]]
    batch = packed_batch(tiny_processor, text_only, rows=[[0, 1]])
    assert "pixel_values" not in batch and "pixel_values_videos" not in batch
    loss = model(**batch).loss
    loss.backward()
    tower = [p.grad for n, p in model.named_parameters() if n.startswith("model.vision_tower.")]
    assert tower and all(g is not None and not g.any() for g in tower)  # a zero gradient, not none
    with torch.no_grad():
        padded = model(**FrameLMCollator(tiny_processor)([s.to_row() for s in text_only])).loss
    torch.testing.assert_close(loss.detach(), padded, atol=1e-5, rtol=0)


# --- the recipe fields ----------------------------------------------------------------------------------------------


def test_packing_fields_reach_the_data_and_the_collator(tiny_model_dir, tiny_processor, llava_data, tmp_path):
    from framelm.training.batches.layout import BatchLayout
    from framelm.training.sft.data_prep import prepare_datasets
    from framelm.training.sft.train import parse_args

    _, data_args, training_args, _ = parse_args(
        ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(llava_data), "--output_dir", str(tmp_path),
         "--packing", "true", "--pad_to_multiple_of", "64", "--max_length", "160", "--seed", "5"]
    )  # fmt: skip
    layout = BatchLayout.from_args(training_args)
    assert layout == BatchLayout(packing=True, pad_to_multiple_of=64, seed=5)
    data = prepare_datasets(data_args, tiny_processor, 160, str(llava_data), layout)
    assert data.train.column_names == [PACKED_COLUMN, "num_tokens"]
    assert data.eval.column_names == [PACKED_COLUMN, "num_tokens"]  # eval_packing None: as packing
    assert data.collator.pad_to_multiple_of == 64 and not data.collator.padding_free
    assert data.collator(data.train.select(range(1)))["input_ids"].shape[1] % 64 == 0
    samples = measured([10, 20])
    assert BatchLayout(packing=True, eval_packing=False).rows(samples, 64, evaluation=True) is samples
    assert BatchLayout(eval_packing=True).rows(samples, 64) is samples  # training data stays unpacked
    assert BatchLayout(eval_packing=True).rows(samples, 64, evaluation=True)["num_tokens"] == [30]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--packing", "true", "--packing_strategy", "wrapped"], "'wrapped' cuts samples across rows.*use bfd"),
        (["--packing", "true", "--packing_strategy", "bfd_split"], "'bfd_split' cuts samples across rows"),
        (["--eval_packing", "true", "--max_length", "None"], "fills rows up to max_length: set --max_length"),
    ],
)
def test_packing_that_cannot_keep_samples_whole_is_refused(tiny_model_dir, tmp_path, capsys, flags, message):
    from framelm.training.errors import UsageError
    from framelm.training.sft.train import parse_args

    with pytest.raises(UsageError, match=message):
        parse_args(["--model_name_or_path", str(tiny_model_dir), "--dataset", "x.jsonl", "--output_dir",
                    str(tmp_path), *flags])  # fmt: skip


def test_sdpa_varlen_replaces_sdpa_for_the_language_model_only_and_is_never_saved(tiny_model_dir, tmp_path):
    from framelm.modeling import FrameLMForConditionalGeneration

    model = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    attend_sample_by_sample(model)
    assert model.model.language_model.config._attn_implementation == SDPA_VARLEN
    assert model.model.vision_tower.config._attn_implementation == "sdpa"  # the tower is no causal LM
    model.save_pretrained(tmp_path / "saved")
    assert SDPA_VARLEN not in (tmp_path / "saved" / "config.json").read_text()
    eager = FrameLMForConditionalGeneration.from_pretrained(tiny_model_dir, attn_implementation="eager")
    attend_sample_by_sample(eager)
    assert eager.model.language_model.config._attn_implementation == "eager"
