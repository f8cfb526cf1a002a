"""How a bad value from the data is shown in an error message: short, whatever it holds."""

from __future__ import annotations

import reprlib

_SHORT = reprlib.Repr()  # bounded depth and length: a record nested 1,000 levels deep prints short
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 40, 40


def short_repr(value, limit: int = 60) -> str:
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
