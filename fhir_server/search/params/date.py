"""Date parameters (FHIR R4 search.html#date): values as ranges of microseconds.

Every date is a range fixed by its precision: `2013` is the whole year, `2013-01-14` the day,
`2013-01-14T10:00` the minute, `...T10:00:00.25Z` the 10 ms from .250 to .259999. Ranges are
closed `[low, high]` integers of microseconds since 1970-01-01T00:00:00Z (see entries.py).

Matching, with the search range `[sl, sh]` and the target range `[tl, th]` (search.html#prefix,
"range" column):

    eq  sl <= tl and th <= sh           ne  not eq
    gt  th > sh                          lt  tl < sl
    ge  th > sh or eq                    le  tl < sl or eq
    sa  tl > sh                          eb  th < sl
    ap  tl <= ah and th >= al, with [al, ah] the search range widened by 10% of the distance
        between the search value and now (search.html#prefix, ap), fixed at parse time.
"""

from __future__ import annotations

import re
from calendar import monthrange
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from ... import clock
from ..ast import DatePredicate, Prefix
from ..entries import DateEntry

_EPOCH = date(1970, 1, 1).toordinal()
_DAY = 86_400_000_000
DATE_MIN = (date(1, 1, 1).toordinal() - _EPOCH) * _DAY
DATE_MAX = (date(9999, 12, 31).toordinal() - _EPOCH + 1) * _DAY - 1

_EPOCH_DT = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_AFTER_SECONDS = frozenset("Z+-.")
# Shape check before fromisoformat, which also accepts non-FHIR forms ("2012-02-27 05:28").
_FULL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?$", re.ASCII)
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,  # \d must not accept other scripts' digits
)


@lru_cache(maxsize=1 << 14)
def date_range(text: str) -> tuple[int, int] | None:
    """The `[low, high]` microsecond range of a FHIR date/dateTime/instant; None if unreadable.

    Cached: resources written together share timestamps (an encounter's observations).
    """
    if len(text) >= 20 and text[10] == "T" and text[19] in _AFTER_SECONDS and _FULL.match(text):
        return _seconds_range(text)
    m = _DATE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    y = int(year)
    try:
        if month is None:
            start = date(y, 1, 1).toordinal()
            return _days(start), _days(start + (366 if _leap(y) else 365)) - 1
        mo = int(month)
        if day is None:
            start = date(y, mo, 1).toordinal()
            return _days(start), _days(start + monthrange(y, mo)[1]) - 1
        start = date(y, mo, int(day)).toordinal()
    except ValueError:
        return None
    if hour is None:
        return _days(start), _days(start + 1) - 1
    h, mi = int(hour), int(minute)
    s = int(second) if second is not None else 0
    if h > 23 or mi > 59 or s > 60:
        return None
    low = _days(start) + ((h * 60 + mi) * 60 + min(s, 59)) * 1_000_000
    if second is None:
        width = 60_000_000
    elif frac is None:
        width = 1_000_000
    else:
        digits = frac[:6]
        low += int(digits.ljust(6, "0"))
        width = 10 ** (6 - len(digits))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        low -= sign * (int(tz[1:3]) * 60 + int(tz[4:6])) * 60_000_000
    return max(low, DATE_MIN), min(low + width - 1, DATE_MAX)


def _seconds_range(text: str) -> tuple[int, int] | None:
    """Fast path for times with seconds (most stored values): the C ISO parser."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    low = (dt - _EPOCH_DT) // _MICROSECOND
    width = 1_000_000
    if text[19] == ".":
        digits = len(text) - 20 - (1 if text[-1] == "Z" else 6 if text[-6] in "+-" else 0)
        width = 10 ** (6 - min(digits, 6))
        low -= low % width  # fromisoformat rounds nothing, but digits past 6 are dropped
    return max(low, DATE_MIN), min(low + width - 1, DATE_MAX)


def _days(ordinal: int) -> int:
    return (ordinal - _EPOCH) * _DAY


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def now_us() -> int:
    return clock.micros(clock.now())


# --- write side: values of each FHIR type as DateEntry rows -------------------------------


def index_date(param: str, value: Any, out: list[Any]) -> None:
    """date, dateTime, instant."""
    if value.__class__ is str:
        r = date_range(value)
        if r is not None:
            out.append(DateEntry(param, r[0], r[1]))


def _period_bounds(value: dict[str, Any]) -> tuple[int, int] | None:
    start, end = value.get("start"), value.get("end")
    if start is None and end is None:
        return None
    s = date_range(start) if start.__class__ is str else None
    e = date_range(end) if end.__class__ is str else None
    # A missing start or end is an open side: the period is ongoing (datatypes.html#Period).
    return (s[0] if s else DATE_MIN), (e[1] if e else DATE_MAX)


def index_period(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is dict:
        bounds = _period_bounds(value)
        if bounds is not None:
            out.append(DateEntry(param, bounds[0], bounds[1]))


def index_timing(param: str, value: Any, out: list[Any]) -> None:
    """Timing: one range from the earliest event (or repeat.boundsPeriod start) to the latest."""
    if value.__class__ is not dict:
        return
    events = value.get("event")
    events = events if events.__class__ is list else ()
    ranges = [r for e in events if e.__class__ is str if (r := date_range(e))]
    repeat = value.get("repeat")
    if repeat.__class__ is dict and repeat.get("boundsPeriod").__class__ is dict:
        bounds = _period_bounds(repeat["boundsPeriod"])
        if bounds is not None:
            ranges.append(bounds)
    if ranges:
        out.append(DateEntry(param, min(r[0] for r in ranges), max(r[1] for r in ranges)))


INDEXERS = {
    "date": index_date,
    "dateTime": index_date,
    "instant": index_date,
    "Period": index_period,
    "Timing": index_timing,
}

# --- query side ---------------------------------------------------------------------------


def parse_date(param: str, prefix: Prefix, text: str, now: int | None = None) -> DatePredicate:
    """A date predicate; ValueError if `text` is not a FHIR date."""
    r = date_range(text)
    if r is None:
        raise ValueError(f"not a date: {text!r}")
    low, high = r
    if prefix == "ap":
        margin = abs((now if now is not None else now_us()) - low) // 10
        low, high = max(low - margin, DATE_MIN), min(high + margin, DATE_MAX)
    return DatePredicate(param, prefix, low, high, text)


def match_date(p: DatePredicate, e: DateEntry) -> bool:
    sl, sh, tl, th = p.low, p.high, e.low, e.high
    prefix = p.prefix
    if prefix == "eq":
        return sl <= tl and th <= sh
    if prefix == "ne":
        return not (sl <= tl and th <= sh)
    if prefix == "gt":
        return th > sh
    if prefix == "lt":
        return tl < sl
    if prefix == "ge":
        return th > sh or (sl <= tl and th <= sh)
    if prefix == "le":
        return tl < sl or (sl <= tl and th <= sh)
    if prefix == "sa":
        return tl > sh
    if prefix == "eb":
        return th < sl
    return tl <= sh and th >= sl  # ap: overlap with the widened range
