"""THE length rule: how many leading whole exchanges of each record fit `max_length`, and their exact token count.

Computed once per dataset and processor, in one batched and cached `Dataset.map` (`measure_lengths`), and stored as
columns that training, `framelm data validate` and `framelm data stats` all read; the collator only slices:

- `kept_turns`: leading turns training keeps. A conversation longer than `max_length` loses whole trailing
  (user, assistant) exchanges, never part of one (cutting inside a media span would feed the model a broken image).
  0 means the first exchange alone does not fit: the record cannot train (a `too_long` bad record).
- `num_tokens`: `len(input_ids)` the collator produces for those turns, exactly: the system prompt, the chat
  template and every media token included, as the processor expands `<image>` to `tokens_per_image` tokens and
  `<video>` to `num_frames * tokens_per_frame` (plus, with `frame_timestamps`, the duration and frame time labels).
  Packing (grouping rows into one sequence) reads this column. For a record with `kept_turns == 0`, the tokens its
  first exchange alone needs.
- `total_tokens`, `media_tokens`: the whole conversation before any truncation, and its image and frame tokens
  (time labels are text) (stats).

Nothing is decoded: the template is rendered with one placeholder per image and each `<video>` expanded by the
processor's own `video_text` with one token per frame, tokenized in batches, each placeholder token then counting for
the tokens it expands to. Time labels are written with zero times: their values need the media, but their token count
does not, for a tokenizer that `time_label_problem` finds splitting every label alike (checked before counting).
Vision tokens count toward `max_length` like any other: this is where users of LLaVA-style trainers find their
sequences silently cut.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets.fingerprint import Hasher

from framelm.training.data.raw import map_workers
from framelm.training.data.sample import RecordProblem, Sample

BATCH = 256  # records rendered and tokenized together
LENGTH_RULE_VERSION = 2  # part of the cache key: bump when the rule changes
LENGTH_FEATURES = {
    "kept_turns": datasets.Value("int32"),
    "num_tokens": datasets.Value("int64"),
    "total_tokens": datasets.Value("int64"),
    "media_tokens": datasets.Value("int64"),
}


def measure_lengths(
    dataset: datasets.Dataset | datasets.IterableDataset,
    processor,
    max_length: int | None,
    num_proc: int | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """`dataset` (`SAMPLE_FEATURES` rows) with the `LENGTH_FEATURES` columns for this processor and `max_length`.

    Cached by `datasets` under the rows, the processor (tokenizer, template, tokens per image and frame, frames per
    video) and `max_length`: a second run, or another epoch, reads the columns back instead of counting again. A
    streamed dataset (`datasets.IterableDataset`) is measured lazily, batch by batch as it is read, by the same rule.
    """
    if processor.frame_timestamps and (problem := time_label_problem(processor)):
        raise ValueError(f"cannot count this processor's time labels exactly: {problem}")
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(
            _measure_batch,
            batched=True,
            batch_size=BATCH,
            fn_kwargs={"processor": processor, "max_length": max_length},
            features=datasets.Features({**dataset.features, **LENGTH_FEATURES}),
        )
    dataset = dataset.remove_columns([c for c in LENGTH_FEATURES if c in dataset.column_names])
    features = datasets.Features({**dataset.features, **LENGTH_FEATURES})
    fingerprint = Hasher.hash([dataset._fingerprint, processor, max_length, LENGTH_RULE_VERSION])
    return dataset.map(
        _measure_batch,
        batched=True,
        batch_size=BATCH,
        num_proc=map_workers(num_proc, len(dataset), -(-len(dataset) // BATCH)),
        fn_kwargs={"processor": processor, "max_length": max_length},
        features=features,  # also on an empty dataset, which then still has the columns
        new_fingerprint=fingerprint,
        desc="counting tokens",
    )


def _measure_batch(batch: dict, processor, max_length: int | None) -> dict[str, list]:
    samples = [Sample.from_row(dict(zip(batch, values, strict=True))) for values in zip(*batch.values(), strict=True)]
    totals, medias = token_counts(processor, [sample.to_messages(media=False) for sample in samples])
    kept, used = [len(sample.turns) for sample in samples], list(totals)
    # the records that do not fit: binary search over their number of whole exchanges, one batch per round, since
    # a longer prefix never has fewer tokens. fits[i]: exchanges known to fit; too_many[i]: known not to fit.
    fits = {i: 0 for i, total in enumerate(totals) if max_length is not None and total > max_length}
    too_many = {i: len(samples[i].turns) // 2 for i in fits}
    while active := [i for i in fits if fits[i] + 1 < too_many[i]]:
        middle = {i: (fits[i] + too_many[i]) // 2 for i in active}
        shorter = [samples[i].truncated(2 * middle[i]).to_messages(media=False) for i in active]
        counts, _ = token_counts(processor, shorter)
        for i, count in zip(active, counts, strict=True):
            if count <= max_length:
                fits[i], used[i] = middle[i], count
            else:
                too_many[i] = middle[i]
                if middle[i] == 1:
                    used[i] = count  # the first exchange alone does not fit: what it needs
    for i, exchanges in fits.items():
        kept[i] = 2 * exchanges  # 0: not even the first exchange fits (`used` is then what it needs)
    return dict(batch) | {"kept_turns": kept, "num_tokens": used, "total_tokens": totals, "media_tokens": medias}


def token_counts(processor, conversations: list[list[dict]]) -> tuple[list[int], list[int]]:
    """(tokens, media tokens) of each conversation, exactly as `processor.apply_chat_template(..., tokenize=True)`
    would produce them, without loading any media."""
    if not conversations:
        return [], []
    num_frames = processor.num_frames
    video = processor.video_text(num_frames, [0.0] * num_frames, 0.0, tokens_per_frame=1)  # labels with zero times
    texts = [
        text.replace(processor.video_token, video)
        for text in processor.apply_chat_template(conversations, tokenize=False)
    ]
    image_id, video_id = processor.image_token_id, processor.video_token_id
    totals, medias = [], []
    for ids in _tokenize(processor.tokenizer, texts):
        images, frames = ids.count(image_id), ids.count(video_id)
        media = images * processor.tokens_per_image + frames * processor.tokens_per_frame
        totals.append(len(ids) - images - frames + media)
        medias.append(media)
    return totals, medias


def time_label_problem(processor) -> str | None:
    """Why the tokenizer would split time labels into more or fewer tokens depending on the time, or None.

    The length rule counts labels written with zero times, which is exact only when every label takes as many tokens
    as `00:00.0` does. Checked on every minute (00-99) with two second values, and on every second and tenth at
    three minute values: the label's fields are separated by `:` and `.`, so this covers each field's digits and
    each neighbouring pair of fields. Tokenizers that split digits one by one (Qwen, Llama 2, Mistral, Gemma) pass, as
    do those whose vocabulary holds every two-digit group (Llama 3's holds all numbers up to 999); a BPE that merged
    only some digit pairs fails (`tests/payload/test_frame_timestamps.py` trains one of each kind)."""
    seconds = sorted(
        {60.0 * minute + second for minute in range(100) for second in (0.0, 59.9)}
        | {
            60.0 * minute + second + tenth / 10
            for minute in (0, 59, 99)
            for second in range(60)
            for tenth in range(10)
        }
    )
    labels = [processor.video_text(1, [value], value, tokens_per_frame=1) for value in seconds]
    counts = [len(ids) for ids in processor.tokenizer(labels, add_special_tokens=False)["input_ids"]]
    if len(set(counts)) == 1:
        return None
    shortest, longest = counts.index(min(counts)), counts.index(max(counts))
    return (
        f"its tokenizer splits time labels into {min(counts)} to {max(counts)} tokens ({labels[shortest]!r}: "
        f"{counts[shortest]}, {labels[longest]!r}: {counts[longest]}), so the token budget could not be counted "
        "without decoding every video; use an LM whose tokenizer splits digits evenly (most do: Qwen, Llama, "
        "Mistral, Gemma), or leave frame timestamps off"
    )


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered texts in one batch; as in transformers' processor `apply_chat_template`, special tokens
    are added unless the rendered text already starts with the BOS token."""
    bos = tokenizer.bos_token
    starts_with_bos = [bos is not None and text.startswith(bos) for text in texts]
    if len(set(starts_with_bos)) <= 1:
        return tokenizer(texts, add_special_tokens=not any(starts_with_bos))["input_ids"]
    return [tokenizer(text, add_special_tokens=not has_bos)["input_ids"]
            for text, has_bos in zip(texts, starts_with_bos, strict=True)]  # fmt: skip


def kept_turns(measured: datasets.Dataset) -> np.ndarray:
    """(N,) the `kept_turns` column of a measured dataset; 0 marks the records that cannot train."""
    return measured.select_columns(["kept_turns"]).with_format("arrow")[:].column("kept_turns").to_numpy()


def too_long_problems(dataset: datasets.Dataset, max_length: int) -> list[tuple[int, RecordProblem]]:
    """(row, problem) for every measured record whose first exchange does not fit `max_length`."""
    rows = np.flatnonzero(kept_turns(dataset) == 0).tolist()
    return [(row, too_long_problem(dataset[row], max_length)) for row in rows]


def too_long_problem(record: dict, max_length: int) -> RecordProblem | None:
    """The problem of one measured record whose first exchange does not fit `max_length`; None when it fits."""
    if record["kept_turns"] > 0:
        return None
    return RecordProblem(
        record["where"],
        f"the first exchange needs {record['num_tokens']} tokens (media included) but max_length is {max_length}: "
        "training could only cut it inside",
        "raise max_length, use fewer frames per video (num_frames), or shorten the first exchange",
        id=record["id"],
        kind="too_long",
    )


def truncation_counts(measured: datasets.Dataset) -> tuple[int, int]:
    """(shortened, dropped) of a measured dataset: records that keep only their leading exchanges, and records whose
    first exchange does not fit at all."""
    table = measured.select_columns(["turns", "kept_turns"]).with_format("arrow")[:]
    kept, turns = table.column("kept_turns"), pc.list_value_length(table.column("turns"))
    shortened = pc.sum(pc.and_(pc.greater(kept, 0), pc.less(kept, turns))).as_py() or 0
    dropped = pc.sum(pc.equal(kept, 0)).as_py() or 0
    return int(shortened), int(dropped)
