"""Mixtures: sampling strategies and their counts, seeded reproducibility, preprocess_fn registry, YAML errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import pytest
import yaml

from framelm.training.cli import data_main
from framelm.training.data.arguments import DataArguments
from framelm.training.data.loading import load_samples
from framelm.training.data.mixture import (
    PREPROCESS_FNS,
    MixtureError,
    SamplingStrategy,
    get_preprocess,
    load_mixture,
    register_preprocess,
)
from framelm.training.data.policy import BadRecordsError
from framelm.training.data.sample import Sample
from framelm.training.data.streaming import stream_samples


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", 1000),
        ("full", 1000),
        ("dup:3", 3000),
        ("random:100", 100),
        ("random:10%", 100),
        ("random:2.5%", 25),
        ("random:5000", 1000),  # never more rows than there are (LLaVA-NeXT's behaviour)
        ("first:7", 7),
        ("first:1%", 10),
        ("end:7", 7),
        ("end:0.05%", 1),  # percentages round up
    ],
)
def test_strategy_counts(text, expected):
    strategy = SamplingStrategy.parse(text)
    indices = strategy.indices(1000, seed=0, name="d")
    assert len(indices) == strategy.count(1000) == expected
    assert indices.min() >= 0 and indices.max() < 1000


def test_first_end_and_dup_pick_the_expected_rows():
    assert SamplingStrategy.parse("first:3").indices(10, 0, "d").tolist() == [0, 1, 2]
    assert SamplingStrategy.parse("end:3").indices(10, 0, "d").tolist() == [7, 8, 9]
    assert SamplingStrategy.parse("dup:2").indices(3, 0, "d").tolist() == [0, 1, 2, 0, 1, 2]


def test_random_sampling_is_reproducible_and_depends_on_seed_and_name():
    strategy = SamplingStrategy.parse("random:50")
    first = strategy.indices(1000, seed=3, name="a")
    assert np.array_equal(first, strategy.indices(1000, seed=3, name="a"))
    assert len(set(first.tolist())) == 50 and list(first) == sorted(first)  # distinct rows, in file order
    assert not np.array_equal(first, strategy.indices(1000, seed=4, name="a"))
    assert not np.array_equal(first, strategy.indices(1000, seed=3, name="b"))


@pytest.mark.parametrize("text", ["some", "random", "dup:1.5", "dup:5%", "first:-1", "random:abc"])
def test_invalid_strategies_list_the_valid_ones(text):
    with pytest.raises(ValueError, match=r"is not one of: all, full, dup:N, random:N|whole number of copies"):
        SamplingStrategy.parse(text)


def llava_record(i: int) -> dict:
    return {
        "id": f"l{i}",
        "image": f"{i}.jpg",
        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": f"thing {i}"}],
    }


@pytest.fixture
def mixture_files(tmp_path):
    (tmp_path / "llava.jsonl").write_text("".join(json.dumps(llava_record(i)) + "\n" for i in range(40)))
    n = 30
    captions = pa.table(
        {
            "s3_path": [f"s3://bucket/img/{i}.jpg" for i in range(n)],
            "caption": [f"caption {i}" for i in range(n)],
            "fltLaionAesthScore": [4.0 + (i % 4) for i in range(n)],  # 4, 5, 6, 7, ...
            "intHeight": [256 if i % 5 == 0 else 1024 for i in range(n)],
            "intWidth": [1024] * n,
            "unused": ["x"] * n,
        }
    )
    pyarrow.parquet.write_table(captions, tmp_path / "captions.parquet")
    pyarrow.csv.write_csv(captions.slice(0, 10), tmp_path / "captions.csv")
    return tmp_path


def write_yaml(path, entries) -> str:
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return str(path)


def test_mixture_of_jsonl_parquet_and_csv_with_sampling_and_preprocess(mixture_files):
    entries = [
        {"name": "llava", "json_path": "llava.jsonl", "sampling_strategy": "random:10"},
        {"name": "laion", "json_path": "captions.parquet", "sampling_strategy": "all",
         "preprocess_fn": "image_caption", "columns": ["s3_path", "caption", "fltLaionAesthScore", "intHeight",
                                                       "intWidth"],
         "aes_cutoff": 5.5, "min_size": 512},
        {"name": "csv", "json_path": "captions.csv", "sampling_strategy": "dup:2", "preprocess_fn": "image_caption",
         "columns": ["s3_path", "caption"], "prompt": "Caption this."},
    ]  # fmt: skip
    path = write_yaml(mixture_files / "mix.yaml", {"datasets": entries})
    loaded = load_samples(DataArguments(dataset=path, sampling_seed=1, cache_dir=str(mixture_files / "cache")))
    sources = [row["source"] for row in loaded.dataset]
    # laion keeps rows with score >= 5.5 (i % 4 in {2, 3}) and min side >= 512 (i % 5 != 0)
    kept = [i for i in range(30) if i % 4 >= 2 and i % 5 != 0]
    assert sources.count("llava") == 10 and sources.count("laion") == len(kept) and sources.count("csv") == 20
    assert loaded.total == 10 + 30 + 20 and loaded.left_out == 30 - len(kept) and not loaded.problems
    assert loaded.formats == {"llava": "llava", "laion": "llava", "csv": "llava"}
    laion = [Sample.from_row(r) for r in loaded.dataset if r["source"] == "laion"]
    assert [s.turns[1].text for s in laion] == [f"caption {i}" for i in kept]
    assert laion[0].media[0].path == f"s3://bucket/img/{kept[0]}.jpg"  # URLs are kept as they are
    assert laion[0].where == f"{mixture_files / 'captions.parquet'}:row {kept[0] + 1}"
    csv = [Sample.from_row(r) for r in loaded.dataset if r["source"] == "csv"]
    assert csv[0].turns[0].text == "<image>\nCaption this." and csv[0].where == csv[10].where
    again = load_samples(DataArguments(dataset=path, sampling_seed=1, cache_dir=str(mixture_files / "cache2")))
    assert again.dataset["id"] == loaded.dataset["id"]  # reproducible under the seed
    other = load_samples(DataArguments(dataset=path, sampling_seed=2, cache_dir=str(mixture_files / "cache")))
    assert other.dataset["id"][:10] != loaded.dataset["id"][:10]


def test_lavida_o_style_entry_with_a_user_registered_function(mixture_files):
    @register_preprocess("preproces_text_to_image_generation_s3")
    def understand(row, aes_cutoff, min_size):
        if row["fltLaionAesthScore"] < aes_cutoff or min(row["intHeight"], row["intWidth"]) < min_size:
            return None
        question = {"from": "human", "value": "<image>\nWhat is the caption?"}
        return {"id": row["s3_path"], "image": row["s3_path"], "conversations": [
            question, {"from": "gpt", "value": row["caption"]}]}  # fmt: skip

    try:
        entry = {  # the documented entry, verbatim but for the path
            "name": "our-dataset",
            "json_path": "captions.parquet",
            "sampling_strategy": "all",
            "preprocess_fn": "preproces_text_to_image_generation_s3",
            "columns": ["s3_path", "caption", "fltLaionAesthScore", "intHeight", "intWidth"],
            "aes_cutoff": 5.67,
            "min_size": 512,
        }
        path = write_yaml(mixture_files / "lavida.yaml", [entry])
        (parsed,) = load_mixture(path)
        assert parsed.kwargs == {"aes_cutoff": 5.67, "min_size": 512}
        loaded = load_samples(DataArguments(dataset=path, cache_dir=str(mixture_files / "cache")))
        expected = [f"s3://bucket/img/{i}.jpg" for i in range(30) if i % 4 >= 2 and i % 5 != 0]
        assert loaded.dataset["id"] == expected
        assert len(loaded.dataset) + loaded.left_out == loaded.total == 30
    finally:
        PREPROCESS_FNS.pop("preproces_text_to_image_generation_s3")


def test_a_failing_preprocess_fn_is_a_reported_problem(mixture_files):
    @register_preprocess("fails_on_seven")
    def fails_on_seven(row):
        if row["caption"] == "caption 7":
            raise KeyError("width")
        return {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": row["caption"]}]}

    try:
        path = write_yaml(
            mixture_files / "m.yaml", [{"json_path": "captions.parquet", "preprocess_fn": "fails_on_seven"}]
        )
        loaded = load_samples(DataArguments(dataset=path, cache_dir=str(mixture_files / "cache")))
        (problem,) = loaded.problems
        assert problem.kind == "preprocess_error" and problem.where.endswith("captions.parquet:row 8")
        assert problem.problem == "preprocess_fn failed: KeyError: 'width'"
        assert len(loaded.dataset) == 29
    finally:
        PREPROCESS_FNS.pop("fails_on_seven")


def test_preprocess_fn_by_import_path_and_unknown_names():
    assert get_preprocess("framelm.training.data.mixture:image_caption") is PREPROCESS_FNS["image_caption"]
    with pytest.raises(ValueError, match=r"'nope' is not registered; registered: \[.*'image_caption'"):
        get_preprocess("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_preprocess("image_caption")(lambda row: row)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "a"}], "dataset 1 needs at least a 'json_path'"),
        ([{"json_path": "a.jsonl", "aes_cutoff": 5}], r"keys \['aes_cutoff'\] are only passed to a preprocess_fn"),
        ([{"json_path": "a.jsonl", "name": "x"}, {"json_path": "b.jsonl", "name": "x"}], "'x' is used twice"),
        ([{"json_path": "a.txt"}], "must end in one of"),
        ([{"json_path": "a.jsonl", "sampling_strategy": "half"}], r"dataset 1 \(a\): sampling_strategy 'half'"),
        ([{"json_path": "a.jsonl", "preprocess_fn": "missing_fn"}], "'missing_fn' is not registered"),
        ({"something": 1}, "a mixture is a list of datasets"),
    ],
)
def test_mixture_yaml_errors_name_the_entry_and_key(tmp_path, entries, message):
    path = write_yaml(tmp_path / "bad.yaml", entries)
    with pytest.raises(ValueError, match=message):
        load_mixture(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- json_path: a.jsonl\n  format: bogus\n",
         r"bad.yaml: dataset 1 \(a\): format 'bogus' is not one of \['auto', 'llava'"),
        ("- json_path: a.jsonl\n  user_key: [human, person]\n",
         r"dataset 1 \(a\): user_key must be the role name of user turns, not \['human', 'person'\]"),
        ("- json_path: a.jsonl\n  columns: 5\n  preprocess_fn: image_caption\n",
         r"dataset 1 \(a\): columns must be a list of names like \[url, caption\], not 5"),
        ("- json_path: a.jsonl\n  format: [\n", r"bad.yaml: not valid YAML at line 3, column 1: expected the node"),
        ("- json_path: a.jsonl\x00\n", r"bad.yaml: not valid YAML: the character '\\x00' at position 20 is not"),
        ("- json_path: a.jsonl\n  name: [1]\n", r"dataset 1: name must be a string, not \[1\]"),
        ("- json_path: a.jsonl\n  preprocess_fn: ..:up\n",
         r"dataset 1 \(a\): preprocess_fn '..:up' names code to import; .* pass --trust-preprocess-code"),
        ("- json_path: a.jsonl\n  sampling_strategy: random:0.5\n",
         r"'random:0.5': random:N takes a whole number of rows; .* write a percentage \(random:50%\)"),
        ("- json_path: s3://bucket/a.jsonl\n",
         r"dataset 1 \(a\): cannot read s3:// URLs: Install s3fs to access S3; pip install s3fs \(with framelm: "
         r"pip install 'framelm\[s3\]'\)"),
        ("- json_path: gs://bucket/a.jsonl\n", r"cannot read gs:// URLs: .*pip install 'framelm\[gcs\]'"),
        ("- json_path: http://127.0.0.1:9/a.jsonl\n",
         r"dataset 1 \(a\): cannot read http:// URLs: HTTPFileSystem requires \"requests\" and \"aiohttp\""),
        ("- json_path: nope://bucket/a.jsonl\n",
         r"dataset 1: json_path reference 'nope://bucket/a.jsonl' is refused: the nope:// scheme is not allowed"),
        ("- json_path: local:///etc/a.jsonl\n",
         r"is refused: the local:// scheme is not allowed \(allowed: http, https"),
    ],
)  # fmt: skip
def test_mixture_mistakes_are_one_message_naming_the_entry(tmp_path, missing_fsspec_backends, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MixtureError, match=message):
        load_mixture(str(path))


def test_every_bad_entry_is_listed_at_once_and_the_command_prints_no_traceback(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text(json.dumps(llava_record(0)) + "\n")
    path = write_yaml(tmp_path / "mix.yaml", [
        {"json_path": "a.jsonl", "format": "bogus"},
        {"json_path": "a.jsonl", "name": "fine"},
        {"json_path": "a.jsonl", "name": "b", "columns": "url"},
        {"json_path": "a.jsonl", "name": "fine"},
    ])  # fmt: skip
    with pytest.raises(MixtureError) as raised:
        load_mixture(path)
    lines = str(raised.value).splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["dataset 1 (a)", "dataset 3 (b)", "dataset 4 (fine)"]
    assert "the name 'fine' is used twice" in lines[2]
    assert data_main(["validate", path, "--cache-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "dataset 3 (b): columns must be a list of names" in err and "Traceback" not in err


def test_a_file_that_cannot_be_read_is_named_with_its_entry(tmp_path, missing_fsspec_backends):
    (tmp_path / "open_quote.csv").write_text('url,caption\n"a.png,a caption\nb.png,another\n')
    path = write_yaml(tmp_path / "mix.yaml", [{"name": "captions", "json_path": "open_quote.csv",
                                               "preprocess_fn": "image_caption"}])  # fmt: skip
    with pytest.raises(MixtureError, match=r"mix.yaml: dataset 1 \(captions\): .*open_quote.csv: cannot be read: "
                       r"ParserError: .*EOF inside string starting at row 1"):  # fmt: skip
        load_samples(DataArguments(dataset=path, cache_dir=str(tmp_path / "c")))
    with pytest.raises(MixtureError, match=r"^s3://bucket/a.jsonl: cannot read s3:// URLs: .*'framelm\[s3\]'"):
        load_samples(DataArguments(dataset="s3://bucket/a.jsonl", cache_dir=str(tmp_path / "c")))
    with pytest.raises(MixtureError, match=r"^.*missing.jsonl: not found$"):
        load_samples(DataArguments(dataset=str(tmp_path / "missing.jsonl"), cache_dir=str(tmp_path / "c")))


@pytest.mark.parametrize(
    ("text", "message"),
    [("random:0.5", "whole number of rows"), ("first:2.5", "first:250%"), ("random:0", "selects no rows"),
     ("end:0%", "selects no rows"), ("random:150%", "more than all rows; repeat rows with dup:N")],
)  # fmt: skip
def test_strategies_that_would_select_a_surprising_number_of_rows_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        SamplingStrategy.parse(text)


def test_a_null_caption_is_reported_and_an_unknown_score_is_not_above_the_cutoff(tmp_path):
    # a CSV with an empty caption cell and a NaN score, as pandas reads them (None, nan) ...
    (tmp_path / "c.csv").write_text("url,caption,score\na.jpg,a cat,7\nb.jpg,,7\nc.jpg,a dog,nan\nd.jpg,,7\n")
    path = write_yaml(tmp_path / "mix.yaml", [{"json_path": "c.csv", "preprocess_fn": "image_caption",
                                               "aes_cutoff": 5.0}])  # fmt: skip
    loaded = load_samples(DataArguments(dataset=path, cache_dir=str(tmp_path / "c")))
    assert [Sample.from_row(r).turns[1].text for r in loaded.dataset] == ["a cat"]  # never the answer "None"
    assert loaded.left_out == 1  # c.jpg: NaN score
    assert [(p.where.rsplit(":", 1)[1], p.problem) for p in loaded.problems] == [
        ("row 2", "preprocess_fn failed: ValueError: the caption (column 'caption') is empty (NULL or NaN)"),
        ("row 4", "preprocess_fn failed: ValueError: the caption (column 'caption') is empty (NULL or NaN)"),
    ]


# --- streaming: the same records as load_samples, read as iterated ----------------------------------------------


@pytest.mark.parametrize("strategy", ["all", "random:25%", "first:5", "end:6", "dup:2"])
def test_streaming_a_mixture_yields_the_records_load_samples_selects(mixture_files, strategy):
    entries = [
        {"name": "llava", "json_path": "llava.jsonl", "sampling_strategy": strategy},
        {"name": "laion", "json_path": "captions.parquet", "sampling_strategy": "random:10",
         "preprocess_fn": "image_caption", "columns": ["s3_path", "caption", "fltLaionAesthScore"],
         "aes_cutoff": 5.5},
    ]  # fmt: skip
    path = write_yaml(mixture_files / "mix.yaml", entries)
    loaded = load_samples(DataArguments(dataset=path, sampling_seed=5, cache_dir=str(mixture_files / "cache")))
    streamed = list(stream_samples(DataArguments(dataset=path, sampling_seed=5)))
    assert sorted(r["where"] for r in streamed) == sorted(loaded.dataset["where"])
    by_where = {r["where"]: r for r in loaded.dataset}
    assert all(by_where[r["where"]] == r for r in streamed)  # the same normalized rows
    again = stream_samples(DataArguments(dataset=path, sampling_seed=5))
    assert [r["where"] for r in again] == [r["where"] for r in streamed]  # seeded order
    if strategy == "all":  # interleaved, not one entry after the other
        assert {r["source"] for r in streamed[:20]} == {"llava", "laion"}


def test_streaming_applies_the_bad_record_policy(tmp_path, caplog):
    records = [llava_record(0), {"id": "bad", "conversations": [{"from": "gpt", "value": "hi"}]}, llava_record(2)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(
        BadRecordsError, match=rf"(?s){path}:2 \(id=bad\): turn 1 is from the assistant .*--bad_records skip"
    ):
        list(stream_samples(DataArguments(dataset=str(path))))
    assert [r["id"] for r in stream_samples(DataArguments(dataset=str(path), bad_records="skip"))] == ["l0", "l2"]
    assert f"skipping {path}:2 (id=bad)" in caplog.text and "1 skipped so far" in caplog.text
