"""`open_source`: the one place that decides what a data path is, and the kinds' shared interface: `load` and
`stream` give the same samples for every kind."""

from __future__ import annotations

import datasets
import pytest
import yaml

from framelm.training.cli import data_main
from framelm.training.data.arguments import DataArguments
from framelm.training.data.datasource import ConvertedFolder, DataFile, Mixture, Shards, Table, open_source


def rows_of(rows) -> list[tuple]:
    return sorted((row["id"], row["turns"][-1]["text"], len(row["media"])) for row in rows)


def test_each_kind_of_source_is_chosen_once_and_loads_and_streams_the_same_samples(tmp_path, llava_data):
    cache = str(tmp_path / "cache")
    parquet = tmp_path / "train.parquet"
    datasets.load_dataset("json", data_files=str(llava_data), split="train", cache_dir=cache).to_parquet(parquet)
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(yaml.safe_dump([{"name": "llava", "json_path": "train.jsonl"}]))
    assert data_main(["convert", str(llava_data), "--out", str(tmp_path / "arrow"), "--cache-dir", cache]) == 0
    argv = ["convert", str(llava_data), "--out", str(tmp_path / "wds"), "--to", "webdataset", "--split", "1,0,0"]
    assert data_main([*argv, "--cache-dir", cache]) == 0
    kinds = {str(llava_data): DataFile, str(parquet): Table, str(mixture): Mixture,
             str(tmp_path / "arrow"): ConvertedFolder, str(tmp_path / "wds"): Shards}  # fmt: skip
    expected = None
    for path, kind in kinds.items():
        data = DataArguments(dataset=path, cache_dir=cache, num_proc=1)
        source = open_source(data)
        assert type(source) is kind and source.path == path
        assert source.always_streams == (kind is Shards)
        assert source.records(data) == (6 if kind is Shards else None)
        loaded = source.load(data)
        assert loaded.total == 6 and not loaded.problems
        expected = expected or rows_of(loaded.dataset)
        assert rows_of(loaded.dataset) == expected, kind
        assert rows_of(source.stream(data)) == expected, kind
        limited = DataArguments(dataset=path, cache_dir=cache, num_proc=1, max_samples=2)
        assert len(list(source.stream(limited))) == 2 and len(source.load(limited).dataset) == 2


def test_no_data_is_refused_before_anything_is_read():
    with pytest.raises(ValueError, match="no data given"):
        open_source(DataArguments())


def test_loading_tunes_the_collector_for_its_pass_and_restores_the_process_settings(tmp_path, llava_data, monkeypatch):
    """`few_collections` holds for a pass over the records (its map workers fork inside it) and gives the process its
    own collector settings back after it, also when the pass fails."""
    import gc
    import multiprocessing

    from framelm.training.data.loading import load_samples
    from framelm.training.data.raw import COLLECT_EVERY, few_collections

    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="a failing pass"), few_collections():
        assert gc.get_threshold() == COLLECT_EVERY and gc.get_freeze_count() > 0
        with multiprocessing.get_context("fork").Pool(1) as pool:  # a worker forked inside inherits it
            assert pool.apply(gc.get_threshold) == COLLECT_EVERY
        raise RuntimeError("a failing pass")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    with few_collections():
        with few_collections():
            pass
        assert gc.get_threshold() == COLLECT_EVERY and gc.get_freeze_count() > 0  # an inner pass leaves the outer's
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    from framelm.training.data import loading

    seen, real_open_source = [], loading.open_source

    class Probe:  # the source as loading sees it: the collector's settings while it reads
        def __init__(self, data):
            self.source = real_open_source(data)

        def load(self, data):
            seen.append(gc.get_threshold())
            return self.source.load(data)

    monkeypatch.setattr(loading, "open_source", Probe)
    loaded = load_samples(DataArguments(dataset=str(llava_data), cache_dir=str(tmp_path / "cache")))
    assert seen == [COLLECT_EVERY] and loaded.total == 6
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
