"""FHIR JSON in and out, keeping decimals exactly as the client wrote them.

FHIR decimals carry their precision in their text (`1.50` is not `1.5`, http.html and
datatypes.html#decimal), so a stored resource must not be re-serialised through Python floats.
`parse` gives a dict whose decimals are `orjson.Fragment`s holding the original text, beside
a float view for validation and index extraction that is never stored; `dump` writes the
decimals back verbatim. `parse` also refuses what this server could not store whole or read
unambiguously (limits below; docs/rest.md "Limits").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import orjson

from .errors import FhirError, Kind, fail


# Above this size the stdlib parser is used: orjson's intermediate document peaks at about
# 3.5x the final objects (a 7 MB Bundle: 123 MB against 43 MB), and at this size both
# parsers take the same time.
_LARGE = 1 << 20

MAX_BODY_DEPTH: Final = 300
"""Most levels of objects and arrays in a request body. Deeper bodies are refused whole;
resources have their own, lower limit (`MAX_DEPTH`), so that in a batch one too-deep entry
fails alone."""
MAX_DEPTH: Final = 100
"""Most levels of objects and arrays in one resource (checked by `model.validation`): with a
Bundle's three levels around it, a stored resource stays well inside the 255 levels orjson
writes."""
MAX_NUMBER_LENGTH: Final = 64
"""Longest JSON number, in characters. Integers must also fit in 64 bits (FHIR's are 32)."""
_ORJSON_DEPTH: Final = 255  # orjson refuses to write deeper documents
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")


def _refused(message: str, code: str = "invalid") -> FhirError:
    return fail(Kind.INVALID, code, message, details_code="MSG_JSON_OBJECT")


def _not_json(exc: json.JSONDecodeError) -> FhirError:
    return _refused(f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.")


def _number(text: str) -> str:
    if len(text) > MAX_NUMBER_LENGTH:
        raise _refused(f"A number in the body has {len(text)} characters; the limit is "
                       f"{MAX_NUMBER_LENGTH}.", "too-long")
    return text


def _integer(text: str) -> int:
    value = int(_number(text))
    if not -(1 << 63) <= value < 1 << 64:
        raise _refused(f"The integer {text} does not fit in 64 bits.", "value")
    return value


def _decimal(text: str) -> float:
    value = float(_number(text))
    if value in (math.inf, -math.inf):
        raise _refused(f"The number {text} is out of range.", "value")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: an object, unless a name repeats (RFC 8259 §4: names SHOULD be
    unique; with repeats, which value counts is up to the reader, so none is picked)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        names = [name for name, _ in pairs]
        raise _duplicate(next(name for name in names if names.count(name) > 1))
    return value


def _duplicate(name: str) -> FhirError:
    return _refused(f"The body repeats '{name[:40]}' in one object; each name may appear once.")


def _strict_loads(body: bytes, parse_float: Callable[[str], Any],
                  pairs: Callable[[list[tuple[str, Any]]], Any] | None = _unique) -> Any:
    """The stdlib parse with every check: repeated names (`pairs` None: left to the caller),
    number length and range."""
    try:
        return json.loads(body, parse_float=parse_float, parse_int=_integer, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise _not_json(exc) from None
    except RecursionError:
        raise _too_deep(MAX_BODY_DEPTH) from None
    except UnicodeDecodeError:
        raise _refused("The body is not UTF-8 JSON.") from None


def _too_deep(limit: int) -> FhirError:
    return _refused(f"The body nests objects and arrays more than {limit} levels deep.", "too-costly")


def nesting(value: Any, limit: int) -> int:
    """Levels of objects and arrays in `value`, counted up to `limit` + 1."""
    return _walk(value, limit).depth


@dataclass(frozen=True, slots=True)
class _Shape:
    depth: int  # levels of objects and arrays
    floats: bool  # a float occurs
    huge: bool  # a float beyond the 64-bit integers occurs: maybe an integer orjson widened


_INTEGERS: Final = (-(2.0 ** 63), 2.0 ** 64)


def _walk(value: Any, limit: int) -> _Shape:
    """The shape of `value`, its depth counted up to `limit` + 1, in one breadth-first walk:
    no depth can exhaust the stack."""
    level = [value] if value.__class__ is dict or value.__class__ is list else []
    low, high = _INTEGERS
    floats = value.__class__ is float
    depth, huge = 0, floats and not low <= value < high
    while level and depth <= limit:
        depth += 1
        below: list[Any] = []
        add = below.append
        for node in level:
            for child in node.values() if node.__class__ is dict else node:
                kind = child.__class__
                if kind is dict or kind is list:
                    add(child)
                elif kind is float:
                    floats = True
                    if not low <= child < high:
                        huge = True
        level = below
    return _Shape(depth, floats, huge)


def _inspect(value: Any) -> _Shape:
    """The shape of a body; INVALID past MAX_BODY_DEPTH."""
    shape = _walk(value, MAX_BODY_DEPTH)
    if shape.depth > MAX_BODY_DEPTH:
        raise _too_deep(MAX_BODY_DEPTH)
    return shape


def _check_names(body: bytes, checked: Any, depth: int) -> None:
    """Refuse a body that repeats a name in an object (the tree keeps only the last value).

    Outside strings a colon only separates a name from its value, so the body holds as many
    colons as the tree serialised compactly unless a name was dropped (an unequal count
    always means a repeat). The count is exact when no colon is written as an escape: with
    any `\\u003?` in the body, or a tree orjson cannot write, the body is parsed again with
    a hook that sees every name. That parse also names the repeat. Parsing the Synthea
    resources one by one costs 11% more with this and the depth walk than without.
    """
    if depth <= _ORJSON_DEPTH and b"\\u003" not in body \
            and body.count(b":") == orjson.dumps(checked).count(b":"):
        return
    _strict_loads(body, float)  # raises, naming the repeated name


def _check_strings(checked: Any) -> None:
    """Refuse unpaired surrogates (`"\\ud800"`): they are not Unicode text, and no UTF-8
    writer can store them."""
    stack = [checked]
    while stack:
        node = stack.pop()
        items = node.items() if node.__class__ is dict else enumerate(node)
        for key, child in items:
            for text in (key, child):
                if text.__class__ is str:
                    try:
                        text.encode()
                    except UnicodeEncodeError:
                        raise _refused("The body holds an unpaired UTF-16 surrogate "
                                       "escape (such as \\ud800).") from None
            if child.__class__ is dict or child.__class__ is list:
                stack.append(child)


def parse_for_checks(body: bytes) -> Any:
    """Parse JSON that `dump` wrote, with plain floats (for validation and indexing, never
    for storage; client input goes through `parse`)."""
    return orjson.loads(body)


def _fragment(text: str) -> orjson.Fragment:
    return orjson.Fragment(_number(text))


def _with_decimals(value: Any, texts: Iterator[str]) -> Any:
    """`value` with each float replaced, in document order, by the next original text.

    Containers holding no float are returned as they are, so the copy shares them.
    """
    kind = value.__class__
    if kind is float:
        return orjson.Fragment(next(texts))
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


def parse(body: bytes) -> tuple[Any, Any]:
    """(checked, exact) views of a client's JSON: plain floats, and decimals as written
    (`parse_counted` without the depth)."""
    checked, exact, _ = parse_counted(body)
    return checked, exact


def parse_counted(body: bytes) -> tuple[Any, Any, int]:
    """(checked, exact, depth): the views of a client's JSON, plain floats and decimals as
    written, and the levels of objects and arrays in them, which the parse counts anyway (a
    validator given it need not walk the tree again: `Validator.issues`).

    INVALID for anything that is not JSON this server can store whole: a repeated name in an
    object, an unpaired surrogate, a number longer than MAX_NUMBER_LENGTH or beyond 64 bits,
    nesting deeper than MAX_BODY_DEPTH.

    Small bodies: orjson (which refuses surrogates and out-of-range numbers itself), then a
    second, exact parse only if a decimal is present. Large ones (a transaction Bundle): one
    stdlib parse that records each decimal's text (names then counted as a small body's), and
    an exact view that copies only the containers on the way to a decimal and shares the
    rest, so the document is not held twice in memory.
    """
    if len(body) <= _LARGE:
        try:
            checked = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _not_json(exc) from None
        shape = _inspect(checked)
        _check_names(body, checked, shape.depth)
        if not shape.floats:
            return checked, checked, shape.depth
        if shape.huge:  # orjson reads integers past 64 bits as floats: refused here
            return checked, json.loads(body, parse_float=_fragment, parse_int=_integer), shape.depth
        return checked, json.loads(body, parse_float=_fragment), shape.depth
    texts: list[str] = []

    def record(text: str) -> float:
        texts.append(text)
        return _decimal(text)

    try:
        # Repeated names are looked for after the parse, as in a small body: the hook that
        # sees every object's names cost a third of the parse (docs/catalogue.md, thirteenth
        # session).
        checked = _strict_loads(body, record, pairs=None)
        depth = _inspect(checked).depth
        if _SURROGATE_ESCAPE.search(body):
            _check_strings(checked)
        _check_names(body, checked, depth)
    except FhirError:
        _strict(body, _decimal)  # raises what the parse with every check meets first
        raise
    if not texts:
        return checked, checked, depth
    return checked, _with_decimals(checked, iter(texts)), depth


def _strict(body: bytes, parse_float: Callable[[str], Any]) -> Any:
    """The stdlib parse with every check, then the depth and surrogate checks (INVALID
    naming the first one the body fails, in that order)."""
    document = _strict_loads(body, parse_float)
    _inspect(document)
    if _SURROGATE_ESCAPE.search(body):
        _check_strings(document)
    return document


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
    """Parse a client's JSON with decimals as `Decimal` (JSON Patch documents), with the
    checks of `parse`."""
    return _strict(body, lambda text: Decimal(_number(text)))
