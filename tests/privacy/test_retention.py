"""The retention run on a simulated clock (privacy/retention.py, docs/privacy.md "The data's
lifecycle"): each rule fires on its day and not the day before, a dry run lists what the real
run then does, archives hold no direct identifier, held records are pseudonymised instead of
erased, post-mortem directives apply; on each store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from fhir_server import cli, clock
from fhir_server.app import create_app
from fhir_server.privacy import retention, retention_schedule
from fhir_server.privacy.retention import Action, Lifecycle, Plan, apply, plan, run, unarchive
from fhir_server.privacy.retention_policy import DEFAULTS, PolicyError
from fhir_server.model.errors import Kind, fail
from fhir_server.model.platform_codes import REFERRAL_IDENTIFIER
from fhir_server.services import lifecycle, server_writes
from fhir_server.settings import Settings
from fhir_server.store.base import Erasure
from tests.builders import observation, patient
from tests.http.helpers import send
from tests.privacy.conftest import CALLERS, Server, serving, spied_children

RECORD_KIND = "https://oncotrials.example.org/fhir/CodeSystem/record-kind"
INS = "IPP884412"
NAME = "Zorglubowski"
EMAIL = "zorglub@example.org"
T = TypeVar("T")
CALLERS["system"] = dict(subject="ehr", client_id="ehr", scope="system/*.cruds")
CALLERS["guardian-of-a"] = dict(subject="g", client_id="portal", scope="patient/*.cruds",
                                patient="a", fhir_user="RelatedPerson/guardian")
CALLERS["guardian-for-b"] = dict(subject="g", client_id="portal", scope="patient/*.cruds",
                                 patient="b", fhir_user="RelatedPerson/guardian")


@contextmanager
def on(day: date) -> Iterator[clock.Frozen]:
    with clock.frozen(datetime(day.year, day.month, day.day, 10, tzinfo=UTC)) as frozen:
        yield frozen


def _life(server: Server) -> Lifecycle:
    return server.client.app.state.lifecycle  # type: ignore[attr-defined, no-any-return]


def _run(server: Server, dry_run: bool = False) -> Plan:
    return _served(server, partial(run, _life(server), dry_run=dry_run))


def _served(server: Server, work: Callable[[], Awaitable[T]]) -> T:
    """`work` on the server's event loop, as its scheduled runs are (the store's locks are
    that loop's, and a run archives several records at once)."""
    return server.client.portal.call(work)  # type: ignore[union-attr]


def _steps(plan: Plan, rule: str, step: str) -> list[str]:
    return [a.target for a in plan.actions if (a.rule, a.step) == (rule, step)]


def _headers(server: Server, caller: str = "system") -> dict[str, str]:
    """A token issued on the real clock: the token library checks `iat` against it. The
    simulated clock in force is put back afterwards."""
    simulated = clock._read
    try:
        with clock.frozen(datetime.now(UTC)):
            return server.headers(caller)
    finally:
        clock._read = simulated


def _put(server: Server, resource: dict[str, Any], caller: str = "system") -> None:
    response = send(server.client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}",
                    resource, **_headers(server, caller))
    assert response.status_code in (200, 201), response.text


def _seed_p(server: Server) -> None:
    _put(server, {**patient(family=NAME), "id": "p", "identifier": [
        {"system": "https://hospital.example.org/ipp", "value": INS}],
        "telecom": [{"system": "email", "value": EMAIL}],
        "address": [{"line": ["12 rue des Lilas"], "city": "Lyon", "postalCode": "69003",
                     "country": "FR"}], "birthDate": "1961-04-12"})
    _put(server, {**observation("Patient/p"), "id": "p-obs"})


def _archives(server: Server) -> list[dict[str, Any]]:
    """Every pseudonymised resource, read through the API by a system client."""
    found = []
    for kind in ("Patient", "Observation"):
        response = server.client.get(f"/fhir/{kind}?_security=http://terminology.hl7.org/"
                                     "CodeSystem/v3-ObservationValue|PSEUDED&_count=100",
                                     headers=_headers(server))
        assert response.status_code == 200, response.text
        found += [e["resource"] for e in response.json().get("entry", [])]
    return found


def test_a_patient_record_is_archived_then_erased_on_its_days(server: Server) -> None:
    with on(date(2027, 1, 10)):
        _seed_p(server)
    with on(date(2029, 1, 9)):
        early = _run(server, dry_run=True)
        assert "Patient/p" not in _steps(early, "patient-record", "archive")
        assert {"Patient/a", "Patient/b"} <= set(_steps(early, "patient-record", "archive"))
    with on(date(2029, 1, 10)):
        dry = _run(server, dry_run=True)
        assert "Patient/p" in _steps(dry, "patient-record", "archive")
        real = _run(server)
        assert real.lines() == dry.lines() and real.counts() == dry.counts()
        assert server.client.get("/fhir/Patient/p", headers=_headers(server)).status_code == 404
        ledger = server.client.app.state.context.erasures.ledger  # type: ignore[attr-defined]
        erased = [e["patient"] for e in ledger.entries() if e["reason"].startswith("retention:")]
        assert sorted(erased) == ["a", "b", "p"]  # archived at once, each erased once
        archives = _archives(server)
        text = orjson.dumps(archives).decode()
        assert len([r for r in archives if r["resourceType"] == "Patient"]) == 3  # a, b, p
        for identifier in (NAME, INS, EMAIL, "Lilas", "Lyon", "1961-04-12", "Patient/p\"",
                           "\"p-obs\"", "Keep", "Zwxqvtrudel"):
            assert identifier not in text, identifier
        archived_p = next(r for r in archives if r.get("birthDate") == "1961")
        assert archived_p["address"] == [{"country": "FR", "postalCode": "69"}]
        obs = next(r for r in archives if r["resourceType"] == "Observation"
                   and r["subject"]["reference"] == f"Patient/{archived_p['id']}")
        assert obs["code"]  # what statistics need stays
        assert _run(server, dry_run=True).counts().get("patient-record archive", 0) == 0
    with on(date(2031, 1, 9)):
        assert f"Patient/{archived_p['id']}" not in _steps(_run(server, dry_run=True),
                                                             "patient-record", "erase")
    with on(date(2031, 1, 10)):
        dry = _run(server, dry_run=True)
        assert f"Patient/{archived_p['id']}" in _steps(dry, "patient-record", "erase")
        assert _run(server).lines() == dry.lines()
        assert all(r["id"] != archived_p["id"] for r in _archives(server))


def test_a_second_opinion_report_is_archived_after_15_days_and_comes_back(server: Server) -> None:
    report = {"resourceType": "DiagnosticReport", "id": "op1", "status": "final",
              "category": [{"coding": [{"system": RECORD_KIND, "code": "second-opinion"}]}],
              "code": {"text": "second opinion"}, "subject": {"reference": "Patient/a"},
              "issued": "2027-03-01T09:00:00Z"}
    with on(date(2027, 3, 1)):
        _put(server, report)
    with on(date(2027, 3, 15)):
        assert "DiagnosticReport/op1" not in _steps(_run(server), "second-opinion-report", "archive")
    with on(date(2027, 3, 16)):
        dry = _run(server, dry_run=True)
        assert _steps(dry, "second-opinion-report", "archive") == ["DiagnosticReport/op1"]
        assert _run(server).lines() == dry.lines()
        assert server.client.get("/fhir/DiagnosticReport/op1",
                                 headers=_headers(server)).status_code == 404
    with on(date(2027, 6, 1)):  # the patient asks for it: available again for 15 days
        asyncio.run(unarchive(_life(server), "DiagnosticReport/op1"))
        got = server.client.get("/fhir/DiagnosticReport/op1", headers=_headers(server))
        assert got.status_code == 200 and got.json()["issued"] == report["issued"]
    with on(date(2027, 6, 16)):
        assert _steps(_run(server), "second-opinion-report", "archive") == ["DiagnosticReport/op1"]
    with on(date(2037, 6, 15)):
        assert _steps(_run(server), "second-opinion-report", "erase") == []
    with on(date(2037, 6, 16)):
        assert _steps(_run(server), "second-opinion-report", "erase") == ["DiagnosticReport/op1"]
        assert _steps(_run(server), "second-opinion-report", "erase") == []


def test_a_tele_expertise_request_warns_then_goes_on_the_responders_day(server: Server) -> None:
    request = {"resourceType": "ServiceRequest", "id": "tx1", "status": "completed",
               "intent": "order", "subject": {"reference": "Patient/a"},
               "requester": {"reference": "Practitioner/dr"},
               "category": [{"coding": [{"system": RECORD_KIND, "code": "tele-expertise"}]}],
               "extension": [{"url": "https://oncotrials.example.org/fhir/StructureDefinition/"
                              "retention-period", "valueDuration": {
                                  "value": 6, "unit": "months", "system": "http://unitsofmeasure.org",
                                  "code": "mo"}}]}
    with on(date(2027, 1, 31)):
        _put(server, request)
    with on(date(2027, 6, 30)):  # deletion on 31 July: warned from 1 July
        assert _steps(_run(server), "tele-expertise", "warn") == []
    with on(date(2027, 7, 1)):
        assert _steps(_run(server), "tele-expertise", "warn") == ["ServiceRequest/tx1"]
        assert _steps(_run(server), "tele-expertise", "warn") == []  # warned once
        items = asyncio.run(server.client.app.state.context.store.schedule.items(  # type: ignore[attr-defined]
            "retention/tele-expertise/"))
        assert [item.key for item in items] == ["retention/tele-expertise/tx1/2027-07-31"]
    with on(date(2027, 7, 30)):
        assert _steps(_run(server), "tele-expertise", "erase") == []
    with on(date(2027, 7, 31)):
        assert _steps(_run(server), "tele-expertise", "erase") == ["ServiceRequest/tx1"]
        assert server.client.get("/fhir/ServiceRequest/tx1/_history",
                                 headers=_headers(server)).json().get("total", 0) == 0


def _hold_on_a(server: Server) -> None:
    """Patient/a referred to the running study s1: the referral's ResearchSubject, which
    the server alone writes."""
    _put(server, {"resourceType": "ResearchStudy", "id": "s1", "status": "active"})
    ctx = server.client.app.state.context  # type: ignore[attr-defined]
    asyncio.run(server_writes.commit(ctx, [server_writes.ServerWrite({
        "resourceType": "ResearchSubject", "id": "rs1", "status": "candidate",
        "identifier": [{"system": REFERRAL_IDENTIFIER, "value": "ref1"}],
        "study": {"reference": "ResearchStudy/s1"}, "individual": {"reference": "Patient/a"}})]))


def test_a_research_subject_written_by_a_client_holds_nothing(server: Server) -> None:
    """A hold starts with a referral: a ResearchSubject any client may write would let it
    block a patient's erasure."""
    _put(server, {"resourceType": "ResearchStudy", "id": "s1", "status": "active"})
    _put(server, {"resourceType": "ResearchSubject", "id": "forged", "status": "candidate",
                  "study": {"reference": "ResearchStudy/s1"},
                  "individual": {"reference": "Patient/a"}})
    response = server.erase("a", caller="patient-a")
    assert response.status_code == 200, response.text
    assert "legalHold" not in {p["name"] for p in response.json()["parameter"]}
    assert _archives(server) == []


def test_an_erasure_under_a_legal_hold_pseudonymises_and_says_why(server: Server) -> None:
    _hold_on_a(server)
    response = server.erase("a", caller="patient-a")
    assert response.status_code == 200, response.text
    parts = {p["name"]: p for p in response.json()["parameter"]}
    assert "ResearchStudy/s1" in parts["legalHold"]["valueString"]
    assert "pseudonymised" in parts["outcome"]["resource"]["issue"][0]["diagnostics"]
    assert server.client.get("/fhir/Patient/a", headers=_headers(server)).status_code == 404
    archived = [r for r in _archives(server) if r["resourceType"] == "Patient"]
    assert len(archived) == 1 and "Zwxqvtrudel" not in orjson.dumps(archived).decode()
    # the archive outlives its period while the study runs
    with on(date(2030, 1, 1)):
        plan = _run(server, dry_run=True)
        assert _steps(plan, "patient-record", "erase") == []
        assert [t for t, _ in plan.kept] == [f"Patient/{archived[0]['id']}"]


def _directive(id: str, code: str, person: str | None = None) -> dict[str, Any]:
    """Patient/b's post-mortem directive `code`, for `person` (docs/privacy.md)."""
    system = "https://oncotrials.example.org/fhir/CodeSystem/post-mortem-directive"
    consent: dict[str, Any] = {
        "resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "adr"}]},
        "category": [{"coding": [{"system": system, "code": "post-mortem-directive"}]}],
        "patient": {"reference": "Patient/b"},
        "policyRule": {"coding": [{"system": system, "code": code}]}}
    if person:
        consent["provision"] = {"actor": [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP"}]}, "reference": {"reference": person}}]}
    return consent


def _after_the_grace() -> date:
    """The first day a death recorded today is acted on (postmortem.GRACE)."""
    return datetime.now(UTC).date() + timedelta(days=30)


def test_a_post_mortem_directive_to_erase_applies_once_the_patient_is_deceased(server: Server) -> None:
    _put(server, _directive("pm1", "erase"))
    assert _steps(_run(server, dry_run=True), "post-mortem", "erase") == []
    _put(server, {**patient(family="Keep", gender="male"), "id": "b", "deceasedBoolean": True})
    with on(_after_the_grace()):
        dry = _run(server, dry_run=True)
        assert _steps(dry, "post-mortem", "erase") == ["Patient/b"]
        assert _run(server).lines() == dry.lines()
    assert server.client.get("/fhir/Patient/b", headers=_headers(server)).status_code == 404
    assert server.client.get("/fhir/Patient/a", headers=_headers(server)).status_code == 200


def test_a_death_recorded_by_mistake_can_be_corrected_before_anything_is_done(
        server: Server) -> None:
    """Whoever may update the Patient may mark it deceased: nothing is erased or sent until the
    death has stood for 30 days, and a correction in that time undoes it."""
    _put(server, _directive("pm1", "erase"))
    _put(server, {**patient(family="Keep", gender="male"), "id": "b", "deceasedBoolean": True})
    with on(_after_the_grace() - timedelta(days=1)):
        assert _steps(_run(server), "post-mortem", "erase") == []
    _put(server, {**patient(family="Keep", gender="male"), "id": "b", "deceasedBoolean": False})
    with on(_after_the_grace() + timedelta(days=400)):
        assert _steps(_run(server), "post-mortem", "erase") == []
    assert server.client.get("/fhir/Patient/b", headers=_headers(server)).status_code == 200


def _run_events(server: Server) -> list[dict[str, Any]]:
    response = server.client.get("/fhir/AuditEvent?_count=1000", headers=_headers(server))
    return [e["resource"] for e in response.json().get("entry", [])
            if e["resource"]["agent"][0].get("altId") == "fhir-server retention run"]


def test_the_command_prunes_logs_on_their_day_and_the_trail_verifies(
        sqlite_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    seeded = date.today()  # the fixture's requests were audited today, on the real clock
    last_kept = seeded.replace(year=seeded.year + 1) - timedelta(days=1)
    with on(last_kept):
        assert cli.main(["retention", "run", "--dry-run"]) == 0
        assert "access-logs: prune" not in capsys.readouterr().out
    with on(last_kept + timedelta(days=1)):
        assert cli.main(["retention", "run", "--dry-run"]) == 0
        dry = capsys.readouterr().out
        assert "access-logs: prune AuditEvent" in dry
        assert cli.main(["retention", "run"]) == 0
        real = capsys.readouterr().out
        assert real.replace("retention run", "retention dry run") == dry
    assert cli.main(["audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().err
    events = _run_events(sqlite_server)
    assert len(events) == 3  # each run, dry or not, is audited with its counts
    details = {d["type"]: d["valueString"] for d in events[-1]["entity"][0]["detail"]}
    assert details["dry run"] == "no" and int(details["access-logs prune"]) > 0


def test_a_policy_against_the_law_stops_the_command_and_changes_nothing(
        sqlite_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    rules = orjson.loads(DEFAULTS.read_bytes())["rules"]
    bad = tmp_path / "policy.json"
    for content, said in (({**rules, "connection-logs": {"kept": "P6M"}}, "legal minimum"),
                          ({**rules, "photos": {"kept": "P1Y"}}, "unknown rule or field 'photos'")):
        bad.write_bytes(orjson.dumps({"rules": content}))
        monkeypatch.setenv("FHIR_SERVER_RETENTION_POLICY", str(bad))
        for command in (["retention", "check"], ["retention", "run"]):
            assert cli.main(command) == 2
            assert said in capsys.readouterr().err
        with pytest.raises(PolicyError, match=said):
            create_app(Settings(data_dir=sqlite_server.settings.data_dir, retention_policy=bad))
    assert _run_events(sqlite_server) == []
    assert sqlite_server.client.get("/fhir/Patient/a", headers=_headers(sqlite_server)).status_code == 200


def _await_the_scheduled_run(server: Server, frozen: Any) -> None:
    """Move the clock past the next turn; the child process starts, runs, and leaves its
    AuditEvent in the server's audit trail."""
    frozen.advance(24 * 3600)
    for _ in range(600):
        if _run_events(server):
            break
        time.sleep(0.1)
    [event] = _run_events(server)
    assert event["agent"][0]["name"] == "fhir-server (scheduled)"


def test_the_server_runs_the_retention_on_its_schedule_in_a_niced_process_of_its_own(
        tmp_path: Path, signing_keys: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the server's process a run slows the reads it serves (docs/privacy.md): each turn
    runs `fhir-server retention run` apart, at a lower priority, on the server's settings."""
    monkeypatch.setenv("FHIR_SERVER_RETENTION_INTERVAL_HOURS", "24")
    started = spied_children(monkeypatch)
    with clock.frozen(datetime.now(UTC)) as frozen, serving("sqlite", tmp_path, signing_keys, monkeypatch) as server:
        time.sleep(0.1)
        assert _run_events(server) == [] and started == []
        _await_the_scheduled_run(server, frozen)
        [argv] = started
        assert argv[1:] == ("-m", "fhir_server.cli", "retention", "run", "--scheduled", "--nice", "10")


def test_the_scheduled_run_works_on_the_servers_settings_not_the_environments(
        tmp_path: Path, signing_keys: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """An app built with settings of its own (`create_app(settings)`) runs its retention on
    its own stores and keys: the child process is given them, whatever the environment says."""
    monkeypatch.setattr(retention_schedule, "POLL", 0.01)
    monkeypatch.setenv("FHIR_SERVER_RETENTION_INTERVAL_HOURS", "24")
    with clock.frozen(datetime.now(UTC)) as frozen, serving("sqlite", tmp_path, signing_keys, monkeypatch) as server:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(elsewhere))  # not the server's
        monkeypatch.delenv("FHIR_SERVER_KEY_RING")
        monkeypatch.setenv("FHIR_SERVER_SMTP_PORT", "not a port")  # would stop the child
        _await_the_scheduled_run(server, frozen)
        assert list(elsewhere.iterdir()) == []


def test_the_command_lowers_its_priority_when_asked(
        sqlite_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    lowered: list[int] = []
    monkeypatch.setattr(cli.os, "nice", lowered.append)
    assert cli.main(["retention", "run", "--nice", "7"]) == 0
    assert lowered == [7]
    [event] = _run_events(sqlite_server)
    assert event["agent"][0]["name"] != "fhir-server (scheduled)"  # the operator's own run


def test_an_inactive_account_is_warned_closed_then_erased_on_its_days(server: Server) -> None:
    users = server.client.app.state.oauth.registry  # type: ignore[attr-defined]
    from fhir_server.auth.users import Users

    with on(date(2027, 1, 10)):
        Users(users).add("pat-a", "a long enough password", "Patient/a")
    with on(date(2028, 6, 1)):  # the record stays active (a result comes in): not archived
        _put(server, {**observation("Patient/a"), "id": "a-late"})
    with on(date(2028, 12, 10)):  # closure on 10 January 2029: warned from 11 December
        assert "pat-a" not in _steps(_run(server), "accounts", "warn")
    with on(date(2028, 12, 11)):
        assert _steps(_run(server), "accounts", "warn") == ["pat-a"]
    with on(date(2029, 1, 9)):
        assert "pat-a" not in _steps(_run(server), "accounts", "close")
    with on(date(2029, 1, 10)):
        dry = _run(server, dry_run=True)
        assert "pat-a" in _steps(dry, "accounts", "close")
        assert _run(server).lines() == dry.lines()
        assert Users(users).check_password("pat-a", "a long enough password") is None  # closed
        closed = Users(users).get("pat-a")
        assert closed is not None and closed.suspended  # its refresh tokens stop too
        assert server.client.get("/fhir/Patient/a", headers=_headers(server)).status_code == 200
    with on(date(2029, 2, 8)):  # exportable 30 days
        assert _steps(_run(server), "accounts", "erase") == []
    with on(date(2029, 2, 9)):
        assert _steps(_run(server), "accounts", "erase") == ["pat-a"]
        assert Users(users).get("pat-a") is None
        # the account goes, not the record its care still uses: it follows the
        # patient-record rule (only a deletion the holder asked erases it with the account)
        assert server.client.get("/fhir/Patient/a", headers=_headers(server)).status_code == 200


def test_an_account_signed_in_to_since_the_plan_is_not_closed(server: Server) -> None:
    import pyotp

    from fhir_server.auth.users import Users

    users = Users(server.client.app.state.oauth.registry)  # type: ignore[attr-defined]
    with on(date(2027, 1, 10)):
        users.add("pat-a", "a long enough password", "Patient/a")
    with on(date(2029, 1, 10)):
        planned = asyncio.run(plan(_life(server)))
        assert "pat-a" in _steps(planned, "accounts", "close")
        assert users.check_code("pat-a", pyotp.TOTP(users.totp_secret("pat-a")).now())
        _served(server, partial(apply, _life(server), planned))
        assert users.check_password("pat-a", "a long enough password") is not None  # open


def test_an_administrator_account_is_closed_for_inactivity_like_any_other(server: Server) -> None:
    """The terms make no exception: a dormant administrator (break-glass) account is the one
    most worth closing. Warned, closed (no sign-in, its tokens stop), then removed; the
    operator makes a new one with `user add --admin` when it is needed again."""
    from fhir_server.auth.users import Users

    users = Users(server.client.app.state.oauth.registry)  # type: ignore[attr-defined]
    with on(date(2027, 1, 10)):
        users.add("admin-x", "a long enough password", "Practitioner/x", admin=True)
    with on(date(2028, 12, 11)):
        assert _steps(_run(server), "accounts", "warn") == ["admin-x"]
    with on(date(2029, 1, 10)):
        assert _steps(_run(server), "accounts", "close") == ["admin-x"]
        assert users.check_password("admin-x", "a long enough password") is None
        closed = users.get("admin-x")
        assert closed is not None and closed.admin and closed.suspended
    with on(date(2029, 2, 9)):
        assert _steps(_run(server), "accounts", "erase") == ["admin-x"]
        assert users.get("admin-x") is None


def test_an_account_deletion_asked_is_done_within_a_month(
        sqlite_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    from fhir_server.auth.users import Users

    users = Users(sqlite_server.client.app.state.oauth.registry)  # type: ignore[attr-defined]
    users.add("pat-b", "a long enough password", "Patient/b")
    with on(date(2027, 1, 31)):
        assert cli.main(["retention", "close-account", "pat-b", "--asked"]) == 0
        assert cli.main(["retention", "close-account", "nobody"]) == 2
        assert "there is no account nobody" in capsys.readouterr().err
    with on(date(2027, 2, 27)):
        assert _steps(_run(sqlite_server), "accounts", "erase") == []
    with on(date(2027, 2, 28)):  # one month after 31 January, before 30 days
        assert _steps(_run(sqlite_server), "accounts", "erase") == ["pat-b"]
    assert sqlite_server.client.get("/fhir/Patient/b", headers=_headers(sqlite_server)).status_code == 404


def test_backups_go_after_30_days(sqlite_server: Server) -> None:
    directory = sqlite_server.settings.backup_path
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "fhir-backup-20270301T020000.000000Z.fhirbak"
    archive.write_bytes(b"an archive")
    (directory / "notes.txt").write_text("not an archive")
    with on(date(2027, 3, 30)):
        assert _steps(_run(sqlite_server), "backups", "remove") == []
    with on(date(2027, 3, 31)):
        dry = _run(sqlite_server, dry_run=True)
        assert _steps(dry, "backups", "remove") == [archive.name] and archive.exists()
        assert _run(sqlite_server).lines() == dry.lines()
    assert not archive.exists() and (directory / "notes.txt").exists()


def test_a_post_mortem_directive_to_communicate_notifies_the_named_person_once(server: Server) -> None:
    _put(server, {"resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/b"},
                  "name": [{"family": "Keep"}]})
    _put(server, _directive("pm2", "communicate", "RelatedPerson/rp1"))
    _put(server, {**patient(family="Keep", gender="male"), "id": "b",
                  "deceasedDateTime": "2026-12-01"})
    with on(_after_the_grace()):
        assert _steps(_run(server), "post-mortem", "communicate") == ["Patient/b"]
        assert _steps(_run(server), "post-mortem", "communicate") == []
    items = asyncio.run(server.client.app.state.context.store.schedule.items(  # type: ignore[attr-defined]
        "retention/post-mortem/"))
    assert [orjson.loads(i.body)["data"]["person"] for i in items] == ["RelatedPerson/rp1"]
    assert server.client.get("/fhir/Patient/b", headers=_headers(server)).status_code == 200  # kept


def test_a_post_mortem_notice_goes_to_a_relative_of_the_patient_only(server: Server) -> None:
    """The named person must be a RelatedPerson of the deceased: not another patient's
    relative, a practitioner or a patient the directive's writer chose."""
    _put(server, {"resourceType": "RelatedPerson", "id": "rpa", "patient": {"reference": "Patient/a"},
                  "name": [{"family": "Other"}]})
    _put(server, {**patient(family="Keep", gender="male"), "id": "b",
                  "deceasedDateTime": "2026-12-01"})
    for n, person in enumerate(("RelatedPerson/rpa", "Patient/a", "Practitioner/dr")):
        _put(server, _directive(f"pm{n}", "communicate", person))
        with on(_after_the_grace()):
            assert _steps(_run(server), "post-mortem", "communicate") == [], person


def test_the_daily_plan_reads_no_archive_to_find_activity(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Archives name pseudonyms, never a live patient: the plan's look-up of recent activity
    leaves them out rather than reading every archive of the last two years each day."""
    with on(date(2027, 1, 10)):
        _seed_p(server)
    with on(date(2029, 1, 10)):
        _run(server)
        assert _archives(server)
    read: list[dict[str, Any]] = []
    extract = lifecycle.extract
    monkeypatch.setattr(lifecycle, "extract", lambda r, **kw: read.append(r) or extract(r, **kw))
    with on(date(2029, 1, 11)):
        _put(server, {**patient(family="Active"), "id": "q"})
        assert "Patient/q" not in _steps(_run(server, dry_run=True), "patient-record", "archive")
    assert [r["id"] for r in read] == ["q"]


class Killed(Exception):
    """The process dying midway (not a FhirError: the run does not catch it)."""


def _seed_p_with_observations(server: Server) -> None:
    with on(date(2027, 1, 10)):
        _seed_p(server)
        for n in range(40):
            _put(server, {**observation("Patient/p"), "id": f"p-obs-{n}"})


def _counted(monkeypatch: pytest.MonkeyPatch, *, refused: Callable[[Any], bool] = lambda _: False,
             dies: Callable[[Any], bool] = lambda _: False) -> tuple[list[int], Any]:
    """Units of work the run writes, counted (how many writes each), those `refused` refused,
    and the process dying after writing one that `dies`; the counts and the real commit."""
    written = server_writes.commit
    units: list[int] = []

    async def counted(ctx: Any, writes: Any) -> Any:
        units.append(len(writes))
        if refused(writes):
            raise fail(Kind.INVALID, "invalid", "refused")
        versions = await written(ctx, writes)
        if dies(writes):
            raise Killed
        return versions

    monkeypatch.setattr(server_writes, "commit", counted)
    return units, written


def _finished_by_the_next_run(server: Server, monkeypatch: pytest.MonkeyPatch, written: Any) -> None:
    """After a run cut short: the next run archives every record once and erases it."""
    monkeypatch.setattr(server_writes, "commit", written)
    assert _run(server).failed == []
    for id in ("a", "b", "p"):
        assert server.client.get(f"/fhir/Patient/{id}", headers=_headers(server)).status_code == 404
    archives = _archives(server)
    archived_p = next(r["id"] for r in archives if r.get("birthDate") == "1961")
    copies = [r["id"] for r in archives if r["resourceType"] == "Observation"
              and r["subject"]["reference"] == f"Patient/{archived_p}"]
    assert len(copies) == len(set(copies)) == 41
    assert len([r for r in archives if r["resourceType"] == "Patient"]) == 3
    ledger = server.client.app.state.context.erasures.ledger  # type: ignore[attr-defined]
    assert sorted(e["patient"] for e in ledger.entries()) == ["a", "b", "p"]


def test_a_run_cut_short_midway_through_records_is_finished_by_the_next(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record's copies are written in one unit of work, before the original is erased: a
    run that dies between the two leaves the original whole, and the next run archives each
    record once (the copies' ids are their pseudonyms: written again, not twice) and erases
    it."""
    _seed_p_with_observations(server)
    # p and its 41 Observations: the copies written, p not yet erased
    units, written = _counted(monkeypatch, dies=lambda writes: len(writes) == 42)
    monkeypatch.setattr(retention, "ARCHIVED_TOGETHER", 1)  # a, b, then p, each alone
    with on(date(2029, 1, 10)):
        with pytest.raises(Killed):
            _run(server)
        assert units == [5, 5, 42]  # a's and b's records archived whole, then p's copies
        assert server.client.get("/fhir/Patient/p", headers=_headers(server)).status_code == 200
        assert server.client.get("/fhir/Patient/a", headers=_headers(server)).status_code == 404
        _finished_by_the_next_run(server, monkeypatch, written)


def test_records_archived_together_share_a_unit_and_a_run_cut_short_after_it_is_finished(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies of records archived together are one unit of work (a large store writes
    each page they share once); a run that dies after it, before any original is erased,
    leaves every original whole, and the next run finishes them all, each once."""
    _seed_p_with_observations(server)
    units, written = _counted(monkeypatch, dies=lambda _: True)
    with on(date(2029, 1, 10)):
        with pytest.raises(Killed):
            _run(server)
        assert units == [52]  # a's 5, b's 5 and p's 42 copies at once
        for id in ("a", "b", "p"):
            assert server.client.get(f"/fhir/Patient/{id}", headers=_headers(server)).status_code == 200
        _finished_by_the_next_run(server, monkeypatch, written)


def test_a_record_whose_copies_are_refused_fails_alone(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit of records archived together that is refused is written again record by
    record: only the record whose copies are refused fails, and is kept; the others go."""
    _seed_p_with_observations(server)
    units, _ = _counted(monkeypatch, refused=lambda writes: any(  # p's archived Patient
        w.resource.get("birthDate") == "1961" for w in writes))
    with on(date(2029, 1, 10)):
        made = _run(server)
        assert units == [52, 5, 5, 42]
        assert [(a.target, why) for a, why in made.failed] == [("Patient/p", "refused")]
        assert server.client.get("/fhir/Patient/p", headers=_headers(server)).status_code == 200
        for id in ("a", "b"):
            assert server.client.get(f"/fhir/Patient/{id}", headers=_headers(server)).status_code == 404


def test_a_record_active_again_since_the_plan_is_kept(server: Server) -> None:
    with on(date(2027, 1, 10)):
        _seed_p(server)
    with on(date(2029, 1, 10)):
        made = asyncio.run(plan(_life(server)))
        assert "Patient/p" in _steps(made, "patient-record", "archive")
        _put(server, {**observation("Patient/p"), "id": "p-new"})  # a result comes in meanwhile
        _served(server, partial(apply, _life(server), made))
        assert [(a.target, "active again" in why) for a, why in made.failed] == [("Patient/p", True)]
        assert server.client.get("/fhir/Patient/p", headers=_headers(server)).status_code == 200
        assert "Patient/p" not in _steps(_run(server, dry_run=True), "patient-record", "archive")


def _a_result_for_p_after_the_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A result about p comes in just after each unit of copies is written."""
    write_copies = retention._write_copies

    async def meanwhile(life: Lifecycle, ready: Any, made: Plan) -> None:
        await write_copies(life, ready, made)
        await server_writes.commit(life.server, [server_writes.ServerWrite(
            {**observation("Patient/p"), "id": "p-late"})])

    monkeypatch.setattr(retention, "_write_copies", meanwhile)


def test_a_record_written_to_while_its_copies_are_written_is_kept_whole(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result that comes in after a record's copies were made, before its original is
    erased (the copies of the records archived together are written in between), makes the
    record active again: it is kept, the result with it, and its copies are removed; the
    other records of its group are archived."""
    _seed_p_with_observations(server)
    _a_result_for_p_after_the_copies(monkeypatch)
    with on(date(2029, 1, 10)):
        made = _run(server)
        assert [(a.target, "active again" in why) for a, why in made.failed] == [("Patient/p", True)]
        for id in ("p-late", "p-obs", "p-obs-0"):
            assert server.client.get(f"/fhir/Observation/{id}", headers=_headers(server)).status_code == 200
        assert server.client.get("/fhir/Patient/p", headers=_headers(server)).status_code == 200
        for id in ("a", "b"):
            assert server.client.get(f"/fhir/Patient/{id}", headers=_headers(server)).status_code == 404
        archives = _archives(server)
        assert not [r for r in archives if r.get("birthDate") == "1961"]  # p's copies removed
        assert len([r for r in archives if r["resourceType"] == "Patient"]) == 2  # a's and b's


def test_a_legal_representative_erases_under_the_same_holds(server: Server) -> None:
    _put(server, {"resourceType": "RelatedPerson", "id": "guardian", "active": True,
                  "patient": {"reference": "Patient/a"}, "relationship": [{"coding": [{
                      "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}]})
    assert server.erase("b", caller="guardian-for-b").status_code == 403  # represents no one there
    assert server.client.get("/fhir/Patient/b", headers=_headers(server)).status_code == 200
    _hold_on_a(server)
    response = server.erase("a", caller="guardian-of-a")
    assert response.status_code == 200, response.text
    assert "legalHold" in {p["name"] for p in response.json()["parameter"]}
    assert server.client.get("/fhir/Patient/a", headers=_headers(server)).status_code == 404


def test_twelve_years_later_only_what_must_stay_is_left(
        sqlite_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs every two months from 2027 to 2039 (and on the second-opinion report's last
    day): every record, archive and log past its period is gone, and the trail verifies."""
    server = sqlite_server
    with on(date(2027, 1, 10)):
        _seed_p(server)
        _put(server, {"resourceType": "DiagnosticReport", "id": "op2", "status": "final",
                      "category": [{"coding": [{"system": RECORD_KIND, "code": "second-opinion"}]}],
                      "code": {"text": "second opinion"}, "subject": {"reference": "Patient/p"},
                      "issued": "2027-01-10T09:00:00Z"})
    day, seen = date(2027, 1, 10), set()
    while day < date(2039, 1, 10):
        with on(day):
            seen |= {f"{a.rule} {a.step}" for a in _run(server).actions}
        day += timedelta(days=61)
    assert {"patient-record archive", "patient-record erase", "second-opinion-report archive",
            "second-opinion-report erase", "access-logs prune"} <= seen
    with on(date(2039, 1, 10)):
        assert _run(server, dry_run=True).actions == []
    for kind in ("Patient", "Observation", "DiagnosticReport"):
        found = server.client.get(f"/fhir/{kind}", headers=_headers(server)).json()
        assert found.get("entry", []) == [], kind
    assert cli.main(["audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().err


def test_a_scheduled_run_names_no_patient_on_the_servers_log(
        sqlite_server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A scheduled run's standard error is the server's log (retention_schedule.apart): what
    failed is told by rule and step, as the AuditEvent counts it, never by patient or why
    (the operator's own run prints both)."""
    async def failing(life: Lifecycle, **_: Any) -> Plan:
        made = Plan(date(2029, 1, 10))
        made.failed.append((retention.Action("patient-record", "archive", "Patient/p-secret"),
                            "Patient/p-secret's record changed: it is active again"))
        return made

    monkeypatch.setattr(cli, "run_retention", failing)
    assert cli.main(["retention", "run", "--scheduled"]) == 1
    said = capsys.readouterr()
    assert "p-secret" not in said.err
    assert "patient-record: archive FAILED" in said.err
    assert cli.main(["retention", "run"]) == 1
    assert "Patient/p-secret FAILED" in capsys.readouterr().err


def test_a_resource_of_two_records_archived_together_keeps_its_copy_when_one_is_kept(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """An Observation about p performed by a is in both records, and so is its copy (one id).
    When p is active again after the group's copies were written, p's copies go, but not the
    one a's archive holds: a's original is erased, so that copy is all that is left of it."""
    with on(date(2027, 1, 10)):
        _seed_p(server)
        _put(server, {**observation("Patient/p"), "id": "shared", "performer": [{"reference": "Patient/a"}]})
    _a_result_for_p_after_the_copies(monkeypatch)
    with on(date(2029, 1, 10)):
        made = _run(server)
        assert [(a.target, "active again" in why) for a, why in made.failed] == [("Patient/p", True)]
        assert server.client.get("/fhir/Patient/a", headers=_headers(server)).status_code == 404
        original = server.client.get("/fhir/Observation/shared", headers=_headers(server)).status_code
        copy = _life(server).pseudonyms.of("Observation/shared")
        assert original == 200 or copy in {r["id"] for r in _archives(server)}


@pytest.mark.parametrize("nice", ["-5", "20", "ten"])
def test_the_command_refuses_a_priority_it_cannot_lower_to(
        sqlite_server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        nice: str) -> None:
    """`--nice` lowers the priority by 0 to 19 (os.nice): a negative one would raise it above
    the server's when run as root, and fail with a traceback otherwise; nothing is run."""
    lowered: list[int] = []
    monkeypatch.setattr(cli.os, "nice", lowered.append)
    with pytest.raises(SystemExit) as exited:
        cli.main(["retention", "run", "--nice", nice])
    assert exited.value.code == 2 and "--nice" in capsys.readouterr().err
    assert lowered == [] and _run_events(sqlite_server) == []


def test_a_record_active_again_removes_only_its_copies_no_archive_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies a record kept active again removes are its own but those an archive of the
    run holds (an archived record's, or one of its group erased with it): each set of those
    held counts, not the first alone."""
    async def together(_: Any, ids: list[str], *__: Any, **___: Any) -> list[Any]:
        assert ids == ["a", "p"]
        return [Erasure(), fail(Kind.CONFLICT, "conflict", "written since")]

    removed: list[set[str]] = []

    async def erase_resources(_: Any, references: set[str]) -> None:
        removed.append(set(references))

    monkeypatch.setattr(retention, "sweep_together", together)
    monkeypatch.setattr(lifecycle, "erase_resources", erase_resources)

    def copies(*ids: str) -> list[server_writes.ServerWrite]:
        return [server_writes.ServerWrite({"resourceType": "Observation", "id": id}, new=False, valid=True)
                for id in ids]

    a, p = (Action("patient-record", "archive", f"Patient/{id}") for id in ("a", "p"))
    ready = {a: copies("a-own", "shared"), p: copies("mine", "archived", "shared")}
    life = type("Life", (), {"server": None})()
    made = Plan(date(2029, 1, 10))
    erased = asyncio.run(retention._erase_unless_active(
        life, ready, date(2027, 1, 10), "why", {"Observation/archived", "Observation/other"}, made))
    assert erased == {"Observation/a-own", "Observation/shared"}
    assert [(action.target, "active again" in why) for action, why in made.failed] == [("Patient/p", True)]
    assert removed == [{"Observation/mine"}]
