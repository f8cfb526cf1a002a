"""The `shards` part of `bench/data_scale.py`: convert to self-contained shards next to `tar`, then stream them.

Run through `python bench/data_scale.py --part shards`; see its docstring for what is measured and why.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

FRAMELM_DATA = [sys.executable, "-m", "framelm.training.cli", "data"]
STREAM = str(Path(__file__).resolve().parent / "shard_stream.py")
SHARD_SIZE = 1000  # records per shard: 10,000 records are 9 training shards, enough for 2 DataLoader workers
SMALL = 10_000


def jpeg_bytes() -> bytes:
    """A 32x32 JPEG of noise (about 1.5 kB): small enough for a million files, a real image for the collator."""
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def generate(folder: Path, n: int) -> Path:
    """`n` LLaVA records, each with its own image file under `images/NNNN/` (1,000 a folder)."""
    data = jpeg_bytes()
    path = folder / f"records_{n}.jsonl"
    with open(path, "wb") as records:
        for i in range(n):
            name = f"images/{i // 1000:04d}/{i:07d}.jpg"
            if i % 1000 == 0:
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            record = {"id": f"{i:07d}", "image": name, "conversations": [
                {"from": "human", "value": "<image>\nWhat is in the picture? Describe it in detail."},
                {"from": "gpt", "value": f"A man riding a horse next to a river, picture {i}."}]}  # fmt: skip
            records.write(orjson.dumps(record) + b"\n")
    return path


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def shard_cases(work: Path, n: int, quick: bool, run: Callable[[list[str]], dict]) -> tuple[list[dict], dict]:
    from framelm.training.model.tiny import build_tiny_framelm

    cases, summary = [], {}
    model = build_tiny_framelm(work / "tiny")
    start = time.perf_counter()
    records = generate(work, n)
    print(f"generated {n:,} records and image files in {time.perf_counter() - start:.1f} s")
    media_mb = n * len(jpeg_bytes()) / 2**20

    peer = run(["tar", "-cf", str(work / "peer.tar"), "-C", str(work), "images", records.name])
    peer_mb = (work / "peer.tar").stat().st_size / 2**20
    (work / "peer.tar").unlink()
    convert = run(FRAMELM_DATA + ["convert", str(records), "--out", str(work / "shards"), "--to", "webdataset",
                                  "--shard-size", str(SHARD_SIZE), "--num-proc", "2",
                                  "--cache-dir", str(work / "cache")])  # fmt: skip
    assert convert["returncode"] == 0, "framelm data convert failed"
    shards_mb = folder_bytes(work / "shards") / 2**20
    for name, result, size in (("tar -cf (same files)", peer, peer_mb), ("framelm data convert --to webdataset",
                                                                          convert, shards_mb)):  # fmt: skip
        result |= {
            "case": name,
            "records": n,
            "output_mb": round(size),
            "media_mb": round(media_mb),
            "records_per_s": round(n / result["seconds"]),
            "mb_per_s": round(size / result["seconds"], 1),
        }
        cases.append(result)
        print(f"{name:<40} {result['seconds']:>7.1f} s {result['records_per_s']:>8,} rec/s {result['mb_per_s']:>7.1f}"
              f" MB/s {result['cpu_seconds']:>7.1f} CPU-s (load {result['load_average_before']:.1f})")  # fmt: skip
    summary["convert_records_per_s"] = {"target": "reported", "measured": convert["records_per_s"], "met": True}
    summary["convert_mb_per_s_vs_tar"] = {
        "target": "reported", "measured": round(convert["mb_per_s"] / peer["mb_per_s"], 3), "met": True
    }  # fmt: skip

    small_records = work / f"records_{SMALL}.jsonl"
    with open(records, "rb") as source, open(small_records, "wb") as target:
        target.writelines(line for _, line in zip(range(SMALL), source, strict=False))
    small = run(
        FRAMELM_DATA
        + [
            "convert",
            str(small_records),
            "--out",
            str(work / "shards_small"),
            "--to",
            "webdataset",
            "--shard-size",
            str(SHARD_SIZE),
            "--cache-dir",
            str(work / "cache"),
        ]
    )
    assert small["returncode"] == 0, "framelm data convert (small) failed"
    collated_sizes = (2_000, SMALL) if quick else (SMALL, 100_000)
    streams = {}
    for label, folder, extra in (
        (f"rows {SMALL:,}", work / "shards_small", []),
        (f"rows {n:,}", work / "shards", []),
        (f"collated {collated_sizes[0]:,}", work / "shards_small", ["--collate"]),
        (f"collated {collated_sizes[1]:,}", work / "shards", ["--collate"]),
    ):
        wanted = int(label.split()[1].replace(",", ""))
        command = [sys.executable, STREAM, str(folder), str(model), *extra]
        if wanted < _records_in(folder):
            command += ["--max-samples", str(wanted)]
        result = run(command)
        assert result["returncode"] == 0, f"streaming {label} failed"
        result |= json.loads(result["last_line"]) | {"case": f"stream {label}"}
        result["records_per_s"] = round(result["records"] / result["stream_seconds"])
        streams[label] = result
        cases.append(result)
        print(
            f"stream {label:<33} {result['stream_seconds']:>7.1f} s {result['records_per_s']:>8,} rec/s "
            f"{result['peak_rss_mb']:>6,} MB peak RSS (load {result['load_average_before']:.1f})"
        )
    rows_ratio = streams[f"rows {n:,}"]["peak_rss_mb"] / streams[f"rows {SMALL:,}"]["peak_rss_mb"]
    collated = [streams[f"collated {size:,}"]["peak_rss_mb"] for size in collated_sizes]
    summary[f"stream_peak_rss_ratio_{n // 1000}k_vs_10k"] = {
        "target": "<= 1.10", "measured": round(rows_ratio, 3), "met": rows_ratio <= 1.10
    }  # fmt: skip
    summary["stream_collated_peak_rss_ratio"] = {
        "target": "<= 1.10", "measured": round(collated[1] / collated[0], 3), "met": collated[1] / collated[0] <= 1.10
    }  # fmt: skip
    for folder in ("images", "shards", "shards_small", "cache", "tiny"):
        shutil.rmtree(work / folder, ignore_errors=True)
    return cases, summary


def _records_in(folder: Path) -> int:
    return json.loads((folder / "framelm_shards.json").read_text())["splits"]["train"]["records"]
