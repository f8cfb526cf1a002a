"""Write normalized samples as self-contained WebDataset shards (`framelm data convert --to webdataset`).

Each sample's media go into its shard as their own bytes (an image file as it is, a video file as it is, a frame
folder as its frame images), so the folder can be moved, uploaded to the Hub or read by megatron-energon without the
original files; the layout is described in `shards.py`. Shards are written in parallel (`num_proc`), each worker
reading its media and writing its own tar: the work is reading and writing bytes, so a media file is never decoded
and never read twice: opened once, a small file read whole in one call, a large one's size taken from the open file
and its bytes copied into the shard by the kernel (`os.sendfile`). Tar headers are built from a template, not by
`tarfile`.

A shard's bytes depend only on the data and the convert's options (fixed mtime, owner and mode; records in the
seeded order), so a convert is resumable: the folder is written beside its target (`.NAME.partial-PLAN`, PLAN a
digest of the data and options), each shard beside its name and renamed when complete; a convert killed half-way
and run again with the same data and options keeps the complete shards, writes the missing ones, and produces the
same bytes an uninterrupted run would. The manifest is written last and the folder renamed into place at the end,
so a glob never picks up a partial result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import orjson
import pyarrow as pa
from tqdm.auto import tqdm

from framelm.training.atomic_write import folder_written_beside
from framelm.training.data.embedded import extension_of
from framelm.training.data.paths import is_remote
from framelm.training.data.policy import apply_bad_record_policy, require_records
from framelm.training.data.raw import few_collections, forked_pool, map_workers
from framelm.training.data.sample import RecordProblem
from framelm.training.data.shards import (
    HUB_SPLIT_NAMES,
    SHARD_FORMAT,
    SHARD_FORMAT_VERSION,
    SPLIT_NAMES,
    shard_features,
)
from framelm.training.data.sources import SHARD_MANIFEST
from framelm.training.env import usable_cores
from framelm.training.errors import InputError

logger = logging.getLogger(__name__)

ROWS_PER_READ = 256  # rows (with their embedded media bytes) read from the Arrow dataset at a time
CONTIGUOUS_ROWS_BYTES = 1 << 30  # rows up to this size are copied once into one table (`Rows`): 4x faster to gather
ENERGON_DATASET_YAML = "__module__: megatron.energon\n__class__: CrudeWebdataset\n"
SHARD_MTIME = 946_684_800  # 2000-01-01: every member's mtime, so that a shard's bytes depend on its content only
MEMBER_MODE = 0o444
WRITE_BUFFER = 4 << 20  # bytes gathered before one os.writev() to the shard
WRITE_PARTS = 1020  # or pieces (headers, contents, paddings): os.writev takes at most IOV_MAX (1024) at a time
SENDFILE_FROM = 256 << 10  # media files at least this large are copied by the kernel (os.sendfile), not through Python


@dataclass
class ShardResult:
    """What one worker wrote into one shard."""

    name: str
    records: int = 0
    members: set[str] = field(default_factory=set)  # media member names used (the json excluded)
    media_bytes: int = 0
    problems: list[RecordProblem] = field(default_factory=list)


def split_counts(n: int, weights: tuple[float, ...]) -> list[int]:
    """Records per split for weights like (9, 1, 0): largest remainders, and a zero weight always gets zero."""
    if len(weights) != len(SPLIT_NAMES) or any(w < 0 for w in weights) or not sum(weights):
        raise ValueError(f"split {weights} must be three non-negative weights (train, val, test), e.g. 9,1,0")
    exact = [n * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def write_webdataset(
    dataset: datasets.Dataset,
    out_dir: str,
    split: tuple[float, ...] = (9, 1, 0),
    shard_size: int = 10_000,
    seed: int = 0,
    num_proc: int | None = None,
    bad_records: str = "strict",
) -> dict[str, int]:
    """Shuffle (seeded), split and write `{split}-{shard:06d}.tar` shards with their media, the manifest, the dataset
    card and energon's dataset.yaml into `out_dir` (replaced as a whole); returns the samples written per split.

    A sample whose media cannot be read is a bad record: `strict` stops (nothing is written), `skip` leaves it out.
    `num_proc` shards are written at a time (None: every core for a large dataset, one for a small one). An
    interrupted convert resumes: run again with the same data and options, it writes only the missing shards.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size {shard_size} must be at least 1")
    order = np.random.default_rng(seed).permutation(len(dataset))
    tasks, start = [], 0
    for name, count in zip(SPLIT_NAMES, split_counts(len(dataset), split), strict=True):
        for number, first in enumerate(range(0, count, shard_size)):
            tasks.append((name, number, first, order[start + first : start + min(first + shard_size, count)]))
        start += count
    plan = _plan(dataset, split, shard_size, seed, bad_records)
    started = time.perf_counter()
    # refuses a folder convert did not write; the partial folder of the same plan survives a kill, to resume
    with folder_written_beside(out_dir, "framelm data convert", resume_key=plan) as partial:
        done = _complete_shards(partial)
        todo = [task for task in tasks if _shard_name(task[0], task[1]) not in done]
        if done:
            logger.info("%s: resuming: %d of %d shards are complete, writing the other %d",
                        out_dir, len(tasks) - len(todo), len(tasks), len(todo))  # fmt: skip
        written_now = _run(todo, dataset, str(partial), num_proc, keep_bad=bad_records != "strict")
        results = sorted(list(done.values()) + written_now, key=lambda r: r.name)
        problems = [p for r in results for p in r.problems]
        apply_bad_record_policy(problems, len(dataset), out_dir, bad_records)
        written = Counter()
        for result in results:
            written[result.name.split("-", 1)[0]] += result.records
        require_records(sum(written.values()), len(dataset), out_dir)
        _write_metadata(str(partial), results, dict(written))
    seconds = time.perf_counter() - started
    counts = {name: written[name] for name in SPLIT_NAMES if written[name]}
    media_mb = sum(r.media_bytes for r in results) / 2**20
    logger.info("%s: %s (%.1f MB of media) in %.1f s: %.0f records/s, %.1f MB/s of media",
                out_dir, ", ".join(f"{n} {name}" for name, n in counts.items()), media_mb, seconds,
                sum(counts.values()) / seconds, media_mb / seconds)  # fmt: skip
    return counts


def _shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def _plan(dataset: datasets.Dataset, split: tuple[float, ...], shard_size: int, seed: int, bad_records: str) -> str:
    """What a convert's shards depend on, as a digest: an interrupted convert is resumed only by one with the same
    plan. The dataset is named by its `datasets` fingerprint, which follows the data files (their size and mtime) and
    the reading options; with `datasets` caching off it is random, and a convert always starts over."""
    from framelm.training.env import framelm_version

    plan = {"dataset": dataset._fingerprint, "records": len(dataset), "split": list(split), "shard_size": shard_size,
            "seed": seed, "bad_records": bad_records, "format_version": SHARD_FORMAT_VERSION,
            "framelm_version": framelm_version()}  # fmt: skip
    return hashlib.sha256(orjson.dumps(plan, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _complete_shards(partial: Path) -> dict[str, ShardResult]:
    """The shards an interrupted convert of the same plan finished: a shard has its name only once it is complete
    (under `strict`, only when none of its records was bad). Their counts are read back from their tar headers."""
    done = {}
    for path in sorted(partial.glob("*.tar")):
        result = ShardResult(path.name)
        with tarfile.open(path) as tar:
            for member in tar:
                name = member.name.split(".", 1)[1]
                if name == "json":
                    result.records += 1
                else:
                    result.members.add(name)
                    result.media_bytes += member.size
        done[path.name] = result
    return done


class Rows:
    """A dataset's rows as Python dicts, gathered by position in the order asked (through the dataset's indices
    mapping, as `dataset[positions]` would).

    The Arrow file holds a record batch per 1,000 rows, so a shard's rows, drawn from everywhere, are 1,000 one-row
    slices: `datasets` gathers them one by one and `to_pylist` converts 1,000 pieces (14 us a row at 1M rows, more than
    reading the media and writing the tar together). A dataset of at most `CONTIGUOUS_ROWS_BYTES` (a million LLaVA
    records with their paths are 250 MB) is copied once into one table, before the workers fork (they share it), and
    `take` gathers from it in C++ (3-5 us a row, conversion included). Larger ones, with media bytes inside, are
    gathered from the memory map in pieces of `ROWS_PER_READ`, each made contiguous before it is converted."""

    def __init__(self, dataset: datasets.Dataset):
        table = dataset.data.table
        self.mapping = None if dataset._indices is None else dataset._indices.column(0).to_numpy()
        self.table = _contiguous(table) if table.nbytes <= CONTIGUOUS_ROWS_BYTES else None
        self.dataset = dataset.with_format("arrow")

    def __call__(self, positions: np.ndarray):
        for start in range(0, len(positions), ROWS_PER_READ):
            yield from self._piece(positions[start : start + ROWS_PER_READ]).to_pylist()

    def _piece(self, positions: np.ndarray):
        if self.table is None:
            return self.dataset[positions].combine_chunks()
        return self.table.take(positions if self.mapping is None else self.mapping[positions])


def _contiguous(table: pa.Table) -> pa.Table:
    """`table` with each column in one piece, the columns joined in threads (Arrow works outside the GIL): the copy's
    time is mostly first touches of memory, the memory map's and the new table's (1M rows: 0.76 -> 0.1-0.3 s)."""
    with ThreadPoolExecutor(usable_cores()) as pool:
        columns = list(pool.map(pa.ChunkedArray.combine_chunks, table.columns))
    return pa.table(columns, schema=table.schema)


_ROWS: Rows | None = None  # the dataset's rows, set before the workers fork


def _run(
    tasks: list, dataset: datasets.Dataset, folder: str, num_proc: int | None, keep_bad: bool
) -> list[ShardResult]:
    if not tasks:
        return []
    workers = map_workers(num_proc, len(dataset), len(tasks)) or 1
    jobs = [(name, number, first, indices, folder, keep_bad) for name, number, first, indices in tasks]
    progress = tqdm(total=sum(len(task[3]) for task in tasks), desc="writing shards", unit="record")
    global _ROWS
    _ROWS = Rows(dataset)
    results, pool = [], None
    try:
        with few_collections():  # the workers fork inside it (at the first submit): they inherit it, and the rows
            if workers > 1:
                pool = forked_pool(workers)
                outputs = (done.result() for done in as_completed([pool.submit(_write_shard, job) for job in jobs]))
            else:
                outputs = map(_write_shard, jobs)
            for result in outputs:
                results.append(result)
                progress.update(result.records + len(result.problems))
    except BrokenProcessPool:  # a worker killed by a signal (the OOM killer, a kill): the shards it finished stay
        raise InputError(
            f"a shard writer process died after {len(results)} of {len(jobs)} shards were written, killed by a signal "
            "(out of memory?)",
            "run the same convert again: it keeps the finished shards and writes the others",
        ) from None
    finally:
        progress.close()
        if pool:
            pool.shutdown(cancel_futures=True)
        _ROWS = None
    return results


def _write_shard(job: tuple) -> ShardResult:
    """Write one shard beside its name and rename it into place when complete; a shard with bad records keeps its
    partial name under `strict` (the convert stops; once the media are fixed, the next run writes it again)."""
    split, number, first, indices, folder, keep_bad = job
    result = ShardResult(name=_shard_name(split, number))
    final = os.path.join(folder, result.name)
    partial = os.path.join(folder, f".{result.name}.partial")
    with TarShard(partial) as sink:
        for offset, row in enumerate(_ROWS(indices)):
            try:
                members, media = _media_members(row["media"])
            except (OSError, ValueError) as err:
                fix = "fix or replace the media file (framelm data validate checks them all)"
                result.problems.append(RecordProblem(row["where"], f"cannot read its media: {err}", fix, id=row["id"],
                                                     kind="missing_file"))  # fmt: skip
                continue
            key = f"{split}_{first + offset:09d}"
            row["media"] = media
            try:
                sink.add(f"{key}.json", orjson.dumps(row))
                for name, content in members:
                    result.media_bytes += sink.add(f"{key}.{name}", content)
                    result.members.add(name)
            finally:
                for _, content in members:
                    if isinstance(content, OpenFile):
                        content.close()
            result.records += 1
    if result.problems and not keep_bad:
        return result
    os.replace(partial, final)
    return result


class OpenFile:
    """A large media file, open: `head`, its first bytes (the read that found it large), then the rest copied into
    the shard by the kernel, never read into Python. The size is checked against what was copied: a file changing
    meanwhile is an error, not a corrupt member."""

    def __init__(self, path: str, fd: int, head: bytes):
        self.path, self.fd, self.head = path, fd, head
        self.size = os.fstat(fd).st_size
        if self.size < len(head):
            raise OSError(f"{path} changed while it was read ({len(head)} bytes read, {self.size} now)")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TarShard:
    """A WebDataset shard written member by member into one file: USTAR headers built from a template (the same bytes
    `tarfile.TarInfo.tobuf` makes for them, at a tenth of the cost), small contents handed to the kernel by the
    hundred in one `os.writev` (never copied together in Python), large media files copied by the kernel. Every
    member has mtime `SHARD_MTIME`, mode 0444, owner 0:0 and no owner names, so a shard's bytes depend on its content
    only. Read by `tarfile`, GNU tar, webdataset, `datasets` and energon (tests/data/test_shards.py)."""

    def __init__(self, path: str):
        self.file = open(path, "wb", buffering=0)  # closed by __exit__
        self.fd = self.file.fileno()
        self.parts: list[bytes] = []  # headers, contents and paddings not written yet
        self.pending = 0  # their bytes

    def add(self, name: str, content: bytes | OpenFile) -> int:
        """Append a member; returns its size."""
        size = len(content) if isinstance(content, bytes) else content.size
        padding = _PADDING[-size % tarfile.BLOCKSIZE]  # members fill whole 512-byte blocks
        if isinstance(content, bytes):
            self.parts += (ustar_header(name, size), content, padding)
            self.pending += tarfile.BLOCKSIZE + size + len(padding)
            if self.pending >= WRITE_BUFFER or len(self.parts) >= WRITE_PARTS:
                self.flush()
        else:  # the header and the bytes already read, then the rest of the file from the kernel
            self.parts += (ustar_header(name, size), content.head)
            self.pending += tarfile.BLOCKSIZE + len(content.head)
            self.flush()
            self._sendfile(content, size)
            self.parts.append(padding)
            self.pending = len(padding)
        return size

    def _sendfile(self, source: OpenFile, size: int) -> None:
        offset = len(source.head)
        while offset < size:
            sent = os.sendfile(self.fd, source.fd, offset, size - offset)
            if sent == 0:
                raise OSError(f"{source.path} changed while it was copied ({size} bytes expected, {offset} read)")
            offset += sent

    def flush(self) -> None:
        if not self.parts:
            return
        written = os.writev(self.fd, self.parts)
        if written < self.pending:  # a regular file takes it all, but for a full disk (then os.write raises why)
            rest = memoryview(b"".join(self.parts))[written:]
            while rest:
                rest = rest[os.write(self.fd, rest) :]
        self.parts.clear()
        self.pending = 0

    def __enter__(self) -> TarShard:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.parts.append(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
                self.pending += 2 * tarfile.BLOCKSIZE
                self.flush()
        finally:
            self.file.close()


_PADDING = [bytes(n) for n in range(tarfile.BLOCKSIZE)]


_HEADER_MIDDLE = b"%07o\x00" % MEMBER_MODE + b"0000000\x00" * 2  # mode, uid, gid
_HEADER_TAIL = (
    b"0" + bytes(100) + tarfile.POSIX_MAGIC + bytes(64) + bytes(16) + bytes(155 + 12)
)  # typeflag, linkname, magic and version, uname and gname (empty), devmajor, devminor, prefix, padding
_MTIME_FIELD = b"%011o\x00" % SHARD_MTIME
_CONSTANT_SUM = sum(_HEADER_MIDDLE) + sum(_MTIME_FIELD) + sum(_HEADER_TAIL) + 8 * ord(" ")
MAX_FAST_SIZE = 8**11 - 1  # the largest size a USTAR header holds in octal


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte header of a regular file member `name` of `size` bytes, as `tarfile` writes it (USTAR, or PAX for a
    name longer than 100 bytes or a file of 8 GiB or more), with the shard's fixed mtime, mode and owner."""
    encoded = name.encode("utf-8")
    if len(encoded) > 100 or size > MAX_FAST_SIZE or not encoded.isascii():
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, SHARD_MTIME, MEMBER_MODE, "", ""
        return info.tobuf(tarfile.PAX_FORMAT)
    size_field = b"%011o\x00" % size
    checksum = _CONSTANT_SUM + sum(encoded) + sum(size_field)
    return b"".join((encoded, bytes(100 - len(encoded)), _HEADER_MIDDLE, size_field, _MTIME_FIELD,
                     b"%06o\x00 " % checksum, _HEADER_TAIL))  # fmt: skip


def _media_members(media: list[dict]) -> tuple[list[tuple[str, bytes | OpenFile]], list[dict]]:
    """([(member name, bytes or an open local file)], the json's media entries) of one sample's media rows (the
    `SAMPLE_FEATURES` layout, read as dicts: a `Media` per row costs more than copying a small file). Every file is
    opened before any member is written, so a sample whose media cannot all be read writes nothing (its files are
    closed)."""
    members, entries = [], []
    try:
        for index, item in enumerate(media):
            kind, path, data = item["kind"], item["path"], item["bytes"]
            if kind != "frames":
                if data is not None:
                    content, extension = data, extension_of(data, path)
                else:  # a file's own extension, else one read from its first bytes
                    content = _open(path)
                    extension = extension_of(b"", path, "") or extension_of(_head(content), "")
                name = f"{index}{extension}"
                members.append((name, content))
                entries.append({"kind": kind, "name": name, "frames": [], "fps": None})
                continue
            if item["frames"]:
                frames = [
                    (f["bytes"] if f["bytes"] is not None else _read(f["path"]), f["path"]) for f in item["frames"]
                ]
                fps = item["fps"]
            else:  # a frame folder: its frames in the processor's order, and its <folder>.json frame rate
                from framelm.processing.media_framelm import _folder_fps, _frame_names  # the processor's own reading

                names = _frame_names(path)
                frames = [(_read(os.path.join(path, n)), n) for n in names]
                fps = _folder_fps(path)
            names = []
            for number, (content, original) in enumerate(frames, start=1):
                names.append(f"{index}.{number:05d}{extension_of(content, original, '.jpg')}")
                members.append((names[-1], content))
            entries.append({"kind": "frames", "name": str(index), "frames": names, "fps": fps})
    except BaseException:
        for _, content in members:
            if isinstance(content, OpenFile):
                content.close()
        raise
    return members, entries


# Linux: reading leaves the file's access time alone, so a convert writes no inode per media file (tar's
# `--atime-preserve=system`); only the file's owner may ask, so after the first refusal the flag is dropped
_open_flags = os.O_RDONLY | getattr(os, "O_NOATIME", 0)


def _open(path: str) -> bytes | OpenFile:
    """A media file's content: a small file's bytes (one read, which ends short of `SENDFILE_FROM`: open, read,
    close, no stat) or a large file open for `os.sendfile`, with the bytes that first read took."""
    if is_remote(path):  # the policy of data/paths.py; samples reach here resolved by it
        from framelm.processing.sources_framelm import FetchLimits, fetch_bytes

        return fetch_bytes(path, FetchLimits())
    global _open_flags
    try:
        fd = os.open(path, _open_flags)
    except PermissionError:
        if _open_flags == os.O_RDONLY:
            raise
        _open_flags = os.O_RDONLY
        fd = os.open(path, _open_flags)
    try:
        data = os.read(fd, SENDFILE_FROM)
        if len(data) < SENDFILE_FROM:
            return data
        large, fd = OpenFile(path, fd, data), -1  # closed by its owner from here
        return large
    finally:
        if fd >= 0:
            os.close(fd)


def _head(content: bytes | OpenFile) -> bytes:
    return (content if isinstance(content, bytes) else content.head)[:16]


def _read(path: str) -> bytes:
    content = _open(path)
    if isinstance(content, bytes):
        return content
    try:
        rest = os.pread(content.fd, content.size - len(content.head), len(content.head))
    finally:
        content.close()
    if len(rest) != content.size - len(content.head):
        raise OSError(f"{path} changed while it was read ({content.size} bytes expected)")
    return content.head + rest


def _write_metadata(folder: str, results: list[ShardResult], written: dict[str, int]) -> None:
    """The dataset card, energon's dataset.yaml and, last, the manifest."""
    from framelm.training.env import framelm_version as version

    members = sorted(set().union(*(r.members for r in results)), key=lambda n: (len(n), n))
    features = shard_features(members)
    splits = {name: {"records": written[name], "shards": [r.name for r in results if r.name.startswith(name + "-")]}
              for name in SPLIT_NAMES if written.get(name)}  # fmt: skip
    manifest = {
        "format": SHARD_FORMAT,
        "version": SHARD_FORMAT_VERSION,
        "framelm_version": version(),
        "splits": splits,
        "media_members": sum(len(r.members) for r in results),
        "media_bytes": sum(r.media_bytes for r in results),
        "features": features.to_dict(),
    }
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(_dataset_card(features, splits))
    os.makedirs(os.path.join(folder, ".nv-meta"), exist_ok=True)
    with open(os.path.join(folder, ".nv-meta", "dataset.yaml"), "w", encoding="utf-8") as f:
        f.write(ENERGON_DATASET_YAML)
    temporary = os.path.join(folder, f".{SHARD_MANIFEST}.tmp")  # the manifest last, whole or absent
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    os.replace(temporary, os.path.join(folder, SHARD_MANIFEST))


def _dataset_card(features: datasets.Features, splits: dict) -> str:
    """A Hub dataset card whose metadata lets `datasets.load_dataset(folder)` read the splits and media bytes."""
    from huggingface_hub import DatasetCardData

    card = DatasetCardData()
    datasets.info.DatasetInfosDict({"default": datasets.DatasetInfo(features=features)}).to_dataset_card_data(card)
    card["configs"] = [
        {
            "config_name": "default",
            "data_files": [{"split": HUB_SPLIT_NAMES[name], "path": f"{name}-*.tar"} for name in splits],
        }
    ]
    counts = ", ".join(f"{info['records']:,} {name}" for name, info in splits.items())
    first = next((name for name, info in splits.items() if info["shards"]), "train")  # a split that has shards
    last = max(len(splits.get(first, {}).get("shards", [])) - 1, 0)
    pattern = f"{first}-{{000000..{last:06d}}}.tar" if last else f"{first}-000000.tar"  # a glob of what exists
    return f"""---
{card.to_yaml()}
---
# framelm WebDataset shards

{counts} samples written by `framelm data convert --to webdataset`. Each sample is `<key>.json` (the conversation,
each media item naming its member) plus its media as their original bytes (`<key>.0.jpg`, `<key>.1.mp4`, frames as
`<key>.2.00001.jpg` ...). Read them with

- framelm: `framelm train --dataset THIS_FOLDER` (streams), `framelm data validate THIS_FOLDER`;
- datasets: `datasets.load_dataset("THIS_FOLDER", split="train", streaming=True)`;
- webdataset: `webdataset.WebDataset("THIS_FOLDER/{pattern}")`;
- megatron-energon: `energon prepare THIS_FOLDER --non-interactive --split-parts 'train:train-.*' --split-parts
  'val:val-.*'` indexes the shards; `.nv-meta/dataset.yaml` declares them a `CrudeWebdataset` (cook the json and
  media in your TaskEncoder).
"""
