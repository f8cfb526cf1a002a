"""Property tests over 5,000 malformed inputs each, for the three readers of user files: data records, mixture YAMLs
and `framelm generate` prompt files. For every input: no exception escapes, every bad input is reported with where,
what and how to fix it, and good + bad = total. Each example holds 50 inputs (one file), 100 examples per test;
derandomized, so CI runs the same inputs every time."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fuzz_records import json_values, record_lines, references

from framelm.training.data.formats import ReadOptions
from framelm.training.data.jsonio import iter_raw_records
from framelm.training.data.mixture import MixtureError, check_entries, load_mixture
from framelm.training.data.normalize import EntryJob, normalize_batch, normalize_table
from framelm.training.data.paths import (
    REMOTE_SCHEMES,
    RefusedReference,
    is_remote,
    resolve_media_path,
    shown_reference,
)
from framelm.training.data.raw import CHUNK_RECORDS, RAW_FEATURES
from framelm.training.errors import InputError
from framelm.training.eval.prompts import read_prompts

PER_EXAMPLE, EXAMPLES = 50, 100  # 5,000 inputs per test
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
assert PER_EXAMPLE <= CHUNK_RECORDS  # one stage-one row holds a whole example


def write_lines(lines: list[str], suffix: str) -> Path:
    """The lines as a file, written the way a broken tool would: UTF-8, lone surrogates as their escapes."""
    handle = tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False, encoding="utf-8", newline="")
    with handle:
        handle.write("\n".join(lines) + "\n")
    return Path(handle.name)


def assert_reported(problem, path: Path) -> None:
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+", problem.where), problem
    assert problem.problem and problem.fix and isinstance(problem.id, str), problem


# --- data records: the reading pipeline of `load_samples`, stage one and stage two, and the Arrow write ------------


good_lines = st.text(max_size=20).map(lambda question: json.dumps(
    {"id": question, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "ok"}]}
))  # fmt: skip


@FUZZ
@given(lines=st.lists(good_lines | record_lines, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE),
       reader=st.sampled_from(["llava", "lmms", "sharegpt"]))  # fmt: skip
def test_records_never_raise_and_every_line_is_a_sample_or_a_reported_problem(lines, reader):
    path = write_lines(lines, ".jsonl")
    try:
        raw = {name: [[]] for name in RAW_FEATURES}  # stage one: one row holding every raw record, as `raw.py` does
        for found in iter_raw_records(str(path)):
            for name, value in (("line", found.line), ("column", found.column), ("text", found.text),
                                ("error", found.error)):  # fmt: skip
                raw[name][0].append(value)
        job = EntryJob(label=str(path), reader=reader, table=False,
                       options=ReadOptions(base_dir="/data", image_folder="/img", source="fuzz"))  # fmt: skip
        rows = normalize_table(raw, job).to_pydict()  # stage two, as `Dataset.map` runs it: it must never fail
    finally:
        path.unlink()
    assert len(rows["where"]) == PER_EXAMPLE  # good + bad = total: one row per line
    assert [int(w.rsplit(":", 1)[1]) for w in rows["where"]] == list(range(1, PER_EXAMPLE + 1))
    for where, problem, fix, kind, turns in zip(rows["where"], rows["problem"], rows["fix"], rows["kind"],
                                                rows["turns"], strict=True):  # fmt: skip
        assert bool(kind) == bool(problem) == bool(fix) != bool(turns), (where, problem)


# --- mixture YAMLs: every entry is an entry or one error naming it ------------------------------------------------

# what a YAML value can be, kept shallow (an entry's keys are checked one level deep) so that examples come fast
small_lists = st.lists(st.integers() | st.text(max_size=3), max_size=3)
odd = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | small_lists
       | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))  # fmt: skip
paths = st.sampled_from(["a.jsonl", "b.json", "c.parquet", "d.csv", "e.txt", "", "s3://b/x.jsonl", "nope://x.json",
                         "/abs/f.jsonl", "../up.jsonl"]) | odd  # fmt: skip
strategies = st.sampled_from(["all", "random:0.5", "random:10%", "dup:2", "first:0", "end:150%", "half"]) | odd
# never a random "module:function": importing arbitrary module names could run anything
preprocess_names = st.sampled_from(["image_caption", "nope", "..:up", "framelm_missing_module:f"]) | odd.filter(
    lambda value: not (isinstance(value, str) and ":" in value)
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "json_path": paths,
        "name": st.sampled_from(["a", "b", "a"]) | odd,
        "sampling_strategy": strategies,
        "preprocess_fn": preprocess_names,
        "columns": st.lists(st.text(max_size=4), max_size=3) | odd,
        "format": st.sampled_from(["auto", "llava", "sharegpt", "bogus"]) | odd,
        "image_folder": odd,
        "user_key": odd,
        "aes_cutoff": odd,
        "prompt": odd,
    },
)
documents = st.lists(entries | odd, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE)


@FUZZ
@given(document=documents, under_datasets=st.booleans())
def test_mixture_entries_never_raise_and_each_bad_entry_is_one_error_naming_it(document, under_datasets):
    given_document = {"datasets": document} if under_datasets else document
    good, errors = check_entries(given_document, "fuzz.yaml")
    assert len(good) + len(errors) == PER_EXAMPLE  # good + bad = total
    # where (the file and the entry), then what is wrong and what it must be
    found = [re.fullmatch(r"fuzz.yaml: dataset (\d+)(?: \(.*?\))?:? \S.{10,}", error, re.S) for error in errors]
    assert all(found), errors
    named = [int(match.group(1)) for match in found]
    assert len(set(named)) == len(named) and all(1 <= n <= PER_EXAMPLE for n in named)  # one error per bad entry
    assert len({entry.name for entry in good}) == len(good)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.text(max_size=120) | json_values.map(lambda value: yaml.safe_dump(value, allow_unicode=True)))
def test_any_yaml_text_is_a_mixture_or_a_mixture_error(text):
    path = write_lines([text], ".yaml")
    try:
        load_mixture(str(path))
    except MixtureError as err:
        assert str(err).startswith(str(path))
    finally:
        path.unlink()


# --- prompt files: every line is a prompt or a reported problem ----------------------------------------------------

prompt_records = st.fixed_dictionaries(
    {},
    optional={
        "question_id": st.integers(0, 5) | st.integers(0, 5).map(str) | json_values,
        "text": st.sampled_from(["Describe.", ""]) | json_values,
        "image": st.sampled_from(["a.png", ["a.png", "b.png"], []]) | json_values,
        "video": st.sampled_from(["v.mp4", [["v.mp4"]], 3]) | json_values,
        "category": json_values,
    },
)
prompt_lines = (prompt_records | json_values).map(json.dumps) | record_lines


@FUZZ
@given(lines=st.lists(prompt_lines, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE), bom=st.booleans())
def test_prompt_files_never_raise_and_every_line_is_a_prompt_or_a_reported_problem(lines, bom):
    path = write_lines(["\ufeff" + lines[0] if bom else lines[0], *lines[1:]], ".jsonl")
    try:
        read = read_prompts(str(path))
    except InputError as err:  # the one error about the file, not a line: NeVA and messages records mixed, or neither
        assert re.match(rf"--prompt-file {re.escape(str(path))}(:| mixes) ", str(err)), err
        return
    finally:
        path.unlink()
    assert read.total == len(read.prompts) + len(read.problems) == PER_EXAMPLE  # good + bad = total
    for problem in read.problems:
        assert_reported(problem, path)
    assert len({prompt.key for prompt in read.prompts}) == len(read.prompts)  # no question answered twice
    assert all(isinstance(prompt.record["text"], str) for prompt in read.prompts)


GOOD_MESSAGES = json.dumps({"id": "good", "messages": [{"role": "user", "content": "Describe."}]})


@FUZZ
@given(lines=st.lists(record_lines, min_size=PER_EXAMPLE - 1, max_size=PER_EXAMPLE - 1))
def test_messages_prompt_files_never_raise_and_every_line_is_a_prompt_or_a_reported_problem(lines):
    path = write_lines([GOOD_MESSAGES, *lines], ".jsonl")  # a messages file: no fuzzed record has "text"
    try:
        read = read_prompts(str(path), media_root="/data")
    finally:
        path.unlink()
    assert read.total == len(read.prompts) + len(read.problems) == PER_EXAMPLE
    for problem in read.problems:
        assert_reported(problem, path)
    assert len({prompt.key for prompt in read.prompts}) == len(read.prompts) and read.prompts[0].key == "good"
    for prompt in read.prompts:  # a conversation to answer: it ends with the user, its media resolved under the root
        assert prompt.sample.turns[-1].role == "user"
        assert all(m.embedded or m.path.startswith("/data/") or is_remote(m.path) for m in prompt.sample.media)


# --- media references: resolved inside the root, an allowed URL, or refused with a reason; nothing else -------------


def _hostile_root() -> tuple[str, str]:
    """root/ holding a file, a symlink and a symlinked folder pointing out, and a frame folder with a member that
    points out; outside/ beside it. Built once: hypothesis examples share it and never write to it."""
    base = Path(tempfile.mkdtemp(prefix="framelm-fuzz-refs-"))
    root, outside = base / "root", base / "outside"
    (root / "frames").mkdir(parents=True)
    (root / "leaky").mkdir()
    (outside / "dir").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret")
    (root / "f.png").write_bytes(b"x")
    (root / "frames" / "00001.jpg").write_bytes(b"x")
    os.symlink(outside / "secret", root / "leak.png")
    os.symlink(outside / "dir", root / "leak_dir")
    os.symlink(outside / "secret", root / "leaky" / "00001.jpg")
    return str(root), str(outside)


HOSTILE_ROOT = _hostile_root()


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(reference=references, allow_outside_root=st.booleans())
def test_a_reference_resolves_inside_its_root_or_to_an_allowed_url_or_is_refused(reference, allow_outside_root):
    root, _ = HOSTILE_ROOT
    shown = shown_reference(reference)  # messages may always show it
    assert isinstance(shown, str)
    if reference.startswith(("http://", "https://", "s3://")) and "@" in reference.split("/")[2]:
        assert "token" not in shown, shown  # a URL's userinfo never shows
    if reference.startswith(("http://", "https://", "s3://")):
        assert "sig=secret" not in shown, shown  # nor its query
    try:
        resolved = resolve_media_path(reference, root, allow_outside_root)
    except RefusedReference as err:  # the record's problem: a reason and a fix, never another exception
        assert str(err) and err.fix and err.kind in ("refused_reference", "outside_root")
        return
    if is_remote(resolved):
        parts = urlsplit(resolved)
        assert parts.scheme.lower() in REMOTE_SCHEMES and parts.hostname and "::" not in parts.path
        assert resolved == reference.removeprefix("{image_folder}/").removeprefix("{video_folder}/")
        return
    assert "://" not in resolved and "\x00" not in resolved
    if allow_outside_root:
        return
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, resolved))
    assert real == real_root or real.startswith(real_root + "/"), (reference, resolved, real)
    if os.path.isdir(real):  # a frame folder: every member inside too
        for name in os.listdir(real):
            assert os.path.realpath(os.path.join(real, name)).startswith(real_root + "/"), (reference, name)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(lines=st.lists(references.map(lambda ref: json.dumps({"image": ref, "conversations": [
    {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "ok"}]})), min_size=20, max_size=20))  # fmt: skip
def test_records_naming_any_reference_are_a_sample_inside_the_root_or_a_reported_problem(lines):
    root, _ = HOSTILE_ROOT
    path = write_lines(lines, ".jsonl")
    try:
        raw = {name: [[]] for name in RAW_FEATURES}
        for found in iter_raw_records(str(path)):
            for name, value in (("line", found.line), ("column", found.column), ("text", found.text),
                                ("error", found.error)):  # fmt: skip
                raw[name][0].append(value)
        job = EntryJob(label=str(path), reader="llava", table=False, options=ReadOptions(base_dir=root, source="f"))
        rows = normalize_batch(raw, job)
    finally:
        path.unlink()
    real_root = os.path.realpath(root)
    for problem, fix, media in zip(rows["problem"], rows["fix"], rows["media"], strict=True):
        if problem:
            assert fix
            continue
        (item,) = media
        if not is_remote(item["path"]):
            real = os.path.realpath(item["path"])
            assert real == real_root or real.startswith(real_root + "/"), item["path"]
