"""Readers of every source format, from files the tests write: the formats' own documented records, equivalent inputs
normalized to the same samples, every kind of bad record reported with its line, and fuzzing that never crashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz_records import json_values
from support.fuzz_records import record as fuzz_record

from framelm.training.data.arguments import DataArguments
from framelm.training.data.formats import ReadOptions, detect_format, get_reader
from framelm.training.data.jsonio import JSONRecordError, iter_raw_records, jsonl_shards, parse_record
from framelm.training.data.loading import load_samples
from framelm.training.data.sample import Media, RecordProblem, Sample, Turn

# NeMo Video-NeVA's documented record, verbatim
NEVA_RECORD = (
    '{ "id": 0, "video": "{video_folder}/076101_076150/1043215450.mp4", "conversations": [ { "from": "human", '
    '"value": "<video>\\nWrite a terse but informative summary of the following video clip." }, { "from": "gpt", '
    '"value": "Oaxaca de juarez, mexico - circa 1970: mexican tourists on the square of the cathedral of our lady of '
    'the assumption in the city of oaxaca. archival of mexico in oaxaca state in the 1970s." } ] }'
)
# lmms-finetune's documented dataset, verbatim
LMMS_DATASET = """[
{
"system_prompt": "Answer the following questions about the image and video.",
"video": ["bm_teaser.mp4", "bm_show.mp4"],
"image": "bm.jpg",
"conversations": [
{
"from": "human",
"value": "<video><video>What are these videos about?"
},
{
"from": "gpt",
"value": "These videos are featuring a Kpop group, BabyMonster."
},
{
"from": "human",
"value": "<image>What does this image show?"
},
{
"from": "gpt",
"value": "This image shows the members of the Kpop group BabyMonster."
}
]
}
]
"""
# Pai-Megatron-Patch's documented ShareGPT example, verbatim: a trailing comma (line 23) and a // comment (line 31)
PAI_DATASET = """[
  {
    "conversations": [
        {
            "from": "human",
            "value": "<image>human instruction<image>"
        },
        {
            "from": "gpt",
            "value": "model response"
        },
        {
            "from": "human",
            "value": "<video><video>human instruction"
        },
        {
            "from": "gpt",
            "value": "model response"
        }
    ],
    "images": [
        "path/to/image1.jpg",
        "path/to/image2.jpg",
    ],
    "videos": [
        "path/to/video1.mp4",
        "path/to/video2.mp4"
    ]
  },
  {
    // another sample ...
  }
]
"""
QUESTION, ANSWER = "<image>\nWhat is shown?", "A red square."


def load(tmp_path: Path, text: str, name: str = "data.jsonl", **kwargs):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_samples(DataArguments(dataset=str(path), cache_dir=str(tmp_path / "cache"), **kwargs))


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def semantic(sample: Sample) -> tuple:
    """What a sample means, without where it came from."""
    return sample.system, sample.turns, sample.media, sample.id


def test_neva_documented_record_resolves_the_video_folder(tmp_path):
    loaded = load(tmp_path, NEVA_RECORD + "\n", video_folder="/data/videos")
    (row,) = loaded.dataset
    sample = Sample.from_row(row)
    assert sample.media == (Media("video", "/data/videos/076101_076150/1043215450.mp4"),)
    summary = "<video>\nWrite a terse but informative summary of the following video clip."
    assert sample.turns[0] == Turn("user", summary)
    assert sample.turns[1].role == "assistant" and sample.turns[1].text.startswith("Oaxaca de juarez")
    assert (sample.id, sample.where, loaded.formats) == ("0", f"{tmp_path / 'data.jsonl'}:1", {"data.jsonl": "llava"})


def test_lmms_documented_dataset_orders_media_by_placeholder(tmp_path):
    loaded = load(tmp_path, LMMS_DATASET, "data.json", image_folder="/img", video_folder="/vid")
    sample = Sample.from_row(loaded.dataset[0])
    assert loaded.formats == {"data.json": "lmms"}
    assert sample.system == "Answer the following questions about the image and video."
    assert sample.media == (
        Media("video", "/vid/bm_teaser.mp4"), Media("video", "/vid/bm_show.mp4"), Media("image", "/img/bm.jpg")
    )  # fmt: skip
    assert [t.role for t in sample.turns] == ["user", "assistant", "user", "assistant"]
    assert sample.where.endswith("data.json:2")  # the line where the record starts


def test_pai_documented_example_reports_the_trailing_comma_and_the_comment(tmp_path):
    loaded = load(tmp_path, PAI_DATASET, "data.json")
    assert (loaded.total, len(loaded.dataset)) == (2, 0)
    comma, comment = loaded.problems
    assert comma.where.endswith("data.json:2") and comment.where.endswith("data.json:30")
    assert comma.problem == "a trailing comma at line 23, column 29 before ']'"
    assert comma.fix == "delete the comma after the last item"
    assert comment.problem == "a comment at line 31, column 5: JSON has no comments"
    assert {comma.kind, comment.kind} == {"json_syntax"}


def test_pai_example_without_its_mistakes_interleaves_several_media_per_turn(tmp_path):
    fixed = PAI_DATASET.replace('image2.jpg",', 'image2.jpg"').replace(",\n  {\n    // another sample ...\n  }", "")
    loaded = load(tmp_path, fixed, "data.json")
    sample = Sample.from_row(loaded.dataset[0])
    root = str(tmp_path)
    assert loaded.formats == {"data.json": "sharegpt"} and not loaded.problems
    assert sample.media == (
        Media("image", f"{root}/path/to/image1.jpg"), Media("image", f"{root}/path/to/image2.jpg"),
        Media("video", f"{root}/path/to/video1.mp4"), Media("video", f"{root}/path/to/video2.mp4"),
    )  # fmt: skip


def test_llava_next_video_marked_with_image_is_read_as_video_and_logged_once(tmp_path, caplog):
    record = {"id": "v1", "video": "a.mp4", "conversations": [
        {"from": "human", "value": "<image>\nWhat happens?"}, {"from": "gpt", "value": "It rains."}]}  # fmt: skip
    with caplog.at_level("WARNING"):
        loaded = load(tmp_path, jsonl(record, record | {"id": "v2"}, record | {"id": "v3"}))
    assert [Sample.from_row(r).turns[0].text for r in loaded.dataset] == ["<video>\nWhat happens?"] * 3
    notes = [r.getMessage() for r in caplog.records if "LLaVA-NeXT" in r.getMessage()]
    assert len(notes) == 1 and ": 3 records mark their video with <image>" in notes[0]
    lmms = get_reader("lmms")(record, "x:1", ReadOptions())  # only the LLaVA reader accepts it
    assert isinstance(lmms, RecordProblem) and lmms.problem == "1 <image> placeholder but 0 image paths"


EQUIVALENT = {
    "llava": {"id": "s1", "image": "a.jpg", "video": "b.mp4", "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A red square."},
        {"from": "human", "value": "And here? <video>"}, {"from": "gpt", "value": "It moves left."}]},
    "lmms": {"id": "s1", "image": ["a.jpg"], "video": ["b.mp4"], "conversations": [
        {"from": "user", "value": "<image>\nWhat is shown?"}, {"from": "assistant", "value": "A red square."},
        {"from": "user", "value": "And here? <video>"}, {"from": "assistant", "value": "It moves left."}]},
    "sharegpt": {"id": "s1", "images": ["a.jpg"], "videos": ["b.mp4"], "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A red square."},
        {"from": "human", "value": "And here? <video>"}, {"from": "gpt", "value": "It moves left."}]},
    "messages": {"id": "s1", "images": ["a.jpg"], "videos": ["b.mp4"], "messages": [
        {"role": "user", "content": "<image>\nWhat is shown?"}, {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": "And here? <video>"}, {"role": "assistant", "content": "It moves left."}]},
    "content_list": {"id": "s1", "messages": [
        {"role": "user", "content": [
            {"type": "image", "path": "a.jpg"}, {"type": "text", "text": "\nWhat is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
        {"role": "user", "content": [{"type": "text", "text": "And here? "}, {"type": "video", "path": "b.mp4"}]},
        {"role": "assistant", "content": "It moves left."}]},
}  # fmt: skip


def test_equivalent_records_of_every_format_normalize_to_the_same_sample(tmp_path):
    samples = {}
    for name, record in EQUIVALENT.items():
        loaded = load(tmp_path, jsonl(record), f"{name}.jsonl", image_folder="/i", video_folder="/v")
        assert not loaded.problems, loaded.problems
        samples[name] = semantic(Sample.from_row(loaded.dataset[0]))
    expected = (
        "",
        (Turn("user", "<image>\nWhat is shown?"), Turn("assistant", "A red square."),
         Turn("user", "And here? <video>"), Turn("assistant", "It moves left.")),
        (Media("image", "/i/a.jpg"), Media("video", "/v/b.mp4")),
        "s1",
    )  # fmt: skip
    assert samples == dict.fromkeys(EQUIVALENT, expected)


def test_format_detection_from_the_records():
    assert detect_format([EQUIVALENT["llava"]]) == "llava"
    assert detect_format([EQUIVALENT["lmms"]]) == "lmms"
    assert detect_format([{"system_prompt": "x", "conversations": []}]) == "lmms"
    assert detect_format([EQUIVALENT["messages"]]) == "sharegpt"
    assert detect_format([EQUIVALENT["content_list"]]) == "sharegpt"
    assert detect_format([]) == "llava"


def test_configured_role_keys_replace_the_defaults():
    record = {"conversations": [{"from": "me", "value": "hi"}, {"from": "bot", "value": "hello"}]}
    read = get_reader("lmms")
    sample = read(record, "d:1", ReadOptions(user_key="me", assistant_key="bot"))
    assert sample.turns == (Turn("user", "hi"), Turn("assistant", "hello"))
    refused = read(record, "d:1", ReadOptions())
    assert refused.kind == "unknown_role" and "turn 1 has role 'me'" in refused.problem
    assert "--user-key" in refused.fix


def test_text_only_records_are_samples_and_a_system_turn_becomes_the_system_prompt():
    turns = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hi"},
    ]
    record = {"conversations": turns}
    sample = get_reader("llava")(record, "d:1", ReadOptions())
    assert (sample.system, sample.media, len(sample.turns)) == ("Be brief.", (), 2)


def test_a_video_path_without_extension_is_a_frame_folder():
    record = {"videos": ["clips/v1", "clips/v2.mp4"], "conversations": [
        {"from": "human", "value": "<video><video>Same?"}, {"from": "gpt", "value": "No."}]}  # fmt: skip
    sample = get_reader("sharegpt")(record, "d:1", ReadOptions(video_folder="/v"))
    assert sample.media == (Media("frames", "/v/clips/v1"), Media("video", "/v/clips/v2.mp4"))


def conv(*texts: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]


BAD_RECORDS = [  # (record as JSON text, kind, words the problem must contain)
    ('{"id": "a", "conversations": [{"from": "human", "value": "hi"}, ]}', "json_syntax", "a trailing comma at line"),
    ("[1, 2]", "not_an_object", "not a JSON object"),
    (json.dumps({"id": "c", "image": "x.jpg"}), "missing_key", "no list of turns"),
    (json.dumps({"id": "d", "conversations": [{"from": "human"}]}), "bad_turn", "turn 1 is"),
    (json.dumps({"id": "e", "conversations": [{"from": "robot", "value": "x"}]}), "unknown_role", "role 'robot'"),
    (json.dumps({"id": "f", "conversations": conv("a", "b")[::-1]}), "role_order", "turn 1 is from the assistant"),
    (json.dumps({"id": "g", "conversations": conv("a", "b", "c")}), "role_order", "ends with a user turn"),
    (json.dumps({"id": "h", "conversations": []}), "empty_conversation", "no turns"),
    (json.dumps({"id": "i", "image": "x.jpg", "conversations": conv("<image><image>a", "b")}), "placeholder_count",
     "2 <image> placeholders but 1 image path"),
    (json.dumps({"id": "j", "conversations": conv("a", "<image>b"), "image": "x.jpg"}), "media_in_assistant_turn",
     "turn 2 (assistant)"),
    (json.dumps({"id": "k", "image": "../../etc/passwd", "conversations": conv("<image>", "b")}), "outside_root",
     "outside its root folder"),
    (json.dumps({"id": "l", "image": 7, "conversations": conv("<image>", "b")}), "bad_media_path", "'image' must be"),
    (json.dumps({"id": "m", "conversations": [*conv("a", "b"), {"from": "system", "value": "s"}, *conv("c", "d")]}),
     "role_order", "turn 3 is a system turn"),
    ('{"id": "", "conversations": [{"from": "human", "value": "hi"', "json_syntax", "the record ends early"),
    (json.dumps({"id": "o", "conversations": conv("\ud800 <- half a character", "b")}), "json_syntax",
     "a lone UTF-16 surrogate escape \\ud800 at line 16, column 59"),
    ('{"id": "p", "conversations": ' + "[" * 3000 + "]" * 3000 + "}", "json_syntax", "nests lists and objects too"),
    (json.dumps({"id": "q", "image": "x.jpg", "conversations": [{"from": "system", "value": "Look: <image>"},
                                                                *conv("a", "b")]}),
     "media_in_system_prompt", "the system prompt contains a media placeholder"),
    (json.dumps({"id": "r", "system_prompt": "<video>", "video": "v.mp4", "conversations": conv("a", "b")}),
     "media_in_system_prompt", "the system prompt contains a media placeholder"),
]  # fmt: skip


def test_every_bad_record_kind_is_reported_with_its_line_and_id_and_the_counts_add_up(tmp_path):
    good = json.dumps({"id": "ok", "image": "x.jpg", "conversations": conv(QUESTION, ANSWER)})
    lines = [good] + [text for text, _, _ in BAD_RECORDS] + ["", good]  # a blank line is not a record
    loaded = load(tmp_path, "\n".join(lines) + "\n", image_folder=str(tmp_path))
    assert loaded.total == len(BAD_RECORDS) + 2 == len(loaded.dataset) + len(loaded.problems)
    assert [row["where"].rsplit(":", 1)[1] for row in loaded.dataset] == ["1", str(len(BAD_RECORDS) + 3)]
    for problem, (_, kind, words), line in zip(loaded.problems, BAD_RECORDS, range(2, 100), strict=False):
        assert (problem.kind, problem.where) == (kind, f"{tmp_path / 'data.jsonl'}:{line}"), problem
        assert words in problem.problem and problem.fix
    ids = [p.id for p in loaded.problems]
    # "a", "o" and "p" are read from JSON that does not parse; the broken record with `"id": ""` has an empty id
    assert ids == ["a", "", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "", "o", "p", "q", "r"]
    assert loaded.problems[0].problem == "a trailing comma at line 2, column 63 before ']'"


def test_a_lone_surrogate_in_any_string_costs_its_record_only_and_a_pair_is_a_character(tmp_path):
    records = [
        {"id": "pair", "conversations": conv("\U0001f600 smile", "b")},  # written as a surrogate pair
        {"id": "lone", "conversations": conv("a", "b"), "note": {"deep": ["\udfff"]}},
        {"id": "escaped", "conversations": conv("a backslash: \\ud800", "b")},
    ]  # text, not an escape
    loaded = load(tmp_path, jsonl(*records))
    assert [row["id"] for row in loaded.dataset] == ["pair", "escaped"]
    assert loaded.dataset[0]["turns"][0]["text"] == "\U0001f600 smile"
    (lone,) = loaded.problems
    assert (lone.id, lone.kind, lone.where) == ("lone", "json_syntax", f"{tmp_path / 'data.jsonl'}:2")
    assert "surrogate escape \\udfff at line 2" in lone.problem and "both halves" in lone.fix


def test_cr_only_line_ends_are_line_ends(tmp_path):
    records = [{"id": str(i), "conversations": conv("a", "b")} for i in range(3)]
    text = "\r".join(json.dumps(r) for r in records) + "\r"
    loaded = load(tmp_path, text)
    assert loaded.total == 3 and [row["id"] for row in loaded.dataset] == ["0", "1", "2"]
    assert [row["where"].rsplit(":", 1)[1] for row in loaded.dataset] == ["1", "2", "3"]
    mixed = jsonl(records[0]) + json.dumps(records[1]) + "\r" + json.dumps(records[2]) + "\r\n" + "{broken\n"
    loaded = load(tmp_path, mixed, "mixed.jsonl")
    assert loaded.total == 4 and [p.where.rsplit(":", 1)[1] for p in loaded.problems] == ["4"]


def test_jsonl_shards_count_bare_cr_line_ends_like_the_reader(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"pad": "x" * 200})
    path.write_bytes(b"".join((line + ("\r" if i % 3 == 0 else "\n" if i % 3 == 1 else "\r\n")).encode()
                              for i in range(6000)))  # fmt: skip
    shards = jsonl_shards(str(path), 3)
    assert len(shards) == 3
    assert [r.line for shard in shards for r in iter_raw_records(str(path), shard)] == list(range(1, 6001))


def test_line_breaks_counted_across_block_ends_with_and_without_bare_cr():
    """`jsonl_shards` counts line ends block by block; a block without any `\\r` takes a one-pass count, which must
    still join a `\\r\\n` split between two blocks into one line end."""
    from framelm.training.data.jsonio import _line_breaks

    for text in (b"a\r\nb\nc\r\n", b"a\rb\r\nc\n\n", b"\r\n\r\n", b"x\ny\r"):
        whole = _line_breaks(text, False)
        assert whole == len(text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")) - 1
        for cut in range(len(text) + 1):
            first, second = text[:cut], text[cut:]
            assert _line_breaks(first, False) + _line_breaks(second, first.endswith(b"\r")) == whole, (text, cut)


def test_paths_outside_the_root_are_accepted_when_allowed():
    record = {"image": "/elsewhere/x.jpg", "conversations": conv("<image>", "b")}
    read = get_reader("llava")
    assert read(record, "d:1", ReadOptions(image_folder="/data")).kind == "outside_root"
    assert read(record, "d:1", ReadOptions(image_folder="/data", allow_outside_root=True)).media[0].path == (
        "/elsewhere/x.jpg"
    )
    # with no folder named, the data file's own folder is the root: the same rule
    refused = read(record, "d:1", ReadOptions(base_dir="/data"))
    assert refused.kind == "outside_root" and "--allow-outside-root" in refused.fix


def test_jsonl_syntax_errors_name_line_and_column():
    with pytest.raises(JSONRecordError, match="a single-quoted string at line 4, column 2"):
        parse_record(b"{'a': 1}", 4, 1)
    with pytest.raises(JSONRecordError, match=r"the record ends early at line 9, column 10 \(Expecting ','"):
        parse_record(b'{"a": 1', 9, 3)
    assert parse_record(b'{"a": NaN}', 1, 1)["a"] != 0  # NaN is accepted, as Python's json does


def test_pretty_printed_single_object_and_byte_order_mark(tmp_path):
    record = {"id": "p", "image": "x.jpg", "conversations": conv(QUESTION, ANSWER)}
    loaded = load(tmp_path, "\ufeff" + json.dumps(record, indent=2), "one.json")
    assert len(loaded.dataset) == 1 and loaded.dataset[0]["where"].endswith("one.json:1")


def test_jsonl_shards_cover_every_line_once(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"n": i, "pad": "x" * 200}) + "\n" for i in range(6000)))
    shards = jsonl_shards(str(path), 3)
    assert len(shards) == 3 and shards[0][0] == 0 and shards[-1][1] == path.stat().st_size
    records = [r for shard in shards for r in iter_raw_records(str(path), shard)]
    assert [r.line for r in records] == list(range(1, 6001))
    assert [json.loads(r.text)["n"] for r in records] == list(range(6000))


# --- fuzzing: a reader returns a sample or a problem for anything, never raises ---------------------------------


@settings(max_examples=300, deadline=None)
@given(record=fuzz_record | json_values, fmt=st.sampled_from(["llava", "lmms", "sharegpt"]))
def test_readers_never_raise_on_malformed_records(record, fmt):
    result = get_reader(fmt)(record, "fuzz:1", ReadOptions(base_dir="/data", image_folder="/img"))
    assert isinstance(result, (Sample, RecordProblem))
    if isinstance(result, RecordProblem):
        assert result.where == "fuzz:1" and result.problem and result.fix and result.kind
    else:
        assert all(isinstance(t.text, str) and t.role in ("user", "assistant") for t in result.turns)
        assert all(m.kind in ("image", "video", "frames") and isinstance(m.path, str) for m in result.media)
        n_marks = sum(t.text.count("<image>") + t.text.count("<video>") for t in result.turns)
        assert n_marks == len(result.media)
        assert detect_format([record]) in ("llava", "lmms", "sharegpt")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet='[]{},:"\\/ \n\tab1<>*', max_size=80))
def test_splitting_and_parsing_arbitrary_file_text_never_raises(tmp_path, text):
    path = tmp_path / "fuzz.json"
    path.write_text(text, encoding="utf-8")
    for raw in iter_raw_records(str(path)):
        assert raw.line >= 1 and raw.column >= 1
        if raw.error:
            continue
        try:
            parse_record(raw.text, raw.line, raw.column)
        except JSONRecordError as err:
            assert "line" in err.problem and err.fix


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(fuzz_record | json_values, min_size=1, max_size=12))
def test_a_file_of_random_records_is_read_whole_and_every_line_accounted_for(tmp_path_factory, records):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "fuzz.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = load_samples(DataArguments(dataset=str(path), cache_dir=str(folder / "cache"), image_folder="/img"))
    assert loaded.total == len(records) == len(loaded.dataset) + len(loaded.problems)
    wheres = list(loaded.dataset["where"]) + [p.where for p in loaded.problems]
    lines = sorted(int(w.rsplit(":", 1)[1]) for w in wheres)
    assert lines == list(range(1, len(records) + 1))
