"""The one writer (`training/atomic_write.py`), tried as a hostile neighbour would: symlinks planted at every name a
write uses beside its target, and folders holding files framelm did not write. Each test checks the victim's bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from framelm.training.atomic_write import (
    WRITTEN_RECORD,
    NotWrittenByFramelmError,
    folder_written_beside,
    foreign_entries,
    write_text_atomically,
)

VICTIM_BYTES = b"the user's own file: never overwritten\n"


def digest(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `path` (or of `path` itself)."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()}  # fmt: skip


@pytest.fixture
def victim(tmp_path) -> Path:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_bytes(VICTIM_BYTES)
    return elsewhere / "secret.txt"


@pytest.fixture
def predictable_names(monkeypatch):
    """mkstemp/mkdtemp try the name "planted" first: a test plants a symlink there, so the exclusive creation must
    refuse it and move on to the next name ("fresh0", "fresh1", ...)."""

    def names():
        yield "planted"
        for i in range(100):
            yield f"fresh{i}"

    monkeypatch.setattr(tempfile, "_get_candidate_names", names)


def test_a_symlink_at_every_temp_name_of_a_file_write_is_never_followed(tmp_path, victim, predictable_names):
    target = tmp_path / "out" / "framelm_run.json"
    target.parent.mkdir()
    planted = [
        target.with_name(".framelm_run.json.tmp"),  # the old predictable name
        target.with_name(".framelm_run.json.plantedtmp"),
        target.with_name(".framelm_run.json.planted.tmp"),  # the name mkstemp tries first here
    ]
    for link in planted:
        link.symlink_to(victim)
    write_text_atomically(target, '{"stage": "full"}\n')
    assert victim.read_bytes() == VICTIM_BYTES
    assert target.read_text() == '{"stage": "full"}\n' and not target.is_symlink()
    assert all(link.is_symlink() for link in planted)  # left as they were: not framelm's
    assert oct(target.stat().st_mode & 0o777) != "0o600"  # a normal file, not mkstemp's private mode


def test_a_symlink_at_the_target_itself_is_replaced_not_written_through(tmp_path, victim):
    target = tmp_path / "review.json"
    target.symlink_to(victim)
    write_text_atomically(target, "{}")
    assert victim.read_bytes() == VICTIM_BYTES and target.read_text() == "{}" and not target.is_symlink()


def test_a_symlink_at_every_name_beside_a_folder_write_is_never_followed(tmp_path, victim, predictable_names):
    target = tmp_path / "hub"
    victim_folder = victim.parent
    before = digest(victim_folder)
    planted = [tmp_path / f".hub.{kind}" for kind in ("partial", "replaced", "tmp")]
    planted += [tmp_path / f".hub.{kind}-planted" for kind in ("partial", "replaced")]  # names mkdtemp tries first
    for link in planted:
        link.symlink_to(victim_folder, target_is_directory=True)
    for round_ in range(2):  # a first write, then one replacing it (the old folder is moved aside and deleted)
        with folder_written_beside(target, "framelm export") as partial:
            (partial / "config.json").write_text(f"round {round_}")
            (partial / "secret.txt").write_text("written by framelm")
        assert (target / "config.json").read_text() == f"round {round_}"
    assert digest(victim_folder) == before and victim.read_bytes() == VICTIM_BYTES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hub.") and not p.is_symlink()]  # no leftovers


def test_a_folder_holding_files_framelm_did_not_write_is_refused_and_left_byte_identical(tmp_path):
    target = tmp_path / "wds"
    with folder_written_beside(target, "framelm data convert") as partial:
        (partial / "train-000000.tar").write_bytes(b"old shard")
    assert json.loads((target / WRITTEN_RECORD).read_text()) == {
        "written_by": "framelm data convert",
        "files": ["train-000000.tar"],
    }
    (target / ".git").mkdir()
    (target / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (target / "LICENSE").write_text("CC-BY-4.0\n")
    before = digest(target)
    with pytest.raises(NotWrittenByFramelmError) as refused:
        with folder_written_beside(target, "framelm data convert") as partial:
            pytest.fail("the block must not run: the refusal comes before any work")
    assert str(refused.value) == (
        f"{target} holds what `framelm data convert` did not write (.git/HEAD, LICENSE), which framelm never "
        "replaces or deletes: choose another folder, or move those files away"
    )
    assert digest(target) == before and [p.name for p in tmp_path.iterdir()] == ["wds"]
    with folder_written_beside(target, "framelm data convert", overwrite=True) as partial:  # the user said so
        (partial / "train-000000.tar").write_bytes(b"new shard")
    assert sorted(p.name for p in target.iterdir()) == [WRITTEN_RECORD, "train-000000.tar"]


def test_files_appearing_while_the_block_writes_stop_the_swap(tmp_path):
    target = tmp_path / "out"
    with folder_written_beside(target, "framelm data convert") as partial:
        (partial / "a.tar").write_bytes(b"a")
    with pytest.raises(NotWrittenByFramelmError, match=r"\(notes.txt\)"):
        with folder_written_beside(target, "framelm data convert") as partial:
            (partial / "a.tar").write_bytes(b"new")
            (target / "notes.txt").write_text("mine")  # the user adds a file meanwhile
    assert (target / "notes.txt").read_text() == "mine" and (target / "a.tar").read_bytes() == b"a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the new folder removed, nothing else left


def test_what_counts_as_foreign(tmp_path):
    assert foreign_entries(tmp_path / "absent", "framelm export") == []
    (tmp_path / "empty").mkdir()
    assert foreign_entries(tmp_path / "empty", "framelm export") == []
    (tmp_path / "file").write_text("x")
    assert foreign_entries(tmp_path / "file", "framelm export") == ["file"]
    with folder_written_beside(tmp_path / "model", "framelm export") as partial:
        (partial / "config.json").write_text("{}")
    assert foreign_entries(tmp_path / "model", "framelm export") == []
    # an exported model is not a convert output: convert may not replace it
    assert foreign_entries(tmp_path / "model", "framelm data convert") == ["config.json"]
    (tmp_path / "model" / "config.json").unlink()
    os.symlink(tmp_path / "file", tmp_path / "model" / "config.json")  # a listed name, now a symlink: foreign
    (tmp_path / "model" / "sub").mkdir()
    assert foreign_entries(tmp_path / "model", "framelm export") == ["config.json", "sub/"]
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "config.json").write_text("{}")  # no record: nothing in it is known to be framelm's
    assert foreign_entries(tmp_path / "legacy", "framelm export") == ["config.json"]


def test_convert_into_a_folder_with_a_git_checkout_and_a_license_deletes_nothing(tmp_path, make_image, capsys):
    from framelm.training.cli import data_main

    make_image("red.png", color=(255, 0, 0))
    record = {"id": "r0", "image": "red.png", "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                                                 {"from": "gpt", "value": "Red."}]}  # fmt: skip
    data = tmp_path / "train.json"
    data.write_text(json.dumps([record]))
    out = tmp_path / "wds"

    def convert(*extra: str) -> int:
        return data_main(["convert", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *extra])

    assert convert("--to", "webdataset", "--split", "1,0,0") == 0
    assert convert("--to", "arrow") == 0  # its own earlier output (the other kind): replaced as a whole
    (out / ".git").mkdir()
    (out / ".git" / "config").write_text("[core]\n")
    (out / "LICENSE").write_text("Apache-2.0\n")
    (out / "annotations.csv").write_text("id,label\nr0,red\n")
    before = digest(out)
    for to in ("webdataset", "arrow"):
        assert convert("--to", to) == 1
        err = capsys.readouterr().err
        assert "holds what `framelm data convert` did not write (.git/config, LICENSE, annotations.csv)" in err
        assert digest(out) == before  # every file byte-identical, none deleted


def test_a_writer_that_needs_a_file_name_gets_a_fresh_one(tmp_path, victim, predictable_names):
    from framelm.training.atomic_write import path_written_beside
    from framelm.training.data.media_writer import write_mp4

    target = tmp_path / "cache" / "clip.mp4"
    target.parent.mkdir()
    for name in ("partial-clip.mp4", ".clip.mp4.planted.mp4"):  # the old bench name, and the one tried first here
        (target.parent / name).symlink_to(victim)
    with path_written_beside(target) as partial:
        assert partial.name == ".clip.mp4.fresh0.mp4" and partial.stat().st_size == 0
        write_mp4(partial, [np.zeros((16, 16, 3), np.uint8)] * 2, fps=2)
    assert victim.read_bytes() == VICTIM_BYTES and target.stat().st_size > 0
    with pytest.raises(ValueError, match="no frames"):
        with path_written_beside(tmp_path / "cache" / "empty.mp4") as partial:
            write_mp4(partial, [], fps=2)
    assert sorted(p.name for p in target.parent.iterdir()) == [".clip.mp4.planted.mp4", "clip.mp4", "partial-clip.mp4"]


def test_a_frame_folder_marker_is_written_beside_not_through_a_symlink(tmp_path, victim):
    from framelm.training.data.media_writer import write_frame_folder

    (tmp_path / "clip.json").symlink_to(victim)
    write_frame_folder(tmp_path / "clip", [np.zeros((8, 8, 3), np.uint8)], fps="2.0")
    assert victim.read_bytes() == VICTIM_BYTES and json.loads((tmp_path / "clip.json").read_text()) == {"fps": "2.0"}
