"""Record-by-record reading of json, jsonl and json-array files, keeping each record's line and naming syntax errors.

A record is yielded as its raw JSON text with the line and column where it starts, and parsed later (in
`Dataset.map` workers, see `loading.py`). Splitting first and parsing later lets a syntax error cost one record
instead of the file: a JSON array with a trailing comma in its third element still yields the other elements, and
the error names the line and column of the comma. Files are read in chunks, so a 300 MB array never sits in memory
twice.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import orjson

CHUNK_CHARS = 8 * 1024 * 1024  # characters read at a time from a JSON array
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_DECODER = json.JSONDecoder()
# an escaped backslash, or a high surrogate escape with its low half if any, or a low surrogate escape alone
_SURROGATE_ESCAPES = re.compile(
    r"\\\\|\\u([dD][89abAB][0-9a-fA-F]{2})(\\u[dD][c-fC-F][0-9a-fA-F]{2})?|\\u([dD][c-fC-F][0-9a-fA-F]{2})"
)
_ID = re.compile(rb'"id"\s*:\s*(?:"((?:[^"\\]|\\.)*)"|(-?\d+))')  # a string or integer id


@dataclass(frozen=True)
class RawRecord:
    """One record's JSON text before parsing; `error` is set when the file's structure around it is already wrong."""

    line: int  # 1-based line where the record starts
    column: int  # 1-based column where the record starts
    text: bytes
    error: str = ""


class JSONRecordError(ValueError):
    """A record's text is not valid JSON; `problem` and `fix` are written for a person, with line and column."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def file_stamp(path: str) -> tuple[str, int, int]:
    """(path, size, mtime) so that a cache built from a file is rebuilt when the file changes."""
    info = fsspec.core.url_to_fs(path)[0].info(path)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
    return path, int(info.get("size") or 0), int(float(mtime.timestamp() if hasattr(mtime, "timestamp") else mtime))


def jsonl_shards(path: str, num_shards: int) -> list[tuple[int, int, int]]:
    """Split a JSON Lines file into `num_shards` byte ranges that start at line starts: (start, end, first line)."""
    with fsspec.open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if num_shards <= 1 or size < 1024 * 1024:
            return [(0, size, 1)]
        starts = [0]
        for i in range(1, num_shards):
            f.seek(i * size // num_shards)
            f.readline()  # move to the start of the next line
            starts.append(max(f.tell(), starts[-1]))
        starts = sorted(set(starts))
        lines, f_pos, first_lines, after_cr = 1, 0, [], False
        f.seek(0)
        for start in starts:  # count the line ends before each start to know its line number
            while f_pos < start:
                block = f.read(min(16 * 1024 * 1024, start - f_pos))
                lines += _line_breaks(block, after_cr)
                f_pos, after_cr = f_pos + len(block), block.endswith(b"\r")
            first_lines.append(lines)
    return [(s, e, n) for s, e, n in zip(starts, starts[1:] + [size], first_lines, strict=True)]


def sniff_layout(path: str) -> str:
    """`array` for a JSON array, `lines` for JSON Lines (one record per line), `stream` for pretty-printed objects."""
    with fsspec.open(path, "rt", encoding="utf-8-sig", errors="replace") as f:
        head = f.read(64 * 1024)
    stripped = head.lstrip()
    if path.lower().endswith(".jsonl"):  # the name is a promise: a record that is a list is a bad record, not an array
        return "lines"
    if stripped.startswith("["):
        return "array"
    first_line = stripped.split("\n", 1)[0].strip()
    try:
        orjson.loads(first_line)
    except orjson.JSONDecodeError:
        return "stream" if first_line.startswith("{") else "lines"
    return "lines"


def iter_raw_records(path: str, shard: tuple[int, int, int] | None = None) -> Iterator[RawRecord]:
    """Every record of a json/jsonl file as raw text, in file order, without parsing it.

    `shard` (from `jsonl_shards`) limits a JSON Lines file to a byte range so that several processes split it.
    """
    layout = sniff_layout(path)
    if layout == "lines":
        yield from _iter_lines(path, shard or (0, None, 1))
    elif shard is None or shard[0] == 0:  # arrays and streams are read whole by the first shard only
        yield from _iter_values(path, in_array=layout == "array")


def _iter_lines(path: str, shard: tuple[int, int | None, int]) -> Iterator[RawRecord]:
    start, end, line = shard
    with fsspec.open(path, "rb") as f:
        f.seek(start)
        position = start
        for raw in f:
            if end is not None and position >= end:
                break
            position += len(raw)
            if line == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                raw = raw[3:]
            for piece in _split_bare_cr(raw):
                text = piece.strip()
                if text:
                    yield RawRecord(line, len(piece) - len(piece.lstrip()) + 1, text)
                line += 1


def _split_bare_cr(raw: bytes) -> list[bytes]:
    """A line read up to its `\\n`, split again at bare `\\r`s: classic Mac files end lines with `\\r` alone, and
    every editor shows them as lines. A raw `\\r` cannot sit inside a JSON string, so no record is cut by this."""
    body = raw[:-2] if raw.endswith(b"\r\n") else raw
    return body.split(b"\r") if b"\r" in body else [raw]


def _line_breaks(block: bytes, after_cr: bool) -> int:
    """Line ends in `block` as `_iter_lines` counts them: `\\n`, `\\r\\n` and a bare `\\r` each end one line
    (`after_cr`: the previous block ended with `\\r`, so a leading `\\n` completes that line end)."""
    if b"\r" not in block:  # the common case: one pass, not three (splitting 215 MB: 0.21 -> 0.07 s)
        return block.count(b"\n") - (after_cr and block.startswith(b"\n"))
    count = block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
    return count - 1 if after_cr and block.startswith(b"\n") else count


class _Buffer:
    """A growing window on a text file with the line and column of any position inside it."""

    def __init__(self, f):
        self.f, self.text, self.eof = f, "", False
        self._pos, self._line, self._line_start = 0, 1, 0  # a position whose line and line start are known
        self.more()

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(CHUNK_CHARS)
        self.eof = len(chunk) < CHUNK_CHARS
        self.text += chunk
        return bool(chunk)

    def where(self, pos: int) -> tuple[int, int]:
        """(line, column) of `pos`; positions must not go backwards between calls."""
        self._line += self.text.count("\n", self._pos, pos)
        newline = self.text.rfind("\n", self._pos, pos)
        if newline >= 0:
            self._line_start = newline + 1
        self._pos = pos
        return self._line, pos - self._line_start + 1

    def drop_before(self, pos: int) -> int:
        """Forget the text before `pos` (already yielded) and return the new index of `pos`."""
        if pos < CHUNK_CHARS:
            return pos
        self.where(pos)
        self.text = self.text[pos:]
        self._pos, self._line_start = 0, self._line_start - pos
        return 0

    def skip_space(self, pos: int) -> int:
        while True:
            pos = _WHITESPACE.match(self.text, pos).end()
            if pos < len(self.text) or not self.more():
                return pos


def _iter_values(path: str, in_array: bool) -> Iterator[RawRecord]:
    """Elements of a JSON array (or a stream of JSON values), found with the C scanner of `json.raw_decode`."""
    with fsspec.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        buf = _Buffer(f)
        pos = buf.skip_space(0) + (1 if in_array else 0)  # past the opening "["
        while True:
            pos = buf.skip_space(buf.drop_before(pos))
            if pos >= len(buf.text):
                if in_array:
                    line, column = buf.where(pos)
                    yield RawRecord(line, column, b"", "the file ends before the array's closing ']' (truncated?)")
                return
            if in_array and buf.text[pos] == "]":
                pos = buf.skip_space(pos + 1)
                if pos < len(buf.text):
                    line, column = buf.where(pos)
                    yield RawRecord(line, column, b"", "text after the array's closing ']'")
                return
            end = _value_end(buf, pos)
            line, column = buf.where(pos)
            if end == pos:  # a separator where a record should start ("[1,,2]", or commas between streamed objects)
                yield RawRecord(line, column, b"", f"a stray {buf.text[pos]!r} where a record should start")
                pos += 1
                continue
            yield RawRecord(line, column, buf.text[pos:end].encode("utf-8", "surrogateescape"))
            pos = buf.skip_space(end)
            if in_array and pos < len(buf.text) and buf.text[pos] == ",":
                pos += 1
            elif in_array and pos < len(buf.text) and buf.text[pos] != "]":
                line, column = buf.where(pos)
                yield RawRecord(line, column, b"", "a ',' is missing between two records of the array")


def _value_end(buf: _Buffer, pos: int) -> int:
    """End of the JSON value starting at `pos`; for a broken value, the end of its brackets (so reading goes on)."""
    while True:
        try:
            end = _DECODER.raw_decode(buf.text, pos)[1]
        except json.JSONDecodeError:
            if buf.more():
                continue
            return _bracket_end(buf.text, pos)
        if end < len(buf.text) or not buf.more():  # a number may continue in the next chunk
            return end


def _bracket_end(text: str, pos: int) -> int:
    """Where the bracketed value at `pos` closes, skipping strings and // or /* */ comments (broken records only)."""
    depth, i, n = 0, pos, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text.startswith("//", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
            continue
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = n if close < 0 else close + 2
            continue
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return i + 1
        elif depth == 0 and c in ",\n":
            return i
        i += 1
    return n


def find_id(raw: bytes) -> str:
    """The record's `"id"` read from text that does not parse, so that its problem still names it (best effort:
    the first `"id"` key in the text)."""
    match = _ID.search(raw)
    if match is None:
        return ""
    text = match.group(1) if match.group(1) is not None else match.group(2)  # `"id": ""` is an empty string id
    return text.decode("utf-8", "replace")


def parse_record(raw: bytes, line: int, column: int):
    """The parsed JSON value of one raw record, or `JSONRecordError` naming the line and column of what is wrong."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JSONRecordError(
            f"bytes that are not UTF-8 at line {line}, column {column + err.start}",
            "save the file as UTF-8",
        ) from None
    try:
        value = json.loads(text)  # accepts NaN and Infinity, which orjson refuses
    except json.JSONDecodeError as err:
        raise describe_syntax_error(text, err.pos, err.msg, line, column) from None
    except RecursionError:  # orjson stops at 1,024 levels; Python's parser at its recursion limit
        raise JSONRecordError(
            f"the record at line {line}, column {column} nests lists and objects too deeply (about 1,000 levels or "
            "more) to be read",
            "flatten the record: no conversation needs that many levels (a generated or corrupted record?)",
        ) from None
    if (position := _lone_surrogate(text)) is not None:  # orjson refuses them; Python's parser lets them through
        where = _line_column(text, position, line, column)
        raise JSONRecordError(
            f"a lone UTF-16 surrogate escape {text[position : position + 6]} at {where}: half of a character, "
            "which no text file can store",
            "write the whole character (both halves of the surrogate pair, or the character itself) or delete it",
        )
    return value


def _lone_surrogate(text: str) -> int | None:
    """Where a `\\uD800`-`\\uDFFF` escape stands without its other half, or None (`\\\\` pairs are skipped,
    so an escaped backslash before `uD800` is not mistaken for an escape)."""
    for match in _SURROGATE_ESCAPES.finditer(text):
        if (match.group(1) and not match.group(2)) or match.group(3):
            return match.start()
    return None


def _line_column(text: str, pos: int, line: int, column: int) -> str:
    """ "line L, column C" of position `pos` of a record that starts at (`line`, `column`) of its file."""
    before = text.count("\n", 0, pos)
    col = pos - text.rfind("\n", 0, pos) if before else column + pos
    return f"line {line + before}, column {col}"


def describe_syntax_error(text: str, pos: int, message: str, line: int, column: int) -> JSONRecordError:
    """Name the usual mistakes (trailing commas, comments, single quotes) instead of the parser's generic message."""

    def at(p: int) -> str:
        return _line_column(text, p, line, column)

    if text.startswith("//", pos) or text.startswith("/*", pos):
        return JSONRecordError(f"a comment at {at(pos)}: JSON has no comments", "delete the comment")
    previous = len(text[:pos].rstrip()) - 1
    if pos < len(text) and text[pos] in "]}" and previous >= 0 and text[previous] == ",":
        return JSONRecordError(
            f"a trailing comma at {at(previous)} before '{text[pos]}'", "delete the comma after the last item"
        )
    if pos < len(text) and text[pos] == "'":
        return JSONRecordError(f"a single-quoted string at {at(pos)}", "JSON strings use double quotes")
    if pos >= len(text.rstrip()):
        return JSONRecordError(
            f"the record ends early at {at(pos)} ({message})", "complete the record or remove it (truncated file?)"
        )
    return JSONRecordError(f"invalid JSON at {at(pos)}: {message}", "fix the JSON syntax at that position")
