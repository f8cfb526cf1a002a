"""A hostile corpus, built at test time, against the one media-reference policy (`data/paths.py`) and the mixture's
code rule: every reference that would reach outside its root or through another fsspec protocol is that record's
problem (where, what, fix) under validate, training and convert; nothing outside the root is opened or embedded;
the good records still go through; a mixture YAML runs no code unless the user says so.

"Nothing opened" is measured, not assumed: a Python audit hook records every `open` of the secret files while the
readers run in this process (`num_proc=1`, no DataLoader workers)."""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import tarfile

import pytest
import yaml

from framelm.training.cli import data_main
from framelm.training.data.arguments import DataArguments
from framelm.training.data.loading import load_samples
from framelm.training.data.mixture import MixtureError, load_mixture
from framelm.training.data.paths import OutsideRootError, RefusedReference, is_remote, resolve_media_path
from framelm.training.data.policy import BadRecordsError
from framelm.training.data.sources import SHARD_MANIFEST
from framelm.training.data.streaming import stream_samples

SECRET = b"aws_secret_access_key = THIS-MUST-NOT-LEAK-0123456789"
_OPENED: list[str] | None = None  # paths opened while `watching_opens` is active


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one only records while a test asks it to


class watching_opens:  # noqa: N801 - used as a context manager, like a function
    """Record every path Python opens inside the block (`.opened`)."""

    def __enter__(self):
        global _OPENED
        _OPENED = self.opened = []
        return self

    def __exit__(self, *exc):
        global _OPENED
        _OPENED = None


def conversation(question: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": "ok"}]


@pytest.fixture
def hostile(tmp_path, make_image, make_frame_folder):
    """root/ with data.jsonl: two good records, and one record per hostile reference; secret files outside root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    secret = outside / "credentials"
    secret.write_bytes(SECRET)
    (outside / "secret.png").write_bytes(SECRET)
    os.replace(make_image("good.png"), root / "good.png")
    folder = make_frame_folder("clip", num_frames=3)
    os.rename(folder, root / "clip")
    os.rename(str(folder) + ".json", root / "clip.json")
    # a frame folder whose last frame is a symlink to the credentials file
    os.system(f"cp -r {root / 'clip'} {root / 'leaky'} && cp {root / 'clip.json'} {root / 'leaky.json'}")
    os.symlink(secret, root / "leaky" / "00004.jpg")
    records = {
        "good-image": {"image": "good.png", "conversations": conversation("<image>\nWhat?")},
        "good-frames": {"video": "clip", "conversations": conversation("<video>\nWhat?")},
        "file-url-inside": {"image": f"file://{root}/good.png", "conversations": conversation("<image>\nWhat?")},
        "file-url-outside": {"image": f"file://{outside}/secret.png", "conversations": conversation("<image>\nx")},
        "local-device": {"image": "local:///dev/zero", "conversations": conversation("<image>\nx")},
        "chained": {"image": f"simplecache::file://{outside}/secret.png", "conversations": conversation("<image>\nx")},
        "zip": {"image": f"zip://secret.png::file://{outside}/a.zip", "conversations": conversation("<image>\nx")},
        "reference": {"image": "reference://secret.png", "conversations": conversation("<image>\nx")},
        "dir": {"image": f"dir://{outside}/secret.png", "conversations": conversation("<image>\nx")},
        "ipv6": {"image": "https://[::1/a.png", "conversations": conversation("<image>\nx")},
        "port": {"image": "https://example.com:99999/a.png", "conversations": conversation("<image>\nx")},
        "leaky-frames": {"video": "leaky", "conversations": conversation("<video>\nx")},
        "absolute-outside": {"image": str(outside / "secret.png"), "conversations": conversation("<image>\nx")},
    }
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"id": key, **record}) + "\n" for key, record in records.items()))
    return {"root": root, "outside": outside, "data": data, "ids": list(records), "secret": secret}


# what each hostile record must be reported as: (kind, words of the problem)
EXPECTED = {
    "file-url-outside": ("outside_root", "outside its root folder"),
    "local-device": ("refused_reference", "the local:// scheme is not allowed"),
    "chained": ("refused_reference", "the simplecache:// scheme is not allowed"),
    "zip": ("refused_reference", "the zip:// scheme is not allowed"),
    "reference": ("refused_reference", "the reference:// scheme is not allowed"),
    "dir": ("refused_reference", "the dir:// scheme is not allowed"),
    "ipv6": ("refused_reference", "malformed URL (Invalid IPv6 URL)"),
    "port": ("refused_reference", "malformed URL (Port out of range 0-65535)"),
    "leaky-frames": ("outside_root", "leaky/00004.jpg' leads to"),
    "absolute-outside": ("outside_root", "outside its root folder"),
}
GOOD = ["good-image", "good-frames", "file-url-inside"]


def secret_opened(opened: list[str], outside) -> list[str]:
    return [path for path in opened if os.path.realpath(path).startswith(str(outside)) or path == "/dev/zero"]


def test_validate_reports_each_hostile_reference_with_where_what_fix_and_reads_nothing_outside(hostile, capsys):
    report = hostile["root"] / "bad.jsonl"
    argv = ["validate", str(hostile["data"]), "--report", str(report), "--num-proc", "1",
            "--cache-dir", str(hostile["root"].parent / "cache")]  # fmt: skip
    with watching_opens() as watch:
        assert data_main(argv) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert re.search(r"records read +13\n +usable +3\n +with errors +10\n", out), out
    problems = {p["id"]: p for p in map(json.loads, report.read_text().splitlines())}
    assert set(problems) == set(EXPECTED)
    for key, (kind, words) in EXPECTED.items():
        problem = problems[key]
        line = hostile["ids"].index(key) + 1
        assert problem["where"] == f"{hostile['data']}:{line}" and problem["kind"] == kind, problem
        assert words in problem["problem"] and problem["fix"], problem
    assert "--allow-outside-root" in problems["leaky-frames"]["fix"]
    assert "http(s)://, s3://, gs:// or hf:// URL" in problems["local-device"]["fix"]
    assert secret_opened(watch.opened, hostile["outside"]) == []
    assert SECRET not in report.read_bytes()


def test_training_reads_leave_out_or_stop_at_each_hostile_record(hostile):
    data = DataArguments(dataset=str(hostile["data"]), num_proc=1, cache_dir=str(hostile["root"].parent / "cache"))
    with watching_opens() as watch:
        loaded = load_samples(data)
    assert sorted(loaded.dataset["id"]) == sorted(GOOD)
    assert {p.id: p.kind for p in loaded.problems} == {key: kind for key, (kind, _) in EXPECTED.items()}
    # file:// inside the root is read as the plain path it names: validate and training agree
    (inside,) = [row for row in loaded.dataset if row["id"] == "file-url-inside"]
    assert inside["media"][0]["path"] == f"{hostile['root']}/good.png"
    assert secret_opened(watch.opened, hostile["outside"]) == []

    streamed = stream_samples(DataArguments(dataset=str(hostile["data"]), bad_records="skip"))
    assert [row["id"] for row in streamed] == [key for key in hostile["ids"] if key in GOOD]
    strict = stream_samples(DataArguments(dataset=str(hostile["data"])))
    with pytest.raises(BadRecordsError, match=r"data.jsonl:4 \(id=file-url-outside\): image path .* outside its root"):
        list(strict)


def test_convert_to_webdataset_embeds_nothing_from_outside_the_root(hostile, capsys):
    out = hostile["root"].parent / "shards"
    cache = str(hostile["root"].parent / "cache")
    argv = ["convert", str(hostile["data"]), "--to", "webdataset", "--out", str(out), "--split", "1,0,0",
            "--bad-records", "skip", "--num-proc", "1", "--cache-dir", cache]  # fmt: skip
    with watching_opens() as watch:
        assert data_main(argv) == 0
    assert secret_opened(watch.opened, hostile["outside"]) == []
    keys, blobs = [], b""
    for shard in glob.glob(str(out / "*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                blobs += tar.extractfile(member).read()
                if member.name.endswith(".json"):
                    keys.append(json.loads(tar.extractfile(member).read())["id"])
    assert sorted(keys) == sorted(GOOD)  # the other records still went through
    assert SECRET not in blobs
    assert all(SECRET not in open(path, "rb").read() for path in glob.glob(str(out / "**"), recursive=True)
               if os.path.isfile(path))  # fmt: skip


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd.tar", "../other.tar", "sub/x.tar", "link.tar", "train-000000.json"],
)
def test_a_shard_manifest_naming_files_outside_its_folder_is_refused(hostile, capsys, name):
    out = hostile["root"].parent / "shards"
    good = hostile["root"] / "good.jsonl"
    good.write_text(hostile["data"].read_text().splitlines()[0] + "\n")
    assert data_main(["convert", str(good), "--to", "webdataset", "--out", str(out), "--split", "1,0,0"]) == 0
    other = hostile["outside"] / "other.tar"
    os.replace(out / "train-000000.tar", other)
    os.symlink(other, out / "link.tar")
    manifest = json.loads((out / SHARD_MANIFEST).read_text())
    manifest["splits"]["train"]["shards"] = [name]
    (out / SHARD_MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    with watching_opens() as watch:
        assert data_main(["validate", str(out), "--no-media-check"]) == 1
    err = capsys.readouterr().err
    assert f"names the shard {name!r}, which is not a .tar file in its own folder" in err and "Traceback" not in err
    assert secret_opened(watch.opened, hostile["outside"]) == []


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("file:///etc/passwd", OutsideRootError),
        ("file://server/share/x.png", "a file:// URL naming the host 'server'"),
        ("local:///dev/zero", "the local:// scheme is not allowed"),
        ("memory://x.png", "the memory:// scheme is not allowed"),
        ("simplecache::file:///etc/passwd", "the simplecache:// scheme is not allowed"),
        ("zip://a.png::file:///tmp/x.zip", "the zip:// scheme is not allowed"),
        ("https://a.com/x.png::file:///etc/passwd", "a chained fsspec URL"),
        ("https://[::1", "malformed URL"),
        ("https://host:65536/x.png", "malformed URL (Port out of range 0-65535)"),
        ("https://host:port/x.png", "malformed URL"),
        ("https:///x.png", "the URL names no host"),
        ("https://host/a b.png", "spaces or control characters"),
        ("a/b://c.png", "not a path and not a URL"),
        ("x.png\x00.txt", "a NUL character"),
        ("/dev/zero", OutsideRootError),
    ],
)
def test_the_policy_refuses_with_a_reason(tmp_path, reference, reason):
    with pytest.raises(RefusedReference) as refused:
        resolve_media_path(reference, str(tmp_path))
    if isinstance(reason, str):
        assert reason in str(refused.value)
    else:
        assert isinstance(refused.value, reason)
    assert refused.value.fix
    assert not is_remote(reference)


def test_devices_are_refused_even_where_outside_paths_are_allowed(tmp_path):
    with pytest.raises(RefusedReference, match="is not a regular file"):
        resolve_media_path("/dev/zero", str(tmp_path), allow_outside_root=True)
    with pytest.raises(RefusedReference, match="is not a regular file"):
        resolve_media_path("file:///dev/null", "/", allow_outside_root=False)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(RefusedReference, match="is not a regular file"):
        resolve_media_path("pipe.png", str(tmp_path))
    frames = tmp_path / "frames"
    frames.mkdir()
    os.mkfifo(frames / "00001.jpg")
    with pytest.raises(RefusedReference, match="frames/00001.jpg.*a frame that is not a regular file"):
        resolve_media_path("frames", str(tmp_path))


@pytest.mark.parametrize(
    "url", ["https://example.com/a.png", "http://127.0.0.1:8000/v.mp4", "s3://bucket/a.jpg", "gs://b/x.png",
            "hf://datasets/org/name/a.png", "HTTPS://EXAMPLE.COM/A.PNG"],
)  # fmt: skip
def test_allowed_remote_urls_pass_as_they_are(url):
    assert resolve_media_path(url, "/data") == url and is_remote(url)


def test_generate_prompts_resolve_by_the_same_policy(tmp_path):
    from framelm.training.eval.generate import prompt_media

    (tmp_path / "a.png").write_bytes(b"x")
    assert prompt_media({"image": f"file://{tmp_path}/a.png"}, str(tmp_path))["images"] == [f"{tmp_path}/a.png"]
    for hostile in ("local:///dev/zero", "simplecache::file:///etc/passwd", "file:///etc/passwd", "https://[::1"):
        with pytest.raises(ValueError, match="refused|outside its root"):  # generate reports it as that prompt's
            prompt_media({"image": hostile}, str(tmp_path))


def test_s3_without_credentials_is_one_record_problem(monkeypatch, tmp_path):
    """s3fs is installed but finds no credentials: botocore's NoCredentialsError becomes that record's error in
    validate, and a skipped record in training's guard."""
    pytest.importorskip("s3fs")
    from framelm.processing.sources_framelm import FetchLimits, fetch_bytes
    from framelm.training.batches.record_guard import encode_rows
    from framelm.training.data.media_check import check_media_file

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    url = "s3://framelm-no-such-bucket/a.png"
    # fsspec keeps the s3 filesystem class it imports: take it out afterwards, so that later tests see the machine
    registry = sys.modules["fsspec.registry"]._registry
    before = set(registry)
    try:
        ((kind, text, fix),) = check_media_file("image", url)
        assert kind == "fetch_failed" and "s3://framelm-no-such-bucket/a.png" in text and fix
        rows = [{"where": "d.jsonl:1", "id": "s3", "url": url}, {"where": "d.jsonl:2", "id": "ok", "url": ""}]
        encoded, skipped = encode_rows(
            lambda row: {"bytes": fetch_bytes(row["url"], FetchLimits(timeout=30)) if row["url"] else b""}, rows,
            "skip",
        )  # fmt: skip
        assert skipped == 1 and encoded == [{"bytes": b""}]
    finally:
        for protocol in set(registry) - before:
            del registry[protocol]


def caption_yaml(tmp_path, preprocess_fn: str, marker) -> str:
    """A mixture whose record keys build a shell command that touches `marker`, were the function ever called."""
    (tmp_path / "rows.jsonl").write_text(json.dumps({f"touch {marker}": 1, "caption": "x"}) + "\n")
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump([{"json_path": "rows.jsonl", "preprocess_fn": preprocess_fn, "shell": True}]))
    return str(path)


@pytest.mark.parametrize("preprocess_fn", ["subprocess:run", "os:system"])
def test_a_mixture_naming_code_runs_nothing_unless_trusted(tmp_path, capsys, preprocess_fn):
    marker = tmp_path / "ran"
    path = caption_yaml(tmp_path, preprocess_fn, marker)
    assert data_main(["validate", path, "--cache-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert f"preprocess_fn {preprocess_fn!r} names code to import; framelm runs only registered functions" in err
    assert "pass --trust-preprocess-code" in err and "Traceback" not in err
    with pytest.raises(MixtureError, match="names code to import"):  # what `framelm train` reads the data with
        load_samples(DataArguments(dataset=path, cache_dir=str(tmp_path / "c")))
    assert not marker.exists()


def test_trust_preprocess_code_opts_in_but_never_for_a_remote_yaml(tmp_path, capsys):
    from support.media_server import serve_media

    marker = tmp_path / "ran"
    path = caption_yaml(tmp_path, "subprocess:run", marker)
    # opted in, the import path runs: this is what the default refuses
    data_main(["validate", path, "--trust-preprocess-code", "--no-media-check", "--cache-dir", str(tmp_path / "c")])
    assert marker.exists()
    marker.unlink()
    remote = [{"json_path": "rows.jsonl", "preprocess_fn": "subprocess:run", "shell": True}]
    with serve_media({"/mix.yaml": yaml.safe_dump(remote).encode()}) as server:
        with pytest.raises(MixtureError, match="in a mixture fetched from a URL: framelm never imports code"):
            load_mixture(server.url("/mix.yaml"), trust_code=True)
    assert not marker.exists()


@pytest.mark.slow
def test_framelm_train_refuses_then_skips_the_hostile_records(hostile, tiny_model_dir):
    from framelm.training.sft.train import parse_args, run

    out = hostile["root"].parent / "run"
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(hostile["data"]), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--max_steps", "1", "--dataloader_num_workers", "0",
            "--report_to", "none", "--save_strategy", "no", "--activation_checkpointing", "false",
            "--cache_dir", str(hostile["root"].parent / "cache")]  # fmt: skip
    with pytest.raises(ValueError, match=r"10 of 13 records cannot be used:\n.*data.jsonl:4 \(id=file-url-outside\)"):
        run(*parse_args(argv))
    with watching_opens() as watch:
        trainer = run(*parse_args([*argv, "--bad_records", "skip", "--max_bad_fraction", "0.8"]))
    assert sorted(trainer.train_dataset["id"]) == sorted(GOOD)
    assert json.loads((out / "framelm_run.json").read_text())["skipped_records"] == 10
    assert secret_opened(watch.opened, hostile["outside"]) == []
