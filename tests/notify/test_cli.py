"""`fhir-server notify preferences`: the operator sets what a person asked, audited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from fhir_server import cli, clock
from fhir_server.app import body_codec, open_store
from fhir_server.notify import Scheduler
from fhir_server.notify.runner import schedule_of
from fhir_server.notify.scheduler import FAILURES_SET_ASIDE
from fhir_server.settings import Settings


async def _stored(settings: Settings) -> tuple[bytes | None, int]:
    store = open_store(settings.store_url, codec=body_codec(settings))
    audit = open_store(settings.audit_store_url, codec=body_codec(settings))
    await store.open()
    await audit.open()
    try:
        return (await schedule_of(store).preference("Practitioner/p1"),
                await audit.count("AuditEvent"))
    finally:
        await store.close()
        await audit.close()


def test_preferences_are_set_kept_and_audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    assert cli.main(["notify", "preferences", "Practitioner/p1", "--channel", "sms", "--opt-out"]) == 0
    assert cli.main(["notify", "preferences", "Practitioner/p1", "--language", "en"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert orjson.loads(printed[-1]) == {"channel": "sms", "language": "en", "opted_out": True}
    stored, events = asyncio.run(_stored(Settings(data_dir=tmp_path)))
    assert stored is not None and orjson.loads(stored)["opted_out"] is True
    assert events == 2
    assert cli.main(["notify", "preferences", "Observation/1", "--opt-out"]) == 1
    assert "not a Practitioner, Patient or RelatedPerson" in capsys.readouterr().err


async def _set_aside(settings: Settings) -> None:
    store = open_store(settings.store_url, codec=body_codec(settings))
    await store.migrate()
    await store.open()
    try:
        schedule = schedule_of(store)
        await schedule.enqueue([("broken/1", 0, b"not an item")])
        with clock.frozen(clock.now()) as now:
            for _ in range(FAILURES_SET_ASIDE):
                await Scheduler(schedule, {}).run_due()
                now.advance(7200)
    finally:
        await store.close()


def test_failed_items_are_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    assert cli.main(["notify", "failed"]) == 0
    assert capsys.readouterr().out == ""
    asyncio.run(_set_aside(Settings(data_dir=tmp_path)))
    assert cli.main(["notify", "failed"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("broken/1 ") and "attempts 5" in line
