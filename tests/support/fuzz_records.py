"""Hypothesis strategies for malformed input: JSON values of every type (lone surrogates and deep nesting included),
records that look almost like LLaVA / lmms / ShareGPT records, and lines of text that are not JSON at all."""

from __future__ import annotations

import json

from hypothesis import strategies as st

# text that may hold a lone UTF-16 surrogate (json.dumps writes it as a \udXXX escape, as a broken tool would)
texts = st.text(max_size=8) | st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts
    | st.sampled_from(["<image>", "<video>", "..//", "/etc/passwd", "http://127.0.0.1:9/a.png"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
turn = st.fixed_dictionaries(
    {},
    optional={
        "from": st.sampled_from(["human", "gpt", "system", "user", "assistant", "bot"]) | json_values,
        "value": st.sampled_from(["<image>", "<video>", "<image><video>x", "hi"]) | json_values,
        "role": st.sampled_from(["user", "assistant", "system"]) | json_values,
        "content": json_values | st.lists(
            st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "video", "audio"])},
                                  optional={"text": json_values, "path": json_values}), max_size=3),
    },
)  # fmt: skip
record = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "image": json_values | st.sampled_from(["a.jpg", "/abs/a.jpg", "../up.jpg"]) | st.deferred(lambda: references),
        "video": json_values | st.sampled_from(["v.mp4", "frames/dir"]) | st.deferred(lambda: references),
        "images": json_values | st.lists(st.sampled_from(["a.jpg", "../b.jpg"]), max_size=3),
        "videos": json_values | st.lists(st.sampled_from(["v.mp4", "dir"]), max_size=3),
        "system_prompt": json_values,
        "system": json_values,
        "conversations": st.lists(turn | json_values, max_size=5) | json_values,
        "messages": st.lists(turn | json_values, max_size=5) | json_values,
    },
)
# one record per line: JSON of a record or any value, a value nested up to 1,500 levels, or text that is not JSON
deep = st.integers(1, 1500).map(lambda depth: '{"id": "deep", "conversations": ' + "[" * depth + "]" * depth + "}")
not_json = st.text(st.characters(blacklist_categories=["Cs", "Zl", "Zp", "Cc"]), min_size=1, max_size=40).filter(
    lambda text: text.strip() and not text.startswith("\ufeff")
)
record_lines = (record | json_values).map(json.dumps) | deep | not_json

# media references as a hostile record writes them: URLs of every scheme, fsspec chains, malformed hosts and ports,
# secrets in userinfo and query strings; and paths with `..`, NUL, markers, and names of links that point out
url_strings = st.builds(
    lambda scheme, separator, host, port, path, tail: f"{scheme}{separator}{host}{port}{path}{tail}",
    st.sampled_from(["http", "https", "s3", "gs", "hf", "file", "local", "memory", "simplecache::file", "zip",
                     "reference", "dir", "HTTPS", "data", ""]) | st.text("abcz+.-:", max_size=5),
    st.sampled_from(["://", "::", ":", ":///", "//"]),
    st.sampled_from(["", "example.com", "[::1", "[::1]", "user:token@h", "localhost", "127.0.0.1", "b\x00"])
    | st.text(max_size=6),
    st.sampled_from(["", ":80", ":99999", ":-1", ":x", ":"]),
    st.sampled_from(["", "/a.png", "/../../etc/passwd", "/dev/zero", "/frames", "/leak.png"]) | st.text(max_size=10),
    st.sampled_from(["", "?sig=secret", "#frag", "::file:///etc/passwd", " x"]),
)  # fmt: skip
path_parts = st.sampled_from(
    [
        "..",
        ".",
        "",
        "a",
        "out",
        "leak.png",
        "leak_dir",
        "frames",
        "leaky",
        "f.png",
        "dev",
        "zero",
        "{image_folder}",
        "{video_folder}",
        "x\x00y",
        "~",
    ]
) | st.text(max_size=4)
path_strings = st.builds(
    lambda lead, parts: lead + "/".join(parts), st.sampled_from(["", "/", "./", "../"]),
    st.lists(path_parts, min_size=1, max_size=6),
)  # fmt: skip
references = url_strings | path_strings
