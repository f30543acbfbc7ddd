"""FHIR JSON in and out, keeping decimals exactly as the client wrote them.

FHIR decimals carry their precision in their text (`1.50` is not `1.5`, http.html and
datatypes.html#decimal), so a stored resource must not be re-serialised through Python floats.
`parse` gives a dict whose decimals are `orjson.Fragment`s holding the original text;
`dump` writes them back verbatim. Validation and index extraction get the float view from
`parse_for_checks`, which is cheaper and never stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson

from .errors import Kind, fail


# Above this size the stdlib parser is used: orjson's intermediate document peaks at about
# 3.5x the final objects (a 7 MB Bundle: 123 MB against 43 MB), and at this size both
# parsers take the same time.
_LARGE = 1 << 20


def parse_for_checks(body: bytes) -> Any:
    """Parse JSON with plain floats (for validation and indexing, never for storage)."""
    try:
        if len(body) > _LARGE:
            return json.loads(body)
        return orjson.loads(body)
    except json.JSONDecodeError as exc:  # orjson's error is a subclass
        raise _not_json(exc) from None
    except UnicodeDecodeError:
        raise fail(Kind.INVALID, "invalid", "The body is not UTF-8 JSON.",
                   details_code="MSG_JSON_OBJECT") from None


def _not_json(exc: json.JSONDecodeError) -> Exception:
    return fail(
        Kind.INVALID,
        "invalid",
        f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
        details_code="MSG_JSON_OBJECT",
    )


# A JSON string, or a number written with a fraction or an exponent (what orjson reads as a
# float). Strings are matched only to be skipped, so digits inside them are never taken.
_STRING_OR_DECIMAL = re.compile(
    rb'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)'
)


class _Misaligned(Exception):
    """The decimals in the text and the floats in the tree do not pair up (duplicate keys)."""


def _decimal_texts(body: bytes) -> list[bytes]:
    return [m.group() for m in _STRING_OR_DECIMAL.finditer(body) if m.group()[:1] != b'"']


def _with_decimals(value: Any, texts: Iterator[bytes]) -> Any:
    """`value` with each float replaced, in document order, by the next original text.

    Containers holding no float are returned as they are, so the copy shares them.
    """
    kind = value.__class__
    if kind is float:
        text = next(texts, None)
        if text is None:
            raise _Misaligned
        return orjson.Fragment(text)
    if kind is dict:
        copy = None
        for key, child in value.items():
            if child.__class__ in _CONTAINERS_OR_FLOAT:
                new = _with_decimals(child, texts)
                if new is not child:
                    if copy is None:
                        copy = dict(value)
                    copy[key] = new
        return value if copy is None else copy
    if kind is list:
        items = None
        for index, child in enumerate(value):
            if child.__class__ in _CONTAINERS_OR_FLOAT:
                new = _with_decimals(child, texts)
                if new is not child:
                    if items is None:
                        items = list(value)
                    items[index] = new
        return value if items is None else items
    return value


_CONTAINERS_OR_FLOAT = (dict, list, float)


def exact_copy(body: bytes, checked: Any) -> Any:
    """The storable form of `checked` (parsed from `body`): decimals kept as written.

    Only the objects and arrays on the way to a decimal are copied; everything else is shared
    with `checked`, so a large Bundle is not held twice in memory.
    """
    texts = _decimal_texts(body) if b"." in body or b"e" in body or b"E" in body else []
    if not texts:
        return checked
    remaining = iter(texts)
    try:
        exact = _with_decimals(checked, remaining)
        if next(remaining, None) is not None:
            raise _Misaligned
    except _Misaligned:
        # Duplicate property names hide values from the tree: read the text itself instead.
        return json.loads(body, parse_float=orjson.Fragment)
    return exact


def dump(value: Any, *, pretty: bool = False) -> bytes:
    """Serialise to JSON bytes (decimals from `exact_copy` come out as written)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0)


def load_exact(stored: bytes) -> Any:
    """Parse stored JSON for editing (PATCH, _elements), keeping decimals as written."""
    return json.loads(stored, parse_float=orjson.Fragment)


def load_decimal(stored: bytes) -> Any:
    """Parse stored JSON with decimals as `Decimal`, for edits that compare values (PATCH)."""
    return json.loads(stored, parse_float=Decimal)


def from_decimal(value: Any) -> Any:
    """Turn the `Decimal`s of `load_decimal` back into verbatim JSON numbers."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {k: from_decimal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_decimal(v) for v in value]
    return value


def parse_decimal(body: bytes) -> Any:
    """Parse a client's JSON with decimals as `Decimal` (JSON Patch documents)."""
    try:
        return json.loads(body, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(Kind.INVALID, "invalid", f"The body is not valid JSON: {exc}.",
                   details_code="MSG_JSON_OBJECT") from None
