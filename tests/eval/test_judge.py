"""`framelm judge`: score arithmetic, both answer formats, retries, the review cache, and the HTTP judge against real
servers on 127.0.0.1: a scripted `http.server` for the fault cases and `transformers serve` with a tiny random LM.

    pytest tests/eval/test_judge.py            # add -m "not slow" to leave out the `transformers serve` test
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.judge_bench import (
    API_KEY,
    QUESTIONS,
    candidate_answer,
    judge_args,
    prepare_bench,
    question_of,
    reference_answer,
    table_rows,
)

from framelm.training.cli import main as framelm_main
from framelm.training.eval.judge.backends import JudgeUnavailableError
from framelm.training.eval.judge.http_judge import OpenAIChatJudge, base_url
from framelm.training.eval.judge.protocol import RETRY_PROMPT, parse_scores, summarize


def judge_main(argv: list[str]) -> int:
    """`framelm judge ARGV` as the command line runs it: errors are one line and an exit code."""
    return framelm_main(["judge", *argv])


# What the scripted judge replies to each question's candidate answer; a list is one reply per attempt.
REPLIES = {
    1: "8 6\nAssistant 1 names the colour, Assistant 2 hedges.",
    2: "9, 9\nBoth are right.",  # comma-separated, as LLaVA's parser allows
    3: "10 5\nAssistant 2 leaves out the window.",
    4: ["Both answers are fine."] * 3,  # never parseable: counted, not scored
    5: ["Assistant 1: 6/10, Assistant 2: 3/10", "6 3\nAssistant 2 misreads the clock."],  # parses on the retry
}


class ScriptedServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 whose answers a test scripts: `handle(request) -> response`.

    `handle` gets {"path", "headers", "body"} and returns (status, json-able payload or text, seconds to wait first).
    Every request is recorded, so tests can count judge calls and check what was sent.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.handle = self.judge_replies
        self.calls_per_question: dict[tuple[str, int], int] = {}  # (judge name, question id) -> judge calls
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {name.title(): value for name, value in self.headers.items()}  # httpx sends lower case
                request = {"path": self.path, "headers": headers, "body": body}
                outer.requests.append(request)
                status, payload, delay = outer.handle(request)
                time.sleep(delay)
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                try:
                    self.send_response(status)
                    if not isinstance(payload, str):
                        self.send_header("Content-Type", "application/json")
                    if 300 <= status < 400:
                        self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: the timeout case
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @staticmethod
    def completion(text: str) -> dict:
        return {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        }

    def judge_replies(self, request: dict) -> tuple[int, dict, float]:
        """Reply from REPLIES by the question of the candidate answer in the prompt, one entry per attempt."""
        question = question_of(request["body"]["messages"][1]["content"])
        key = (request["body"]["model"], question)
        attempt = self.calls_per_question.get(key, 0)
        self.calls_per_question[key] = attempt + 1
        replies = REPLIES[question]
        reply = replies if isinstance(replies, str) else replies[min(attempt, len(replies) - 1)]
        return 200, self.completion(reply), 0.0

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


@pytest.fixture
def bench(tmp_path, monkeypatch) -> dict[str, Path]:
    return prepare_bench(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    "reply, scores",
    [
        ("8 7\nexplanation", [8.0, 7.0]),
        ("8, 7", [8.0, 7.0]),
        ("\n  7.5 6\n", [7.5, 6.0]),
        ("10 0", [10.0, 0.0]),
        ("8 7 6", None),
        ("Scores: 8 7", None),
        ("Assistant 1 gets 8.\n8 7", None),  # the scores must be on the first line
        ("nan nan", None),
        ("80 70", None),
        ("", None),
    ],
)
def test_parse_scores_reads_two_numbers_on_the_first_line(reply, scores):
    assert parse_scores(reply) == scores


def test_scores_relative_scores_and_unparseable_counts_from_known_replies(server, bench, tmp_path, capsys):
    output = tmp_path / "reviews.json"
    assert judge_main(judge_args(bench, output, "--judge-url", server.url, "--judge-name", "judge-x")) == 0
    rows = table_rows(capsys.readouterr().out)
    # Scored replies (reference, candidate): conv q1 (8, 6), q2 (9, 9); detail q3 (10, 5); complex q5 (6, 3) on its
    # second attempt; complex q4 never parses. Columns: 10 x mean(reference), 10 x mean(candidate),
    # 100 x mean(candidate) / mean(reference), scored, unparseable.
    #   conv:    10 x (8 + 9) / 2 = 85.0;   10 x (6 + 9) / 2 = 75.0;   100 x 7.5 / 8.5 = 88.235 -> 88.2
    #   detail:  100.0; 50.0; 100 x 5 / 10 = 50.0
    #   complex: only q5: 60.0; 30.0; 50.0; one unparseable (q4)
    #   all:     10 x (8 + 9 + 10 + 6) / 4 = 82.5;   10 x (6 + 9 + 5 + 3) / 4 = 57.5;   100 x 5.75 / 8.25 -> 69.7
    assert rows == {
        "all": ["82.5", "57.5", "69.7", "4", "1"],
        "llava_bench_complex": ["60.0", "30.0", "50.0", "1", "1"],
        "llava_bench_conv": ["85.0", "75.0", "88.2", "2", "0"],
        "llava_bench_detail": ["100.0", "50.0", "50.0", "1", "0"],
    }
    saved = json.loads(output.read_text())
    overall = next(row for row in saved["summary"] if row["category"] == "all")
    assert overall["relative"] == pytest.approx(100 * 5.75 / 8.25) and overall["unparseable"] == 1
    reviews = {review["question_id"]: review for review in saved["reviews"]}
    assert reviews[1]["scores"] == [8.0, 6.0] and reviews[1]["attempts"] == 1 and reviews[1]["status"] == "scored"
    assert reviews[1]["category"] == "llava_bench_conv" and reviews[1]["judge"] == "judge-x"
    assert (reviews[1]["reference_model"], reviews[1]["candidate_model"]) == ("gpt", "ours")
    assert reviews[5]["attempts"] == 2 and reviews[5]["scores"] == [6.0, 3.0]
    assert reviews[5]["rejected_replies"] == ["Assistant 1: 6/10, Assistant 2: 3/10"]
    assert reviews[4]["status"] == "unparseable" and reviews[4]["scores"] is None and reviews[4]["attempts"] == 3
    assert reviews[4]["reply"] == "Both answers are fine." and len(reviews[4]["rejected_replies"]) == 2
    assert server.calls_per_question == {
        ("judge-x", 1): 1,
        ("judge-x", 2): 1,
        ("judge-x", 3): 1,
        ("judge-x", 4): 3,
        ("judge-x", 5): 2,
    }


def test_prompts_pair_answers_by_id_across_both_response_formats(server, bench, tmp_path):
    assert judge_main(judge_args(bench, tmp_path / "r.json", "--judge-url", server.url, "--judge-name", "j")) == 0
    first_asks = [request for request in server.requests if len(request["body"]["messages"]) == 2]
    assert len(first_asks) == len(QUESTIONS)
    captions = {"a.jpg": "a red kettle\na window", "b.jpg": "a cyclist at 8:58"}
    rules = json.loads(bench["rule.json"].read_text())
    for request in first_asks:
        system, user = request["body"]["messages"]
        question = question_of(user["content"])
        _, category, image = QUESTIONS[question - 1]
        assert system["role"] == "system" and user["role"] == "user"
        assert user["content"] == (  # LLaVA's eval_gpt_review_bench.py prompt, character for character
            f"[Context]\n{captions[image]}\n\n[Question]\nquestion {question}?\n\n"
            f"[Assistant 1]\n{reference_answer(question)}\n\n[End of Assistant 1]\n\n"
            f"[Assistant 2]\n{candidate_answer(question)}\n\n[End of Assistant 2]\n\n"
            f"[System]\n{rules['llava_bench_' + category]['prompt']}\n\n"
        )
        assert request["body"]["model"] == "j" and request["body"]["temperature"] == 0.0
        assert request["path"] == "/v1/chat/completions"


def test_llava_bench_rule_wins_over_the_bare_category_which_is_the_fallback(server, bench, tmp_path, capsys):
    # LLaVA's own rule.json also has "conv", "detail" and "complex": its COCO prompts, which speak of bounding boxes.
    rules = json.loads(bench["rule.json"].read_text())
    rules |= {category: {"role": "Assistant", "prompt": "COCO boxes"} for category in ("conv", "detail", "complex")}
    del rules["llava_bench_detail"]  # "detail" questions fall back to the bare key
    bench["rule.json"].write_text(json.dumps(rules))
    assert judge_main(judge_args(bench, tmp_path / "r.json", "--judge-url", server.url, "--judge-name", "j")) == 0
    prompts = {question_of(r["body"]["messages"][1]["content"]): r["body"]["messages"][1]["content"]
               for r in server.requests}  # fmt: skip
    assert prompts[1].endswith("[System]\nRate the conv answers.\n\n")
    assert prompts[4].endswith("[System]\nRate the reasoning.\n\n") and prompts[3].endswith("[System]\nCOCO boxes\n\n")
    out = capsys.readouterr().out
    assert set(table_rows(out)) == {"all", "llava_bench_conv", "llava_bench_complex"}
    assert re.search(r"^detail +100\.0 +50\.0 +50\.0 +1 +0$", out, re.MULTILINE)  # q3 "10 5", under its rule key


def test_retry_quotes_the_unreadable_reply_and_restates_the_format(server, bench, tmp_path):
    judge_main(judge_args(bench, tmp_path / "r.json", "--judge-url", server.url, "--judge-name", "j"))
    retries = [request["body"]["messages"] for request in server.requests if len(request["body"]["messages"]) == 4]
    assert len(retries) == 3  # q4: attempts 2 and 3; q5: attempt 2
    q5 = next(messages for messages in retries if question_of(messages[1]["content"]) == 5)
    assert q5[2] == {"role": "assistant", "content": "Assistant 1: 6/10, Assistant 2: 3/10"}
    assert q5[3] == {"role": "user", "content": RETRY_PROMPT.format(role="Assistant")}


def test_rerun_reuses_cached_reviews_and_redoes_only_stale_or_requested_ones(server, bench, tmp_path, capsys):
    output = tmp_path / "reviews.json"
    args = judge_args(bench, output, "--judge-url", server.url, "--judge-name", "j")
    assert judge_main(args) == 0
    first_table, first_file, calls = capsys.readouterr().out, output.read_text(), len(server.requests)

    assert judge_main(args) == 0  # nothing changed: no judge call at all
    assert len(server.requests) == calls and output.read_text() == first_file
    assert table_rows(capsys.readouterr().out) == table_rows(first_table)

    lines = bench["cand.jsonl"].read_text().replace(candidate_answer(3), candidate_answer(3) + " ").splitlines()
    bench["cand.jsonl"].write_text("\n".join(lines) + "\n")  # q3's candidate changed: its cached review is stale
    assert judge_main(args) == 0
    assert [question_of(r["body"]["messages"][1]["content"]) for r in server.requests[calls:]] == [3]

    assert judge_main([*args, "--retry-unparseable"]) == 0  # q4, unparseable, is asked again (3 attempts)
    assert [question_of(r["body"]["messages"][1]["content"]) for r in server.requests[calls + 1 :]] == [4, 4, 4]

    other_judge = judge_args(bench, output, "--judge-url", server.url, "--judge-name", "another-judge")
    assert judge_main(other_judge) == 0  # the judge is part of the key: all five asked, the old ones kept
    assert len(server.requests) == calls + 4 + 8
    assert {review["judge"] for review in json.loads(output.read_text())["reviews"]} == {"j", "another-judge"}


def test_interrupted_run_saves_its_reviews_and_the_rerun_resumes(server, bench, tmp_path, capsys):
    output = tmp_path / "reviews.json"
    healthy = server.judge_replies
    server.handle = lambda request: (
        (500, {"error": "overloaded"}, 0.0) if len(server.requests) > 2 else healthy(request)
    )
    args = judge_args(bench, output, "--judge-url", server.url, "--judge-name", "j", "--http-retries", "1")
    assert judge_main([*args, "--save-every", "100", "--parallel", "1"]) == 1  # one at a time: q3 is the first 500
    assert "failed 2 times" in capsys.readouterr().err
    assert [review["question_id"] for review in json.loads(output.read_text())["reviews"]] == [1, 2]

    server.handle = healthy
    before = len(server.requests)
    assert judge_main(args) == 0
    asked = [question_of(r["body"]["messages"][1]["content"]) for r in server.requests[before:]]
    assert sorted(set(asked)) == [3, 4, 5]  # q1 and q2 came from the file
    assert table_rows(capsys.readouterr().out)["all"] == ["82.5", "57.5", "69.7", "4", "1"]
    assert not list(output.parent.glob(".*.tmp"))  # the temporary file was renamed into place


def test_judge_url_can_come_from_the_environment(server, bench, tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMELM_JUDGE_URL", server.url + "/chat/completions")
    assert judge_main(judge_args(bench, tmp_path / "r.json", "--judge-name", "j")) == 0
    assert len(server.requests) == 8


def test_http_judge_retries_server_errors_and_timeouts_with_backoff(server, caplog):
    answers = iter(
        [
            (500, "boom", 0.0),
            (503, "busy", 0.0),
            (200, server.completion("7 7"), 1.0),
            (200, server.completion("6 5"), 0.0),
        ]
    )
    server.handle = lambda request: next(answers)
    judge = OpenAIChatJudge(server.url, "j", API_KEY, timeout=0.3, retries=3, backoff=0.01)
    with caplog.at_level(logging.WARNING):
        assert judge.chat([{"role": "user", "content": "hi"}]) == "6 5"  # the 1 s answer timed out at 0.3 s
    assert len(server.requests) == 4
    assert [record.getMessage().split(": ", 1)[1] for record in caplog.records] == [
        "HTTP 500 boom; retry 1 of 3 in 0.0 s",
        "HTTP 503 busy; retry 2 of 3 in 0.0 s",
        "no complete reply within 0.3 s; retry 3 of 3 in 0.0 s",
    ]


def test_http_judge_gives_up_after_its_retries(server):
    server.handle = lambda request: (502, "bad gateway", 0.0)
    judge = OpenAIChatJudge(server.url, "j", None, retries=2, backoff=0.0)
    with pytest.raises(JudgeUnavailableError, match=r"failed 3 times \(last: HTTP 502 bad gateway\).*--http-retries"):
        judge.chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    "status, payload, message",
    [
        (401, "invalid key {auth}", r"HTTP 401: invalid key Bearer \*\*\*; check the API key .*--api-key-env"),
        (404, "not found", r"HTTP 404: not found; check --judge-url"),
        (400, "Server is pinned to 'x'", r"HTTP 400: Server is pinned to 'x'; check --judge-name"),
        (302, "", r"HTTP 302 to http://127.0.0.1:9/elsewhere: .*pass the final URL"),
    ],
)
def test_http_judge_stops_at_once_on_answers_retrying_cannot_fix(server, status, payload, message):
    server.handle = lambda request: (status, payload.format(auth=request["headers"]["Authorization"]), 0.0)
    judge = OpenAIChatJudge(server.url, "j", API_KEY, retries=3, backoff=0.0)
    with pytest.raises(JudgeUnavailableError, match=message) as raised:
        judge.chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1 and API_KEY not in str(raised.value)  # the echoed key is redacted


def test_api_key_is_sent_but_never_logged_or_saved(server, bench, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    output = tmp_path / "reviews.json"
    healthy = server.judge_replies
    flaky = iter([(500, "down", 0.0)])  # one retry, so the warning path is exercised too
    server.handle = lambda request: next(flaky, None) or healthy(request)
    assert judge_main(judge_args(bench, output, "--judge-url", server.url, "--judge-name", "j")) == 0
    server.handle = lambda request: (401, f"bad key {request['headers']['Authorization']}", 0.0)
    assert judge_main([*judge_args(bench, output, "--judge-url", server.url, "--judge-name", "j2")]) == 1
    captured = capsys.readouterr()
    assert {request["headers"]["Authorization"] for request in server.requests} == {f"Bearer {API_KEY}"}
    assert "HTTP 401: bad key Bearer ***" in captured.err and "HTTP 500 down; retry 1 of 5" in caplog.text
    for text in (
        captured.out,
        captured.err,
        caplog.text,
        output.read_text(),
        repr(OpenAIChatJudge("u", "j", API_KEY)),
    ):
        assert API_KEY not in text


def test_http_judge_retries_a_reply_that_is_no_chat_completion_then_names_the_fix(server):
    server.handle = lambda request: (200, "<html>hello</html>", 0.0)
    judge = OpenAIChatJudge(server.url, "j", API_KEY, retries=2, backoff=0.0)
    message = r"failed 3 times \(last: the reply is not an OpenAI chat completion: '<html>hello</html>'\); check that"
    with pytest.raises(JudgeUnavailableError, match=message + " --judge-url is a chat-completions endpoint"):
        judge.chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3 and judge.failures == {"unreadable reply": 3}


def test_judge_url_is_a_base_url_or_the_endpoint():
    assert base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    assert base_url("http://h/v1/chat/completions") == "http://h/v1"


def test_summary_without_scores_reports_none_not_zero():
    from framelm.training.eval.judge.protocol import Review

    review = Review(1, "llava_bench_conv", "a", "b", "j", "unparseable", None, 3, "?", ["?", "?"], "0")
    zero = Review(2, "llava_bench_detail", "a", "b", "j", "scored", [0.0, 4.0], 1, "0 4", [], "0")
    rows = {row["category"]: row for row in summarize([review, zero])}
    conv = rows["llava_bench_conv"]
    assert (conv["reference"], conv["candidate"], conv["relative"], conv["scored"], conv["unparseable"]) == (
        None, None, None, 0, 1
    )  # fmt: skip
    assert rows["llava_bench_detail"]["candidate"] == 40.0 and rows["llava_bench_detail"]["relative"] is None


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cand.jsonl", '{"response_id": 1, "response": "x"}', r"cand.jsonl: no answer to 4 of 5 questions"),
        ("cand.jsonl", '{"id": 1, "answer": "x"}', r"cand.jsonl:1: a response needs 'question_id' and 'text'"),
        ("cand.jsonl", "{not json", r"cand.jsonl:1: not valid JSON"),
        ("rule.json", '{"llava_bench_conv": {"role": "A", "prompt": "p"}}', r"jsonl:3: category 'detail' has no rule"),
        ("context.jsonl", '{"image": "a.jpg", "caption": "x"}', r"questions.jsonl:2: 'b.jpg' has no caption"),
        ("questions.jsonl", '{"question_id": 1, "text": "q", "category": "c"}', r"jsonl:1: missing \['image'\]"),
    ],
)
def test_input_errors_name_the_file_line_and_fix(server, bench, tmp_path, capsys, name, content, message):
    bench[name].write_text(content + "\n")
    assert judge_main(judge_args(bench, tmp_path / "r.json", "--judge-url", server.url, "--judge-name", "j")) == 1
    assert re.search(message, capsys.readouterr().err) and not server.requests


def test_the_shipped_example_runs(server, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FRAMELM_JUDGE_URL", raising=False)
    example = Path(__file__).resolve().parents[2] / "examples" / "judge"
    server.handle = lambda request: (200, server.completion("8 6\nfine"), 0.0)
    files = ["--question-file", "questions.jsonl", "--context-file", "context.jsonl", "--rule-file", "rule.json"]
    files += ["--responses-list", "answers_reference.jsonl", "responses_ours.jsonl"]
    args = [str(example / a) if a.endswith(("json", "jsonl")) else a for a in files]
    assert (
        judge_main([*args, "--judge-url", server.url, "--judge-name", "j", "--output", str(tmp_path / "r.json")]) == 0
    )
    assert table_rows(capsys.readouterr().out)["all"] == ["80.0", "60.0", "75.0", "3", "0"]  # 100 x 6 / 8 = 75.0
    prompts = [request["body"]["messages"][1]["content"] for request in server.requests]
    assert sum("[Assistant 2]\nIt is red.\n" in prompt for prompt in prompts) == 1


def test_a_damaged_review_file_is_reported_not_overwritten(server, bench, tmp_path, capsys):
    output = tmp_path / "reviews.json"
    output.write_text('{"reviews": [{"question_id": 1}]}')
    assert judge_main(judge_args(bench, output, "--judge-url", server.url, "--judge-name", "j")) == 1
    assert "reviews.json: not a framelm judge review file" in capsys.readouterr().err
    assert output.read_text() == '{"reviews": [{"question_id": 1}]}' and not server.requests


def test_judge_options_are_checked(bench, tmp_path, capsys):
    base = judge_args(bench, tmp_path / "r.json")
    for extra, message in [
        ([], "no judge: pass --judge-url"),
        (["--judge-url", "http://127.0.0.1:1/v1"], "--judge-url needs --judge-name"),
        (["--judge-url", "http://127.0.0.1:1/v1", "--judge-model", "m", "--judge-name", "j"], "not both"),
        (["--judge-model", "m", "--attempts", "0"], "--attempts, --save-every and --parallel must be at least 1"),
        (["--judge-model", "m", "--timeout", "nan"], "--timeout must be a positive number of seconds"),
    ]:
        assert judge_main([*base, *extra]) == 2
        assert message in capsys.readouterr().err


# A real model: a 2-layer Llama of width 16 with a tokenizer trained here, judging locally and behind `transformers
# serve`. Its replies are random text, so every review must come back unparseable after three attempts.

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(["the judge gives two scores to assistant 1 and assistant 2"] * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<pad>", extra_special_tokens=["<|im_start|>"]
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-judge")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def assert_all_unparseable(output: Path, judge: str) -> None:
    reviews = json.loads(output.read_text())["reviews"]
    assert len(reviews) == len(QUESTIONS) and {review["judge"] for review in reviews} == {judge}
    for review in reviews:
        assert review["status"] == "unparseable" and review["scores"] is None and review["attempts"] == 3
        assert all(isinstance(reply, str) for reply in [review["reply"], *review["rejected_replies"]])
        assert len(review["rejected_replies"]) == 2
    summary = next(row for row in json.loads(output.read_text())["summary"] if row["category"] == "all")
    assert (summary["scored"], summary["unparseable"], summary["relative"]) == (0, len(QUESTIONS), None)


def test_local_transformers_judge_counts_random_replies_as_unparseable(tiny_lm_dir, bench, tmp_path, capsys):
    output = tmp_path / "reviews.json"
    args = judge_args(bench, output, "--judge-model", str(tiny_lm_dir), "--max-tokens", "8", "--device", "cpu")
    assert judge_main(args) == 0
    assert_all_unparseable(output, str(tiny_lm_dir))
    assert table_rows(capsys.readouterr().out)["all"] == ["n/a", "n/a", "n/a", "0", "5"]


def test_local_judge_folds_the_system_turn_for_templates_that_refuse_it(tiny_lm_dir):
    from framelm.training.eval.judge.local_judge import TransformersChatJudge

    judge = TransformersChatJudge(str(tiny_lm_dir), max_tokens=4, device="cpu")
    judge.tokenizer.chat_template = (  # Mistral-style: no system role
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}" + CHAT_TEMPLATE
    )
    messages = [{"role": "system", "content": "be precise"}, {"role": "user", "content": "score"}]
    assert isinstance(judge.chat(messages), str)
    encoded = judge._encode(messages)["input_ids"][0]
    assert judge.tokenizer.decode(encoded).startswith("<|im_start|>user\nbe precise\n\nscore<|im_end|>")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def transformers_server(tiny_lm_dir, tmp_path_factory):
    """`transformers serve` on 127.0.0.1 with the tiny LM preloaded; its whole process group is stopped after."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "NO_PROXY": "127.0.0.1"}
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(tiny_lm_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_http_judge_against_transformers_serve(transformers_server, tiny_lm_dir, bench, tmp_path, capsys):
    output = tmp_path / "reviews.json"
    args = judge_args(bench, output, "--judge-url", transformers_server, "--judge-name", str(tiny_lm_dir))
    assert judge_main([*args, "--max-tokens", "8"]) == 0
    assert_all_unparseable(output, str(tiny_lm_dir))
    captured = capsys.readouterr()
    assert "5 reviews (5 new, 0 cached), 5 unparseable" in captured.out
    assert any(review["reply"] for review in json.loads(output.read_text())["reviews"])  # the model did answer
    assert API_KEY not in captured.out + captured.err + output.read_text()


def test_without_a_key_no_authorization_is_sent_not_even_openai_api_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-decoy-for-another-server")  # the openai client's own default
    server.handle = lambda request: (200, server.completion("8 7"), 0.0)
    assert OpenAIChatJudge(server.url, "j", None).chat([{"role": "user", "content": "hi"}]) == "8 7"
    assert "Authorization" not in server.requests[0]["headers"]
