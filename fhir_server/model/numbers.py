"""Whole numbers read from URLs, query strings and headers (version ids, `_count`, ETags).

Only ASCII digits count: `str.isdigit` and `int` also take other scripts' digits (a
fullwidth "１" would name version 1). A number is also bounded by what the stores can hold
(SQLite's signed 64-bit INTEGER), so a longer one is refused here rather than overflowing in
the store or past Python's limit on the digits `int` converts.
"""

from __future__ import annotations

MAX_WHOLE = 2**63 - 1
_DIGITS = frozenset("0123456789")


def whole_number(text: str, bound: int = MAX_WHOLE) -> int | None:
    """`text` as a non-negative integer up to `bound`, or None if it is not one."""
    if not text or len(text) > len(str(bound)) or not _DIGITS.issuperset(text):
        return None
    value = int(text)
    return value if value <= bound else None
