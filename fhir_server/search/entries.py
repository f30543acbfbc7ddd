"""Index entries: the values a resource is searchable by, one row each (FHIR R4 search.html).

Extracted once at write time (`extract.py`) and stored as rows of per-type SQL index tables or
as subdocuments in MongoDB; both stores index the same entries and the reference evaluator
(`match.py`) reads them too. Every entry names its `param` (the search parameter code).

Encodings, chosen so that SQL (SQLite INTEGER/REAL/TEXT) and MongoDB (int64/double/string)
compare them natively and identically:

- Dates are closed ranges `[low, high]` of **integer microseconds since 1970-01-01T00:00:00Z**.
  A value's precision becomes its range (`2020` -> whole year, `2020-03-01` -> the day,
  `...T10:00:00Z` -> that second), as search.html#date requires. Integers sort and compare
  correctly in both stores (negative before 1970 included), cost 8 bytes, need no collation,
  and make `ap`'s "10% of the distance to now" simple arithmetic. Open ends (a Period without
  end) are `DATE_MIN` / `DATE_MAX` (years 0001 / 9999), never NULL, so range predicates need no
  NULL handling. dateTimes with a time but no offset (invalid in FHIR) are read as UTC; dates
  without time are UTC days.
- Numbers and quantities are floats with closed ranges `[low, high]`; an exact decimal has
  `low == high == value`, a Range or a comparator (`<5`) gives the interval it states, with
  `-inf`/`+inf` for an open side. The implicit precision of decimals (100 -> [99.5, 100.5))
  applies to the *search* value, not the stored one: see `params/number.py` for why.
- Strings keep a normalized form (case-folded, accents removed, whitespace collapsed) for the
  default and `:contains` matches, and the exact form for `:exact`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..frozen import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class StringEntry:
    """One string part (HumanName.family, Address.city, ...): `value` normalized, `exact` as is."""

    param: str
    value: str
    exact: str


@fast_init
@dataclass(frozen=True, slots=True)
class TokenEntry:
    """A code (search.html#token): `system|code`, the normalized `text` for `:text`.

    For an Identifier, `code` is Identifier.value and `type_system`/`type_code` one of its
    Identifier.type codings (for `:of-type`). booleans give `code` "true"/"false"; code, string,
    uri, id and ContactPoint give a `code` and no system.
    """

    param: str
    system: str | None
    code: str | None
    text: str | None = None
    type_system: str | None = None
    type_code: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class ReferenceEntry:
    """A reference (search.html#reference).

    Relative references fill `type`/`id` (`version` from `/_history/`) and leave `url` None.
    Absolute references and URNs keep `url` (without `/_history/`), and `type`/`id` when the
    URL ends in `Type/id`. Canonicals keep `url` and `version` (`url|version`).
    `identifier_*` hold Reference.identifier for `:identifier`.
    """

    param: str
    type: str | None
    id: str | None
    version: str | None = None
    url: str | None = None
    identifier_system: str | None = None
    identifier_value: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class DateEntry:
    """A date range `[low, high]` in microseconds since the epoch (UTC), both ends inclusive."""

    param: str
    low: int
    high: int


@fast_init
@dataclass(frozen=True, slots=True)
class NumberEntry:
    """A number: `value` (None for a Range) and the closed interval `[low, high]` it states."""

    param: str
    value: float | None
    low: float
    high: float


@fast_init
@dataclass(frozen=True, slots=True)
class QuantityEntry:
    """A Quantity, Money (`system` urn:iso:std:iso:4217, `code` the currency) or Range."""

    param: str
    value: float | None
    low: float
    high: float
    system: str | None
    code: str | None
    unit: str | None


@fast_init
@dataclass(frozen=True, slots=True)
class UriEntry:
    param: str
    value: str


@fast_init
@dataclass(frozen=True, slots=True)
class PositionEntry:
    """Location.position for the special `near` parameter (WGS84 degrees)."""

    param: str
    latitude: float
    longitude: float


@fast_init
@dataclass(frozen=True, slots=True)
class CompositeEntry:
    """One combination of component values taken from the same element (search.html#composite).

    `components[i]` is an entry of the i-th component parameter (its `param` is that code).
    """

    param: str
    components: tuple[IndexEntry, ...]


IndexEntry = (
    StringEntry
    | TokenEntry
    | ReferenceEntry
    | DateEntry
    | NumberEntry
    | QuantityEntry
    | UriEntry
    | PositionEntry
    | CompositeEntry
)
