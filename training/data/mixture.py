"""Dataset mixtures (LaViDa-O / LLaVA-NeXT style YAML): which files, how much of each, and how rows become records.

    datasets:                              # or a bare list at the top level
      - name: captions
        json_path: s3://bucket/laion.parquet   # json, jsonl, csv, parquet, arrow (local or fsspec URL), or a
                                           # save_to_disk folder or Hub dataset id (with dataset_config/_split)
        sampling_strategy: random:10%      # all | full | dup:N | random:N | random:P% | first:N | end:N
        preprocess_fn: image_caption       # a registered function (an import path needs --trust-preprocess-code)
        columns: [url, caption, aesthetic, height, width]
        aes_cutoff: 5.5                    # any other key is passed to preprocess_fn
        min_size: 256
      - name: llava
        json_path: llava_v1_5_mix665k.json  # no preprocess_fn: rows are records in a supported format
        sampling_strategy: dup:2

The YAML itself may live at an fsspec URL; relative `json_path`s resolve against its folder. Sampling is seeded by the
run's seed and the entry's name, so a mixture picks the same rows on every machine and adding an entry does not change
what the others pick.

A mixture never runs code the user did not choose: `preprocess_fn` names a registered function (`image_caption`,
`video_caption`, or one the user's own code registered with `@register_preprocess`). An import path
(`package.module:function`) is imported and called only with `--trust-preprocess-code` (`trust_preprocess_code`), as
`datasets` asks for `trust_remote_code`, and never for a YAML fetched from a URL: importing a module runs its code,
and `subprocess:run` would run a command built from the data.
"""

from __future__ import annotations

import importlib
import math
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields

import datasets
import fsspec
import yaml

from framelm.processing.sources_framelm import FetchLimits, fetch_bytes, install_hint
from framelm.training.data.formats import FORMATS
from framelm.training.data.formats.shown import short_repr
from framelm.training.data.paths import RefusedReference, is_remote, looks_like_url, resolve_media_path
from framelm.training.data.policy import DataError
from framelm.training.data.source_types import JSON_SUFFIXES, TABLE_BUILDERS, MixtureEntry, SamplingStrategy
from framelm.training.data.sources import (
    folder_of,
    is_dataset_reference,
    resolve_entry_path,
)

PREPROCESS_FNS: dict[str, Callable] = {}
MIXTURE_FETCH = FetchLimits(timeout=60.0, max_bytes=16 << 20)  # a remote mixture YAML: a small text file
DATA_SUFFIXES = (*JSON_SUFFIXES, *TABLE_BUILDERS)


def register_preprocess(name: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator: make `fn(row: dict, **entry_keys) -> record | Sample | None` usable as a mixture's `preprocess_fn`.

    `row` holds the entry's `columns` (all columns when not given), in that order. Return a record in any supported
    format (LLaVA conversations are the usual choice), a `Sample`, or None to leave the row out on purpose (e.g. below
    an aesthetic cutoff); left-out rows are counted and logged.
    """

    def register(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in PREPROCESS_FNS and PREPROCESS_FNS[key] is not fn:
            raise ValueError(f"preprocess_fn {key!r} is already registered (by {PREPROCESS_FNS[key].__module__})")
        PREPROCESS_FNS[key] = fn
        return fn

    return register


TRUST_HINT = (
    "pass --trust-preprocess-code to import and run it (only for a mixture YAML you wrote or trust: importing a "
    "module runs its code), or register the function with @framelm.training.data.mixture.register_preprocess in "
    "your own code and name it"
)


def get_preprocess(name: str, trust_code: bool = False, remote: bool = False) -> Callable:
    """A registered function by name. `package.module:function` names a registered function as well (nothing is
    imported), or, with `trust_code` and never for a `remote` YAML, any function (importing its module)."""
    if ":" in name:
        module, _, attribute = name.partition(":")
        known = next((fn for fn in PREPROCESS_FNS.values()
                      if fn.__module__ == module and fn.__name__ == attribute), None)  # fmt: skip
        if known is not None:
            return known
        if remote:
            raise ValueError(f"preprocess_fn {name!r} names code to import, in a mixture fetched from a URL: framelm "
                             "never imports code a remote file names; use a registered name "
                             f"({sorted(PREPROCESS_FNS)})")  # fmt: skip
        if not trust_code:
            raise ValueError(f"preprocess_fn {name!r} names code to import; framelm runs only registered functions "
                             f"({sorted(PREPROCESS_FNS)}) by default: {TRUST_HINT}")  # fmt: skip
        try:
            fn = getattr(importlib.import_module(module), attribute, None)
        except Exception as err:  # noqa: BLE001 - no such module, a relative or malformed name, its code failed
            raise ValueError(
                f"preprocess_fn {name!r}: cannot import {module!r} ({type(err).__name__}: {err})"
            ) from None
        if fn is None:
            raise ValueError(f"preprocess_fn {name!r}: module {module!r} has no {attribute!r}")
        return fn
    if name not in PREPROCESS_FNS:
        raise ValueError(
            f"preprocess_fn {name!r} is not registered; registered: {sorted(PREPROCESS_FNS)}. Register yours with "
            "@framelm.training.data.mixture.register_preprocess, or name it as 'package.module:function' with "
            "--trust-preprocess-code"
        )
    return PREPROCESS_FNS[name]


class MixtureError(DataError):
    """A mixture YAML (or a data file it names) that cannot be read; the message names the file, entry and key."""


# the YAML keys of an entry besides json_path and name: (types accepted, what the value must be)
ENTRY_KEY_TYPES = {
    "sampling_strategy": ((str,), "a strategy like random:10%"),
    "preprocess_fn": ((str,), "a registered function name"),
    "image_folder": ((str,), "a folder path"),
    "video_folder": ((str,), "a folder path"),
    "user_key": ((str,), "the role name of user turns"),
    "assistant_key": ((str,), "the role name of assistant turns"),
    "dataset_config": ((str,), "the config name of a Hub dataset"),
    "dataset_split": ((str,), "a split name like train"),
}


def is_mixture(path: str) -> bool:
    return str(path).lower().endswith((".yaml", ".yml"))


def load_mixture(path: str, trust_code: bool = False) -> list[MixtureEntry]:
    """Parse and check a mixture YAML before any data is read; every error names the file, the entry and the key,
    and the errors of all entries are listed at once. `trust_code` lets `preprocess_fn` name any import path (never
    for a YAML fetched from a URL)."""
    entries, errors = check_entries(_read_yaml(path), path, trust_code)
    if errors:
        raise MixtureError("\n".join(errors))
    return entries


def check_entries(document, path: str, trust_code: bool = False) -> tuple[list[MixtureEntry], list[str]]:
    """A parsed mixture document -> (its good entries, one error per bad entry); never raises on what it holds."""
    entries = document.get("datasets") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        return [], [f"{path}: a mixture is a list of datasets (at the top level or under 'datasets:')"]
    root = folder_of(path)
    result, errors, names = [], [], set()
    for index, raw in enumerate(entries, start=1):
        try:
            entry = _entry(raw, f"{path}: dataset {index}", root, trust_code, remote=is_remote(path))
        except ValueError as err:
            errors.append(str(err))
            continue
        if entry.name in names:
            errors.append(f"{entry.label}: the name {entry.name!r} is used twice; names seed the sampling and must "
                          "differ")  # fmt: skip
            continue
        names.add(entry.name)
        result.append(entry)
    return result, errors


def _read_yaml(path: str):
    try:
        if is_remote(path):  # fetched whole within a total deadline and a size limit, like remote media
            return yaml.safe_load(fetch_bytes(path, MIXTURE_FETCH).decode("utf-8"))
        local = resolve_media_path(path, "", allow_outside_root=True)  # the policy: a path, or file:// as one
        with open(local, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except RefusedReference as err:
        raise MixtureError(f"{path}: {err}; {err.fix}") from None
    except FileNotFoundError:
        raise MixtureError(f"{path}: no such mixture file") from None
    except UnicodeDecodeError as err:
        raise MixtureError(f"{path}: not UTF-8 text (byte {err.start}); a mixture is a YAML text file") from None
    except (TimeoutError, OSError, ImportError, ValueError) as err:  # too slow or large, unreachable, no backend
        raise MixtureError(f"{path}: cannot fetch the mixture file: {err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f" ({err.context})" if err.context else ""
        raise MixtureError(f"{path}: not valid YAML{where}: {err.problem}{context}; fix the syntax there") from None
    except RecursionError:
        raise MixtureError(f"{path}: lists or mappings nested too deeply to read; a mixture is a flat list") from None
    except yaml.YAMLError as err:  # ReaderError: a NUL or other character YAML does not allow
        character = getattr(err, "character", None)
        shown = repr(chr(character)) if isinstance(character, int) else repr(character)
        what = f"the character {shown} at position {getattr(err, 'position', '?')}" if character is not None else err
        raise MixtureError(f"{path}: not valid YAML: {what} is not allowed there (a binary file?)") from None


def _entry(raw, label: str, root: str, trust_code: bool = False, remote: bool = False) -> MixtureEntry:
    """One entry of the YAML, checked key by key; raises ValueError naming `label` and the key."""
    if not isinstance(raw, dict) or not raw.get("json_path"):
        raise ValueError(f"{label} needs at least a 'json_path' (and usually 'name' and 'sampling_strategy')")
    json_path = raw["json_path"]
    if not isinstance(json_path, str):
        raise ValueError(f"{label}: json_path must be a path or URL, not {short_repr(json_path)}")
    json_path = resolve_entry_path(json_path, root)
    if looks_like_url(json_path) and not is_remote(json_path) and not json_path.lower().startswith("file://"):
        try:
            resolve_media_path(json_path, "")  # the one policy says why: a scheme not allowed, a malformed URL
        except RefusedReference as err:
            raise ValueError(f"{label}: json_path {err}; {err.fix}") from None
    name = raw.get("name") or posixpath.splitext(posixpath.basename(json_path))[0]
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise ValueError(f"{label}: name must be a string, not {short_repr(name)}")
    label = f"{label} ({name})"
    if not json_path.lower().endswith(DATA_SUFFIXES) and not is_dataset_reference(json_path):
        raise ValueError(
            f"{label}: json_path {json_path!r} must end in one of {DATA_SUFFIXES}, or be a dataset folder or Hub "
            "dataset id"
        )
    for key, (types, what) in ENTRY_KEY_TYPES.items():
        if raw.get(key) is not None and not isinstance(raw[key], types):
            raise ValueError(f"{label}: {key} must be {what}, not {short_repr(raw[key])}")
    fmt = raw.get("format", "auto")
    if fmt not in FORMATS:
        raise ValueError(f"{label}: format {short_repr(fmt)} is not one of {list(FORMATS)}")
    columns = raw.get("columns")
    if columns is not None and (not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns)):
        raise ValueError(f"{label}: columns must be a list of names like [url, caption], not {short_repr(columns)}")
    try:
        strategy = SamplingStrategy.parse(raw.get("sampling_strategy", "all"))
    except ValueError as err:
        raise ValueError(f"{label}: {err}") from None
    known = {f.name for f in fields(MixtureEntry)} - {"kwargs", "label"}
    extra = {k: v for k, v in raw.items() if k not in known}
    if odd := [key for key in extra if not isinstance(key, str)]:
        raise ValueError(f"{label}: keys must be names, not {short_repr(odd)}")
    if extra and not raw.get("preprocess_fn"):
        raise ValueError(
            f"{label}: keys {sorted(extra)} are only passed to a preprocess_fn, and none is given; "
            f"known keys: {sorted(known)}"
        )
    if raw.get("preprocess_fn"):
        try:
            get_preprocess(raw["preprocess_fn"], trust_code, remote)  # fail now, not after reading the data
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None
    if problem := filesystem_problem(json_path):
        raise ValueError(f"{label}: {problem}")
    return MixtureEntry(
        name=str(name),
        json_path=json_path,
        sampling_strategy=strategy,
        preprocess_fn=raw.get("preprocess_fn"),
        columns=tuple(columns) if columns else None,
        format=fmt,
        image_folder=raw.get("image_folder"),
        video_folder=raw.get("video_folder"),
        user_key=raw.get("user_key"),
        assistant_key=raw.get("assistant_key"),
        dataset_config=raw.get("dataset_config"),
        dataset_split=raw.get("dataset_split"),
        kwargs=extra,
        label=label,
        trust_code=trust_code and not remote,
    )


def filesystem_problem(path: str) -> str | None:
    """Why fsspec cannot open `path` (an unknown URL scheme, a backend package not installed), or None."""
    if not looks_like_url(path):
        return None
    scheme = path.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as err:
        return f"cannot read {scheme}:// URLs: {err}; {install_hint(scheme)}"
    except ValueError:
        return (
            f"fsspec knows no {scheme}:// filesystem; use a local path or a URL fsspec reads (s3://, gs://, https://)"
        )
    return None


@contextmanager
def reading(entry: MixtureEntry) -> Iterator[None]:
    """Errors of reading one data file as one `MixtureError` naming its entry: a missing file, a table that does not
    parse (an unterminated CSV quote), a missing fsspec backend."""
    named = f"{entry.label}: {entry.json_path}" if entry.label else entry.json_path
    try:
        yield
    except FileNotFoundError as err:  # a missing file, or a Hub id / folder `datasets` could not find (says what)
        raise MixtureError(f"{named}: not found" if err.errno else f"{named}: {err}") from None
    except ImportError as err:
        raise MixtureError(f"{named}: {filesystem_problem(entry.json_path) or err}") from None
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err
        raise MixtureError(f"{named}: cannot be read: {type(cause).__name__}: {cause}") from None


def _caption_record(row: dict, kind: str, prompt: str, aes_cutoff, min_size) -> dict | None:
    values = list(row.values())
    if len(values) < 2:
        raise ValueError(f"needs at least two columns (media path, caption), got {list(row)}")
    path, caption = values[0], values[1]
    if _missing(caption):  # str(None) would train the answer "None"
        raise ValueError(f"the caption (column {list(row)[1]!r}) is empty (NULL or NaN)")
    if aes_cutoff is not None and len(values) > 2 and (_missing(values[2]) or not float(values[2]) >= aes_cutoff):
        return None  # an unknown score is not above the cutoff
    sides = [0 if _missing(v) else int(v) for v in values[3:5]]
    if min_size is not None and len(sides) == 2 and min(sides) < min_size:
        return None
    return {
        kind: path,
        "conversations": [
            {"from": "human", "value": f"<{kind}>\n{prompt}"},
            {"from": "gpt", "value": str(caption)},
        ],
    }


def _missing(value) -> bool:
    """None, NaN (how pandas and parquet give an empty cell) or an empty string."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


@register_preprocess("image_caption")
def image_caption(row: dict, prompt: str = "Describe the image briefly.", aes_cutoff=None, min_size=None):
    """Columns (image path, caption[, score, height, width]) -> a captioning exchange.

    Rows whose score is below `aes_cutoff`, or whose smaller side is below `min_size`, are left out.
    """
    return _caption_record(row, "image", prompt, aes_cutoff, min_size)


@register_preprocess("video_caption")
def video_caption(row: dict, prompt: str = "Describe the video briefly.", aes_cutoff=None, min_size=None):
    """Columns (video path or frame folder, caption[, score, height, width]) -> a captioning exchange."""
    return _caption_record(row, "video", prompt, aes_cutoff, min_size)
