"""Token budget and `framelm data stats`: counts agree with the collator, truncation planning, percentiles."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from framelm.training.collator import FrameLMCollator
from framelm.training.data.budget import TokenBudget, plan_truncation
from framelm.training.data.cli import main as data_main
from framelm.training.data.sample import SAMPLE_FEATURES, Media, Sample, Turn
from framelm.training.data.stats import TokenStats, token_stats

# the tiny processor: 16 tokens per image, 4 frames x 16 tokens per video
SAMPLES = [
    Sample(turns=(Turn("user", "Say yes."), Turn("assistant", "yes"))),
    Sample(
        turns=(Turn("user", "<image>What colour?"), Turn("assistant", "red")),
        media=(Media("image", "a.png"),),
        system="Answer with one word.",
    ),
    Sample(
        turns=(
            Turn("user", "<video>Which way?"),
            Turn("assistant", "left"),
            Turn("user", "<image><image>Same colour?"),
            Turn("assistant", "no"),
        ),
        media=(Media("video", "v.mp4"), Media("image", "a.png"), Media("image", "b.png")),
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("counts", "max_length", "kept"),
    [
        ([10, 5, 10, 5], 30, 4),
        ([10, 5, 10, 5], 29, 2),
        ([10, 5, 10, 5], 15, 2),
        ([10, 5, 10, 5], 14, 0),  # the first pair does not fit: a bad record
        ([10, 5, 10], 100, 2),  # an unanswered user turn is never kept
        ([], 10, 0),
    ],
)
def test_plan_truncation_keeps_whole_pairs(counts, max_length, kept):
    assert plan_truncation(counts, max_length) == kept


def test_budget_counts_equal_the_collators_lengths_without_decoding(tiny_processor):
    budget = TokenBudget.from_processor(tiny_processor)
    collator = FrameLMCollator(tiny_processor)
    counts = budget.count(SAMPLES)  # the media paths do not exist: nothing is opened
    assert [c.total for c in counts] == [collator.length(s.to_messages()) for s in SAMPLES]
    assert [c.media for c in counts] == [0, 16, 64 + 2 * 16]
    for sample in SAMPLES:  # turn counts add up to the measured prefixes
        turns = budget.turn_counts(sample)
        assert len(turns) == len(sample.turns)
        assert sum(turns) == collator.length(sample.to_messages())
        assert sum(turns[:2]) == collator.length(sample.to_messages()[: 2 + bool(sample.system)])


def test_fewer_frames_cost_fewer_media_tokens(tiny_processor):
    two_frames = TokenBudget.from_processor(tiny_processor, num_frames=2)
    assert two_frames.count(SAMPLES[2:])[0].media == 2 * 16 + 2 * 16


def test_token_stats_percentiles_histogram_and_max_length(tiny_processor):
    rows = [s.to_row() for s in SAMPLES]
    dataset = datasets.Dataset.from_list(rows, features=SAMPLE_FEATURES)
    budget = TokenBudget.from_processor(tiny_processor)
    totals = [c.total for c in budget.count(SAMPLES)]
    first_pair = sum(budget.turn_counts(SAMPLES[2])[:2])
    stats = token_stats(dataset, budget, max_length=first_pair)  # the 3-turn video sample keeps one pair only
    assert stats.total.tolist() == totals
    assert stats.percentiles()["total"][100] == max(totals) and stats.percentiles()["media"][50] == 16
    assert sum(n for _, _, n in stats.histogram(bins=4)) == 3
    assert (stats.shortened, stats.dropped) == (1, 0)
    assert f"max_length {first_pair}: 1 records are longer; 1 keep their leading exchanges" in stats.table()
    assert token_stats(dataset, budget, max_length=5).dropped == 3


def test_empty_stats_have_a_table():
    empty = TokenStats(text=np.zeros(0, dtype=np.int64), media=np.zeros(0, dtype=np.int64))
    assert empty.histogram() == [] and empty.table().startswith("0 records")


def test_stats_cli(tmp_path, tiny_model_dir, capsys):
    records = [
        {"id": str(i), "conversations": [{"from": "human", "value": "hi " * i}, {"from": "gpt", "value": "ok"}]}
        for i in range(1, 21)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = [
        "stats",
        str(path),
        "--model",
        str(tiny_model_dir),
        "--max-length",
        "30",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert data_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("20 records") and "p50" in out and "max_length 30:" in out


def word_tokenizer(placeholders_are_tokens: bool):
    """A word-level tokenizer trained on nothing: one id per listed word, so every count is known by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "user", "assistant", ":", "what", "is", "it", "a", "cat", "and", "this", "dog"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["<image>", "<video>"] if placeholders_are_tokens else []
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", additional_special_tokens=special)


def render_lines(messages: list[dict]) -> str:
    """'role: text' lines, each media item as its placeholder: a stand-in for the processor's chat template."""
    return "\n".join(
        f"{m['role']}: " + "".join(c["text"] if c["type"] == "text" else f"<{c['type']}>" for c in m["content"])
        for m in messages
    )


@pytest.mark.parametrize("placeholders_are_tokens", [True, False])
def test_budget_from_any_tokenizer_counts_placeholders_as_media_tokens_only(placeholders_are_tokens):
    budget = TokenBudget(
        word_tokenizer(placeholders_are_tokens), render_lines, tokens_per_image=10, tokens_per_video=40
    )
    sample = Sample(
        turns=(Turn("user", "what is it<image>"), Turn("assistant", "a cat"),
               Turn("user", "and this<video>"), Turn("assistant", "a dog")),
        media=(Media("image", "a.png"), Media("video", "v.mp4")),
    )  # fmt: skip
    (count,) = budget.count([sample])
    # "user : what is it" 5, "assistant : a cat" 4, "user : and this" 4, "assistant : a dog" 4
    assert (count.text, count.media, count.total) == (17, 50, 67)
    assert budget.turn_counts(sample) == [5 + 10, 4, 4 + 40, 4]
    assert plan_truncation(budget.turn_counts(sample), max_length=66) == 2  # the video exchange is dropped whole
    assert plan_truncation(budget.turn_counts(sample), max_length=18) == 0  # 19 tokens: the first pair is too long
