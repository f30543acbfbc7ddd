"""The register of rights requests through `fhir-server rights`: deadlines stored on the Task,
forward and answer recorded, the overdue report on a moved clock, refusals that store nothing,
and the Tasks found by an administrator's search."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from fhir_server import cli, clock
from fhir_server.privacy.register import RIGHT_SYSTEM
from tests.http.helpers import send
from tests.privacy.conftest import Server

CONTROLLER = "Organization/hospital"


@pytest.fixture
def with_controller(sqlite_server: Server) -> Server:
    body = {"resourceType": "Organization", "id": "hospital", "name": "Hospital"}
    response = send(sqlite_server.client, "PUT", "/fhir/Organization/hospital", body)
    assert response.status_code in (200, 201), response.text
    return sqlite_server


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["rights", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _add(capsys: pytest.CaptureFixture[str], right: str, on: str, patient: str = "Patient/a"
         ) -> str:
    code, out = _run(capsys, "add", "--patient", patient, "--right", right,
                     "--controller", CONTROLLER, "--on", on)
    assert code == 0, out
    return out.split()[0].removeprefix("Task/")


def _tasks(server: Server, query: str = "") -> list[dict]:
    response = server.client.get(f"/fhir/Task{query}", headers=server.headers("admin"))
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def _audited(server: Server, command: str) -> int:
    response = server.client.get("/fhir/AuditEvent?_count=200", headers=server.headers("ehr"))
    return sum(1 for entry in response.json().get("entry", [])
               if entry["resource"]["agent"][0].get("altId") == f"fhir-server {command}")


def test_add_stores_a_task_with_both_deadlines(with_controller: Server,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    id = _add(capsys, "erasure", "2026-04-30")
    [task] = _tasks(with_controller)
    assert task["id"] == id and task["status"] == "received" and task["intent"] == "order"
    assert task["code"]["coding"] == [{"system": RIGHT_SYSTEM, "code": "erasure"}]
    assert task["requester"] == {"reference": "Patient/a"}
    assert task["owner"] == {"reference": CONTROLLER}
    assert task["authoredOn"] == "2026-04-30"
    assert task["restriction"]["period"]["end"] == "2026-06-01"  # 30 May is a Saturday
    assert task["input"][0]["valueDate"] == "2026-05-15"  # 1 May, 8 May, Ascension skipped
    assert _audited(with_controller, "rights add") == 1


def test_forward_then_answer(with_controller: Server, capsys: pytest.CaptureFixture[str]) -> None:
    id = _add(capsys, "access", "2026-01-31")
    assert _run(capsys, "forward", id, "--on", "2026-02-03")[0] == 0
    [task] = _tasks(with_controller)
    assert task["status"] == "in-progress" and task["businessStatus"]["text"] == "forwarded 2026-02-03"
    assert _run(capsys, "answer", id, "--on", "2026-02-27")[0] == 0
    [task] = _tasks(with_controller)
    assert task["status"] == "completed" and task["businessStatus"]["text"] == "answered 2026-02-27"
    assert task["restriction"]["period"]["end"] == "2026-03-02"  # 28 February is a Saturday
    assert [(o["type"]["coding"][0]["code"], o["valueDate"]) for o in task["output"]] == [
        ("forwarded", "2026-02-03"), ("answered", "2026-02-27")]
    assert _audited(with_controller, "rights forward") == _audited(with_controller,
                                                                   "rights answer") == 1


def test_overdue_report_on_a_moved_clock(with_controller: Server,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    never_forwarded = _add(capsys, "portability", "2026-04-30")
    forwarded = _add(capsys, "objection", "2026-04-30")
    answered = _add(capsys, "rectification", "2026-04-30", patient="Patient/b")
    assert _run(capsys, "forward", forwarded, "--on", "2026-05-04")[0] == 0
    assert _run(capsys, "answer", answered, "--on", "2026-05-05")[0] == 0
    with clock.frozen(datetime(2026, 5, 15, 12, tzinfo=UTC)):  # the last day to forward
        assert _run(capsys, "overdue") == (0, "no rights request overdue\n")
    with clock.frozen(datetime(2026, 5, 18, 9, tzinfo=UTC)):
        code, out = _run(capsys, "overdue")
    assert code == 0
    assert out.splitlines() == [f"Task/{never_forwarded} portability Patient/a received "
                                "2026-04-30: forward deadline 2026-05-15 missed"]
    with clock.frozen(datetime(2026, 6, 1, 18, tzinfo=UTC)):  # 30 May a Saturday: Monday's
        assert _run(capsys, "overdue")[1].count("answer deadline") == 0
    with clock.frozen(datetime(2026, 6, 2, 9, tzinfo=UTC)):
        out = _run(capsys, "overdue")[1]
    assert sorted(out.splitlines()) == sorted(
        f"Task/{id} {right} Patient/a received 2026-04-30: answer deadline 2026-06-01 missed"
        for id, right in ((never_forwarded, "portability"), (forwarded, "objection")))
    assert _audited(with_controller, "rights overdue") == 4


def test_search_by_code_and_status(with_controller: Server,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    erasure = _add(capsys, "erasure", "2026-03-02")
    access = _add(capsys, "access", "2026-03-02")
    assert _run(capsys, "forward", access, "--on", "2026-03-03")[0] == 0
    found = _tasks(with_controller, f"?code={RIGHT_SYSTEM}|erasure&status=received")
    assert [task["id"] for task in found] == [erasure]
    assert [t["id"] for t in _tasks(with_controller, "?status=in-progress")] == [access]
    assert _tasks(with_controller, "?code=erasure&status=in-progress") == []


def _raw(server: Server) -> bytes:
    return b"".join(file.read_bytes() for file in server.settings.data_dir.glob("fhir.db*"))


def test_the_task_body_is_sealed_at_rest(with_controller: Server,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """What only the body holds (the deadlines and steps) is never on disk in clear; the index
    entries are as the blind-index settings make them (docs/blind-indexes.md)."""
    _add(capsys, "restriction", "2026-03-02")
    for clear in (b"rights-request-step", b"2026-03-12", b"2026-04-02"):
        assert clear not in _raw(with_controller)


@pytest.mark.parametrize("argv, message", [
    (("add", "--patient", "Patient/a", "--right", "forgetting", "--controller", CONTROLLER,
      "--on", "2026-03-02"), "unknown right 'forgetting'"),
    (("add", "--patient", "Patient/nobody", "--right", "access", "--controller", CONTROLLER,
      "--on", "2026-03-02"), "no Patient Patient/nobody"),
    (("add", "--patient", "Observation/a-obs0", "--right", "access", "--controller", CONTROLLER,
      "--on", "2026-03-02"), "no Patient Observation/a-obs0"),
    (("add", "--patient", "Patient/a", "--right", "access", "--controller", "Organization/x",
      "--on", "2026-03-02"), "no Organization Organization/x"),
    (("forward", "no-such-task", "--on", "2026-03-02"), "no rights request Task/no-such-task"),
])
def test_bad_requests_exit_2_and_store_nothing(
        with_controller: Server, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
        message: str) -> None:
    code, out = _run(capsys, *argv)
    assert code == 2 and message in out and "nothing was stored" in out
    assert _tasks(with_controller) == []
    assert _audited(with_controller, f"rights {argv[0]}") == 0


def test_answer_before_receipt_or_twice_is_refused(
        with_controller: Server, capsys: pytest.CaptureFixture[str]) -> None:
    id = _add(capsys, "access", "2026-03-10")
    [before] = _tasks(with_controller)
    code, out = _run(capsys, "answer", id, "--on", "2026-03-09")
    assert code == 2 and "before the request was received (2026-03-10)" in out
    assert _run(capsys, "forward", id, "--on", "2026-03-01")[0] == 2
    assert _tasks(with_controller) == [before]
    assert _run(capsys, "answer", id, "--on", "2026-03-11")[0] == 0
    [answered] = _tasks(with_controller)
    assert _run(capsys, "answer", id, "--on", "2026-03-12")[0] == 2
    assert _run(capsys, "forward", id, "--on", "2026-03-12")[0] == 2
    assert _tasks(with_controller) == [answered]


def test_a_malformed_date_exits_2(with_controller: Server,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["rights", "add", "--patient", "Patient/a", "--right", "access",
                  "--controller", CONTROLLER, "--on", "2026-02-30"])
    assert exited.value.code == 2 and "not a date" in capsys.readouterr().err
    assert _tasks(with_controller) == []


def test_administrators_read_the_register_only(with_controller: Server,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    other = {"resourceType": "Task", "id": "care", "status": "requested", "intent": "order",
             "for": {"reference": "Patient/a"}}
    assert send(with_controller.client, "PUT", "/fhir/Task/care", other,
                **with_controller.headers("ehr")).status_code == 201
    id = _add(capsys, "access", "2026-03-02")
    assert [task["id"] for task in _tasks(with_controller)] == [id]
    assert with_controller.client.get("/fhir/Task/care",
                                      headers=with_controller.headers("admin")).status_code == 404
    assert send(with_controller.client, "PUT", f"/fhir/Task/{id}", other | {"id": id},
                **with_controller.headers("admin")).status_code == 403
    physician = with_controller.client.get("/fhir/Task", headers=with_controller.headers("physician"))
    assert physician.status_code == 200 and physician.json().get("entry", []) == []


def test_a_request_registered_before_requester_named_the_person_is_still_reported() -> None:
    """Tasks registered before the register named the person in `requester` name them in
    `for`: the overdue report lists them rather than failing on the first one."""
    from datetime import date

    from fhir_server.privacy import register

    legacy = {"resourceType": "Task", "id": "old", "status": "received", "intent": "order",
              "code": {"coding": [{"system": RIGHT_SYSTEM, "code": "access"}]},
              "for": {"reference": "Patient/a"}, "owner": {"reference": CONTROLLER},
              "authoredOn": "2026-01-05", "restriction": {"period": {"end": "2026-02-05"}},
              "input": [register._step(register.FORWARD_BY, date(2026, 1, 15))]}
    late = register._overdue(legacy, date(2026, 3, 1))
    assert late is not None and late.patient == "Patient/a" and late.id == "old"
