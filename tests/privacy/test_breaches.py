"""The register of personal data breaches (GDPR arts. 33-34) through `fhir-server breach`: the
deadlines in calendar hours (48 h controller, 72 h authority, through weekends and public
holidays alike), the patients the audit trail shows exposed in the window through the systems
involved, notifications, the overdue report on a frozen clock, refusals that store nothing,
and who may read the register."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhir_server import cli, clock
from fhir_server.model.platform_codes import REGISTER_SYSTEM
from fhir_server.privacy import breaches
from tests.http.helpers import send
from tests.privacy.conftest import Server
from tests.privacy.test_register import _audited, with_controller  # noqa: F401 - a fixture

CONTROLLER = "Organization/hospital"
# Thursday 7 May 2026, 09:30 in Paris: 8 May (a public holiday) and the weekend follow.
DISCOVERED = "2026-05-07T09:30:00+02:00"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["breach", *argv])
    captured = capsys.readouterr()
    # What the command says, without the JSON log lines the app writes meanwhile.
    lines = [*(line for line in captured.out.splitlines(True) if not line.startswith("{")),
             *(line for line in captured.err.splitlines(True) if line.startswith("fhir-server "))]
    return code, "".join(lines)


def _add(capsys: pytest.CaptureFixture[str], *extra: str, at: str = DISCOVERED) -> tuple[int, str]:
    return _run(capsys, "add", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-07T06:00:00Z",
                "--controller", CONTROLLER, "--description", "a laptop was stolen", "--at", at, *extra)


def _register(server: Server) -> list[dict]:
    response = server.client.get(f"/fhir/Task?code={REGISTER_SYSTEM}|breach",
                                 headers=server.headers("admin"))
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _read_at(server: Server, moment: datetime, caller: str, url: str) -> None:
    """`caller` reads `url` at `moment` (the token checked on the real clock, the audit trail
    recorded on the frozen one)."""
    headers = server.headers(caller)
    with clock.frozen(moment):
        assert server.client.get(url, headers=headers).status_code == 200


def test_deadlines_are_calendar_hours(with_controller: Server,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _add(capsys, "--client", "ehr")
    assert code == 0, out
    [task] = _register(with_controller)
    assert task["status"] == "received" and task["authoredOn"] == "2026-05-07T07:30:00Z"
    deadlines = {i["type"]["coding"][0]["code"]: i.get("valueDateTime") for i in task["input"]}
    # 48 and 72 hours, on a holiday and a Sunday: no working-day arithmetic.
    assert deadlines["controller-deadline"] == "2026-05-09T07:30:00Z"
    assert deadlines["authority-deadline"] == "2026-05-10T07:30:00Z"
    assert "tell the controller by 2026-05-09T07:30:00Z" in out
    assert _audited(with_controller, "breach add") == 1
    assert "for" not in task and "focus" not in task


def test_the_audit_trail_says_who_was_exposed(with_controller: Server,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    inside = datetime(2026, 5, 3, 12, tzinfo=UTC)
    _read_at(with_controller, inside, "ehr", "/fhir/Patient/a")
    _read_at(with_controller, inside, "patient-b", "/fhir/Observation/b-obs0")
    _read_at(with_controller, datetime(2026, 5, 8, tzinfo=UTC), "ehr", "/fhir/Patient/b")  # after
    _read_at(with_controller, inside, "physician", "/fhir/Organization/hospital")  # no patient
    code, out = _add(capsys, "--client", "ehr")
    assert code == 0 and "1 patients exposed: Patient/a" in out, out
    code, out = _add(capsys, "--actor", "Patient/b", "--actor", "Practitioner/dr")
    assert code == 0 and "1 patients exposed: Patient/b" in out, out
    code, out = _add(capsys, "--client", "ehr", "--actor", "Patient/b")
    assert code == 0 and "2 patients exposed: Patient/a Patient/b" in out, out
    exposed = sorted(o["valueReference"]["reference"] for task in _register(with_controller)
                     for o in task.get("output", []))
    assert exposed == ["Patient/a", "Patient/a", "Patient/b", "Patient/b"]


def test_notifications_and_the_overdue_report(with_controller: Server,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _add(capsys, "--client", "ehr")
    id = out.split()[0].removeprefix("Task/")
    discovered = datetime.fromisoformat(DISCOVERED)
    assert _run(capsys, "overdue", "--at", (discovered + timedelta(hours=48)).isoformat()) == (
        0, "no breach overdue\n")
    code, out = _run(capsys, "overdue", "--at", (discovered + timedelta(hours=48, seconds=1)).isoformat())
    assert code == 0 and out.splitlines() == [
        f"Task/{id} discovered 2026-05-07T07:30:00+00:00: controller not told by 2026-05-09T07:30:00+00:00"]
    assert _run(capsys, "notify", id, "controller", "--at", "2026-05-09T10:00:00+02:00")[0] == 0
    [task] = _register(with_controller)
    assert task["status"] == "in-progress"
    with clock.frozen(discovered + timedelta(hours=80)):  # the default: now
        code, out = _run(capsys, "overdue")
    assert code == 0, out
    assert [line.split(": ")[1] for line in out.splitlines()] == [
        "authority not told by 2026-05-10T07:30:00+00:00"]
    assert _run(capsys, "notify", id, "authority", "--at", "2026-05-10T12:00:00+00:00")[0] == 0
    [task] = _register(with_controller)
    assert task["status"] == "completed"
    assert [(o["type"]["coding"][0]["code"], o["valueDateTime"]) for o in task["output"]] == [
        ("controller-notified", "2026-05-09T08:00:00Z"), ("authority-notified", "2026-05-10T12:00:00Z")]
    assert _run(capsys, "overdue", "--at", "2027-01-01T00:00:00Z")[1] == "no breach overdue\n"
    assert _audited(with_controller, "breach notify") == 2
    assert _audited(with_controller, "breach overdue") == 4


@pytest.mark.parametrize("argv, message", [
    (["add", "--from", "2026-05-07T00:00:00Z", "--to", "2026-05-01T00:00:00Z"], "after it ends"),
    (["add", "--from", "2026-05-08T00:00:00Z", "--to", "2026-05-09T00:00:00Z"], "discovered after"),
    (["add", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z", "--no-system"],
     "at least one --actor or --client"),
    (["add", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z",
      "--controller", "Organization/nowhere"], "no Organization Organization/nowhere"),
    (["add", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z",
      "--controller", "Patient/a"], "no Organization Patient/a"),
    (["add", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z",
      "--actor", "nobody"], "an actor is Type/id"),
    (["notify", "no-such-task", "controller"], "no breach Task/no-such-task"),
])
def test_bad_input_changes_nothing(with_controller: Server, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], message: str) -> None:
    before = _audited(with_controller, "breach add")
    if argv[0] == "add":
        systems = [] if "--no-system" in argv else ["--client", "ehr"]
        argv = [a for a in argv if a != "--no-system"]
        if "--controller" not in argv:
            argv += ["--controller", CONTROLLER]
        argv += ["--description", "x", "--at", DISCOVERED, *systems]
    code, out = _run(capsys, *argv)
    assert code == 2 and message in out and "nothing was stored" in out, out
    assert _register(with_controller) == []
    assert _audited(with_controller, "breach add") == before


def test_a_party_is_told_once_and_after_discovery(with_controller: Server,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    id = _add(capsys, "--client", "ehr")[1].split()[0].removeprefix("Task/")
    code, out = _run(capsys, "notify", id, "authority", "--at", "2026-05-07T07:00:00Z")
    assert code == 2 and "before the breach was discovered" in out
    assert _run(capsys, "notify", id, "authority", "--at", "2026-05-08T07:00:00Z")[0] == 0
    [before] = _register(with_controller)
    code, out = _run(capsys, "notify", id, "authority", "--at", "2026-05-08T09:00:00Z")
    assert code == 2 and "already told" in out
    assert _register(with_controller) == [before]


def test_the_register_is_the_operators(with_controller: Server,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _read_at(with_controller, datetime(2026, 5, 3, tzinfo=UTC), "patient-a", "/fhir/Patient/a")
    assert _add(capsys, "--actor", "Patient/a")[0] == 0
    [task] = _register(with_controller)
    for caller in ("patient-a", "physician", "ehr"):
        response = with_controller.client.get("/fhir/Task", headers=with_controller.headers(caller))
        assert response.json().get("entry", []) == [], caller
    # Administrators read it, never change it.
    response = send(with_controller.client, "PUT", f"/fhir/Task/{task['id']}", task,
                    **with_controller.headers("admin"))
    assert response.status_code == 403


@pytest.mark.anyio
async def test_on_each_store(server: Server) -> None:
    """The register on both stores, through the service layer the commands use."""
    _read_at(server, datetime(2026, 5, 3, tzinfo=UTC), "ehr", "/fhir/Observation/a-obs0")
    assert send(server.client, "PUT", "/fhir/Organization/hospital",
                {"resourceType": "Organization", "id": "hospital"}).status_code == 201
    ctx = server.client.app.state.context  # type: ignore[attr-defined]
    task = await breaches.add(ctx, discovered=datetime(2026, 5, 7, tzinfo=UTC),
                              start=datetime(2026, 5, 1, tzinfo=UTC), end=datetime(2026, 5, 6, tzinfo=UTC),
                              controller=CONTROLLER, description="leak", clients=["ehr"])
    assert [o["valueReference"]["reference"] for o in task["output"]] == ["Patient/a"]
    await breaches.notify(ctx, task["id"], "controller", datetime(2026, 5, 8, tzinfo=UTC))
    late = await breaches.overdue(ctx, datetime(2026, 5, 11, tzinfo=UTC))
    assert [(item.id, item.party) for item in late] == [(task["id"], "authority")]
