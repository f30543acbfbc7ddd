"""Number and quantity parameters (FHIR R4 search.html#number, #quantity, #prefix).

The search value has an implicit precision from its significant figures: `100` means
`[99.5, 100.5)`, `100.00` means `[99.995, 100.005)`, `1e2` means `[50, 150)` (one significant
figure; the R4 page's "95 to 105" for `1e2` contradicts its own rule and is corrected in R5).

The stored value is *not* widened by its own precision: the spec's examples require that
`lt100` is "less than exactly 100" (so a stored 100 must not match it) and that `100` matches a
stored 99.5. A stored decimal is the point `[v, v]`; a Range or a Quantity comparator (`<5`)
is the interval it states, open sides infinite.

Matching, with exact search value `v`, its precision range `[sl, sh)`, and the target
`[tl, th]`:

    eq  sl <= tl and th < sh             ne  not eq
    gt  th > v                           lt  tl < v
    ge  th >= v                          le  tl <= v
    sa  tl >= sh                         eb  th < sl
    ap  tl < ah and th >= al, `[al, ah)` being `[sl, sh)` widened by 10% of |v|.

Quantity units: `v|system|code` needs both to equal the entry's; `v||code` accepts the code or
the human unit; plain `v` any unit. No UCUM conversion (not done: unit-aware comparison).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from ..ast import NumberPredicate, Prefix, QuantityPredicate
from ..entries import NumberEntry, QuantityEntry

_INF = math.inf
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
CURRENCY_SYSTEM = "urn:iso:std:iso:4217"


def _number(value: Any) -> float | None:
    cls = value.__class__
    if cls is float or cls is int:
        return float(value)
    return None


def index_decimal(param: str, value: Any, out: list[Any]) -> None:
    """decimal, integer, positiveInt, unsignedInt."""
    v = _number(value)
    if v is not None:
        out.append(NumberEntry(param, v, v, v))


def _range_bounds(value: dict[str, Any]) -> tuple[float, float, dict[str, Any] | None] | None:
    low, high = value.get("low"), value.get("high")
    lo = _number(low.get("value")) if low.__class__ is dict else None
    hi = _number(high.get("value")) if high.__class__ is dict else None
    if lo is None and hi is None:
        return None
    unit = low if lo is not None else high
    return (-_INF if lo is None else lo), (_INF if hi is None else hi), unit


def index_number_range(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is dict and (b := _range_bounds(value)):
        out.append(NumberEntry(param, None, b[0], b[1]))


def index_quantity(param: str, value: Any, out: list[Any]) -> None:
    """Quantity and its specialisations (Age, Count, Distance, Duration)."""
    if value.__class__ is not dict:
        return
    v = _number(value.get("value"))
    if v is None:
        return
    comparator = value.get("comparator")
    low, high = v, v
    if comparator in ("<", "<="):
        low = -_INF
    elif comparator in (">", ">="):
        high = _INF
    out.append(
        QuantityEntry(param, v, low, high, value.get("system"), value.get("code"), value.get("unit"))
    )


def index_quantity_range(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is dict and (b := _range_bounds(value)):
        unit = b[2] or {}
        out.append(
            QuantityEntry(param, None, b[0], b[1], unit.get("system"), unit.get("code"), unit.get("unit"))
        )


def index_money(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is dict and (v := _number(value.get("value"))) is not None:
        out.append(QuantityEntry(param, v, v, v, CURRENCY_SYSTEM, value.get("currency"), None))


NUMBER_INDEXERS = {
    "decimal": index_decimal,
    "integer": index_decimal,
    "positiveInt": index_decimal,
    "unsignedInt": index_decimal,
    "Range": index_number_range,
}
QUANTITY_INDEXERS = {
    "Quantity": index_quantity,
    "Age": index_quantity,
    "Count": index_quantity,
    "Distance": index_quantity,
    "Duration": index_quantity,
    "Range": index_quantity_range,
    "Money": index_money,
}

# --- query side ---------------------------------------------------------------------------


def precision_range(text: str, prefix: Prefix) -> tuple[float, float, float]:
    """(value, low, high) of a search number; ValueError if `text` is not a decimal."""
    if not _DECIMAL.fullmatch(text):  # Decimal() alone accepts "1_000", "NaN", other digits
        raise ValueError(f"not a number: {text!r}")
    d = Decimal(text)
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    low, high = d - half, d + half
    if prefix == "ap":
        margin = abs(d) / 10
        low, high = low - margin, high + margin
    return float(d), float(low), float(high)


def parse_number(param: str, prefix: Prefix, text: str) -> NumberPredicate:
    value, low, high = precision_range(text, prefix)
    return NumberPredicate(param, prefix, value, low, high, text)


def parse_quantity(param: str, prefix: Prefix, text: str, system: str | None, code: str | None) -> QuantityPredicate:
    value, low, high = precision_range(text, prefix)
    return QuantityPredicate(param, prefix, value, low, high, system, code, text)


def match_range(prefix: Prefix, v: float, sl: float, sh: float, tl: float, th: float) -> bool:
    """The prefix rules above, shared by number and quantity."""
    if prefix == "eq":
        return sl <= tl and th < sh
    if prefix == "ne":
        return not (sl <= tl and th < sh)
    if prefix == "gt":
        return th > v
    if prefix == "lt":
        return tl < v
    if prefix == "ge":
        return th >= v
    if prefix == "le":
        return tl <= v
    if prefix == "sa":
        return tl >= sh
    if prefix == "eb":
        return th < sl
    return tl < sh and th >= sl  # ap


def match_number(p: NumberPredicate, e: NumberEntry) -> bool:
    return match_range(p.prefix, p.value, p.low, p.high, e.low, e.high)


def match_quantity(p: QuantityPredicate, e: QuantityEntry) -> bool:
    if p.code is not None:
        if p.system is not None:
            if e.system != p.system or e.code != p.code:
                return False
        elif e.code != p.code and e.unit != p.code:
            return False
    elif p.system is not None and e.system != p.system:
        return False
    return match_range(p.prefix, p.value, p.low, p.high, e.low, e.high)
