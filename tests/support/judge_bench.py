"""A five-question llava-bench written to disk, and the `framelm judge` arguments that read it: shared by the judge
tests against scripted and fault-injecting servers."""

from __future__ import annotations

import json
import re
from pathlib import Path

API_KEY = "sk-test-3f9c1a7e-must-never-be-logged"
KEY_ENV = "FRAMELM_TEST_JUDGE_KEY"

# (question_id, category, image): two conv, one detail, two complex, over two images.
QUESTIONS = [(1, "conv", "a.jpg"), (2, "conv", "b.jpg"), (3, "detail", "a.jpg"), (4, "complex", "b.jpg")]
QUESTIONS.append((5, "complex", "a.jpg"))


def reference_answer(question_id: int) -> str:
    return f"reference answer {question_id}"


def candidate_answer(question_id: int) -> str:
    return f"candidate answer {question_id}"


def write_bench(folder: Path) -> dict[str, Path]:
    """A five-question llava-bench: reference answers in llava-bench format, candidates in NeMo format, reversed."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("questions.jsonl", "context.jsonl", "rule.json", "ref.jsonl")}
    paths["cand.jsonl"] = folder / "cand.jsonl"
    lines = [{"question_id": q, "text": f"question {q}?", "category": c, "image": i} for q, c, i in QUESTIONS]
    paths["questions.jsonl"].write_text("".join(json.dumps(line) + "\n" for line in lines))
    contexts = [{"id": "a", "image": "a.jpg", "caption": ["a red kettle", "a window"]}]
    contexts.append({"id": "b", "image": "b.jpg", "caption": "a cyclist at 8:58"})
    paths["context.jsonl"].write_text("".join(json.dumps(line) + "\n" for line in contexts))
    rules = {f"llava_bench_{c}": {"role": "Assistant", "prompt": f"Rate the {c} answers."} for c in ("conv", "detail")}
    rules["llava_bench_complex"] = {"role": "Assistant", "prompt": "Rate the reasoning."}
    paths["rule.json"].write_text(json.dumps(rules))
    reference = [
        {"question_id": q, "text": reference_answer(q), "answer_id": f"r{q}", "model_id": "gpt"} for q, *_ in QUESTIONS
    ]
    paths["ref.jsonl"].write_text("".join(json.dumps(line) + "\n" for line in reference))
    # response ids as strings and in reverse order: matching is by id, as text, never by line
    candidate = [{"response_id": str(q), "response": candidate_answer(q)} for q, *_ in reversed(QUESTIONS)]
    paths["cand.jsonl"].write_text("".join(json.dumps(line) + "\n" for line in candidate))
    return paths


def judge_args(paths: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return [
        "--question-file", str(paths["questions.jsonl"]),
        "--context-file", str(paths["context.jsonl"]),
        "--rule-file", str(paths["rule.json"]),
        "--responses-list", str(paths["ref.jsonl"]), str(paths["cand.jsonl"]),
        "--model-name-list", "gpt", "ours",
        "--output", str(output),
        "--api-key-env", KEY_ENV,
        "--http-backoff", "0",
        *extra,
    ]  # fmt: skip


def table_rows(stdout: str) -> dict[str, list[str]]:
    """category -> [reference, candidate, relative, scored, unparseable] as printed."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 6 and (parts[0] == "all" or parts[0].startswith("llava_bench_")):
            rows[parts[0]] = parts[1:]
    return rows


def question_of(prompt: str) -> int:
    return int(re.search(r"\[Assistant 2\]\ncandidate answer (\d+)", prompt).group(1))


def prepare_bench(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """The bench under tmp_path, with the test API key set and only loopback servers reachable."""
    monkeypatch.setenv(KEY_ENV, API_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # only ever talk to the loopback servers the tests start
    monkeypatch.delenv("FRAMELM_JUDGE_URL", raising=False)
    return write_bench(tmp_path / "bench")
