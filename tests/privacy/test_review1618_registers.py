"""Review of the registers' deadlines (issue 18). GDPR art. 12(3)'s month is counted as
Regulation (EEC, Euratom) No 1182/71 says (art. 3(2)(c), 3(4)), as the EDPB and the CNIL
apply it: to the same date of the next month (its last day if it has none), and, when that day
is a Saturday, a Sunday or a public holiday, to the end of the next working day. Periods in
hours (a breach's 48 h and 72 h) are not moved (art. 3(4) leaves them out). A register holds
what happened: an entry or a step dated in the future, or a request answered before the day it
was forwarded, is refused (exit 2, nothing stored)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from fhir_server import cli, clock
from fhir_server.privacy import breaches
from fhir_server.privacy.deadlines import answer_deadline, is_working_day
from tests.privacy.conftest import Server
from tests.privacy.test_register import _tasks, with_controller  # noqa: F401 - a fixture


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


# -- dates that cannot be: in the future, or a step before the one it follows ---------------

# 12:00 UTC on 10 June: 11 June has begun at UTC+14 (a day an operator somewhere may have
# written), 12 June has begun nowhere.
TODAY = datetime(2026, 6, 10, 12, tzinfo=UTC)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with clock.frozen(TODAY):
        code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("argv, message", [
    (("rights", "add", "--patient", "Patient/a", "--right", "access", "--controller",
      "Organization/hospital", "--on", "2026-06-12"), "2026-06-12 is in the future"),
    (("breach", "add", "--from", "2026-06-01T00:00:00Z", "--to", "2026-06-02T00:00:00Z",
      "--client", "ehr", "--controller", "Organization/hospital", "--description", "a leak",
      "--at", "2026-06-10T13:00:00Z"), "is in the future"),
    (("disclosure", "add", "--patient", "Patient/a", "--requester", "Tribunal", "--legal-basis",
      "CPP 60-1", "--given", "the record", "--on", "2026-06-12"), "2026-06-12 is in the future"),
])
def test_a_register_entry_in_the_future_is_refused(
        with_controller: Server, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
        message: str) -> None:
    code, out = _cli(capsys, *argv)
    assert code == 2, out
    assert message in out and "nothing was stored" in out
    assert _tasks(with_controller) == []


def test_a_step_in_the_future_or_before_the_last_is_refused(
        with_controller: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys, "rights", "add", "--patient", "Patient/a", "--right", "erasure",
                     "--controller", "Organization/hospital", "--on", "2026-06-01")
    assert code == 0, out
    id = out.split()[0].removeprefix("Task/")
    code, out = _cli(capsys, "rights", "forward", id, "--on", "2026-06-12")
    assert code == 2 and "2026-06-12 is in the future" in out
    assert _cli(capsys, "rights", "forward", id, "--on", "2026-06-05")[0] == 0
    code, out = _cli(capsys, "rights", "answer", id, "--on", "2026-06-04")  # before it was forwarded
    assert code == 2 and "before it was forwarded (2026-06-05)" in out
    [task] = _tasks(with_controller)
    assert task["status"] == "in-progress"
    code, out = _cli(capsys, "breach", "add", "--from", "2026-06-01T00:00:00Z", "--to",
                     "2026-06-02T00:00:00Z", "--client", "ehr", "--controller",
                     "Organization/hospital", "--description", "a leak", "--at", "2026-06-09T10:00:00Z")
    assert code == 0, out
    breach = out.split()[0].removeprefix("Task/")
    code, out = _cli(capsys, "breach", "notify", breach, "authority", "--at", "2026-06-11T10:00:00Z")
    assert code == 2 and "is in the future" in out


def test_the_register_keeps_an_erasure_request_after_the_erasure(
        with_controller: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """The controller must show that the erasure it was asked for was done in time: the
    request outlives the erasure (it names the patient by id, out of their compartment)."""
    code, out = _cli(capsys, "rights", "add", "--patient", "Patient/a", "--right", "erasure",
                     "--controller", "Organization/hospital", "--on", "2026-06-01")
    assert code == 0, out
    id = out.split()[0].removeprefix("Task/")
    assert with_controller.erase("a", reason="rights request").status_code == 200
    [task] = _tasks(with_controller)
    assert task["id"] == id and task["requester"] == {"reference": "Patient/a"}
    assert _cli(capsys, "rights", "forward", id, "--on", "2026-06-02")[0] == 0
    code, out = _cli(capsys, "rights", "answer", id, "--on", "2026-06-10")
    assert code == 0, out
    [task] = _tasks(with_controller)
    assert task["status"] == "completed"
