"""How many tokens a sample costs the model, counted without decoding a single image or video.

The chat template is rendered with one placeholder per media item and tokenized in batches; the placeholders count 0
text tokens, and each one then costs `tokens_per_image` or `tokens_per_video` (frames x tokens per frame), which is
exactly what the processor expands it to. Vision tokens count toward `max_length` like any other: this is where
users of every LLaVA-style trainer find their sequences silently cut.

`plan_truncation` is the rule training follows when a conversation is too long: drop trailing (user, assistant) pairs
at turn boundaries, and never cut inside a pair (its media tokens would be split). The collator reuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import datasets
from tqdm.auto import tqdm

from framelm.training.data.sample import IMAGE_PLACEHOLDER, PLACEHOLDER_PATTERN, VIDEO_PLACEHOLDER, Sample

BATCH = 256  # conversations rendered and tokenized together


@dataclass(frozen=True)
class TokenCount:
    text: int  # tokens of the rendered conversation, placeholders excluded
    media: int  # tokens the placeholders expand to

    @property
    def total(self) -> int:
        return self.text + self.media


def plan_truncation(turn_token_counts: Sequence[int], max_length: int) -> int:
    """Number of leading turns kept within `max_length`: whole (user, assistant) pairs only, so always even.

    `turn_token_counts[k]` is what turn k adds to the sequence, media tokens included (the first turn also carries
    the system prompt and the template's preamble). 0 means the first pair does not fit: the record cannot be used,
    since training would have to cut inside it. A trailing unanswered user turn is never kept.
    """
    used, kept = 0, 0
    for end in range(2, len(turn_token_counts) + 1, 2):
        used += turn_token_counts[end - 2] + turn_token_counts[end - 1]
        if used > max_length:
            break
        kept = end
    return kept


class TokenBudget:
    """Token counts of samples for one model's processor settings (tokenizer, template, tokens per media item).

    Args:
        tokenizer: any `transformers` tokenizer.
        render: content-list messages (`Sample.to_messages()`) -> the template's text, with one placeholder per media
            item (the processor's `apply_chat_template(messages, tokenize=False)`).
        tokens_per_image, tokens_per_video: what one `<image>` / `<video>` placeholder expands to.
    """

    def __init__(
        self,
        tokenizer,
        render: Callable[[list[dict]], str],
        tokens_per_image: int,
        tokens_per_video: int,
        image_token: str = IMAGE_PLACEHOLDER,
        video_token: str = VIDEO_PLACEHOLDER,
    ):
        self.tokenizer, self.render = tokenizer, render
        self.tokens_per_image, self.tokens_per_video = int(tokens_per_image), int(tokens_per_video)
        self.image_token, self.video_token = image_token, video_token
        ids = [_single_token_id(tokenizer, token) for token in (image_token, video_token)]
        # A placeholder that is one token of the vocabulary (the real processor's case) is counted by id, which is
        # exact; otherwise the text between placeholders is tokenized piece by piece, as special tokens would split it.
        self._ids = tuple(ids) if None not in ids else None

    @classmethod
    def from_processor(cls, processor, num_frames: int | None = None) -> TokenBudget:
        """From a `FrameLMProcessor`; `num_frames` overrides its frames per video."""
        per_video = num_frames * processor.tokens_per_frame if num_frames else processor.tokens_per_video
        return cls(
            processor.tokenizer,
            lambda messages: processor.apply_chat_template(messages, tokenize=False),
            processor.tokens_per_image,
            per_video,
            processor.image_token,
            processor.video_token,
        )

    @classmethod
    def from_pretrained(cls, model_dir: str, num_frames: int | None = None) -> TokenBudget:
        from transformers import AutoProcessor

        return cls.from_processor(AutoProcessor.from_pretrained(model_dir, trust_remote_code=True), num_frames)

    def count_texts(self, texts: list[str]) -> list[TokenCount]:
        """Rendered conversations (placeholders unexpanded) -> their token counts, tokenized as one batch."""
        images = [text.count(self.image_token) for text in texts]
        videos = [text.count(self.video_token) for text in texts]
        if self._ids is not None:
            all_ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            text_tokens = [len(ids) - ids.count(self._ids[0]) - ids.count(self._ids[1]) for ids in all_ids]
        else:
            pieces = [[p for p in PLACEHOLDER_PATTERN.split(text) if p and not PLACEHOLDER_PATTERN.fullmatch(p)]
                      for text in texts]  # fmt: skip
            flat = [p for ps in pieces for p in ps]
            lengths = iter(len(ids) for ids in self.tokenizer(flat, add_special_tokens=False)["input_ids"])
            text_tokens = [sum(next(lengths) for _ in ps) for ps in pieces]
        return [
            TokenCount(n, i * self.tokens_per_image + v * self.tokens_per_video)
            for n, i, v in zip(text_tokens, images, videos, strict=True)
        ]

    def count(self, samples: Sequence[Sample]) -> list[TokenCount]:
        """The whole conversation of each sample."""
        return self.count_texts([self.render(sample.to_messages()) for sample in samples])

    def turn_counts(self, sample: Sample) -> list[int]:
        """Tokens each turn adds (media included), measured on rendered prefixes so that they sum to the prefix
        lengths the collator measures; the system prompt and template preamble go to the first turn."""
        messages = sample.to_messages()
        first = 1 if messages and messages[0]["role"] == "system" else 0
        ends = range(first + 1, len(messages) + 1)
        totals = [c.total for c in self.count_texts([self.render(messages[:end]) for end in ends])]
        return [b - a for a, b in zip([0, *totals], totals, strict=False)]


def _single_token_id(tokenizer, token: str) -> int | None:
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None


def iter_token_counts(dataset: datasets.Dataset, budget: TokenBudget) -> Iterator[tuple[int, Sample, TokenCount]]:
    """(row, sample, count) for every row of a `SAMPLE_FEATURES` dataset, tokenized in batches, with a progress bar."""
    with tqdm(total=len(dataset), desc="counting tokens", unit="record") as bar:
        for start, batch in zip(range(0, len(dataset), BATCH), dataset.iter(batch_size=BATCH), strict=False):
            rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
            samples = [Sample.from_row(row) for row in rows]
            yield from zip(range(start, start + len(samples)), samples, budget.count(samples), strict=True)
            bar.update(len(samples))
