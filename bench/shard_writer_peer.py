"""Child process of `bench/data_scale.py --part shards`: the peer a user would write by hand with webdataset.

    python bench/shard_writer_peer.py RECORDS.jsonl OUT_DIR SHARD_SIZE

Each LLaVA record of RECORDS.jsonl (`image` a path or a list, `video` a path) becomes one sample of
`webdataset.ShardWriter`: the record's JSON as it is, each media file's bytes read whole into Python under
`<index><extension>`, records in file order. Nothing is checked, normalized, shuffled or split, and a missing file
stops the script: the least work a shard needs, done the usual way, to time framelm's writer against.
"""

from __future__ import annotations

import os
import sys

import orjson
import webdataset


def main() -> None:
    records, out, shard_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    root = os.path.dirname(os.path.abspath(records))
    os.makedirs(out, exist_ok=True)
    count = 0
    with open(records, "rb") as lines, webdataset.ShardWriter(f"{out}/peer-%06d.tar", maxcount=shard_size,
                                                              verbose=0) as sink:  # fmt: skip
        for line in lines:
            record = orjson.loads(line)
            sample = {"__key__": f"{count:09d}", "json": line}
            paths = record.get("image") or []
            paths = ([paths] if isinstance(paths, str) else paths) + ([record["video"]] if "video" in record else [])
            for index, path in enumerate(paths):
                with open(os.path.join(root, path), "rb") as media:
                    sample[f"{index}{os.path.splitext(path)[1]}"] = media.read()
            sink.write(sample)
            count += 1
    print(f"{count} samples")


if __name__ == "__main__":
    main()
