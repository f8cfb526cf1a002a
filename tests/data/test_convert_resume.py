"""`framelm data convert --to webdataset` writes the same bytes whatever happens: its tar headers are tarfile's, its
media members are the source files byte for byte, its shards do not depend on the worker count, and a convert killed
at any point and run again keeps the shards it had finished and ends with the bytes of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import tarfile

import pytest
from support.kill_points import run_killed_at

from framelm.training.cli import data_main
from framelm.training.data.shard_writer import SENDFILE_FROM, SHARD_MTIME, ustar_header
from framelm.training.data.sources import SHARD_MANIFEST

RECORDS = 24
SHARD_SIZE = 3


@pytest.fixture
def mixed_media(tmp_path, make_image):
    """RECORDS records like LLaVA-Video's mix: text only, one or two images, or a video file larger than
    SENDFILE_FROM (random bytes: convert copies a video, it never decodes it)."""
    (tmp_path / "videos").mkdir()
    records = []
    for i in range(RECORDS):
        record = {"id": f"r{i}", "conversations": [{"from": "human", "value": f"Question {i}?"},
                                                   {"from": "gpt", "value": f"Answer {i}."}]}  # fmt: skip
        if i % 3 == 1:
            images = [f"img{i}.png"] + ([f"img{i}b.png"] if i % 2 else [])
            for name in images:
                make_image(name, color=(10 * i, 0, 255 - 10 * i))
            record["image"] = images if len(images) > 1 else images[0]
            record["conversations"][0]["value"] = "<image>\n" * len(images) + record["conversations"][0]["value"]
        elif i % 3 == 2:
            video = tmp_path / "videos" / f"v{i}.mp4"
            video.write_bytes(os.urandom(SENDFILE_FROM + 1000 * i))
            record["video"] = f"videos/v{i}.mp4"
            record["conversations"][0]["value"] = "<video>\n" + record["conversations"][0]["value"]
        records.append(record)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def convert_args(data_file, out, *extra) -> list[str]:
    return ["convert", str(data_file), "--out", str(out), "--to", "webdataset", "--split", "3,1,0",
            "--shard-size", str(SHARD_SIZE), "--cache-dir", str(data_file.parent / "cache"), *extra]  # fmt: skip


def folder_bytes(folder) -> dict[str, bytes]:
    """Every file of a folder (hidden ones included) by its relative path."""
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.mark.parametrize("name", ["a.json", "train_000000042.0.jpg", "x" * 100, "y" * 101, "é.jpg", "d/" + "z" * 150])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 5 * 2**20, 8**11 - 1, 8**11])
def test_template_headers_are_the_bytes_tarfile_writes(name, size):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, SHARD_MTIME, 0o444, "", ""
    assert ustar_header(name, size) == info.tobuf(tarfile.PAX_FORMAT)
    if len(name.encode()) <= 100 and name.isascii() and size < 8**11:
        assert ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT)


def test_members_are_the_source_files_byte_for_byte_with_fixed_metadata(tmp_path, mixed_media):
    assert data_main(convert_args(mixed_media, tmp_path / "wds")) == 0
    manifest = json.loads((tmp_path / "wds" / SHARD_MANIFEST).read_text())
    assert {name: split["records"] for name, split in manifest["splits"].items()} == {"train": 18, "val": 6}
    assert manifest["splits"]["train"]["shards"] == [f"train-{i:06d}.tar" for i in range(6)]
    seen, media_bytes = set(), 0
    for shard in sorted((tmp_path / "wds").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
            assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname, m.type) for m in members} == {
                (SHARD_MTIME, 0o444, 0, 0, "", "", tarfile.REGTYPE)
            }
            contents = {m.name: tar.extractfile(m).read() for m in members}
        keys = sorted({name.split(".", 1)[0] for name in contents})
        assert len(keys) == (SHARD_SIZE if shard.name != "val-000001.tar" else 3)
        for key in keys:
            doc = json.loads(contents[f"{key}.json"])
            i = int(doc["id"][1:])
            seen.add(i)
            sources = ([], [f"img{i}.png", f"img{i}b.png"][: 1 + i % 2], [f"videos/v{i}.mp4"])[i % 3]
            assert [item["kind"] for item in doc["media"]] == ["video" if i % 3 == 2 else "image"] * len(sources)
            for item, source in zip(doc["media"], sources, strict=True):
                original = (tmp_path / source).read_bytes()
                assert contents[f"{key}.{item['name']}"] == original, (key, source)
                media_bytes += len(original)
            own = sorted(name for name in contents if name.split(".", 1)[0] == key)
            assert own == sorted([f"{key}.json"] + [f"{key}.{item['name']}" for item in doc["media"]])
    assert seen == set(range(RECORDS))
    assert manifest["media_bytes"] == media_bytes


def test_shards_do_not_depend_on_the_worker_count(tmp_path, mixed_media):
    assert data_main(convert_args(mixed_media, tmp_path / "one", "--num-proc", "1")) == 0
    assert data_main(convert_args(mixed_media, tmp_path / "two", "--num-proc", "2")) == 0
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")


def _piece_and_a_half(fd, parts) -> int:  # takes the first piece and half of the second only
    return os.write(fd, parts[0]) + (os.write(fd, parts[1][: len(parts[1]) // 2]) if len(parts) > 1 else 0)


def _all_but_the_end(fd, parts) -> int:  # takes everything but the last 100 bytes (a large file's first read too)
    data = b"".join(parts)
    return os.write(fd, data[:-100]) if len(data) > 100 else 0


@pytest.mark.parametrize("cut_short", [_piece_and_a_half, _all_but_the_end])
def test_writes_the_kernel_cuts_short_are_finished_with_the_same_bytes(tmp_path, mixed_media, monkeypatch, cut_short):
    """A shard's small members go to the kernel in one os.writev; where it takes only part of them (a disk filling
    up, a signal), the rest is written after: the shards are the bytes of a run whose writes all went through."""
    from framelm.training.data import shard_writer

    assert data_main(convert_args(mixed_media, tmp_path / "whole", "--num-proc", "1")) == 0
    cut = []

    def short_writev(fd, parts):
        cut.append(len(parts))
        return cut_short(fd, parts)

    monkeypatch.setattr(shard_writer.os, "writev", short_writev)
    assert data_main(convert_args(mixed_media, tmp_path / "cut", "--num-proc", "1")) == 0
    monkeypatch.undo()
    assert cut and max(cut) > 2
    assert folder_bytes(tmp_path / "cut") == folder_bytes(tmp_path / "whole")


@pytest.mark.timeout(120)  # forks writer processes: a lost one must fail the test, not hang it
def test_a_writer_process_killed_is_an_error_and_the_next_run_finishes_the_shards(
    tmp_path, mixed_media, monkeypatch, capsys
):
    """A worker killed by a signal (the OOM killer) stops the convert with an error saying to run it again, never a
    hang; the run again ends with the bytes of an uninterrupted run."""
    from framelm.training.data import shard_writer

    assert data_main(convert_args(mixed_media, tmp_path / "whole", "--num-proc", "1")) == 0
    parent, real_shard = os.getpid(), shard_writer.TarShard

    class KilledOnOneShard(real_shard):
        def __init__(self, path: str):
            if os.getpid() != parent and path.endswith(".train-000002.tar.partial"):
                os.kill(os.getpid(), signal.SIGKILL)
            super().__init__(path)

    monkeypatch.setattr(shard_writer, "TarShard", KilledOnOneShard)
    assert data_main(convert_args(mixed_media, tmp_path / "out", "--num-proc", "2")) == 1
    error = capsys.readouterr().err
    assert re.search(r"error: a shard writer process died after \d+ of 8 shards were written", error), error
    assert "(run the same convert again: it keeps the finished shards" in error and not (tmp_path / "out").exists()
    monkeypatch.setattr(shard_writer, "TarShard", real_shard)
    assert data_main(convert_args(mixed_media, tmp_path / "out", "--num-proc", "2")) == 0
    assert folder_bytes(tmp_path / "out") == folder_bytes(tmp_path / "whole")


def test_reading_the_media_leaves_their_access_times_and_works_for_files_of_another_owner(
    tmp_path, mixed_media, monkeypatch
):
    """Convert opens media with O_NOATIME where Linux has it: the files it copies keep their access time (no inode
    written per file, as tar's --atime-preserve=system). Only a file's owner may ask for that: where the kernel
    refuses, convert drops the flag once and reads on, with the same bytes."""
    from framelm.training.data import shard_writer

    media = sorted([*tmp_path.glob("*.png"), *(tmp_path / "videos").glob("*.mp4")])
    old = 1_000_000_000  # an access time older than the files' mtime: a plain read would update it (relatime)
    for path in media:
        os.utime(path, (old, path.stat().st_mtime))
    assert data_main(convert_args(mixed_media, tmp_path / "wds", "--num-proc", "1")) == 0
    if hasattr(os, "O_NOATIME"):
        assert {path.name: path.stat().st_atime for path in media} == {path.name: old for path in media}

    opened, real_open = [], os.open

    def refusing(path, flags, *args, **kwargs):  # the kernel's answer to O_NOATIME on another user's file
        opened.append(flags)
        if flags & getattr(os, "O_NOATIME", 0):
            raise PermissionError(1, "Operation not permitted", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(shard_writer, "_open_flags", os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    monkeypatch.setattr(shard_writer.os, "open", refusing)
    assert data_main(convert_args(mixed_media, tmp_path / "again", "--num-proc", "1")) == 0
    monkeypatch.undo()
    tars = sorted(p.name for p in (tmp_path / "wds").glob("*.tar"))
    assert tars and all((tmp_path / "again" / n).read_bytes() == (tmp_path / "wds" / n).read_bytes() for n in tars)
    media_opens = [f for f in opened if not f & (os.O_WRONLY | os.O_CREAT)]
    refused = sum(1 for f in media_opens if f & getattr(os, "O_NOATIME", 0))
    assert refused == (1 if hasattr(os, "O_NOATIME") else 0) and len(media_opens) >= len(media)


def test_a_convert_with_unreadable_media_resumes_once_they_are_fixed(tmp_path, mixed_media, capsys):
    assert data_main(convert_args(mixed_media, tmp_path / "reference")) == 0
    hidden = tmp_path / "img7b.png"  # the second image of r7
    hidden.rename(tmp_path / "away.png")
    assert data_main(convert_args(mixed_media, tmp_path / "wds")) == 1
    assert "(id=r7): cannot read its media" in capsys.readouterr().err
    assert not (tmp_path / "wds").exists()
    (tmp_path / "away.png").rename(hidden)
    assert data_main(convert_args(mixed_media, tmp_path / "wds")) == 0  # the shard that lacked r7 is written again
    assert folder_bytes(tmp_path / "wds") == folder_bytes(tmp_path / "reference")


def identity(path) -> tuple[int, int]:
    """A file's inode and modification time: a file written again (even at a reused inode) has a new one."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


CHILD = """
from framelm.training.cli import data_main as main
assert main({args!r}) == 0
"""


@pytest.mark.slow
def test_a_killed_convert_run_again_writes_only_the_missing_shards_and_the_same_bytes(tmp_path, mixed_media):
    """Killed (SIGKILL, one process) before its k-th file-system step for several k, then run again: the result
    equals an uninterrupted run's byte for byte, and the shards complete at the kill are kept, not rewritten."""
    out = tmp_path / "wds"
    assert data_main(convert_args(mixed_media, tmp_path / "warm")) == 0  # the `datasets` cache, outside the count
    reference = run_killed_at(CHILD.format(args=convert_args(mixed_media, out, "--num-proc", "1")), 10**9)
    assert not reference.killed
    expected = folder_bytes(out)
    assert len([name for name in expected if name.endswith(".tar")]) == 8
    # 8 shards (each: open, replace), metadata, then the swap; a run replacing an output takes two steps more (a
    # folder to hold the old output, the old output renamed into it), so `steps + 1` is between its two renames
    steps, kept = reference.steps, 0
    for kill_at in (steps // 3, steps // 2, steps - 4, steps - 1, steps, steps + 1, steps + 2):
        run = run_killed_at(CHILD.format(args=convert_args(mixed_media, out, "--num-proc", "1")), kill_at)
        assert run.killed, kill_at
        if kill_at == steps + 1:  # killed between the two renames: the earlier output is beside, whole
            (holder,) = tmp_path.glob(".wds.replaced-*")
            assert not out.exists() and folder_bytes(holder / "wds") == expected
        else:
            assert folder_bytes(out) == expected, kill_at  # the earlier output, or this run's: the same bytes
        complete = {p.name: identity(p) for p in tmp_path.glob(".wds.partial-*/*.tar")}
        assert data_main(convert_args(mixed_media, out)) == 0
        assert folder_bytes(out) == expected, kill_at
        assert {name: identity(out / name) for name in complete} == complete, kill_at  # kept, not written again
        kept += len(complete)
        assert [p.name for p in tmp_path.glob(".wds.*")] == []
    assert not complete  # the last kill came after the swap: nothing was left to resume
    assert kept  # some kills left complete shards, which the next run kept
