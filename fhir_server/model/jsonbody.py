"""FHIR JSON in and out, keeping decimals exactly as the client wrote them.

FHIR decimals carry their precision in their text (`1.50` is not `1.5`, http.html and
datatypes.html#decimal), so a stored resource must not be re-serialised through Python floats.
`parse` gives a dict whose decimals are `orjson.Fragment`s holding the original text;
`dump` writes them back verbatim. Validation and index extraction get the float view from
`parse_for_checks`, which is cheaper and never stored.
"""

from __future__ import annotations

import json
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


def _has_float(value: Any) -> bool:
    kind = value.__class__
    if kind is float:
        return True
    if kind is dict:
        return any(_has_float(v) for v in value.values())
    if kind is list:
        return any(_has_float(v) for v in value)
    return False


class _Misaligned(Exception):
    """The recorded decimals and the floats of the tree do not pair up (duplicate keys)."""


_CONTAINERS_OR_FLOAT = (dict, list, float)


def _with_decimals(value: Any, texts: Iterator[str]) -> Any:
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


def parse(body: bytes) -> tuple[Any, Any]:
    """(checked, exact) views of a client's JSON: plain floats, and decimals as written.

    Small bodies: orjson, then a second, exact parse only if a decimal is present. Large ones
    (a transaction Bundle): one stdlib parse that records each decimal's text, and an exact
    view that copies only the containers on the way to a decimal and shares the rest, so the
    document is not held twice in memory.
    """
    if len(body) <= _LARGE:
        checked = parse_for_checks(body)
        if not _has_float(checked):
            return checked, checked
        return checked, json.loads(body, parse_float=orjson.Fragment)
    texts: list[str] = []

    def record(text: str) -> float:
        texts.append(text)
        return float(text)

    try:
        checked = json.loads(body, parse_float=record)
    except json.JSONDecodeError as exc:
        raise _not_json(exc) from None
    except UnicodeDecodeError:
        raise fail(Kind.INVALID, "invalid", "The body is not UTF-8 JSON.",
                   details_code="MSG_JSON_OBJECT") from None
    if not texts:
        return checked, checked
    remaining = iter(texts)
    try:
        exact = _with_decimals(checked, remaining)
        if next(remaining, None) is not None:
            raise _Misaligned
    except _Misaligned:
        # Duplicate property names hide values from the tree: read the text itself instead.
        return checked, json.loads(body, parse_float=orjson.Fragment)
    return checked, exact


def dump(value: Any, *, pretty: bool = False) -> bytes:
    """Serialise to JSON bytes (decimals of an exact view come out as written)."""
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
