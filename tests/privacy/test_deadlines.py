"""The legal deadlines of rights requests: 8 French working days to forward, one calendar month
to answer."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, strategies as st

from fhir_server.privacy.deadlines import (add_one_month, answer_deadline, easter_sunday,
                                          forward_deadline, french_public_holidays,
                                          is_working_day)


@pytest.mark.parametrize("year, easter", [(2024, date(2024, 3, 31)), (2025, date(2025, 4, 20)),
                                          (2026, date(2026, 4, 5)), (2027, date(2027, 3, 28)),
                                          (2038, date(2038, 4, 25)), (2285, date(2285, 3, 22))])
def test_easter_sunday_by_the_anonymous_gregorian_algorithm(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter


def test_the_eleven_french_public_holidays_of_2026() -> None:
    assert sorted(french_public_holidays(2026)) == [
        date(2026, 1, 1), date(2026, 4, 6), date(2026, 5, 1), date(2026, 5, 8),
        date(2026, 5, 14), date(2026, 5, 25), date(2026, 7, 14), date(2026, 8, 15),
        date(2026, 11, 1), date(2026, 11, 11), date(2026, 12, 25)]


def test_forwarding_skips_weekends() -> None:
    # Monday 2026-03-02: 8 working days later is Thursday 2026-03-12
    assert forward_deadline(date(2026, 3, 2)) == date(2026, 3, 12)
    # Received on a Saturday: the count starts on Monday
    assert forward_deadline(date(2026, 3, 7)) == date(2026, 3, 18)


def test_forwarding_skips_1_and_8_may_and_ascension() -> None:
    # Thursday 2026-04-30: (Fri 1 May off), 4, 5, 6, 7, (Fri 8 May off), 11, 12, 13,
    # (Thu 14 May Ascension), 15
    assert forward_deadline(date(2026, 4, 30)) == date(2026, 5, 15)
    # Tuesday 2026-05-05: 6, 7, (8 off), 11, 12, 13, (14 off), 15, 18, 19
    assert forward_deadline(date(2026, 5, 5)) == date(2026, 5, 19)


def test_forwarding_skips_easter_monday_and_whit_monday() -> None:
    # Thursday 2026-04-02: 3, (6 Easter Monday off), 7, 8, 9, 10, 13, 14, 15
    assert forward_deadline(date(2026, 4, 2)) == date(2026, 4, 15)
    # Friday 2026-05-22: (25 Whit Monday off), 26, 27, 28, 29, 1 Jun, 2, 3, 4
    assert forward_deadline(date(2026, 5, 22)) == date(2026, 6, 4)


def test_forwarding_across_christmas_and_new_year() -> None:
    # Wednesday 2026-12-23: 24, (25 off), 28, 29, 30, 31, (1 Jan off), 4, 5, 6
    assert forward_deadline(date(2026, 12, 23)) == date(2027, 1, 6)


@pytest.mark.parametrize("received, deadline", [
    (date(2026, 1, 31), date(2026, 2, 28)), (date(2028, 1, 31), date(2028, 2, 29)),
    (date(2026, 3, 31), date(2026, 4, 30)), (date(2026, 12, 15), date(2027, 1, 15)),
    (date(2026, 12, 31), date(2027, 1, 31)), (date(2026, 4, 30), date(2026, 5, 30))])
def test_one_calendar_month(received: date, deadline: date) -> None:
    # the answer deadline is this day, or the next working day (test_review1618_registers.py)
    assert add_one_month(received) == deadline
    assert answer_deadline(received) >= deadline


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)))
def test_the_forward_deadline_is_the_eighth_working_day_after(received: date) -> None:
    deadline = forward_deadline(received)
    assert is_working_day(deadline)
    between = [received + timedelta(days=n) for n in range(1, (deadline - received).days + 1)]
    assert sum(map(is_working_day, between)) == 8
