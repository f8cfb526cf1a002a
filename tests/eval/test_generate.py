"""`framelm generate`: complete and resumable output, bad prompts reported and skipped, greedy == model.generate."""

import json

from support.broken_media import png_claiming

from framelm.training.cli import main as cli
from framelm.training.eval.prompts import answered_keys


def write_prompts(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_answers(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_generation_answers_every_good_prompt_and_reports_the_bad_one(
    tiny_model_dir, tiny_model, tiny_processor, make_image, make_mp4, tmp_path, capsys
):
    make_image("red.png"), make_mp4("clip.mp4", num_frames=10)
    prompts = write_prompts(tmp_path / "prompts.jsonl", [
        {"video": "clip.mp4", "text": "Can you describe the scene?", "category": "conv", "question_id": 0},
        {"image": "red.png", "text": "What colour is the shape?", "category": "detail", "question_id": 1},
        {"video": "missing.mp4", "text": "Where is it?", "category": "conv", "question_id": 2},
        {"text": "Say hello.", "category": "conv", "question_id": 3},
    ])  # fmt: skip
    out = tmp_path / "answers.jsonl"
    argv = ["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--output-file", str(out),
            "--media-base-path", str(tmp_path), "--greedy", "--max-new-tokens", "5", "--batch-size", "2",
            "--max-bad-fraction", "0.3"]  # fmt: skip
    assert cli(argv) == 1  # a failed prompt makes the exit code non-zero ...
    answers = read_answers(out)
    assert [a["question_id"] for a in answers] == [0, 1, 3]  # ... but every other prompt is answered
    assert "1 failed (2)" in capsys.readouterr().out
    first = answers[0]
    assert set(first) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert first["prompt"] == "Can you describe the scene?" and first["model_id"] == tiny_model_dir.name
    assert first["metadata"]["category"] == "conv" and first["metadata"]["video"] == "clip.mp4"

    # greedy output equals model.generate on the same inputs (here: the image prompt alone, unpadded)
    messages = tiny_processor.build_messages("What colour is the shape?", images=[str(tmp_path / "red.png")])
    inputs = tiny_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                return_dict=True, return_tensors="pt")  # fmt: skip
    generated = tiny_model.generate(**inputs, max_new_tokens=5, do_sample=False)
    expected = tiny_processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    assert answers[1]["text"] == expected.strip()


def test_a_rerun_skips_answered_ids_and_redoes_a_torn_line(tiny_model_dir, tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"text": f"Count to {n}.", "question_id": n} for n in range(3)])
    out = tmp_path / "a.jsonl"
    argv = ["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--output-file", str(out), "--greedy",
            "--max-new-tokens", "3"]  # fmt: skip
    assert cli(argv) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])  # killed while writing the third line
    assert answered_keys(out) == {"0", "1"}
    assert out.read_text() == lines[0] + lines[1]  # the torn line was cut off
    assert cli(argv) == 0
    assert "2 already answered, 1 answered now, 0 failed" in capsys.readouterr().out
    answers = read_answers(out)
    assert [a["question_id"] for a in answers] == [0, 1, 2]  # no duplicate, no torn line
    assert cli(argv) == 0 and len(read_answers(out)) == 3  # a complete file: nothing to do


def test_left_padded_batch_gives_the_same_greedy_answers_as_one_by_one(tiny_model_dir, tmp_path):
    questions = ["Say hello.", "What comes after two? Answer with one word please.", "Answer yes."]
    prompts = write_prompts(tmp_path / "p.jsonl", [{"text": q, "question_id": i} for i, q in enumerate(questions)])
    texts = {}
    for batch_size in (1, 3):
        out = tmp_path / f"a{batch_size}.jsonl"
        cli(["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--output-file", str(out), "--greedy",
             "--max-new-tokens", "6", "--batch-size", str(batch_size)])  # fmt: skip
        texts[batch_size] = [a["text"] for a in read_answers(out)]
    assert texts[1] == texts[3]


def test_sampling_options_reach_generate(tiny_model_dir, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"text": "Say hello.", "question_id": 0}])
    runs = []
    for seed in (1, 1, 2):
        out = tmp_path / f"a{len(runs)}.jsonl"
        sampling = ["--temperature", "5.0", "--top-k", "0", "--top-p", "1.0", "--max-new-tokens", "8"]
        cli(["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--output-file", str(out), *sampling,
             "--seed", str(seed)])  # fmt: skip
        answer = read_answers(out)[0]
        runs.append(answer["text"])
    assert answer["metadata"]["generation"] == {"max_new_tokens": 8, "repetition_penalty": 1.0, "do_sample": True,
                                                 "temperature": 5.0, "top_p": 1.0, "top_k": None}  # fmt: skip
    assert runs[0] == runs[1]  # same seed, same sample
    assert len(set(runs)) > 1  # a hot sampler with another seed says something else


# --- prompt files: each bad line is one reported prompt, never a lost answer -----------------------------------

BAD_PROMPTS = [  # (line, kind, words of the problem)
    ('{"question_id": 10, "text": "hi",}', "json_syntax", "a trailing comma at line 2"),
    ('["question_id", 11]', "not_an_object", "the line is a JSON list, not an object"),
    ('{"question_id": [12], "text": "hi"}', "bad_question_id", "question_id [12]: an answer could not be matched"),
    ('{"text": "hi"}', "bad_question_id", "no question_id"),
    ('{"question_id": true, "text": "hi"}', "bad_question_id", "question_id True"),
    ('{"question_id": 13, "text": ["hi"]}', "bad_text", "'text' is ['hi'], not a string"),
    ('{"question_id": 14}', "bad_text", "no 'text'"),
    ('{"question_id": 15, "text": "hi", "image": 7}', "bad_media_path", "'image' is 7, not a path"),
    ('{"question_id": 16, "text": "hi", "video": [["a.mp4"]]}', "bad_media_path", "'video' is [['a.mp4']], not a"),
    ('{"question_id": "1", "text": "hi"}', "duplicate_id", "question_id '1' is already used at"),
    ('{"question_id": 1, "text": "hi again"}', "duplicate_id", "question_id 1 is already used at"),
]


def test_every_bad_prompt_line_is_reported_with_its_line_and_the_counts_add_up(tmp_path):
    from framelm.training.eval.prompts import read_prompts

    path = tmp_path / "p.jsonl"
    lines = ['{"question_id": 1, "text": "first"}'] + [line for line, _, _ in BAD_PROMPTS] + ['{"question_id": "a"}']
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")  # a byte order mark on line 1
    read = read_prompts(str(path))
    assert read.total == len(lines) == len(read.prompts) + len(read.problems)
    assert [(p.key, p.where) for p in read.prompts] == [("1", f"{path}:1")]
    for problem, (_, kind, words), line in zip(read.problems, BAD_PROMPTS, range(2, 100), strict=False):
        assert (problem.kind, problem.where) == (kind, f"{path}:{line}"), problem
        assert words in problem.problem and problem.fix
    assert read.problems[-1].kind == "bad_text"  # {"question_id": "a"} has no text
    assert read.problems[-2].problem == f"question_id 1 is already used at {path}:1"


def test_bad_prompts_never_cost_an_answer_and_duplicates_are_answered_once(tiny_model_dir, tmp_path, capsys, caplog):
    (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\ufeff" + "\n".join([
        '{"question_id": 0, "text": "Say yes."}',
        '{"text": "no id: answering it would lose the answer"}',
        '{"question_id": 2, "text": "Say no."}',
        '{"question_id": "0", "text": "Say yes again."}',
        "{not json",
        '{"question_id": 5, "text": "What is it?", "image": "bomb.png"}',
    ]) + "\n", encoding="utf-8")  # fmt: skip
    out = tmp_path / "answers.jsonl"
    argv = ["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--output-file", str(out), "--greedy",
            "--max-new-tokens", "3", "--batch-size", "8"]  # fmt: skip
    assert cli(argv) == 1
    assert [a["question_id"] for a in read_answers(out)] == [0, 2]  # the whole batch answered, none twice
    printed = capsys.readouterr().out
    assert f"6 prompts: 0 already answered, 2 answered now, 4 failed ({prompts}:2, 0, {prompts}:5, 5)" in printed
    assert "too large to decode safely" in caplog.text  # the decompression bomb, reported for its prompt


def test_a_corrupt_line_in_the_answer_file_is_left_in_place_and_its_question_answered(tiny_model_dir, tmp_path):
    from framelm.training.eval.prompts import answered_keys

    prompts = write_prompts(tmp_path / "p.jsonl", [{"text": f"Count to {n}.", "question_id": n} for n in range(3)])
    out = tmp_path / "a.jsonl"
    out.write_text('{"question_id": "0", "text": "done"}\n{"question_id": 1, "te\x00\n[1, 2]\n')
    assert answered_keys(out) == {"0"}  # "0" and 0 are one question
    argv = ["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--output-file", str(out), "--greedy",
            "--max-new-tokens", "3"]  # fmt: skip
    assert cli(argv) == 0
    lines = out.read_text().splitlines()
    assert lines[:3] == ['{"question_id": "0", "text": "done"}', '{"question_id": 1, "te\x00', "[1, 2]"]
    assert [json.loads(line)["question_id"] for line in lines[3:]] == [1, 2]
    assert answered_keys(out) == {"0", "1", "2"}
