"""Review of the registers' deadlines (issue 18). GDPR art. 12(3)'s month is counted as
Regulation (EEC, Euratom) No 1182/71 says (art. 3(2)(c), 3(4)), as the EDPB and the CNIL
apply it: to the same date of the next month (its last day if it has none), and, when that day
is a Saturday, a Sunday or a public holiday, to the end of the next working day. Periods in
hours (a breach's 48 h and 72 h) are not moved (art. 3(4) leaves them out)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from fhir_server.privacy import breaches
from fhir_server.privacy.deadlines import answer_deadline, is_working_day


@pytest.mark.parametrize("received, deadline", [
    (date(2026, 3, 31), date(2026, 4, 30)),  # a Thursday: as it is
    (date(2026, 4, 30), date(2026, 6, 1)),  # Saturday 30 May: Monday
    (date(2026, 1, 31), date(2026, 3, 2)),  # Saturday 28 February: Monday 2 March
    (date(2026, 12, 31), date(2027, 2, 1)),  # Sunday 31 January: Monday
    (date(2026, 4, 1), date(2026, 5, 4)),  # Friday 1 May (Labour Day), then the weekend
    (date(2026, 4, 6), date(2026, 5, 6)),  # received on Easter Monday: a Wednesday, as it is
    (date(2026, 4, 14), date(2026, 5, 15)),  # Thursday 14 May, Ascension
    (date(2026, 4, 25), date(2026, 5, 26)),  # Monday 25 May, Whit Monday
    (date(2027, 2, 28), date(2027, 3, 30)),  # Sunday 28 March (Easter), then Easter Monday
    (date(2026, 11, 25), date(2026, 12, 28)),  # Friday 25 December, then the weekend
])
def test_the_answer_deadline_is_a_working_day(received: date, deadline: date) -> None:
    assert answer_deadline(received) == deadline
    assert is_working_day(answer_deadline(received))


def test_breach_deadlines_are_hours_whatever_the_day() -> None:
    # Friday 1 May 2026 (Labour Day), 10:00 UTC: the weekend and no working day count
    found = datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert breaches.deadline(found, "controller") == datetime(2026, 5, 3, 10, tzinfo=UTC)
    assert breaches.deadline(found, "authority") == datetime(2026, 5, 4, 10, tzinfo=UTC)
