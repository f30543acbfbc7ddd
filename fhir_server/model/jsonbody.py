"""FHIR JSON in and out, keeping decimals exactly as the client wrote them.

FHIR decimals carry their precision in their text (`1.50` is not `1.5`, http.html and
datatypes.html#decimal), so a stored resource must not be re-serialised through Python floats.
`parse` gives a dict whose decimals are `orjson.Fragment`s holding the original text;
`dump` writes them back verbatim. Validation and index extraction get the float view from
`parse_for_checks`, which is cheaper and never stored.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from .errors import Kind, fail


def parse_for_checks(body: bytes) -> Any:
    """Parse JSON with plain floats (for validation and indexing, never for storage)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise fail(
            Kind.INVALID,
            "invalid",
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
            details_code="MSG_JSON_OBJECT",
        ) from None


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def exact_copy(body: bytes, checked: Any) -> Any:
    """The storable form of `checked` (parsed from `body`): decimals kept as written.

    Re-parses only when the document holds a decimal, the rare case where text matters.
    """
    if not _has_float(checked):
        return checked
    return json.loads(body, parse_float=orjson.Fragment)


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
