"""`framelm push` through `HfApi.upload_folder` against Hub endpoints on 127.0.0.1: a small fake Hub that answers the
calls an upload makes (create repo, branch, YAML check, preupload, commit), and one that accepts connections and never
answers. Plus the refusals: no token, a folder with pickles, a folder without its model card.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from framelm.training.atomic_write import WRITTEN_RECORD
from framelm.training.hub.export import PUBLISHED
from framelm.training.hub.push import PushError, push


class FakeHub:
    """Just enough of the Hub API for `upload_folder` of small files: every file is "regular" (sent inline in the
    commit), so no LFS or xet storage is involved. Records each request; decodes the committed files."""

    def __init__(self):
        self.requests: list[tuple[str, str, bytes]] = []
        self.committed: dict[str, bytes] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append(("POST", self.path, body))
                self.answer(*outer.route(self.path, body))

            def do_GET(self):  # noqa: N802
                outer.requests.append(("GET", self.path, b""))
                self.answer(404, {"error": "not in this fake"})

            def answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def route(self, path: str, body: bytes) -> tuple[int, dict]:
        if path == "/api/repos/create":
            request = json.loads(body)
            return 200, {"url": f"{self.url}/{request['organization']}/{request['name']}"}
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if "/branch/" in path:
            return 200, {}
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return 200, {"files": modes, "commitOid": "0" * 40}
        if "/commit/" in path:
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.committed[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return 200, {"commitUrl": f"{self.url}/me/m/commit/{'a' * 40}", "commitOid": "a" * 40}
        return 404, {"error": f"{path} is not in this fake"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentEndpoint:
    """Accepts every connection and never sends a byte; stops by itself when closed."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                self.accepted.append(self.listener.accept()[0])
            except OSError:  # the 0.1 s accept timeout, or the listener closed
                continue

    def close(self) -> None:
        self.stop.set()
        for connection in self.accepted:
            connection.close()
        self.listener.close()


@pytest.fixture
def hub():
    fake = FakeHub()
    yield fake
    fake.close()


@pytest.fixture
def silent():
    endpoint = SilentEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory) -> Path:
    from framelm.training.hub.export import export

    return export(tiny_model_dir, tmp_path_factory.mktemp("exported") / "hub").folder


def test_push_uploads_every_file_of_the_exported_folder(hub, exported):
    told = []
    info = push(exported, "me/m", endpoint=hub.url, token="hf_test", private=True, revision="v2", timeout=10,
                notify=told.append)  # fmt: skip
    assert info.oid == "a" * 40
    published = {p.name: p.read_bytes() for p in exported.iterdir() if p.name != WRITTEN_RECORD}
    assert hub.committed == published and len(published) > 15  # every file export wrote, byte for byte
    assert told == []  # nothing left out: framelm's own record of what it wrote is local bookkeeping
    paths = [path for _, path, _ in hub.requests]
    assert paths[0] == "/api/repos/create" and json.loads(hub.requests[0][2])["visibility"] == "private"
    assert "/api/models/me/m/branch/v2" in paths and paths[-1] == "/api/models/me/m/commit/v2"


def test_push_to_an_endpoint_that_never_answers_ends_in_time_with_a_clear_error(silent, exported):
    start = time.monotonic()
    with pytest.raises(PushError, match=r"127\.0\.0\.1:\d+ sent no answer within --timeout 1 s; check the network"):
        push(exported, "me/m", endpoint=silent.url, token="hf_test", timeout=1)
    assert time.monotonic() - start < 15  # one stalled read of 1 s (a loaded CI machine adds some)
    start = time.monotonic()
    with pytest.raises(PushError, match=r"did not finish the push within --deadline 2 s; .*rerun to resume"):
        push(exported, "me/m", endpoint=silent.url, token="hf_test", timeout=60, deadline=2)
    assert time.monotonic() - start < 10  # the deadline, not the 60 s read timeout


def test_push_without_a_token_says_how_to_log_in_in_one_line(exported, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING_FACE"))}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # no stored token either
    command = [sys.executable, "-m", "framelm.training.cli", "push", str(exported), "--repo-id", "me/m"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr == (
        "framelm push: error: no Hugging Face token: run `hf auth login`, or set HF_TOKEN to a token with write "
        "access\n"
    )  # no traceback, no ConnectError


def test_push_refuses_a_training_output_dir_with_pickles_and_names_them(hub, exported, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "README.md", "processor_config.json", "modeling_framelm.py", "model.safetensors"):
        (run / name).write_bytes((exported / name).read_bytes() if (exported / name).exists() else b"")
    (run / "checkpoint-10").mkdir()
    for name in ("training_args.bin", "checkpoint-10/optimizer.pt", "checkpoint-10/rng_state.pth"):
        (run / name).write_bytes(b"\x80\x04pickle")
    with pytest.raises(PushError) as raised:
        push(run, "me/m", endpoint=hub.url, token="hf_test")
    message = str(raised.value)
    assert "holds pickle files, which run code when loaded and are never published:" in message
    assert "checkpoint-10/optimizer.pt, checkpoint-10/rng_state.pth, training_args.bin" in message
    assert f"`framelm export {run} --out {run}-hub`" in message
    assert hub.requests == []  # refused before anything was sent


def test_push_refuses_a_folder_without_its_model_card(hub, exported, tmp_path):
    folder = tmp_path / "no-card"
    folder.mkdir()
    for file in exported.iterdir():
        if file.name != "README.md":
            (folder / file.name).write_bytes(file.read_bytes())
    with pytest.raises(PushError, match=r"no-card has no model card \(README.md\): push a folder written by "
                                        r"`framelm export MODEL --out FOLDER`"):  # fmt: skip
        push(folder, "me/m", endpoint=hub.url, token="hf_test")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    (folder / "config.json").unlink()
    with pytest.raises(PushError, match=r"is missing \['config.json'\]: push a folder written by `framelm export"):
        push(folder, "me/m", endpoint=hub.url, token="hf_test")
    assert hub.requests == []


@pytest.mark.parametrize("option", ["--timeout", "--deadline"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_push_timeouts_must_be_positive_seconds(exported, capsys, option, value):
    from framelm.training.cli import main

    assert main(["push", str(exported), "--repo-id", "me/m", option, value]) == 2
    assert "--timeout and --deadline must be positive numbers of seconds" in capsys.readouterr().err


def test_push_sends_only_what_export_writes_and_names_everything_left_out(hub, exported, tmp_path, capsys):
    folder = tmp_path / "hub"
    shutil.copytree(exported, folder)
    outside = tmp_path / "credentials.json"
    outside.write_text('{"aws_secret_access_key": "OUTSIDE-SECRET"}')
    (folder / ".env").write_text("HF_TOKEN=hf_DOTENV_SECRET\n")
    (folder / "notes.json").symlink_to(outside)  # a published-looking name, but a link to any file on the machine
    (folder / "tokenizer.model").symlink_to(outside)
    (folder / "extra").mkdir()
    (folder / "extra" / "config.json").write_text('{"EXTRA_SECRET": 1}')
    (folder / "optimizer_state.safetensors.old").write_text("stale")
    from framelm.training.hub.push import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", "hf_test")
        patch.setattr("huggingface_hub.constants.ENDPOINT", hub.url)  # HF_ENDPOINT, as read at import
        assert main([str(folder), "--repo-id", "me/m", "--timeout", "10"]) == 0
    sent = b"".join(hub.committed.values()) + b"".join(body for _, _, body in hub.requests)
    for secret in (b"OUTSIDE-SECRET", b"hf_DOTENV_SECRET", b"EXTRA_SECRET", b"stale"):
        assert secret not in sent  # not in any file committed, nor anywhere in any request
    assert set(hub.committed) == {p.name for p in exported.iterdir() if p.name != WRITTEN_RECORD}
    assert all(any(fnmatch.fnmatchcase(name, pattern) for pattern in PUBLISHED) for name in hub.committed)
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "left out, not sent: .env (a dotfile)",
        "left out, not sent: extra/ (a folder: export writes none)",
        "left out, not sent: notes.json (a symlink: it may point at any file on this machine)",
        "left out, not sent: optimizer_state.safetensors.old (not a file `framelm export` writes)",
        "left out, not sent: tokenizer.model (a symlink: it may point at any file on this machine)",
    ]


def test_a_required_file_that_is_a_symlink_counts_as_missing(hub, exported, tmp_path):
    folder = tmp_path / "hub"
    shutil.copytree(exported, folder)
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(tmp_path / "config.json")
    with pytest.raises(PushError, match=r"is missing \['config.json'\]: push a folder written by `framelm export"):
        push(folder, "me/m", endpoint=hub.url, token="hf_test", notify=lambda line: None)
    assert hub.requests == []
