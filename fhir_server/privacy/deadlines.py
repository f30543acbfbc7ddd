"""The legal deadlines of a rights request (GDPR art. 12, as the platform's terms apply them):
forwarded to the controller within 8 French working days, answered within one calendar month
of receipt. A month is counted as Regulation (EEC, Euratom) No 1182/71 counts periods of EU law
(art. 3(2)(c) and 3(4), which the EDPB applies to art. 12(3)): to the same date of the next
month, its last day if it has none, then on to the next working day if that one is not.
Pure date arithmetic: no clock, no store."""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from functools import lru_cache

FORWARD_WORKING_DAYS = 8


def easter_sunday(year: int) -> date:
    """Easter Sunday of `year` (Gregorian calendar), by the anonymous Gregorian algorithm."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741 - the algorithm's own name
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def french_public_holidays(year: int) -> frozenset[date]:
    """The eleven national public holidays of metropolitan France in `year`."""
    easter = easter_sunday(year)
    fixed = [(1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25)]
    movable = [easter + timedelta(days=1),    # Easter Monday
               easter + timedelta(days=39),   # Ascension Thursday
               easter + timedelta(days=50)]   # Whit Monday
    return frozenset([date(year, m, d) for m, d in fixed] + movable)


def is_working_day(day: date) -> bool:
    """Monday to Friday and not a French public holiday."""
    return day.weekday() < 5 and day not in french_public_holidays(day.year)


def add_working_days(start: date, count: int) -> date:
    """The `count`-th working day after `start` (`start` itself never counts)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    day = start
    while count:
        day += timedelta(days=1)
        if is_working_day(day):
            count -= 1
    return day


def add_one_month(start: date) -> date:
    """The same day of the next month; the last day of that month when the day does not exist."""
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def forward_deadline(received: date) -> date:
    """The last day to forward a request received on `received` to the controller."""
    return add_working_days(received, FORWARD_WORKING_DAYS)


def next_working_day(day: date) -> date:
    """`day` if it is a working day, else the first working day after it."""
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def answer_deadline(received: date) -> date:
    """The last day to answer a request received on `received`: a month later, moved past
    a Saturday, Sunday or public holiday."""
    return next_working_day(add_one_month(received))
