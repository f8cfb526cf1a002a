"""The `shards` part of `bench/data_scale.py`: convert to self-contained shards next to `tar -cf` of the same files,
then stream the shards back next to webdataset's and `datasets`' readers of the same shards.

Run through `python bench/data_scale.py --part shards [--quick]`; what is measured:

- small records: `n` records with one 32x32 JPEG file each (LLaVA pretraining-like), `framelm data convert --to
  webdataset --num-proc 2` (and `--num-proc 1`, for the scaling) vs `tar -cf` of the records file and every image and
  vs `shard_writer_peer.py` (the `webdataset.ShardWriter` loop a user would write: no checks, no shuffle, one process);
- real-sized media: records mixed like LLaVA-Video's (30 % text only, 40 % with one or two ~100 KB JPEGs, 30 % with a
  1-5 MB mp4: bytes of that size with an mp4 header, which convert copies and never decodes), same two commands;
- each command twice, alternating, best of the two (every round's time recorded), dirty pages flushed before each
  (all read files the generator has just written, from the page cache), each writing into an empty place (the
  outputs of earlier runs removed, untimed: tar's after its run, convert's before); convert cold (no `datasets`
  cache) and after `framelm data validate` filled it (the records read and checked once); records/s and MB/s (output
  bytes a second) of the whole command, and of convert's writing phase alone (its log line: the rest is Python's
  start, imports and reading the records);
- `framelm data validate` with its media check (every image decoded as training decodes it) on the small records,
  once: no peer checks media; its records/s are reported;
- streaming read-back with 2 DataLoader workers: framelm's training stream (`data_prep.stream_for_training`: seeded
  shuffle, the length rule's token counts, no media decoded; and collated batches for a few thousand records),
  `webdataset.WebDataset` (json parsed, media bytes kept), `datasets.load_dataset(folder, streaming=True)` and
  megatron-energon's loader (after `energon prepare`, timed too) on the same shards; peak resident memory of the
  streaming process tree for a small and the whole stream (flat RSS).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

FRAMELM_DATA = [sys.executable, "-m", "framelm.training.cli", "data"]
STREAM = str(Path(__file__).resolve().parent / "shard_stream.py")
PEER_WRITER = str(Path(__file__).resolve().parent / "shard_writer_peer.py")
VALIDATE_CASE = "framelm data validate --no-media-check (before convert)"
SHARD_SIZE = 1000  # records per shard: 10,000 records are 9 training shards, enough for 2 DataLoader workers
WRITER_LINE = re.compile(r"in ([\d.]+) s: (\d+) records/s, ([\d.]+) MB/s of media")
CONVERSATION = [{"from": "human", "value": "What is in the picture? Describe it in detail."},
                {"from": "gpt", "value": "A man riding a horse next to a river."}]  # fmt: skip


def jpeg_bytes(side: int = 32, seed: int = 0, quality: int = 90) -> bytes:
    """A JPEG of noise: 32x32 is about 1.5 kB (small enough for a million files), 200x200 about 100 kB."""
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def generate_small(folder: Path, n: int) -> Path:
    """`n` LLaVA records, each with its own image file under `images/NNNN/` (1,000 a folder)."""
    data = jpeg_bytes()
    path = folder / f"records_{n}.jsonl"
    with open(path, "wb") as records:
        for i in range(n):
            name = f"images/{i // 1000:04d}/{i:07d}.jpg"
            if i % 1000 == 0:
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            turns = [{**CONVERSATION[0], "value": "<image>\n" + CONVERSATION[0]["value"]}, CONVERSATION[1]]
            records.write(orjson.dumps({"id": f"{i:07d}", "image": name, "conversations": turns}) + b"\n")
    return path


def generate_real(folder: Path, n: int) -> Path:
    """`n` records mixed like LLaVA-Video's: 30 % text only, 40 % one or two ~100 kB JPEGs, 30 % a 1-5 MB mp4."""
    rng = np.random.default_rng(0)
    jpegs = [jpeg_bytes(200, seed, 95) for seed in range(4)]
    (folder / "real").mkdir(exist_ok=True)
    path = folder / f"real_{n}.jsonl"
    with open(path, "wb") as records:
        for i in range(n):
            record = {"id": f"{i:07d}", "conversations": [dict(turn) for turn in CONVERSATION]}
            kind = rng.random()
            if 0.3 <= kind < 0.7:
                names = [f"real/{i:07d}_{k}.jpg" for k in range(1 + int(rng.random() < 0.5))]
                for k, name in enumerate(names):
                    (folder / name).write_bytes(jpegs[(i + k) % len(jpegs)])
                record["image"] = names if len(names) > 1 else names[0]
                record["conversations"][0]["value"] = "<image>\n" * len(names) + CONVERSATION[0]["value"]
            elif kind >= 0.7:
                name = f"real/{i:07d}.mp4"
                size = int(rng.integers(1 << 20, 5 << 20))
                (folder / name).write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(size - 12))
                record["video"] = name
                record["conversations"][0]["value"] = "<video>\n" + CONVERSATION[0]["value"]
            records.write(orjson.dumps(record) + b"\n")
    return path


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def convert_vs_tar(
    work: Path, records: Path, media: str, label: str, run: Callable, num_procs=(2,), rounds: int = 2
) -> list[dict]:
    """`tar -cf`, a hand-written `webdataset.ShardWriter` loop and `framelm data convert --to webdataset` of the same
    files, alternating, the best of `rounds` runs each. Convert runs cold (no `datasets` cache: it reads and checks
    every record) and, for a user who validated first, after `framelm data validate --no-media-check` with the same
    cache (untimed): the records are then read and checked once, by validate, and convert only writes."""
    n = sum(1 for _ in open(records, "rb"))
    peer_out = work / f"peer_shards_{label}"
    cache = work / "cache"
    commands = {
        "tar -cf (same files)": ["tar", "-cf", str(work / "peer.tar"), "-C", str(work), media, records.name],
        "webdataset.ShardWriter (same files)": [sys.executable, PEER_WRITER, str(records), str(peer_out),
                                                str(SHARD_SIZE)],
    }  # fmt: skip
    validate = FRAMELM_DATA + ["validate", str(records), "--no-media-check", "--cache-dir", str(cache)]
    before: dict[str, list[str]] = {}  # case -> the command run (untimed) before it
    for procs, after_validate in [(procs, False) for procs in num_procs] + [(num_procs[-1], True)]:
        name = f"framelm data convert --to webdataset --num-proc {procs}" + (" (after validate)" * after_validate)
        commands[name] = FRAMELM_DATA + [
            "convert", str(records), "--out", str(work / f"shards_{label}"), "--to", "webdataset",
            "--shard-size", str(SHARD_SIZE), "--num-proc", str(procs), "--cache-dir", str(cache),
        ]  # fmt: skip
        if after_validate:
            before[name] = validate
    best: dict[str, dict] = {}
    runs: dict[str, list[float]] = {}  # every round's seconds, recorded beside the best
    for _ in range(rounds):
        for name, command in commands.items():
            shutil.rmtree(cache, ignore_errors=True)  # cold, unless the validate below fills it
            # every command writes into an empty place: tar's and the peer's outputs are removed after their runs,
            # convert's before its run (it would replace the last one, and deleting 3.4 GB of shards takes ~1 s)
            shutil.rmtree(work / f"shards_{label}", ignore_errors=True)
            if name in before:  # timed too: the reading and checking that a cold convert does on its own
                checked = run(before[name])
                assert checked["returncode"] == 0, f"validate before {name} failed"
                runs.setdefault(VALIDATE_CASE, []).append(checked["seconds"])
                if VALIDATE_CASE not in best or checked["seconds"] < best[VALIDATE_CASE]["seconds"]:
                    best[VALIDATE_CASE] = checked
            result = run(command, keep_output=True)
            assert result["returncode"] == 0, f"{name} failed"
            output = result.pop("output")
            if name.startswith("tar"):
                result["output_mb"] = (work / "peer.tar").stat().st_size / 2**20
                (work / "peer.tar").unlink()
            elif name.startswith("webdataset"):
                result["output_mb"] = folder_bytes(peer_out) / 2**20
                shutil.rmtree(peer_out)
            else:
                result["output_mb"] = folder_bytes(work / f"shards_{label}") / 2**20
                seconds, records_per_s, media_mb_per_s = WRITER_LINE.search(output).groups()
                result |= {"writer_seconds": float(seconds), "writer_records_per_s": int(records_per_s),
                           "writer_media_mb_per_s": float(media_mb_per_s),
                           "writer_mb_per_s": round(result["output_mb"] / float(seconds), 1)}  # fmt: skip
            runs.setdefault(name, []).append(result["seconds"])
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result
    cases = []
    for name, result in best.items():
        result |= {
            "case": f"{label}: {name}",
            "seconds_each_round": runs[name],
            "records": n,
            "output_mb": round(result.get("output_mb", 0.0), 1),  # validate writes only its cache
            "records_per_s": round(n / result["seconds"]),
            "mb_per_s": round(result.get("output_mb", 0.0) / result["seconds"], 1),
        }
        cases.append(result)
        writer = (f" (writing phase {result['writer_records_per_s']:,} rec/s {result['writer_mb_per_s']} MB/s)"
                  if "writer_seconds" in result else "")  # fmt: skip
        written = f"{result['mb_per_s']:>7.1f} MB/s" if result["output_mb"] else f"{'-':>7} MB/s"
        print(f"{result['case']:<62} {result['seconds']:>6.1f} s {result['records_per_s']:>7,} rec/s "
              f"{written} {result['cpu_seconds']:>6.1f} CPU-s (load "
              f"{result['load_average_before']:.1f}){writer}")  # fmt: skip
    return cases


def energon_prepare(shards: Path, run: Callable) -> dict:
    """`energon prepare` of the shards (energon's index, which its reader needs): the step an energon user runs after
    writing shards, timed as a case of its own, with a worker per core (its default is 16)."""
    from framelm.training.env import usable_cores  # the cores convert's writers use too

    command = [sys.executable, "-m", "megatron.energon.cli.main", "prepare", str(shards), "--non-interactive",
               "--split-parts", r"train:train-.*\.tar", "--split-parts", r"val:val-.*\.tar",
               "--num-workers", str(usable_cores()), "--no-progress"]  # fmt: skip
    result = run(command)
    assert result["returncode"] == 0, "energon prepare failed"
    records = sum(json.loads((shards / "framelm_shards.json").read_text())["splits"][s]["records"]
                  for s in ("train", "val"))  # fmt: skip
    result |= {"case": "small: energon prepare (index the shards)", "records": records,
               "records_per_s": round(records / result["seconds"])}  # fmt: skip
    print(f"{result['case']:<62} {result['seconds']:>6.1f} s {result['records_per_s']:>7,} rec/s "
          f"(load {result['load_average_before']:.1f})")  # fmt: skip
    return result


def shard_cases(work: Path, n: int, quick: bool, run: Callable[..., dict]) -> tuple[list[dict], dict]:
    from common import tiny_model, train_step_rate

    if not quick:
        n_small, n_real = n, 4_000  # 4,000 real-sized records are about 4 GB; a million (1 TB) do not fit here
    else:
        n_small, n_real = 20_000, 300
    cases, summary = [], {}
    model = tiny_model(work)
    start = time.perf_counter()
    small_records, real_records = generate_small(work, n_small), generate_real(work, n_real)
    real_mb = folder_bytes(work / "real") / 2**20
    print(f"generated {n_small:,} small and {n_real:,} real-sized records with their files in "
          f"{time.perf_counter() - start:.1f} s ({real_mb:,.0f} MB of real-sized media)")  # fmt: skip

    # best of two rounds: one command's time varies by up to 1.6x with the page cache's state (tar: 7-11 s at 1M)
    small = convert_vs_tar(work, small_records, "images", "small", run, num_procs=(1, 2))
    real = convert_vs_tar(work, real_records, "real", "real-sized", run)
    cases += small + real
    by_case = {c["case"]: c for c in cases}
    for label, key, unit in (("small", "records_per_s", "records/s"), ("real-sized", "mb_per_s", "MB/s")):
        tar = by_case[f"{label}: tar -cf (same files)"]
        convert = by_case[f"{label}: framelm data convert --to webdataset --num-proc 2"]
        validated = by_case[f"{label}: framelm data convert --to webdataset --num-proc 2 (after validate)"]
        name = f"convert_{label.replace('-', '_')}_{unit.replace('/', '_per_')}_vs_tar"
        summary[name] = {"target": ">= 0.5x", "measured": round(convert[key] / tar[key], 3),
                         "met": convert[key] / tar[key] >= 0.5,
                         "after_validate": round(validated[key] / tar[key], 3),
                         "writing_phase_only": round(convert[f"writer_{key}"] / tar[key], 3)}  # fmt: skip
        checks = by_case[f"{label}: {VALIDATE_CASE}"]  # what a cold convert adds to one after validate
        summary[f"validate_{label.replace('-', '_')}_records_per_s_vs_tar"] = {
            "target": "reported", "measured": round(checks["records_per_s"] / tar["records_per_s"], 3), "met": True
        }  # fmt: skip
        peer = by_case[f"{label}: webdataset.ShardWriter (same files)"]
        summary[name.replace("_vs_tar", "_vs_webdataset_shardwriter")] = {
            "target": "reported", "measured": round(convert[key] / peer[key], 3), "met": True
        }  # fmt: skip
    # the media check training relies on: every image decoded as training decodes it (no peer does this)
    shutil.rmtree(work / "cache", ignore_errors=True)
    checked = run(FRAMELM_DATA + ["validate", str(small_records), "--cache-dir", str(work / "cache")])
    assert checked["returncode"] == 0, "validate with the media check failed"
    checked |= {"case": "small: framelm data validate (media check)", "records": n_small,
                "records_per_s": round(n_small / checked["seconds"])}  # fmt: skip
    cases.append(checked)
    print(f"{checked['case']:<62} {checked['seconds']:>6.1f} s {checked['records_per_s']:>7,} rec/s "
          f"{checked['cpu_seconds']:>6.1f} CPU-s (load {checked['load_average_before']:.1f})")  # fmt: skip
    summary["validate_media_check_small_records_per_s"] = {
        "target": "reported",
        "measured": checked["records_per_s"],
        "met": True,
    }
    one = by_case["small: framelm data convert --to webdataset --num-proc 1"]["writer_records_per_s"]
    two = by_case["small: framelm data convert --to webdataset --num-proc 2"]["writer_records_per_s"]
    summary["convert_num_proc_2_vs_1_writing_phase"] = {"target": "reported", "measured": round(two / one, 2),
                                                        "met": True}  # fmt: skip

    small_stream = 5_000 if quick else 10_000
    collated = 1_000 if quick else 10_000
    shards = work / "shards_small"
    cases.append(energon_prepare(shards, run))
    streams = {}
    for label, extra, wanted in (
        ("framelm rows", [], small_stream),
        ("framelm rows", [], None),
        ("framelm collated", ["--collate"], collated),
        ("webdataset.WebDataset", ["--reader", "webdataset"], None),
        ("datasets.load_dataset(streaming)", ["--reader", "datasets"], None),
        ("megatron-energon", ["--reader", "energon"], None),
    ):
        command = [sys.executable, STREAM, str(shards), str(model), *extra]
        if wanted is not None:
            command += ["--max-samples", str(wanted)]
        result = run(command)
        assert result["returncode"] == 0, f"streaming {label} failed"
        result |= json.loads(result["last_line"])
        result |= {"case": f"stream {label} {result['records']:,}",
                   "records_per_s": round(result["records"] / result["stream_seconds"])}  # fmt: skip
        streams[result["case"]] = result
        cases.append(result)
        print(f"{result['case']:<62} {result['stream_seconds']:>6.1f} s {result['records_per_s']:>7,} rec/s "
              f"{result['peak_rss_mb']:>6,} MB peak RSS ({result['peak_pss_mb']:,} PSS) "
              f"(load {result['load_average_before']:.1f})")  # fmt: skip
    rows = [c for c in streams.values() if c["case"].startswith("stream framelm rows")]
    rows_ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    summary[f"stream_peak_rss_ratio_{rows[1]['records'] // 1000}k_vs_{rows[0]['records'] // 1000}k"] = {
        "target": "<= 1.10", "measured": round(rows_ratio, 3), "met": rows_ratio <= 1.10
    }  # fmt: skip
    collated_case = next(c for c in streams.values() if c["case"].startswith("stream framelm collated"))
    step, step_source = train_step_rate()
    summary["stream_collated_vs_train_step"] = {
        "target": "> 1x bench 3's step samples/s (fastest case)",
        "measured": round(collated_case["records_per_s"] / step, 2) if step else None,
        "met": collated_case["records_per_s"] > step if step else None, "source": step_source,
    }  # fmt: skip
    for prefix, name in (("stream webdataset", "webdataset"), ("stream megatron-energon", "energon")):
        peer = next(c for c in streams.values() if c["case"].startswith(prefix))
        summary[f"stream_framelm_rows_vs_{name}_samples_per_s"] = {
            "target": "reported", "measured": round(rows[1]["records_per_s"] / peer["records_per_s"], 3), "met": True
        }  # fmt: skip
    for folder in ("images", "real", "shards_small", "shards_real-sized", "cache", "tiny"):
        shutil.rmtree(work / folder, ignore_errors=True)
    for path in (small_records, real_records):
        path.unlink()
    return cases, summary
