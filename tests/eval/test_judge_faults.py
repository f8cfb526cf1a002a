"""`framelm judge` against a fault-injecting OpenAI-compatible server on 127.0.0.1: 500s, a hang, a 1-byte/s trickle
(of the body and of the headers), 429 with Retry-After, bodies that are no chat completion, non-text content, and a
server that echoes the API key back. The judge must end within its deadlines, count every failure, and never let the
key into logs, exception messages, the review file or its cache.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.judge_bench import API_KEY, KEY_ENV, judge_args, prepare_bench, question_of, table_rows

from framelm.training.cli import main as framelm_main
from framelm.training.eval.judge.backends import JudgeUnavailableError
from framelm.training.eval.judge.http_judge import SNIPPET, OpenAIChatJudge, retry_after_seconds


def judge_main(argv: list[str]) -> int:
    """`framelm judge ARGV` as the command line runs it: errors are one line and an exit code."""
    return framelm_main(["judge", *argv])


QUESTION_1 = [{"role": "system", "content": "s"}, {"role": "user", "content": "[Assistant 2]\ncandidate answer 1"}]
STALL_LIMIT = 30.0  # seconds a stalling handler waits at most: the server stops by itself even if a client hangs on


def completion(content) -> bytes:
    message = {"role": "assistant", "content": content}
    return json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": message}]}).encode()


class FaultServer:
    """Answers each judge request with the next fault scripted for its question, then with `good_reply`.

    Faults: "500" (the body echoes the Authorization header), "hang" (no answer at all), "trickle" (a valid reply at
    one byte a second), "slow-headers" (the status line at one byte a second), "429" (Retry-After: 1),
    "garbage" (an HTML 200 holding the key), "non-text" (a completion whose content is a number), "bad-utf8" (a
    completion holding bytes that are no UTF-8), "nested" (JSON nested 100,000 deep), "huge" (a 100 MB completion
    with its Content-Length), "huge-unannounced" (the same without a length, ended by closing the connection).
    Every request's Authorization header is kept in `authorizations`; the body bytes sent, in `sent`.
    """

    def __init__(self, faults: dict[int, list[str]], good_reply: str = "8 6\nfine"):
        self.faults = {question: list(kinds) for question, kinds in faults.items()}
        self.good_reply = good_reply
        self.log: list[tuple[int, str, float]] = []  # (question, what was answered, arrival time)
        self.authorizations: list[str | None] = []
        self.sent: dict[str, int] = {}  # fault -> body bytes the client accepted before it hung up
        self.in_flight = self.most_in_flight = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = question_of(body["messages"][1]["content"])
                with outer._lock:
                    kinds = outer.faults.get(question, [])
                    kind = kinds.pop(0) if kinds else "ok"
                    outer.log.append((question, kind, time.monotonic()))
                    outer.authorizations.append(self.headers.get("Authorization"))
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                try:
                    outer.answer(self, kind)
                except OSError:  # the judge gave up on this reply: what the deadline is for
                    pass
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def answer(self, handler: BaseHTTPRequestHandler, kind: str) -> None:
        key_echo = handler.headers.get("Authorization", "")
        if kind in ("hang", "slow-headers"):
            raw = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"." * 60 if kind == "slow-headers" else b""
            for byte in raw:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                if self.stop.wait(1.0):
                    return
            self.stop.wait(STALL_LIMIT)
            return
        status, content_type, headers = 200, "application/json", {}
        if kind == "500":
            status, body = 500, f"internal error serving {key_echo}".encode()
        elif kind == "429":
            status, body, headers = 429, b'{"error": "rate limited"}', {"Retry-After": "1"}
        elif kind == "garbage":
            content_type, body = "text/html", f"<html>proxy error for {key_echo}</html>".encode()
        elif kind == "non-text":
            body = completion(7)
        elif kind == "bad-utf8":
            body = completion("8 6").replace(b"8 6", b"8 6 \xff\xfe\xc3(")
        elif kind == "nested":
            body = b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        elif kind.startswith("huge"):
            self.send_huge(handler, kind, 100 << 20)
            return
        else:  # "ok" and "trickle": a good reply, which echoes the key
            body = completion(f"{self.good_reply}\n(request authorized by {key_echo})")
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if kind != "trickle":
            handler.wfile.write(body)
            return
        for byte in body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            if self.stop.wait(1.0):
                return

    def send_huge(self, handler: BaseHTTPRequestHandler, kind: str, size: int) -> None:
        """A completion of `size` bytes, written 1 MiB at a time, counting what the client took before hanging up."""
        head, tail = b'{"choices": [{"message": {"role": "assistant", "content": "8 6 ', b'"}}]}'
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if kind == "huge":
            handler.send_header("Content-Length", str(size))
        handler.end_headers()
        self.sent[kind] = 0
        chunk = b"x" * (1 << 20)
        try:
            for piece in [head] + [chunk] * ((size - len(head) - len(tail)) // len(chunk)) + [tail]:
                handler.wfile.write(piece)
                self.sent[kind] += len(piece)
        except OSError:  # the client hung up: what the cap is for
            pass
        handler.close_connection = True

    def answered(self, question: int) -> list[str]:
        return [kind for asked, kind, _ in self.log if asked == question]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bench(tmp_path, monkeypatch) -> dict[str, Path]:
    return prepare_bench(tmp_path, monkeypatch)


@pytest.fixture
def faulty():
    servers: list[FaultServer] = []

    def start(faults: dict[int, list[str]], good_reply: str = "8 6\nfine") -> FaultServer:
        servers.append(FaultServer(faults, good_reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def files_text(folder: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in folder.rglob("*") if path.is_file())


def test_every_fault_is_retried_counted_bounded_and_the_key_leaks_nowhere(faulty, bench, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the openai and httpx ones included
    faults = {1: ["500", "hang"], 2: ["trickle"], 3: ["429"], 4: ["garbage", "non-text"], 5: ["slow-headers", "500"]}
    server = faulty(faults)
    output = tmp_path / "out" / "reviews.json"
    args = judge_args(bench, output, "--judge-url", server.url, "--judge-name", "j")
    args += ["--timeout", "3", "--http-retries", "3", "--parallel", "3"]  # 3 s: a good reply on a loaded CI box fits
    start = time.monotonic()
    assert judge_main(args) == 0
    elapsed = time.monotonic() - start
    # Each stalled reply ends at the 3 s deadline (the trickle alone would take ~150 s, one byte a second) and the
    # 429 waits its 1 s Retry-After: about 10 s in all; 45 s leaves room for a loaded CI machine.
    assert elapsed < 45, elapsed
    captured = capsys.readouterr()
    assert table_rows(captured.out)["all"] == ["80.0", "60.0", "75.0", "5", "0"]  # every review scored in the end
    assert "judge failures: 8 replies failed (1 HTTP 429, 2 HTTP 500, 3 timeout, 2 unreadable reply)" in captured.out
    for question, kinds in faults.items():
        assert server.answered(question) == [*kinds, "ok"]  # one request per fault, then the good one: no more
    arrivals = {kind: at for question, kind, at in server.log if question == 3}
    assert arrivals["ok"] - arrivals["429"] >= 0.95  # Retry-After: 1 honoured (--http-backoff is 0)
    assert server.most_in_flight >= 2  # --parallel 3 did overlap requests
    reviews = json.loads(output.read_text())["reviews"]
    assert [review["question_id"] for review in reviews] == [1, 2, 3, 4, 5]  # task order, not finishing order
    assert all(review["reply"].endswith("(request authorized by Bearer ***)") for review in reviews)
    for text in (captured.out, captured.err, caplog.text, files_text(tmp_path / "out")):
        assert API_KEY not in text
    assert "HTTP 500 internal error serving Bearer ***; retry 1 of 3" in caplog.text


def test_a_judge_that_never_answers_stops_in_time_with_a_clear_error_and_keeps_what_is_done(faulty, bench, tmp_path,
                                                                                             capsys):  # fmt: skip
    server = faulty({3: ["hang"] * 3})
    output = tmp_path / "reviews.json"
    args = judge_args(bench, output, "--judge-url", server.url, "--judge-name", "j")
    start = time.monotonic()
    assert judge_main([*args, "--timeout", "1", "--http-retries", "2", "--parallel", "2"]) == 1
    assert time.monotonic() - start < 20  # three 1 s deadlines, not three hangs of STALL_LIMIT
    err = capsys.readouterr().err
    assert "failed 3 times (last: no complete reply within 1 s); check that the server is up" in err
    assert "judge failures: 3 replies failed (3 timeout)" in err and "rerun to resume" in err
    saved = [review["question_id"] for review in json.loads(output.read_text())["reviews"]]
    assert 3 not in saved and {1, 2} <= set(saved)  # what finished before and beside the failure is kept
    assert server.answered(3) == ["hang"] * 3


@pytest.mark.parametrize(
    "fault, message",
    [
        ("500", r"failed 2 times \(last: HTTP 500 internal error serving Bearer \*\*\*\); check that the server"),
        ("garbage", r"last: the reply is not an OpenAI chat completion: '<html>proxy error for Bearer \*\*\*</html>'"),
    ],
)
def test_error_messages_carry_the_echoed_key_redacted(faulty, fault, message):
    server = faulty({1: [fault] * 2})
    judge = OpenAIChatJudge(server.url, "j", API_KEY, timeout=5, retries=1, backoff=0)
    with pytest.raises(JudgeUnavailableError, match=message) as raised:
        judge.chat(QUESTION_1)
    assert API_KEY not in "".join(traceback.format_exception(raised.value))  # chained exceptions included


def test_a_crlf_key_is_stripped_and_a_bad_one_refused_unechoed(faulty, bench, tmp_path, monkeypatch, capsys):
    server = faulty({})
    monkeypatch.setenv(KEY_ENV, API_KEY + "\r\n")
    assert judge_main(judge_args(bench, tmp_path / "r.json", "--judge-url", server.url, "--judge-name", "j")) == 0
    assert all(review["reply"].endswith("(request authorized by Bearer ***)")
               for review in json.loads((tmp_path / "r.json").read_text())["reviews"])  # fmt: skip
    monkeypatch.setenv(KEY_ENV, API_KEY[:6] + "\n" + API_KEY[6:])
    assert judge_main(judge_args(bench, tmp_path / "r2.json", "--judge-url", server.url, "--judge-name", "j")) == 1
    err = capsys.readouterr().err
    assert f"${KEY_ENV} holds a space, control or non-ASCII character at position 6 of the key" in err
    assert API_KEY[6:] not in err and API_KEY[:6] not in err


def test_a_retry_after_beyond_the_limit_stops_the_run_instead_of_sleeping(faulty):
    server = faulty({})
    server.answer = lambda handler, kind: (
        handler.send_response(503),
        handler.send_header("Retry-After", "3600"),
        handler.send_header("Content-Length", "0"),
        handler.end_headers(),
    )
    judge = OpenAIChatJudge(server.url, "j", None, retries=3, backoff=0)
    start = time.monotonic()
    with pytest.raises(JudgeUnavailableError, match=r"asks to wait 3600 s .*\(Retry-After\), more than 120 s: rerun"):
        judge.chat(QUESTION_1)
    assert time.monotonic() - start < 10 and len(server.log) == 1


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("-4") == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("nan") is None and retry_after_seconds("inf") is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 27 <= retry_after_seconds(later) <= 30


def test_a_key_across_the_cut_of_a_quoted_reply_is_redacted_before_the_cut(faulty):
    server = faulty({})

    def padded_echo(handler, kind):  # the key starts 10 characters before the quoted snippet ends
        body = ("x" * (SNIPPET - 10) + handler.headers["Authorization"].removeprefix("Bearer ")).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    server.answer = padded_echo
    judge = OpenAIChatJudge(server.url, "j", API_KEY, retries=0)
    with pytest.raises(JudgeUnavailableError) as raised:
        judge.chat(QUESTION_1)
    assert API_KEY[:10] not in str(raised.value) and "x***" in str(raised.value)


# --- replies that are no text, too large, nested too deeply; credentials in the URL; which key goes where -------


@pytest.mark.parametrize("fault", ["bad-utf8", "nested", "huge", "huge-unannounced"])
def test_a_bad_or_huge_reply_is_a_counted_retried_failure_not_a_crash(faulty, fault):
    server = faulty({1: [fault] * 2})
    judge = OpenAIChatJudge(server.url, "j", None, timeout=20, retries=2, backoff=0)
    assert judge.chat(QUESTION_1).startswith("8 6\nfine")  # the third reply is good: retried, then scored
    assert judge.failures == {"unreadable reply": 2} and server.answered(1) == [fault, fault, "ok"]
    if fault.startswith("huge"):
        # never held whole: the client hung up at the 4 MiB cap (what the socket buffers held besides is small)
        assert server.sent[fault] < 32 << 20, server.sent[fault]


def test_a_bad_reply_in_a_run_is_counted_in_the_summary(faulty, bench, tmp_path, capsys):
    server = faulty({1: ["bad-utf8"], 2: ["nested"], 3: ["huge-unannounced"]})
    args = judge_args(bench, tmp_path / "reviews.json", "--judge-url", server.url, "--judge-name", "j")
    assert judge_main([*args, "--timeout", "20", "--parallel", "1"]) == 0
    out = capsys.readouterr().out
    assert "judge failures: 3 replies failed (3 unreadable reply)" in out
    assert table_rows(out)["all"] == ["80.0", "60.0", "75.0", "5", "0"]
    assert (tmp_path / "reviews.json").stat().st_size < 1 << 20  # no 100 MB reply saved in the review file


def test_credentials_in_the_judge_url_are_never_printed(faulty, bench, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    server = faulty({question: ["500"] * 2 for question in range(1, 6)})
    port = server.url.split(":")[2].split("/")[0]
    url = f"http://alice:pw9secret@127.0.0.1:{port}/v1?api-key=K3YSECRET#frag9"
    args = judge_args(bench, tmp_path / "reviews.json", "--judge-url", url, "--judge-name", "j")
    assert judge_main([*args, "--http-retries", "1", "--parallel", "1"]) == 1
    captured = capsys.readouterr()
    assert f"http://127.0.0.1:{port}/v1/chat/completions failed 2 times" in captured.err  # still named
    for text in (captured.out, captured.err, caplog.text):
        for secret in ("alice", "pw9secret", "K3YSECRET", "frag9"):
            assert secret not in text


def test_openai_api_key_goes_only_where_asked_and_never_in_clear_text_to_another_host(
    faulty, bench, tmp_path, monkeypatch, capsys, caplog
):
    from framelm.training.eval.judge.cli import api_key_for

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-decoy")
    server = faulty({})
    plain = [arg for arg in judge_args(bench, tmp_path / "a.json", "--judge-url", server.url, "--judge-name", "j")]
    cut = plain.index("--api-key-env")
    del plain[cut : cut + 2]  # no --api-key-env: the user did not ask for a key to be sent
    with caplog.at_level(logging.INFO):
        assert judge_main(plain) == 0
    assert server.authorizations == [None] * 5  # $OPENAI_API_KEY is not sent to a server that is not OpenAI's
    assert "$OPENAI_API_KEY is not sent to " in caplog.text and "pass --api-key-env OPENAI_API_KEY" in caplog.text

    asked = judge_args(bench, tmp_path / "b.json", "--judge-url", server.url, "--judge-name", "j")
    assert judge_main([*asked, "--api-key-env", "OPENAI_API_KEY"]) == 0  # asked for by name: sent (loopback http)
    assert server.authorizations[5:] == ["Bearer sk-openai-decoy"] * 5

    far = judge_args(bench, tmp_path / "c.json", "--judge-url", "http://192.0.2.7:8000/v1", "--judge-name", "j")
    start = time.monotonic()
    assert judge_main(far) == 1  # refused before any connection: 192.0.2.7 (TEST-NET) would only time out
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bars of the two runs above
    assert err == (
        f"framelm judge: error: ${KEY_ENV} would travel in clear text to http://192.0.2.7:8000/v1: use an https "
        "URL, or a server on this machine (127.0.0.1); a key is never sent over plain http to another host"
    )
    assert api_key_for("https://api.openai.com/v1", None) == "sk-openai-decoy"  # the official endpoint
    assert api_key_for("https://judge.example/v1", None) is None
    assert api_key_for("http://localhost:8000/v1", "OPENAI_API_KEY") == "sk-openai-decoy"
    assert api_key_for("http://[::1]:8000/v1", "OPENAI_API_KEY") == "sk-openai-decoy"
    with pytest.raises(ValueError, match="would travel in clear text to http://judge.example/v1"):
        api_key_for("http://judge.example/v1", "OPENAI_API_KEY")
