"""Keyset paging cursors shared by the stores: the sort key values of a page boundary.

A cursor is opaque to clients (base64url of a JSON list): a direction flag, then one value per
sort key. Values are text, integers, floats (infinities tagged: JSON has none, yet a Range or a
`<5` quantity sorts by one) or null (a resource without a value for a sort key).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any

import orjson

from ..model.errors import Kind, fail


def encode(backwards: bool, values: Sequence[Any]) -> str:
    """The cursor of the row with sort key `values`; `backwards` pages towards the start."""
    keys = [{"inf": 1 if v > 0 else -1} if isinstance(v, float) and math.isinf(v) else v
            for v in values]
    return base64.urlsafe_b64encode(orjson.dumps([backwards, *keys])).decode().rstrip("=")


def decode(cursor: str, width: int, *, nulls: bool = False) -> tuple[bool, list[Any]]:
    """(backwards, key values) of a cursor with `width` keys; INVALID if it is not one.

    `nulls`: the store's sort keys may be null (a store that sorts missing values as such).
    """
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        raw = None
    if not isinstance(raw, list) or len(raw) != width + 1 or not isinstance(raw[0], bool):
        raise _bad_cursor()
    if not nulls and None in raw[1:]:
        raise _bad_cursor()
    return raw[0], [_key(v) for v in raw[1:]]


def _key(value: Any) -> Any:
    if isinstance(value, dict) and value.keys() == {"inf"} and value["inf"] in (1, -1):
        return math.inf * value["inf"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _bad_cursor()
    if isinstance(value, int) and not -(2**63) <= value < 2**63:  # both stores hold int64
        raise _bad_cursor()
    return value


def _bad_cursor() -> Exception:
    return fail(Kind.INVALID, "value", "Invalid or expired paging cursor.", expression="_cursor")
