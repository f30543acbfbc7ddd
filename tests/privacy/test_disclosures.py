"""The register of disclosures to authorities through `fhir-server disclosure`: who asked, the
legal basis, what was given; the patient sees a disclosure only when it is marked so (by
search, read and `$everything`), never otherwise, nor does anyone else but administrators;
each command audited without naming the patient; refusals that store nothing."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from fhir_server import cli
from fhir_server.model.platform_codes import REGISTER_SYSTEM
from fhir_server.privacy import disclosures
from tests.builders import consent
from tests.http.helpers import send
from tests.privacy.conftest import Server
from tests.privacy.test_register import _audited

REGISTER = f"/fhir/Task?code={REGISTER_SYSTEM}|disclosure"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["disclosure", *argv])
    captured = capsys.readouterr()
    # What the command says, without the JSON log lines the app writes meanwhile.
    lines = [*(line for line in captured.out.splitlines(True) if not line.startswith("{")),
             *(line for line in captured.err.splitlines(True) if line.startswith("fhir-server "))]
    return code, "".join(lines)


def _add(capsys: pytest.CaptureFixture[str], *extra: str, patient: str = "Patient/a") -> str:
    code, out = _run(capsys, "add", "--patient", patient, "--requester", "Tribunal judiciaire de Paris",
                     "--legal-basis", "Code de procédure pénale, art. 60-1",
                     "--given", "the observations of March", "--on", "2026-03-20", *extra)
    assert code == 0, out
    return out.split()[0].removeprefix("Task/")


def _ids(server: Server, url: str, caller: str) -> set[str]:
    response = server.client.get(url, headers=server.headers(caller))
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])
            if e["resource"]["resourceType"] == "Task"}


@pytest.fixture
def registered(sqlite_server: Server, capsys: pytest.CaptureFixture[str]) -> tuple[Server, str, str]:
    """Two disclosures about patient a: one the law lets them see, one it does not."""
    physician = {**consent("a", actor="Practitioner/dr"), "id": "dr-a"}
    assert send(sqlite_server.client, "PUT", "/fhir/Consent/dr-a", physician).status_code == 201
    visible = _add(capsys, "--resource", "Observation/a-obs0", "--patient-visible")
    hidden = _add(capsys)
    return sqlite_server, visible, hidden


def test_the_register_holds_who_why_and_what(registered: tuple[Server, str, str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    server, visible, hidden = registered
    tasks = {t["id"]: t for t in (e["resource"] for e in server.client.get(
        REGISTER, headers=server.headers("admin")).json()["entry"])}
    assert set(tasks) == {visible, hidden}
    task = tasks[visible]
    assert task["for"] == {"reference": "Patient/a"} and task["status"] == "completed"
    assert task["requester"] == {"display": "Tribunal judiciaire de Paris"}
    assert task["reasonCode"] == {"text": "Code de procédure pénale, art. 60-1"}
    assert task["description"] == "the observations of March" and task["authoredOn"] == "2026-03-20"
    assert [o["valueReference"] for o in task["output"]] == [{"reference": "Observation/a-obs0"}]
    code, out = _run(capsys, "list", "--patient", "Patient/a")
    assert code == 0 and len(out.splitlines()) == 2 and "the patient may see it" in out
    assert _audited(server, "disclosure add") == 2 and _audited(server, "disclosure list") == 1


def test_the_patient_sees_only_what_the_law_allows(registered: tuple[Server, str, str]) -> None:
    server, visible, hidden = registered
    assert _ids(server, "/fhir/Task", "patient-a") == {visible}
    assert _ids(server, "/fhir/Patient/a/$everything?_count=500", "patient-a") == {visible}
    assert server.client.get(f"/fhir/Task/{visible}", headers=server.headers("patient-a")).status_code == 200
    refused = server.client.get(f"/fhir/Task/{hidden}", headers=server.headers("patient-a"))
    unknown = server.client.get("/fhir/Task/no-such-task", headers=server.headers("patient-a"))
    assert refused.status_code == unknown.status_code == 404
    assert server.client.get(f"/fhir/Task/{hidden}/_history",
                             headers=server.headers("patient-a")).json().get("entry", []) == []
    # Nobody else: not the other patient, the physician the patient consented to, an EHR.
    for caller in ("patient-b", "physician", "ehr"):
        assert _ids(server, "/fhir/Task", caller) == set(), caller
    # The patient's access history does not tell of the hidden one.
    events = server.client.get("/fhir/AuditEvent?_count=500", headers=server.headers("patient-a"))
    assert hidden not in events.text


@pytest.mark.parametrize("url", ["/fhir?_type=Task,Patient", "/fhir?_count=500",
                                 "/fhir/_history?_count=500"])
def test_system_clients_do_not_read_the_register_across_types(registered: tuple[Server, str, str],
                                                              url: str) -> None:
    """A backend service's system/*.rs scopes reach every type, but not the registers' Tasks:
    neither through a search or history across all types, nor in a batch doing those."""
    server, visible, hidden = registered
    response = server.client.get(url, headers=server.headers("ehr"))
    assert response.status_code == 200, response.text
    assert visible not in response.text and hidden not in response.text
    assert "Tribunal" not in response.text
    # What a system client otherwise reads there is still there.
    assert '"id":"a"' in response.text.replace(" ", "")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": url.removeprefix("/fhir").lstrip("/")}},
        {"request": {"method": "GET", "url": f"Task/{hidden}"}}]}
    answer = send(server.client, "POST", "/fhir", batch, **server.headers("ehr"))
    assert answer.status_code == 200, answer.text
    first, second = (e["response"]["status"] for e in answer.json()["entry"])
    assert first.startswith("200") and second.startswith("404"), answer.text[:600]
    assert "Tribunal" not in answer.text and hidden not in answer.text.replace(f"Task/{hidden}", "")


def test_patients_do_not_write_the_register(registered: tuple[Server, str, str]) -> None:
    server, visible, _ = registered
    task = server.client.get(f"/fhir/Task/{visible}", headers=server.headers("patient-a")).json()
    changed = {**task, "description": "nothing"}
    response = send(server.client, "PUT", f"/fhir/Task/{visible}", changed, **server.headers("patient-a"))
    assert response.status_code == 403, response.text
    forged = {k: v for k, v in task.items() if k not in ("id", "meta")}
    response = send(server.client, "POST", "/fhir/Task", forged, **server.headers("patient-a"))
    assert response.status_code == 403, response.text


def _register_count(server: Server) -> int:
    return len(server.client.get(REGISTER, headers=server.headers("admin")).json().get("entry", []))


@pytest.mark.parametrize("argv, message", [
    (["add", "--patient", "Patient/nobody"], "no Patient Patient/nobody"),
    (["add", "--patient", "Organization/x"], "no Patient Organization/x"),
    (["add", "--resource", "Observation/b-obs0"], "Observation/b-obs0 is not Patient/a's"),
    (["add", "--resource", "Observation/missing"], "no resource Observation/missing"),
    (["add", "--requester", " "], "who asked"),
    (["list", "--patient", "Patient/nobody"], "no Patient Patient/nobody"),
])
def test_bad_input_changes_nothing(sqlite_server: Server, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], message: str) -> None:
    if argv[0] == "add":
        given = {"--patient": "Patient/a", "--requester": "Police", "--legal-basis": "art. 60-1",
                 "--given": "x"}
        given.update(dict(zip(argv[1::2], argv[2::2])))
        argv = ["add", *(part for pair in given.items() for part in pair)]
    code, out = _run(capsys, *argv)
    assert code == 2 and message in out and "nothing was stored" in out, out
    assert _register_count(sqlite_server) == 0
    assert _audited(sqlite_server, f"disclosure {argv[0]}") == 0


def test_an_erased_patient_has_no_disclosure_added(sqlite_server: Server,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert sqlite_server.erase_and_settle("a").status_code == 200
    code, out = _run(capsys, "add", "--patient", "Patient/a", "--requester", "Police",
                     "--legal-basis", "art. 60-1", "--given", "x")
    assert code == 2 and "no Patient Patient/a" in out
    assert _register_count(sqlite_server) == 0


@pytest.mark.anyio
async def test_on_each_store(server: Server) -> None:
    ctx: Any = server.client.app.state.context  # type: ignore[attr-defined]
    shown = await disclosures.add(ctx, patient="Patient/a", requester="ARS", legal_basis="CSP L1413-1",
                                  given="a count", visible=True, on=date(2026, 3, 1))
    kept = await disclosures.add(ctx, patient="Patient/a", requester="Police", legal_basis="CPP 60-1",
                                 given="a copy", on=date(2026, 3, 2))
    assert [t["id"] for t in await disclosures.of_patient(ctx, "Patient/a")] == [shown["id"], kept["id"]]
    assert _ids(server, "/fhir/Task", "patient-a") == {shown["id"]}
