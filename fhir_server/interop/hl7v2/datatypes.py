"""The primitive HL7 v2 data types, converted to FHIR values; composites (CX, XPN, CWE, ...)
are declared in mappings/hl7v2/datatypes.json and built from these by mapping.py.

Each converter takes the parts of a value (a component's subcomponents, or a span of
components) as strings, already unescaped, and returns the FHIR value or None when empty.
A value that is there but wrong raises ValueError with the reason."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")
# HD-3, the universal id type, -> how the universal id (HD-2) becomes a URI.
_UNIVERSAL = {"ISO": "urn:oid:", "UUID": "urn:uuid:", "URI": ""}


def string(parts: list[str]) -> str | None:
    """ST, ID, IS: the text, trimmed; `""` (HL7's explicit null) is no value."""
    value = parts[0].strip() if parts else ""
    return None if value in ("", '""') else value


def number(parts: list[str]) -> int | float | None:
    """NM: a decimal number."""
    text = string(parts)
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"'{text[:30]}' is not a number") from None
    if not value.is_finite():
        raise ValueError(f"'{text[:30]}' is not a number")
    return int(value) if value == value.to_integral_value() and "." not in text else float(value)


def boolean(parts: list[str]) -> bool | None:
    """ID of table 0136: Y or N."""
    text = string(parts)
    if text is None:
        return None
    if text not in ("Y", "N"):
        raise ValueError(f"'{text[:10]}' is neither Y nor N")
    return text == "Y"


def _parse_dtm(text: str) -> tuple[list[str], str | None, str | None]:
    match = _DTM.match(text)
    if match is None:
        raise ValueError(f"'{text[:30]}' is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    *units, fraction, offset = match.groups()
    present = [u for u in units if u is not None]
    return present, fraction, offset


def _checked(present: list[str], text: str) -> None:
    padded = present + ["01", "01", "00", "00", "00"][len(present) - 1:]
    year, month, day, hour, minute, second = (int(p) for p in padded[:6])
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise ValueError(f"'{text[:30]}' is not a valid date/time") from None


def date(parts: list[str]) -> str | None:
    """DT (or the date of a DTM): YYYY, YYYY-MM or YYYY-MM-DD."""
    text = string(parts)
    if text is None:
        return None
    present, _, _ = _parse_dtm(text)
    _checked(present, text)
    return "-".join(present[:3])


def date_time(zone: str) -> Callable[[list[str]], str | None]:
    """DTM: a FHIR dateTime; a time without an offset is in `zone` (mappings' default)."""
    tz = ZoneInfo(zone)

    def convert(parts: list[str]) -> str | None:
        text = string(parts)
        if text is None:
            return None
        present, fraction, offset = _parse_dtm(text)
        _checked(present, text)
        if len(present) <= 3:
            return "-".join(present)
        hour, minute, second = (present[3:] + ["00", "00"])[:3]
        day = "-".join(present[:3])
        clock = f"{hour}:{minute}:{second}{fraction or ''}"
        if offset is None:
            local = datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}").replace(tzinfo=tz)
            offset = local.strftime("%z")
        return f"{day}T{clock}{offset[:3]}:{offset[3:]}"

    return convert


def hierarchic(authorities: dict[str, str | dict[str, str]]) -> Callable[[list[str]], str | None]:
    """HD: a URI for an assigning authority or namespace. The universal id (HD-2) with its
    type (HD-3: ISO, UUID, URI); else the namespace (HD-1) as the vocabulary
    `assigning-authority` names it; else None (unknown)."""

    def convert(parts: list[str]) -> str | None:
        namespace, universal, kind = (parts + ["", "", ""])[:3]
        if universal.strip() and kind.strip() in _UNIVERSAL:
            return _UNIVERSAL[kind.strip()] + universal.strip()
        known = authorities.get(namespace.strip())
        return known if isinstance(known, str) else None

    return convert


def primitives(zone: str, authorities: dict[str, str | dict[str, str]]) -> dict[str, Callable[[list[str]], object]]:
    """The converters by data type name."""
    return {"ST": string, "ID": string, "NM": number, "BOOLEAN": boolean, "DATE": date,
            "DTM": date_time(zone), "HD": hierarchic(authorities)}
